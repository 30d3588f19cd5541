"""Planted bugs: realistic mistakes in the reference VSR, each switched on only by `--bug NAME`.

They prove the simulator and its invariants can find bugs (`voprd selftest`). Off by default;
`VsrSystem.bugs` (validated by `System.validate_bugs`).
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
        "a replica in a view change answers every StartViewChange of its view with its own "
        "(to help laggards learn the view sooner): a message storm during every view change",
    "transfer_appends_unchecked":
        "a backup in a state transfer also appends the entries it receives (Prepares, "
        "transferred entries) to its old log where they follow its end, without the hash-chain "
        "check (the transfer replaces that log once complete)",
}
