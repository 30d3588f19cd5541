"""A Viewstamped Replication replica (Liskov & Cowling, "VR Revisited", 2012) with a durable log.

The replica is a pure state machine driven by the simulator: `on_message`, `on_tick` and
`on_write_done`; every effect goes through `ReplicaIO`. Durability rules that make it safe:
- PrepareOk(op) (and the primary's own vote) only once every entry up to `op` is durable;
- the view is in the superblock before any view-change message is sent;
- a log is replaced (StartView, new primary, recovery, state transfer) all at once in memory,
  and on disk as a copy-on-write install: until every entry of the new log is durable, the
  superblock marks the install unfinished and a restart reads the previous log with the previous
  last normal view, so the (last normal view, log) pair, in memory or on disk, is never a mixture
  of two views and always holds the whole initial log of that view;
- a replica votes (PrepareOk, or the primary's own vote) only once that pair is durable;
- state transfer (a replica that missed a StartView) collects the primary's log after its commit
  number in a separate buffer and installs it only when complete;
- a log is a hash chain (each entry's checksum covers its parent's): a backup appends an entry
  (Prepare, repair) only if it chains to its last one and installs a log (StartView, recovery,
  state transfer, a DoViewChange log chosen by a new primary) only if the part it does not
  already hold chains. A Prepare or repaired entry that does not chain means the backup's
  uncommitted suffix diverged from the primary's log: it is treated there, where it starts, by a
  state transfer from the backup's commit number (it stops voting until that log is installed),
  not found later as a disagreement at commit;
- repair (GET_ENTRIES) is bounded: the next chunk is asked for at once only after a reply made
  progress; otherwise at most one request per `repair_backoff` ticks, doubling up to
  `REPAIR_BACKOFF_TICKS_MAX` until progress, so replies that never help cannot ping-pong;
- a restarted replica with an intact log starts a view change (it never resumes as primary of its
  old view); one whose log is damaged (checksum or misplaced sector) runs the recovery protocol
  and does not vote until it has the log of the current primary of a view at least as high as
  the one it last promised. A gap (writes lost at a crash) just ends the log: entries after it
  were never acknowledged.

Quorums are majorities (n // 2 + 1, for any n from 1 to 6: two quorums always intersect, also for
even n). Messages reach it checksum-verified (its `VsrServer` drops a corrupted one). Clients have
sessions: a client registers (request number 0, a `register` operation in the log) before its
requests; the client table is bounded (`clients_max`): executing a registration when it is full
evicts the session that executed least recently, and a request of a session not in the table is
answered EVICTED (never executed again), so an evicted client learns it and starts a new session.

Storage: the disk returns raw bytes and may lie, so the replica verifies everything it
reads (position, checksum, hash chain) and anchors its log in the superblock: the superblock
(written in several copies by the IO layer) records the head (op, checksum) of the log installed
with the last normal view, and entries after that head must be of that view, so a stale sector (a
lost write) is detected too. Only the bodies of recent entries stay in memory (`CACHE_OPS`);
older, committed ones are read back from the disk when the replica sends its log (view change,
recovery, state transfer, repair). A sector that fails to read or verify while running is repaired
by checksum from any replica holding that entry (REPAIR_REQUEST/REPAIR_REPLY) and rewritten;
failed writes are retried with a backoff (a bad sector or a full disk keeps failing); a recovering
replica re-reads its disk now and then (a fault may have cleared).
"""

from __future__ import annotations

from typing import Protocol

from voprd.sim.clock import TICK_US
from voprd.sim.prng import Rng
from voprd.sim.system import Damaged
from voprd.systems.vsr.messages import (
    BODY_EVICTED,
    COMMIT,
    DO_VIEW_CHANGE,
    ENTRIES,
    ENTRIES_PER_MESSAGE_MAX,
    EVICTED,
    GET_ENTRIES,
    PREPARE,
    PREPARE_OK,
    RECOVERY,
    RECOVERY_RESPONSE,
    REPAIR_REPLY,
    REPAIR_REQUEST,
    REPLY,
    REQUEST,
    START_VIEW,
    START_VIEW_CHANGE,
    Entry,
    Message,
    client_node,
    decode_entry,
    entry_valid,
    make_entry,
)
from voprd.systems.vsr.state_machine import KvStore, Result

NORMAL = 0
VIEW_CHANGE = 1
RECOVERING = 2
STATUS_NAMES = ("normal", "view_change", "recovering")

# The planted fsync_watchdog_* bugs only: a write pending this long is taken as done.
FSYNC_WATCHDOG_US = 200_000
HEARTBEAT_TICKS = 4
RESEND_TICKS = 8
LOG_OPS_MAX = 4096
CLIENTS_MAX_DEFAULT = 64
REPAIR_BACKOFF_TICKS_MAX = 8


class _Evicted:
    """What executing a request of a session missing from the client table gives: no result, the
    client is told it was evicted."""


EVICTED_RESULT = _Evicted()
# Entry bodies kept in memory: the last CACHE_OPS of the log (older, committed ones are evicted).
CACHE_OPS = 32
# A recovering replica re-reads its disk every REREAD_TICKS.
REREAD_TICKS = 64
# A restarted replica repairs the holes of its log for at most this many ticks, then recovers.
HOLE_REPAIR_TICKS_MAX = 48
# Write retries back off up to this many ticks.
WRITE_BACKOFF_TICKS_MAX = 32
# write_retry_gives_up (planted bug): failures of one write before it is counted as durable.
WRITE_RETRIES_MAX = 6
# Why an entry could not be read back (`Replica._read_entry`).
READ_ERROR = 1  # the device reported an error
READ_INVALID = 2  # missing, or failed verification (corrupt, stale, misplaced)
# (op count, checksum of that op): the head of the log installed with the last normal view.
Head = tuple[int, int]
# The last normal view of a replica that lost its log (an empty disk) until it has recovered.
LOST_LOG = -1
# The checksum of a hole not known yet (learned when the hole after it is repaired).
UNKNOWN = -1
# The view of a hole: a log position whose sector is damaged (`voprd.systems.vsr.system.hole`).
HOLE_VIEW = -1
# The client field of a hole whose sector read back nothing (a gap a misplaced entry names);
# the other holes' sectors read back something that failed (damaged, torn, stale, misplaced).
HOLE_EMPTY = -2


class ReplicaIO(Protocol):
    def send(self, src: int, dst: int, msg: Message) -> None: ...
    # The replica's clocks (the reference VSR reads none; only planted bugs do).
    def monotonic_us(self, replica: int) -> int: ...
    def wall_clock_us(self, replica: int) -> int: ...
    def disk_write(self, replica: int, entry: Entry, parent: int, commit: int) -> None: ...
    def disk_truncate(self, replica: int, op_count: int) -> None: ...
    def disk_read(self, replica: int, op: int) -> bytes | Damaged | None: ...
    def persist(
        self, replica: int, view: int, last_normal_view: int, lnv_base: int, head: Head
    ) -> None: ...
    def reload(self, replica: int) -> tuple[list[Entry], tuple[int, int, int, Head]] | None:
        """Re-read the log and superblock: None if damaged (or no superblock)."""
        ...
    def on_vote(self, replica: int, view: int, op: int) -> None: ...
    def on_do_view_change(
        self, replica: int, view: int, last_normal_view: int, log: tuple[Entry, ...]
    ) -> None: ...
    def on_resume(self, replica: int) -> None:
        """A restarted replica takes part again with the log it read back."""
        ...
    def on_commit(self, replica: int, entry: Entry, state_hash: int) -> None: ...
    def on_status(self, replica: int) -> None: ...
    def on_log_installed(self, replica: int, as_primary: bool) -> None: ...
    def on_recovered(self, replica: int) -> None: ...
    def on_bound(self, name: str) -> None: ...
    def cover(self, path: str) -> None: ...
    def entry_chains(self, entry: Entry, parent: int) -> bool:
        """`messages.entry_valid(entry, parent)` (the harness memoizes it per run)."""
        ...


class Replica:
    __slots__ = (
        "acked",
        "bugs",
        "client_table",
        "clients_max",
        "commit",
        "dvc_msg",
        "dvc_sent",
        "dvcs",
        "evict_next",
        "f",
        "failed_reads",
        "full_log_cache",
        "head",
        "heard",
        "idle_ticks",
        "io",
        "kv",
        "last_normal_view",
        "last_ok_sent",
        "lnv_base",
        "lnv_target",
        "log",
        "logged",
        "n",
        "nonce",
        "pending",
        "persisted_lnv",
        "quorum",
        "recovery_responses",
        "repair_backoff",
        "repair_due",
        "repair_tick",
        "repairing",
        "restart_repair",
        "retry_at",
        "rewrites",
        "rid",
        "rng",
        "status",
        "svc_mask",
        "ticks",
        "timeout_base_ticks",
        "timeout_ticks",
        "transfer",
        "transfer_base",
        "view",
        "watchdog",
        "write_failures",
        "write_times",
    )

    def __init__(
        self,
        rid: int,
        n: int,
        io: ReplicaIO,
        rng: Rng,
        bugs: frozenset[str],
        timeout_base_ticks: int,
        clients_max: int = CLIENTS_MAX_DEFAULT,
    ) -> None:
        assert 0 <= rid < n and clients_max >= 1
        self.rid = rid
        self.n = n
        self.f = (n - 1) // 2
        # A majority: any two intersect, for odd and even n alike.
        self.quorum = (n + 1) // 2 if "quorum_ceil_half" in bugs else n // 2 + 1
        self.io = io
        self.rng = rng
        self.bugs = bugs
        self.clients_max = clients_max
        self.timeout_base_ticks = timeout_base_ticks
        self.view = 0
        self.status = NORMAL
        self.last_normal_view = 0
        self.persisted_lnv = 0
        self.lnv_base = -1
        self.lnv_target = 0
        # State transfer in progress: the primary's entries after transfer_base (else None).
        self.transfer: list[Entry] | None = None
        self.transfer_base = 0
        self.log: list[Entry] = []
        self.commit = 0
        self.kv = KvStore()
        # Session -> (request number, result, op number) of its latest executed request (at most
        # once), at most clients_max sessions.
        self.client_table: dict[int, tuple[int, Result, int]] = {}
        # Session -> (highest request number, its op number) in the log (executed or not).
        self.logged: dict[int, tuple[int, int]] = {}
        # Session -> the tick this replica last heard from it (the planted eviction bug's order).
        self.heard: dict[int, int] = {}
        # slot -> number of writes in flight to it.
        self.pending: dict[int, int] = {}
        # The planted fsync_watchdog_* bugs: the clock they use (0: none, 1: timer ticks,
        # 2: the monotonic clock, 3: the wall clock) and slot -> when its latest write was issued.
        self.watchdog = next(
            (i for i, clock in enumerate(("ticks", "monotonic", "wall_clock"), start=1)
             if f"fsync_watchdog_{clock}" in bugs), 0
        )
        self.write_times: dict[int, int] = {}
        self.acked = [0] * n
        self.svc_mask = 0
        self.dvcs: dict[int, Message] = {}
        self.dvc_sent = False
        self.recovery_responses: dict[int, Message] = {}
        self.nonce = 0
        self.ticks = 0
        self.idle_ticks = 0
        # Repair requests: the tick from which the next may go (unless it follows progress), and
        # the ticks to wait after it (doubling while replies bring nothing).
        self.repair_due = 0
        self.repair_backoff = 0
        self.last_ok_sent = 0
        self.timeout_ticks = self._draw_timeout()
        self.head: Head = (0, 0)
        self.evict_next = 1
        self.dvc_msg: Message | None = None
        self.full_log_cache: tuple[tuple[int, int], tuple[Entry, ...]] | None = None
        # op -> checksum of the entry being repaired from the others (its sector is damaged).
        self.repairing: dict[int, int] = {}
        self.restart_repair = False  # recovering by repairing the holes of its log only
        # Repaired holes still to be rewritten after a restart, highest op first, one at a time
        # (a misdirected write's own sector is above the sector holding its data, so that
        # evidence outlives the sector it names), each counted pending until then.
        self.rewrites: list[int] = []
        # Holes whose sectors read back something that failed at the restart (`_reread`).
        self.failed_reads: set[int] = set()
        # slot -> tick of its next write attempt, and its consecutive failures so far.
        self.retry_at: dict[int, int] = {}
        self.write_failures: dict[int, int] = {}

    # ---- start-up -------------------------------------------------------------------------
    def restart(
        self, log: list[Entry], view: int, last_normal_view: int, damaged: bool,
        head: Head = (0, 0),
    ) -> None:
        """Resume after a crash from the durable log and superblock. A damaged log runs the
        recovery protocol; a log with holes (damaged sectors whose entries are known by checksum)
        is repaired from the others first, as a recovering replica that does not vote."""
        self.log = log
        self.view = view
        self.last_normal_view = self.persisted_lnv = last_normal_view
        self.lnv_base = -1
        self.head = head
        self.evict_next = 1
        self._persist()
        self._rebuild_logged()
        holes = [entry[0] for entry in log if entry[4] is BODY_EVICTED]
        self.failed_reads = {
            entry[0] for entry in log if entry[1] == HOLE_VIEW and entry[2] != HOLE_EMPTY
        }
        if damaged and "rejoin_without_recovery" not in self.bugs:
            self.io.cover("damaged_restart")
            self._start_recovery()
        elif holes and not damaged:
            self.io.cover("hole_repair")
            self.status = RECOVERING
            self.restart_repair = True
            self.io.on_status(self.rid)
            for op in holes:
                if log[op - 1][5] != UNKNOWN:
                    self._repair(op)
        else:
            self._resume()

    def _resume(self) -> None:
        """After a restart (and the repair of its holes): a view change, never the old view."""
        self.restart_repair = False
        self._rebuild_logged()
        self.io.on_resume(self.rid)
        if "rejoin_without_recovery" in self.bugs:
            self.status = NORMAL
            self.io.on_status(self.rid)
        else:
            self._start_view_change(self.view + 1)

    def _start_recovery(self) -> None:
        for op in self.rewrites:  # the install rewrites what it needs
            self._done_writing(op)
        self.rewrites = []
        self.repairing = {}
        self.restart_repair = False
        self.status = RECOVERING
        self.nonce = self.rng.next_u64()
        self._broadcast((RECOVERY, self.rid, self.nonce))
        self.io.on_status(self.rid)

    # ---- helpers --------------------------------------------------------------------------
    def _draw_timeout(self) -> int:
        base = self.timeout_base_ticks
        return base + self.rng.below(base)

    def primary_of(self, view: int) -> int:
        return view % self.n

    def is_primary(self) -> bool:
        return self.view % self.n == self.rid

    def durable_op(self) -> int:
        if "ack_before_fsync" in self.bugs or not self.pending:
            return len(self.log)
        if self.watchdog:
            # The planted fsync_watchdog_* bugs: a write pending for long is taken as done (so a
            # slow disk does not stall the replica), its age measured with the bug's clock.
            now, since = self._watchdog_now(), self.write_times
            live = [s for s in self.pending if now - since.get(s, now) <= FSYNC_WATCHDOG_US]
            return min(min(live) - 1, len(self.log)) if live else len(self.log)
        return min(min(self.pending) - 1, len(self.log))

    def _watchdog_now(self) -> int:
        if self.watchdog == 1:
            return self.ticks * TICK_US
        if self.watchdog == 2:
            return self.io.monotonic_us(self.rid)
        return self.io.wall_clock_us(self.rid)

    def _broadcast(self, msg: Message) -> None:
        send = self.io.send
        rid = self.rid
        for dst in range(self.n):
            if dst != rid:
                send(rid, dst, msg)

    def _append(self, entry: Entry) -> None:
        assert entry[0] == len(self.log) + 1
        self.log.append(entry)
        self._write(entry)

    def _write(self, entry: Entry) -> None:
        slot = entry[0]
        self.pending[slot] = self.pending.get(slot, 0) + 1
        if self.watchdog:
            self.write_times[slot] = self._watchdog_now()
        self.io.disk_write(self.rid, entry, self._parent(slot), self.commit)

    def _parent(self, op: int) -> int:
        """The checksum entry `op` chains to."""
        return self.log[op - 2][5] if op > 1 else 0

    def _chains(self, entry: Entry, parent: int) -> bool:
        """True if `entry` is intact and follows the entry whose checksum is `parent`."""
        return self.io.entry_chains(entry, parent)

    def _log_chains(self, new_log: list[Entry] | tuple[Entry, ...], same: int) -> bool:
        """True if the entries of `new_log` after its first `same` (which we hold) chain."""
        parent = new_log[same - 1][5] if same else 0
        for entry in new_log[same:]:
            if not self._chains(entry, parent):
                self.io.cover("log_rejected")
                return False
            parent = entry[5]
        return True

    def _common_prefix(self, new_log: list[Entry] | tuple[Entry, ...]) -> int:
        """How many leading entries `new_log` shares with our log (a hole left by a restart is
        not shared: its sector is damaged, so the install rewrites it)."""
        log = self.log
        same = 0
        limit = min(len(log), len(new_log))
        while same < limit and log[same][5] == new_log[same][5] and log[same][1] != HOLE_VIEW:
            same += 1
        return same

    def _rebuild_logged(self) -> None:
        logged: dict[int, tuple[int, int]] = {}
        for entry in self.log:
            client = entry[2]
            last = logged.get(client)
            if last is None or entry[3] >= last[0]:
                logged[client] = (entry[3], entry[0])
        self.logged = logged

    def _persist(self) -> None:
        self.io.persist(self.rid, self.view, self.persisted_lnv, self.lnv_base, self.head)

    def _finish_install(self) -> None:
        """The in-memory log is now this view's log; the superblock follows once it is durable."""
        assert self.last_normal_view == self.view
        self.lnv_target = len(self.log)
        self._persist()
        self._check_view_log_durable()

    def _check_view_log_durable(self) -> None:
        if (
            self.lnv_base >= 0 and self.last_normal_view == self.view
            and self.durable_op() >= self.lnv_target
        ):
            self.persisted_lnv = self.view
            self.lnv_base = -1
            target = self.lnv_target
            self.head = (target, self.log[target - 1][5] if target else 0)
            self._persist()

    def _voting(self) -> bool:
        return self.persisted_lnv == self.view and self.lnv_base < 0 and self.transfer is None

    def _install_log(self, new_log: list[Entry], same: int) -> int:
        """Replace the log with `new_log`, whose first `same` entries are ours (`_common_prefix`),
        rewriting only the entries that differ."""
        if same < len(self.log):
            self.io.cover("log_replaced")
        self.transfer = None
        # Mark the install unfinished before touching the log (the disk keeps the old one).
        self.lnv_base = same if self.lnv_base < 0 else min(self.lnv_base, same)
        self._persist()
        # Always truncate: sectors past the old log may hold damaged or stale data.
        self.io.disk_truncate(self.rid, same)
        for slot in [s for s in self.pending if s > same]:
            del self.pending[slot]
        for table in (self.retry_at, self.write_failures, self.repairing):
            for slot in [s for s in table if s > same]:
                del table[slot]
        in_flight = self.rewrites[:1]
        self.rewrites = [op for op in self.rewrites if op <= same]
        self.evict_next = min(self.evict_next, same + 1)
        self.log = list(new_log)
        if self.rewrites and self.rewrites[:1] != in_flight:
            # The rewrite in flight was past `same`: the truncate cancelled it, so its completion,
            # which starts the next one, never comes. Start it here, else the holes left stay
            # pending and the replica never votes again.
            self._rewrite_next()
        for entry in self.log[same:]:
            self._write(entry)
        self._rebuild_logged()
        self.last_ok_sent = min(self.last_ok_sent, same)
        return same

    # ---- storage: the entry cache, reading back, repair, write retries --------------------
    def _evict(self) -> None:
        """Drop the bodies of committed, durable entries older than the last CACHE_OPS."""
        log = self.log
        limit = min(self.commit, len(log) - CACHE_OPS)
        op = self.evict_next
        while op <= limit:
            if op in self.pending:
                break  # not durable yet: keep its body
            entry = log[op - 1]
            if entry[4] is not BODY_EVICTED:
                log[op - 1] = (entry[0], entry[1], entry[2], entry[3], BODY_EVICTED, entry[5])
            op += 1
        self.evict_next = op

    def _read_entry(self, op: int) -> Entry | int:
        """Entry `op` of the log, from memory or read back from the disk and verified against its
        header (position, checksum, hash chain). On failure (READ_ERROR or READ_INVALID) the
        sector is repaired from the others."""
        header = self.log[op - 1]
        if header[4] is not BODY_EVICTED:
            return header
        raw = self.io.disk_read(self.rid, op)
        if isinstance(raw, Damaged):
            self._repair(op)
            return READ_ERROR
        found = None if raw is None else decode_entry(raw)
        if (
            found is not None and found[0][0] != op and 1 <= found[0][0] <= len(self.log)
            and not self._check_misdirected(found[0][0])
        ):
            # The sector holds the entry of a write that went astray: keep that evidence until
            # the sector the write was meant for is rewritten, then repair this one.
            return READ_INVALID
        if (
            found is None or found[0][0] != op or found[0][5] != header[5]
            or ("log_unverified_read" not in self.bugs
                and (found[1] != self._parent(op) or not entry_valid(*found)))
        ):
            self._repair(op)
            return READ_INVALID
        return found[0]

    def _full_log(self) -> tuple[Entry, ...] | None:
        """The whole log with bodies (read back from the disk where evicted), or None while an
        entry cannot be read (each such sector is being repaired). The last one built is kept
        while the log is the same (same length and head checksum: the hash chain pins it)."""
        log = self.log
        key = (len(log), log[-1][5] if log else 0)
        cached = self.full_log_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        entries: list[Entry] = []
        complete = True
        for op, entry in enumerate(log, start=1):
            if entry[4] is BODY_EVICTED:
                read = self._read_entry(op)
                if isinstance(read, int):
                    if read == READ_ERROR and "read_error_ends_log" in self.bugs:
                        return tuple(entries)  # the planted bug: the log "ends" at the error
                    complete = False
                    continue
                entry = read
            if complete:
                entries.append(entry)
        if not complete:
            return None
        full = tuple(entries)
        self.full_log_cache = (key, full)
        return full

    def _check_misdirected(self, op: int) -> bool:
        """A sector held op's entry, so the write sent to op's own sector may have landed
        elsewhere: check it, and rewrite it (from memory) or repair it if it does not verify.
        True if op's sector is fine."""
        if op in self.pending or op in self.repairing:
            return False  # being rewritten
        header = self.log[op - 1]
        raw = self.io.disk_read(self.rid, op)
        found = None if raw is None or isinstance(raw, Damaged) else decode_entry(raw)
        if found is not None and found[0][0] == op and found[0][5] == header[5]:
            return True
        if header[4] is BODY_EVICTED:
            self._repair(op)
        else:
            self._write(header)
        return False

    def _repair(self, op: int) -> None:
        """Ask every other replica for entry `op` (by checksum) to rewrite a damaged sector."""
        checksum = self.log[op - 1][5]
        if op in self.repairing or op in self.pending or checksum == UNKNOWN:
            return  # already asked, a rewrite is in flight, or not known yet
        self.repairing[op] = checksum
        self.io.cover("sector_repair")
        self._broadcast((REPAIR_REQUEST, self.rid, op, checksum))

    def _retry_repairs(self) -> None:
        """Every RESEND_TICKS: drop repairs the log no longer needs or the disk now satisfies
        (a fault may have cleared), and ask again for the others."""
        for op, checksum in list(self.repairing.items()):
            if op > len(self.log) or self.log[op - 1][5] != checksum:
                del self.repairing[op]
                continue
            del self.repairing[op]
            if not isinstance(self._read_entry(op), int):
                continue  # readable again
            if op not in self.repairing:
                self._repair(op)
            else:
                self._broadcast((REPAIR_REQUEST, self.rid, op, checksum))

    def _on_repair_request(self, msg: Message) -> None:
        _, src, op, checksum = msg
        if op > len(self.log) or self.log[op - 1][5] != checksum or op in self.repairing:
            return
        entry = self._read_entry(op)
        parent = self._parent(op)
        if not isinstance(entry, int) and parent != UNKNOWN:
            self.io.send(self.rid, src, (REPAIR_REPLY, self.rid, entry, parent))

    def _on_repair_reply(self, msg: Message) -> None:
        _, _, entry, parent = msg
        op = entry[0]
        if self.status == RECOVERING and not self.restart_repair:
            return  # the recovery protocol installs a whole log
        checksum = self.repairing.get(op)
        if (
            checksum is None or entry[5] != checksum or op > len(self.log)
            or not entry_valid(entry, parent)
        ):
            return
        if parent != self._parent(op):
            if not self.restart_repair:
                return  # not our chain
            # Restarting: the entry below was a hole not known yet, or a stale sector that looked
            # fine: now its checksum is known, repair it too.
            below = self.log[op - 2]
            self.log[op - 2] = (below[0], HOLE_VIEW, -1, -1, BODY_EVICTED, parent)
        del self.repairing[op]
        self.log[op - 1] = entry  # cached again until its sector is durable and evicted
        if not (self.restart_repair and self.status == RECOVERING):
            self._write(entry)
            return
        self.pending[op] = self.pending.get(op, 0) + 1  # rewritten in order, once all are here
        self.rewrites.append(op)
        if op > 1 and self.log[op - 2][4] is BODY_EVICTED:
            self._repair(op - 1)
        if not self.repairing:
            self.rewrites.sort(reverse=True)
            self._resume()
            self._rewrite_next()

    def _rewrite_next(self) -> None:
        if self.rewrites and not any(op in self.retry_at for op in self.rewrites[:1]):
            op = self.rewrites[0]
            self.io.disk_write(self.rid, self.log[op - 1], self._parent(op), self.commit)

    def _done_writing(self, slot: int) -> None:
        count = self.pending.get(slot, 0)
        if count <= 1:
            self.pending.pop(slot, None)
        else:
            self.pending[slot] = count - 1

    def _retry_write(self, slot: int) -> bool:
        """A write of `slot` failed: retry it (the slot stays pending). False if another write of
        the slot is in flight (it covers this one), or if the planted bug gives up on it."""
        if self.pending[slot] > 1:
            return False
        failures = self.write_failures.get(slot, 0) + 1
        if "write_retry_gives_up" in self.bugs and failures >= WRITE_RETRIES_MAX:
            return False
        self.write_failures[slot] = failures
        if failures == 1:
            self.io.cover("write_retry")
            self.io.disk_write(self.rid, self.log[slot - 1], self._parent(slot), self.commit)
        else:
            self.retry_at[slot] = self.ticks + min(1 << (failures - 2), WRITE_BACKOFF_TICKS_MAX)
        return True

    def _retry_writes(self) -> None:
        ticks = self.ticks
        for slot, due in list(self.retry_at.items()):
            if due <= ticks:
                del self.retry_at[slot]
                if slot in self.pending and slot <= len(self.log):
                    self.io.disk_write(self.rid, self.log[slot - 1], self._parent(slot),
                                       self.commit)

    def _reread(self) -> bool:
        """A recovering replica re-reads its disk: if its log now reads back intact, it restarts
        from it as after a clean crash. True if it did."""
        reloaded = self.io.reload(self.rid)
        if reloaded is None:
            return False
        log, (view, last_normal_view, _, head) = reloaded
        known = self.log
        # A checksum it knows counts only where the hash chain pins it: the head down to the
        # highest hole at or below it (that hole's checksum is named by its successor), and
        # entries above the head (of the last normal view). Below that hole an entry was read
        # back verified on its own only: a stale sector there passes (and names a stale parent),
        # and the healed disk's read-back, chained from its head, corrects it (seed 100859).
        pinned = max(
            (entry[0] for entry in known[: self.head[0]] if entry[1] == HOLE_VIEW), default=1
        )
        # A re-read that ends (at a gap) before the known log knows less, unless that gap is a
        # sector that read back something that failed (a torn write) and now reads back nothing:
        # no write to it ever completed, so this replica voted for nothing from it up (votes
        # need every op up to them durable) and lost no promise. The liveness heal shows such a
        # sector as it is, never written; refusing it left a healed core replica recovering
        # forever (seed 309542). A gap a misplaced entry named (HOLE_EMPTY) is not one: its
        # write completed, and the evidence that said so may have been rewritten since.
        end = len(log)
        if (end < len(known) and end + 1 not in self.failed_reads) or any(
            log[i][5] != known[i][5]
            for i in range(pinned - 1, min(end, len(known))) if known[i][5] != UNKNOWN
        ):
            return False  # less than it read before (evidence of a fault was rewritten since)
        self.recovery_responses = {}
        # Taken: what lies past it on the disk is junk, as at a restart (the re-read left it, in
        # case the replica refused it).
        self.io.disk_truncate(self.rid, len(log))
        self.restart(log, max(view, self.view), last_normal_view, False, head)
        return True

    # ---- commit / execute -----------------------------------------------------------------
    def _commit_upto(self, target: int) -> None:
        if self.transfer is not None:
            return  # our log past the commit number may not be this view's
        target = min(target, len(self.log))
        if target <= self.commit:
            return
        primary = self.status == NORMAL and self.is_primary()
        for op in range(self.commit + 1, target + 1):
            entry = self.log[op - 1]
            result = self._execute(entry)
            self.commit = op
            self.io.on_commit(self.rid, entry, self.kv.state_hash)
            if primary:
                client = entry[2]
                if result is EVICTED_RESULT:
                    self._tell_evicted(client)
                else:
                    self.io.send(self.rid, client_node(client),
                                 (REPLY, self.rid, self.view, client, entry[3], result, op))
        self._evict()

    def _tell_evicted(self, client: int) -> None:
        self.io.send(self.rid, client_node(client), (EVICTED, self.rid, self.view, client))

    def _execute(self, entry: Entry) -> Result | _Evicted:
        op, _, client, request, operation, _ = entry
        table = self.client_table
        cached = table.get(client)
        if operation[0] == "register":
            if cached is None:
                if len(table) >= self.clients_max:
                    # Evict the session that executed least recently (the same on every
                    # replica: a function of the log).
                    if "eviction_by_local_recency" in self.bugs:
                        heard = self.heard
                        del table[min(table, key=lambda c: (heard.get(c, -1), c))]
                    else:
                        del table[min(table, key=lambda c: table[c][2])]
                table[client] = (0, None, op)
            return None
        if cached is None:
            return EVICTED_RESULT  # evicted before this executed: the client is told
        if request <= cached[0] and "no_client_table" not in self.bugs and (
            request == cached[0] or "old_request_reexecuted" not in self.bugs
        ):
            return cached[1] if request == cached[0] else None
        result = self.kv.apply(op, operation)
        table[client] = (request, result, op)
        return result

    def _try_commit(self) -> None:
        if self.status != NORMAL or not self.is_primary():
            return
        own = self.durable_op() if self._voting() else 0
        if "commit_without_quorum" in self.bugs:
            candidate = own
        else:
            votes = sorted(self.acked[r] for r in range(self.n) if r != self.rid)
            votes.append(own)
            votes.sort(reverse=True)
            candidate = votes[self.quorum - 1]
        if own > self.last_ok_sent:
            self.last_ok_sent = own
            self.io.on_vote(self.rid, self.view, own)
        self._commit_upto(candidate)

    # ---- events ---------------------------------------------------------------------------
    def on_write_done(self, slot: int, ok: bool) -> None:
        count = self.pending.get(slot)
        if count is None:
            return  # truncated away while in flight
        if not ok and slot <= len(self.log) and self._retry_write(slot):
            return  # still pending: retried at once the first time, then with a backoff
        if self.write_failures:
            self.write_failures.pop(slot, None)
        self._done_writing(slot)
        if self.rewrites and self.rewrites[0] == slot:
            self.rewrites.pop(0)
            self._rewrite_next()
        self._check_view_log_durable()
        if self.status == NORMAL:
            if self.is_primary():
                self._try_commit()
            else:
                self._send_prepare_ok(False)

    def _send_prepare_ok(self, force: bool) -> None:
        if not self._voting():
            return  # not a durable member of this view yet (state transfer or install)
        durable = self.durable_op()
        if durable > self.last_ok_sent or (force and durable > 0):
            if durable > self.last_ok_sent:
                self.io.on_vote(self.rid, self.view, durable)
            self.last_ok_sent = durable
            self.io.send(
                self.rid, self.primary_of(self.view), (PREPARE_OK, self.rid, self.view, durable)
            )

    def on_tick(self) -> None:
        self.ticks += 1
        if self.retry_at:
            self._retry_writes()
        if self.repairing and self.ticks % RESEND_TICKS == 0:
            self._retry_repairs()
        status = self.status
        if status == NORMAL:
            if self.is_primary():
                if self.ticks % HEARTBEAT_TICKS == 0:
                    self._broadcast((COMMIT, self.rid, self.view, self.commit, len(self.log)))
                if self.watchdog:
                    self._try_commit()
            else:
                if self.watchdog:
                    self._send_prepare_ok(False)
                self.idle_ticks += 1
                if self.idle_ticks > self.timeout_ticks:
                    self._start_view_change(self.view + 1)
        elif status == VIEW_CHANGE:
            self.idle_ticks += 1
            if self.idle_ticks > self.timeout_ticks:
                self._start_view_change(self.view + 1)
            elif self.idle_ticks % RESEND_TICKS == 0:
                self._broadcast((START_VIEW_CHANGE, self.rid, self.view))
                if self.dvc_sent:
                    self._send_dvc()
        elif not self.restart_repair and self.ticks % REREAD_TICKS == 0 and self._reread():
            return
        elif self.restart_repair:
            if self.ticks >= HOLE_REPAIR_TICKS_MAX:
                self._start_recovery()  # nobody had the entries: the full recovery protocol
        elif self.ticks % RESEND_TICKS == 0:
            self._broadcast((RECOVERY, self.rid, self.nonce))

    def on_message(self, msg: Message) -> None:
        kind = msg[0]
        if kind == PREPARE:
            self._on_prepare(msg)
        elif kind == PREPARE_OK:
            self._on_prepare_ok(msg)
        elif kind == COMMIT:
            self._on_commit_msg(msg)
        elif kind == REQUEST:
            self._on_request(msg)
        elif kind == START_VIEW_CHANGE:
            self._on_svc(msg)
        elif kind == DO_VIEW_CHANGE:
            self._on_dvc(msg)
        elif kind == START_VIEW:
            self._on_start_view(msg)
        elif kind == GET_ENTRIES:
            self._on_get_entries(msg)
        elif kind == ENTRIES:
            self._on_entries(msg)
        elif kind == RECOVERY:
            self._on_recovery(msg)
        elif kind == RECOVERY_RESPONSE:
            self._on_recovery_response(msg)
        elif kind == REPAIR_REQUEST:
            self._on_repair_request(msg)
        elif kind == REPAIR_REPLY:
            self._on_repair_reply(msg)

    # ---- normal operation -----------------------------------------------------------------
    def _on_request(self, msg: Message) -> None:
        _, _, client, request, operation = msg
        if "eviction_by_local_recency" in self.bugs:
            self.heard[client] = self.ticks
        if self.status != NORMAL:
            return
        if not self.is_primary():
            if "backup_serves_reads" in self.bugs and operation[0] == "get":
                value = self.kv.data.get(operation[1], "")
                self.io.send(
                    self.rid, client_node(client),
                    (REPLY, self.rid, self.view, client, request, value, 0),
                )
            return
        cached = self.client_table.get(client)
        logged = self.logged.get(client)
        if operation[0] == "register":
            if cached is not None:  # registered: tell it again
                self.io.send(self.rid, client_node(client),
                             (REPLY, self.rid, self.view, client, 0, None, 0))
                return
            if logged is not None:
                if logged[1] > self.commit:
                    return  # in progress
                self._tell_evicted(client)  # registered, then evicted before it heard so
                return
        elif cached is None:
            if logged is not None and logged[1] > self.commit:
                return  # its registration or a request is still to execute here
            # Every entry of this session is executed here, and it is not in the table: evicted
            # (or never registered).
            self._tell_evicted(client)
            return
        elif "no_client_table" not in self.bugs:
            if request < cached[0] and "old_request_reexecuted" not in self.bugs:
                return
            if request == cached[0]:
                self.io.send(
                    self.rid, client_node(client),
                    (REPLY, self.rid, self.view, client, request, cached[1], 0),
                )
                return
        if (logged is not None and logged[0] >= request and "no_client_table" not in self.bugs
                and ("old_request_reexecuted" not in self.bugs or request == logged[0])):
            return  # in progress
        if len(self.log) >= LOG_OPS_MAX:
            self.io.on_bound("log_ops")
            return
        parent = self.log[-1][5] if self.log else 0
        entry = make_entry(len(self.log) + 1, self.view, client, request, operation, parent)
        self._append(entry)
        self.logged[client] = (request, entry[0])
        self._broadcast((PREPARE, self.rid, self.view, entry, self.commit))
        self._try_commit()

    def _accept_view(self, view: int, src: int) -> bool:
        """For normal-operation messages: True if this replica should process it in `view`."""
        if self.status == RECOVERING or view < self.view or src != self.primary_of(view):
            return False
        if view > self.view or self.status != NORMAL:
            self._transfer_to_view(view)
        if src == self.primary_of(self.view):
            self.idle_ticks = 0
        return True

    def _transfer_to_view(self, view: int) -> None:
        """A view was established without us (we missed StartView): fetch the new primary's log
        after our commit number into a buffer (state transfer); until it is complete we keep our
        old log and last normal view, and neither vote nor commit."""
        self.view = view
        self.status = NORMAL
        self.idle_ticks = 0
        self._persist()
        self.io.on_status(self.rid)
        self._start_transfer()

    def _start_transfer(self) -> None:
        """Fetch the primary's log after our commit number into a buffer; until it is complete and
        installed we neither vote nor commit."""
        self.io.cover("state_transfer")
        self.transfer = []
        self.transfer_base = self.commit
        self._request_entries(True)

    def _diverged(self) -> None:
        """An entry from the primary of our view does not chain to our log: our log after the
        commit number is not the primary's (the divergence starts here). Repair it from the
        primary: a state transfer from the commit number, not voting meanwhile."""
        self.io.cover("chain_mismatch")
        self._start_transfer()

    def _request_entries(self, progress: bool) -> None:
        """Ask the primary for the entries after those we have. `progress`: the last reply (or a
        new transfer) moved us on, so the next chunk is asked for at once; otherwise at most one
        request per `repair_backoff` ticks, which doubles with each request until progress."""
        if progress:
            self.repair_backoff = 0
        elif self.ticks < self.repair_due:
            return
        backoff = self.repair_backoff
        if backoff >= REPAIR_BACKOFF_TICKS_MAX:
            self.io.cover("repair_backoff")
        self.repair_due = self.ticks + max(backoff, 1)
        self.repair_backoff = min(max(2 * backoff, 1), REPAIR_BACKOFF_TICKS_MAX)
        have = len(self.log) if self.transfer is None else self.transfer_base + len(self.transfer)
        self.io.send(
            self.rid, self.primary_of(self.view), (GET_ENTRIES, self.rid, self.view, have)
        )

    def _on_transfer_entries(self, chunk: tuple[Entry, ...], commit: int, op_number: int) -> None:
        transfer = self.transfer
        assert transfer is not None
        base = self.transfer_base
        had = len(transfer)
        for entry in chunk:
            if "transfer_appends_unchecked" in self.bugs and entry[0] == len(self.log) + 1:
                self._append(entry)  # kept in the old log meanwhile, unchecked
            if entry[0] == base + len(transfer) + 1:
                parent = transfer[-1][5] if transfer else (self.log[base - 1][5] if base else 0)
                if not self._chains(entry, parent):
                    # Not the continuation of our committed prefix (a damaged message, or a
                    # primary whose committed ops differ from ours): never installed; asked for
                    # again, with backoff.
                    self.io.cover("transfer_mismatch")
                    break
                transfer.append(entry)
        if base + len(transfer) < op_number:
            self._request_entries(len(transfer) > had)
            return
        new_log = self.log[:base] + transfer
        self._install_log(new_log, self._common_prefix(new_log))
        self.last_normal_view = self.view
        self._finish_install()
        self.io.on_log_installed(self.rid, False)
        self._commit_upto(commit)

    def _on_prepare(self, msg: Message) -> None:
        _, src, view, entry, commit = msg
        if not self._accept_view(view, src) or self.is_primary():
            return
        op = entry[0]
        log = self.log
        if self.transfer is not None:
            if "transfer_appends_unchecked" in self.bugs and op == len(log) + 1:
                self._append(entry)  # kept in the old log meanwhile, unchecked
            self._request_entries(False)
            return
        if op == len(log) + 1:
            if not self._chains(entry, log[-1][5] if log else 0):
                self._diverged()
                return
            self._append(entry)
        elif op > len(log) + 1:
            self._request_entries(False)
        self._send_prepare_ok(False)
        self._commit_upto(commit)

    def _on_prepare_ok(self, msg: Message) -> None:
        _, src, view, op = msg
        if view != self.view or self.status != NORMAL or not self.is_primary():
            return
        if op > self.acked[src]:
            self.acked[src] = op
            self._try_commit()

    def _on_commit_msg(self, msg: Message) -> None:
        _, src, view, commit, op_number = msg
        if not self._accept_view(view, src) or self.is_primary():
            return
        if self.transfer is not None:
            self._request_entries(False)
            return
        if op_number > len(self.log):
            self._request_entries(False)
        self._commit_upto(commit)
        self._send_prepare_ok(True)

    def _on_get_entries(self, msg: Message) -> None:
        _, src, view, after = msg
        if view != self.view or self.status != NORMAL or not self.is_primary():
            return
        op_number = len(self.log)
        after = min(after, op_number)
        chunk: list[Entry] = []
        for op in range(after + 1, min(after + ENTRIES_PER_MESSAGE_MAX, op_number) + 1):
            entry = self._read_entry(op)
            if isinstance(entry, int):
                if entry == READ_ERROR and "read_error_ends_log" in self.bugs:
                    op_number = op - 1
                break
            chunk.append(entry)
        if not chunk and after < op_number:
            return  # nothing readable yet (repairing): the backup asks again
        self.io.send(
            self.rid, src, (ENTRIES, self.rid, view, tuple(chunk), self.commit, op_number)
        )

    def _on_entries(self, msg: Message) -> None:
        _, src, view, chunk, commit, op_number = msg
        if not self._accept_view(view, src) or self.is_primary():
            return
        if self.transfer is not None:
            self._on_transfer_entries(chunk, commit, op_number)
            return
        log = self.log
        had = len(log)
        for entry in chunk:
            if entry[0] == len(log) + 1:
                if not self._chains(entry, log[-1][5] if log else 0):
                    self._diverged()
                    return
                self._append(entry)
        if len(log) > had:
            self.io.cover("repair")
        if op_number > len(log):
            self._request_entries(len(log) > had)
        self._commit_upto(commit)
        self._send_prepare_ok(False)

    # ---- view change ----------------------------------------------------------------------
    def _start_view_change(self, view: int) -> None:
        assert view > self.view or (view == self.view and self.status != NORMAL)
        self.view = view
        self.status = VIEW_CHANGE
        self.transfer = None
        self.svc_mask = 1 << self.rid
        self.dvcs = {}
        self.dvc_sent = False
        self.dvc_msg = None
        self.idle_ticks = 0
        self.timeout_ticks = self._draw_timeout()
        self._persist()  # the promise not to accept older views must survive a crash
        self.io.on_status(self.rid)
        self._broadcast((START_VIEW_CHANGE, self.rid, view))
        self._check_svc_quorum()

    def _check_svc_quorum(self) -> None:
        if not self.dvc_sent and self.svc_mask.bit_count() >= self.quorum:
            self.dvc_sent = True
            self._send_dvc()

    def _send_dvc(self) -> None:
        msg = self.dvc_msg
        if msg is None:
            log = self._full_log()
            if log is None:
                return  # an entry is being repaired: sent again on a later resend
            msg = (DO_VIEW_CHANGE, self.rid, self.view, log, self.last_normal_view, self.commit)
            self.io.on_do_view_change(self.rid, self.view, self.last_normal_view, log)
            self.dvc_msg = msg
        primary = self.primary_of(self.view)
        if primary == self.rid:
            self._on_dvc(msg)
        else:
            self.io.send(self.rid, primary, msg)

    def _on_svc(self, msg: Message) -> None:
        _, src, view = msg
        if self.status == RECOVERING:
            return
        if view > self.view:
            self._start_view_change(view)
        if view == self.view and self.status == VIEW_CHANGE:
            self.svc_mask |= 1 << src
            if "svc_echo" in self.bugs:
                self._broadcast((START_VIEW_CHANGE, self.rid, view))
            self._check_svc_quorum()

    def _on_dvc(self, msg: Message) -> None:
        src, view = msg[1], msg[2]
        if self.status == RECOVERING:
            return
        if view > self.view:
            self._start_view_change(view)
        if view != self.view or self.status != VIEW_CHANGE or self.primary_of(view) != self.rid:
            return
        self.dvcs[src] = msg
        if len(self.dvcs) >= self.quorum and self.rid in self.dvcs:
            self._become_primary()

    def _become_primary(self) -> None:
        candidates = [self.dvcs[r] for r in sorted(self.dvcs)]
        if "view_change_own_log" in self.bugs:
            best = self.dvcs[self.rid]
        else:
            best = candidates[0]
            for dvc in candidates[1:]:
                if (dvc[4], len(dvc[3])) > (best[4], len(best[3])):
                    best = dvc
        commit = max(dvc[5] for dvc in candidates)
        same = self._common_prefix(best[3])
        if not self._log_chains(best[3], same):
            del self.dvcs[best[1]]  # a damaged DoViewChange: wait for another (they are resent)
            return
        self.io.cover("view_change")
        self._install_log(list(best[3]), same)
        self.status = NORMAL
        self.last_normal_view = self.view
        self.acked = [0] * self.n
        self.idle_ticks = 0
        self._finish_install()
        self.io.on_status(self.rid)
        self.io.on_log_installed(self.rid, True)
        self._broadcast((START_VIEW, self.rid, self.view, tuple(self.log), commit))
        self._commit_upto(commit)
        self._try_commit()

    def _on_start_view(self, msg: Message) -> None:
        _, _src, view, log, commit = msg
        if self.status == RECOVERING or view < self.view:
            return
        if view == self.view and self.status == NORMAL and self.transfer is None:
            return
        same = self._common_prefix(log)
        if not self._log_chains(log, same):
            return  # a damaged StartView: the primary's next message starts a state transfer
        self.io.cover("start_view")
        self.view = view
        self._install_log(list(log), same)
        self.status = NORMAL
        self.last_normal_view = view
        self.idle_ticks = 0
        self._finish_install()
        self.io.on_status(self.rid)
        self.io.on_log_installed(self.rid, False)
        if "start_view_commit_regress" in self.bugs and commit < self.commit:
            self.commit = commit
        self._commit_upto(commit)
        self._send_prepare_ok(True)

    # ---- recovery -------------------------------------------------------------------------
    def _on_recovery(self, msg: Message) -> None:
        _, src, nonce = msg
        if self.status != NORMAL:
            return
        log = None
        if self.is_primary():
            log = self._full_log()
            if log is None:
                return  # an entry is being repaired: the recovering replica asks again
            self.acked[src] = 0  # its old votes may refer to entries it has lost
        self.io.send(
            self.rid, src, (RECOVERY_RESPONSE, self.rid, self.view, nonce, log, self.commit)
        )

    def _on_recovery_response(self, msg: Message) -> None:
        _, src, _view, nonce, log, _commit = msg
        if self.status != RECOVERING or nonce != self.nonce:
            return
        self.recovery_responses[src] = msg
        if "recovery_any_response" in self.bugs and log is not None:
            chosen: Message | None = msg
        else:
            if len(self.recovery_responses) < self.quorum:
                return
            view_max = max(r[2] for r in self.recovery_responses.values())
            if view_max < self.view:
                # We promised (StartViewChange/DoViewChange) not to go back below self.view
                # before crashing; wait until a view at least that high is known.
                return
            chosen = self.recovery_responses.get(view_max % self.n)
            if chosen is None or chosen[2] != view_max or chosen[4] is None:
                return
        assert chosen is not None
        same = self._common_prefix(chosen[4])
        if not self._log_chains(chosen[4], same):
            del self.recovery_responses[chosen[1]]  # damaged: wait for its next response
            return
        self.io.cover("recovery")
        self.recovery_responses = {}
        self.view = chosen[2]
        self._install_log(list(chosen[4]), same)
        self.status = NORMAL
        self.last_normal_view = self.view
        self.idle_ticks = 0
        self.last_ok_sent = 0
        self._finish_install()
        self.io.on_status(self.rid)
        self.io.on_log_installed(self.rid, False)
        self.io.on_recovered(self.rid)
        self._commit_upto(chosen[5])
        self._send_prepare_ok(True)
