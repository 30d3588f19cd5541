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
    "svc_echo":
        "[bound verdicts] a replica in a view change answers every StartViewChange of its view "
        "with its own (to help laggards learn the view sooner): a message storm during every "
        "view change",
    "transfer_appends_unchecked":
        "[chain checks] a backup in a state transfer also appends the entries it receives "
        "(Prepares, transferred entries) to its old log where they follow its end, without the "
        "hash-chain check (the transfer replaces that log once complete)",
    # Bugs only the later fault families and cluster shapes catch (each names what catches it:
    # the class that alone catches it, then others that also do).
    "quorum_ceil_half":
        "[even cluster sizes] quorums are computed as ceil(n/2), a majority only for odd n: with "
        "even n two disjoint halves each commit and elect (split brain)",
    "skip_message_checksum":
        "[corrupt] replicas do not verify the checksum of incoming messages (they strip it "
        "unchecked), so a message corrupted in flight is acted on",
    "eviction_by_local_recency":
        "[clients] a full client table evicts the session this replica heard from least "
        "recently (replica-local state, not the log): replicas evict different sessions and "
        "execute differently",
    "client_session_reuse":
        "[clients] a restarted client registers its previous session again and numbers its "
        "requests from 1: the replicas take them for old requests of that session",
    "old_request_reexecuted":
        "[replay; gray] the client table recognises only a retry of a session's latest request: "
        "an older request arriving late is executed again",
    "fsync_watchdog_ticks":
        "[gray] a log write still pending after 200 ms (counted in timer ticks) is taken as "
        "durable, so a slow disk does not stall the replica: it acknowledges unsynced entries",
    "fsync_watchdog_monotonic":
        "[pause; gray] as fsync_watchdog_ticks, timed with the monotonic clock: a process frozen "
        "during a write takes it as durable when it resumes, before the completion",
    "fsync_watchdog_wall_clock":
        "[time; pause, gray] as fsync_watchdog_ticks, timed with the wall clock: a forward jump "
        "makes a fresh write look old",
    # Storage bugs: each is caught only with the `disk` fault class on.
    "log_unverified_read":
        "[disk] log entries read from the disk are decoded and trusted without verifying their "
        "checksum and hash chain (silent corruption is executed)",
    "read_error_ends_log":
        "[disk] when a replica reads its log back from the disk to send it (view change, "
        "recovery, state transfer), a read error is taken for the end of the log",
    "superblock_first_copy":
        "[disk] a restart takes the first superblock copy that verifies instead of the newest "
        "(highest sequence number), so a copy whose last write was lost brings back an older "
        "superblock",
    "write_retry_gives_up":
        "[disk] a log write that keeps failing (bad sector, full disk) is retried 6 times, then "
        "counted as durable",
    "superblock_single_copy":
        "[disk] the superblock is kept in one copy; when that copy cannot be read back (torn by "
        "a crash, damaged), the replica takes its disk for a blank one and rejoins as a new "
        "member",
    "empty_disk_rejoins":
        "[disk] a replica restarting from an empty disk (lost, or a late join) rejoins as a new "
        "member (view 0, empty log, voting) instead of recovering through state transfer",
}

STORAGE_BUGS: tuple[str, ...] = (
    "log_unverified_read", "read_error_ends_log", "superblock_first_copy", "write_retry_gives_up",
    "superblock_single_copy", "empty_disk_rejoins",
)
