"""Planted bugs: realistic mistakes in the reference VSR, each switched on only by `--bug NAME`.

They prove the simulator and its invariants can find bugs (`voprd selftest`). Off by default;
`VsrSystem.bugs` (validated by `System.validate_bugs`). `STORAGE_BUGS` are the ones only the `disk`
fault class can reveal.
"""

from __future__ import annotations

BUGS: dict[str, str] = {
    "commit_without_quorum":
        "the primary commits an operation once its own log write is durable, without waiting "
        "for a quorum of PrepareOk",
    "view_change_own_log":
        "a new primary keeps its own log instead of the DoViewChange log with the highest "
        "(last normal view, op number)",
    "ack_before_fsync":
        "replicas send PrepareOk (and the primary counts itself) before the log write is durable",
    "rejoin_without_recovery":
        "a restarted replica rejoins its old view as normal from its durable log, without a view "
        "change or the recovery protocol",
    "start_view_commit_regress":
        "StartView overwrites the backup's commit number with the (possibly older) one in the "
        "message",
    "backup_serves_reads":
        "backups answer get requests from their local, possibly stale, state",
    "no_client_table":
        "the client table is not consulted: a retried request is executed twice",
    "recovery_any_response":
        "a recovering replica adopts the log of the first recovery response from any primary, "
        "without waiting for a quorum (so a stale primary's log is taken)",
    # Storage bugs (issue 16): each is caught only with the `disk` fault class on.
    "log_unverified_read":
        "log entries read from the disk are decoded and trusted without verifying their checksum "
        "and hash chain (silent corruption is executed)",
    "read_error_ends_log":
        "when a replica reads its log back from the disk to send it (view change, recovery, "
        "state transfer), a read error is taken for the end of the log",
    "superblock_first_copy":
        "a restart takes the first superblock copy that verifies instead of the newest (highest "
        "sequence number), so a copy whose last write was lost brings back an older superblock",
    "write_retry_gives_up":
        "a log write that keeps failing (bad sector, full disk) is retried 6 times, then "
        "counted as durable",
    "superblock_single_copy":
        "the superblock is kept in one copy; when that copy cannot be read back (torn by a crash, "
        "damaged), the replica takes its disk for a blank one and rejoins as a new member",
    "empty_disk_rejoins":
        "a replica restarting from an empty disk (lost, or a late join) rejoins as a new member "
        "(view 0, empty log, voting) instead of recovering through state transfer",
}

STORAGE_BUGS: tuple[str, ...] = (
    "log_unverified_read", "read_error_ends_log", "superblock_first_copy", "write_retry_gives_up",
    "superblock_single_copy", "empty_disk_rejoins",
)
