"""The builtin system: the VSR cluster of this package plugged into the simulation engine.

`VsrSystem` describes it (planted bugs, the `kv` model, its messages, its trace kind
`log_installed`). `VsrCluster` is one run's harness: the replicas' `ReplicaIO` and the clients'
`ClientIO`. It stores log entries on the engine's disks as bytes (`encode_entry`) and reads them
back at a restart, verifying positions, checksums and the hash chain against the head recorded in
the superblock (kept in `SUPERBLOCK_COPIES` sealed copies, written one at a time; the newest copy
that verifies wins). It checks the invariants: `log_chain` (every entry a replica writes chains to
the entry before it in its log: a backup never holds a log that diverged from the primary's),
`agreement` (same op number -> same committed entry, also when a log is replaced),
`commit_monotonic` (per replica incarnation, after every event), `durability` (no PrepareOk for
an op whose write is still in flight; a reply only for a committed op; a new primary's log holds
every op acknowledged in an earlier view; no installed log shorter than the commit number; a vote
(PrepareOk, or the primary counting itself) only for ops whose writes completed; a DoViewChange
never lacks an op the replica voted for in its last normal view), `view_promise` (a replica never
persists a lower view than it persisted before, unless its disk was lost: it may have promised
it) and `convergence` (same state hash after the same op, and across the core at the end).
Messages are sealed with a checksum here (`voprd.sim.checksum`), verified by `VsrServer` for its
replica and by the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from voprd.sim.checksum import seal, unseal
from voprd.sim.storage import SUPERBLOCK_COPIES, seal_sector, superblock_address, unseal_sector
from voprd.sim.system import (
    Damaged,
    Disk,
    Env,
    Message,
    Output,
    Recovery,
    System,
    Violation,
)
from voprd.systems.vsr.bugs import BUGS
from voprd.systems.vsr.client import Client, Workload
from voprd.systems.vsr.messages import (
    BODY_EVICTED,
    MESSAGE_NAMES,
    PREPARE_OK,
    RECOVERY,
    Entry,
    Operation,
    decode_entry,
    describe,
    encode_entry,
    entry_valid,
)
from voprd.systems.vsr.replica import (
    HOLE_EMPTY,
    HOLE_VIEW,
    LOST_LOG,
    NORMAL,
    STATUS_NAMES,
    UNKNOWN,
    Head,
    Replica,
)
from voprd.systems.vsr.state_machine import Result

# The protocol paths a seed may exercise (`Env.cover`, the seed's coverage).
COVERAGE_PATHS: tuple[str, ...] = (
    "view_change",  # a new primary installed the log of a DoViewChange quorum
    "start_view",  # a backup installed a StartView log
    "state_transfer",  # a backup fetched the primary's log after its commit number
    "recovery",  # a replica with a damaged log adopted the log of the recovery protocol
    "damaged_restart",  # a restart found a damaged log (and ran the recovery protocol)
    "repair",  # a backup appended entries from an ENTRIES reply
    "log_replaced",  # an install rewrote entries the replica held (not only appended)
    "chain_mismatch",  # an entry from the primary did not chain: divergence, repaired
    "transfer_mismatch",  # a state-transfer entry did not chain to the committed prefix
    "log_rejected",  # an installed log (StartView, DoViewChange, recovery) did not chain
    "repair_backoff",  # repair requests reached the longest backoff
    "hole_repair",  # a restart found damaged sectors known by checksum and repaired them first
    "sector_repair",  # a sector that failed to read or verify was fetched by checksum
    "write_retry",  # a log write failed and was retried
)


# The superblock: (view, last normal view, lnv_base, head of the log installed with the last
# normal view). Last normal view -1 marks a replica that lost its log (an empty disk): until it
# has recovered, a restart must not take its (empty) log for a valid one.
Superblock = tuple[int, int, int, Head]
SUPERBLOCK_FORMATTED: Superblock = (0, 0, -1, (0, 0))
# A copy at rest: (sequence number, *Superblock), sealed with its copy's address.
_superblock_decoder = msgspec.msgpack.Decoder(tuple[int, int, int, int, tuple[int, int]])


def write_superblock(disk: Disk, superblock: Superblock, seq: int, copies: int) -> None:
    """Write the superblock's copies one at a time (a crash tears at most the one in progress).
    A crash that cut the previous write short may have left the newest version (the one that
    switched an install in) on a single copy: that copy is written last. Written over first, a
    crash tearing it would leave an older superblock over the installed log (seed 100355: the
    superblock of the unfinished install, with the log that replaced it). With two copies of it
    or more, one survives whichever copy a crash tears."""
    data = msgspec.msgpack.encode((seq, *superblock))
    held = [_read_copy(disk, copy) for copy in range(copies)]
    newest = max((found[0] for found in held if found is not None), default=None)
    holders = [c for c, found in enumerate(held) if found is not None and found[0] == newest]
    order = list(range(copies))
    if len(holders) == 1 and copies > 1:
        order.remove(holders[0])
        order.append(holders[0])
    for copy in order:
        disk.write_superblock(seal_sector(superblock_address(copy), data), copy)


def _read_copy(disk: Disk, copy: int) -> tuple[int, int, int, int, tuple[int, int]] | None:
    """Superblock copy `copy` if it verifies: (sequence number, *Superblock)."""
    data = unseal_sector(superblock_address(copy), disk.read_superblock(copy))
    if data is None or isinstance(data, Damaged):
        return None
    try:
        return _superblock_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def read_superblock(
    disk: Disk, copies: int, *, newest: bool = True
) -> tuple[Superblock | None, int, bool]:
    """The newest copy that verifies (`newest`; else the first): (superblock, its sequence
    number, blank). None if no copy verifies; blank if no copy was ever written (an empty
    disk)."""
    best: tuple[int, int, int, int, tuple[int, int]] | None = None
    blank = True
    for copy in range(copies):
        if disk.read_superblock(copy) is not None:
            blank = False
        found = _read_copy(disk, copy)
        if found is None:
            continue
        if best is None or (newest and found[0] > best[0]):
            best = found
    if best is None:
        return None, 0, blank
    seq, view, last_normal_view, lnv_base, head = best
    return (view, last_normal_view, lnv_base, head), seq, False


def hole(op: int, checksum: int, empty: bool = False) -> Entry:
    """A log position whose sector is damaged, its entry known by its checksum (the next entry
    names it as parent, or the superblock as head; `UNKNOWN` until the hole above it is
    repaired): repaired from the other replicas after the restart. `empty`: the sector read
    back nothing (a gap a misplaced entry names), not something that failed."""
    return (op, HOLE_VIEW, HOLE_EMPTY if empty else -1, -1, BODY_EVICTED, checksum)


def load_log(
    disk: Disk, superblock: Superblock, *, verify: bool = True
) -> tuple[list[Entry], bool]:
    """Read the log back: (log, damaged) (see `read_log`)."""
    log, why = read_log(disk, superblock, verify=verify)
    return log, bool(why)


def read_log(
    disk: Disk, superblock: Superblock, *, verify: bool = True, truncate: bool = True
) -> tuple[list[Entry], str]:
    """Read the log back: (log, why it is damaged, or "").

    Sectors are read from op 1 up to the first gap; a gap ends the log (later sectors were written
    but never acknowledged: writes lost at a crash) unless a misplaced entry seen before names it
    (a misdirected write: the sector kept nothing, the data landed elsewhere). A sector verifies on
    its own (decoding, position, its checksum with its stored parent). The log is then checked
    from its end backwards: each entry must be the parent its successor names; the entry at the
    head the superblock records must be that head, and entries after it must be of the last
    normal view (so a stale sector left by a lost write is caught). A sector that fails
    becomes a `hole`, repaired by checksum after the restart: its checksum is known from its
    successor (or the head), or learned when the hole above it is repaired (-1 until then). The
    log is damaged (returned: its verified prefix) when that cannot work: its last entry is lost,
    it is shorter than the head, or a write went astray past its end."""
    _, last_normal_view, _, (head_op, head_checksum) = superblock
    if last_normal_view == LOST_LOG:
        return [], "lost"
    sectors: list[tuple[Entry, int] | None] = []
    astray: set[int] = set()
    empty: set[int] = set()  # gaps read past (a misplaced entry names them)
    slot = 1
    while True:
        data = disk.read(slot)
        if data is None:
            if slot not in astray:
                break
            empty.add(slot)
        found = None if data is None or isinstance(data, Damaged) else decode_entry(data)
        if found is not None:
            if found[0][0] != slot:
                astray.add(found[0][0])  # a write meant for another sector
                found = None
            elif verify and not entry_valid(*found):
                found = None
        sectors.append(found)
        slot += 1
    end = len(sectors)
    log: list[Entry] = []
    why = ""
    if astray and max(astray) > end:
        why = f"op {max(astray)}'s write went astray"
    elif head_op > end:
        why = f"log ends at {end}, before its head {head_op}"
    expected: int | None = None
    for k in range(end, 0, -1):
        if why:
            break
        if k == head_op:
            if expected is not None and expected != head_checksum:
                why = f"op {k + 1} does not chain to the head"
                break
            expected = head_checksum
        found = sectors[k - 1]
        good = found is not None and (k <= head_op or found[0][1] == last_normal_view)
        if found is not None and good and (expected is None or found[0][5] == expected):
            log.append(found[0])
            expected = found[1]
        elif k == end and expected is None:
            why = f"op {k} lost"  # the last entry: nothing names it
        else:
            log.append(hole(k, UNKNOWN if expected is None else expected, k in empty))
            expected = None
    if not why and expected not in (None, 0):
        why = "op 1 does not start the chain"
    if why:
        return _verified_prefix(sectors, last_normal_view, head_op, head_checksum), why
    log.reverse()
    if truncate:  # what lies past the log is junk of an unfinished write (a restart's read)
        disk.truncate(end)
    return log, ""


def _verified_prefix(
    sectors: list[tuple[Entry, int] | None], last_normal_view: int, head_op: int,
    head_checksum: int,
) -> list[Entry]:
    """The longest prefix that verifies from the start of the chain (recovery keeps it)."""
    log: list[Entry] = []
    parent = 0
    for k, found in enumerate(sectors, start=1):
        if (
            found is None or found[1] != parent
            or (k > head_op and found[0][1] != last_normal_view)
            or (k == head_op and found[0][5] != head_checksum)
        ):
            break
        log.append(found[0])
        parent = found[0][5]
    return log


class VsrServer:
    """One replica incarnation as the engine drives it; checks `commit_monotonic` after every
    event it handles."""

    __slots__ = ("checksums", "cluster", "commit_seen", "recovered", "replica")

    def __init__(self, cluster: VsrCluster, replica: Replica) -> None:
        self.cluster = cluster
        self.replica = replica
        self.checksums = "skip_message_checksum" not in cluster.env.bugs
        self.commit_seen = 0
        self.recovered: tuple[list[Entry], Superblock, bool] | None = None

    def on_message(self, msg: Message) -> None:
        # The replica's message bus: verify the checksum, drop a corrupted message (as lost).
        if self.checksums:
            verified = unseal(msg)
            if verified is None:
                return
            msg = verified
        else:
            msg = msg[:-1]  # the planted bug: the checksum stripped unchecked
        replica = self.replica
        replica.on_message(msg)
        if replica.commit < self.commit_seen:
            self._regressed()
        self.commit_seen = replica.commit

    def on_tick(self) -> None:
        replica = self.replica
        replica.on_tick()
        if replica.commit < self.commit_seen:
            self._regressed()
        self.commit_seen = replica.commit

    def on_write_done(self, slot: int, ok: bool) -> None:
        replica = self.replica
        self.cluster.write_done(replica.rid, slot)
        replica.on_write_done(slot, ok)
        if replica.commit < self.commit_seen:
            self._regressed()
        self.commit_seen = replica.commit

    def restart(self) -> None:
        assert self.recovered is not None
        log, (view, last_normal_view, _, head), damaged = self.recovered
        self.recovered = None
        self.replica.restart(log, view, last_normal_view, damaged, head)
        self.commit_seen = self.replica.commit

    def _regressed(self) -> None:
        raise Violation(
            "commit_monotonic",
            f"replica r{self.replica.rid} commit number went from {self.commit_seen} to "
            f"{self.replica.commit}",
        )


class VsrCluster:
    """One run of the VSR cluster: makes replicas and clients, is their IO, checks invariants."""

    def __init__(self, env: Env, replica_class: type[Replica]) -> None:
        self.env = env
        self.n = n = env.replicas
        self.replica_class = replica_class
        self.env_send = env.send
        self.disks = [env.disk(r) for r in range(n)]
        self.workload = Workload(env.stream("workload"), env.clients)
        # Invariant state: per op number, the committed entry checksum and state hash.
        self.committed: list[int] = []
        self.state_hashes: list[int] = []
        self.acked: dict[int, int] = {}
        # Op number -> the lowest view in which a primary committed it (a primary replies to the
        # client in the view it commits in): a new primary of a later view must hold it.
        self.commit_views: dict[int, int] = {}
        # Per recovering replica: how many ops the cluster had committed when it began recovering
        # (its first RECOVERY); the log it recovers with must hold all of them.
        self.recovery_floor: dict[int, int] = {}
        # Per replica: slot -> writes issued and not yet completed (as the harness sees them,
        # whatever the replica believes).
        self.unsynced: list[dict[int, int]] = [{} for _ in range(n)]
        # Entry checksum -> its bytes at rest (each entry is written on every replica, and
        # checksums identify entries: see voprd.systems.vsr.messages).
        self.encoded: dict[int, bytes] = {}
        # Entry checksum -> (the entry, its parent's checksum), once verified (log_chain).
        self.parents: dict[int, tuple[Entry, int]] = {}
        self.cover = env.cover
        # The storage layer of each replica: superblock copies and the next sequence number (the
        # newest copy's, read back at a restart).
        self.superblock_copies = 1 if "superblock_single_copy" in env.bugs else SUPERBLOCK_COPIES
        self.superblock_seq = [0] * n
        # Invariant state for votes: per replica, the latest vote (replica object, view, op) whose
        # ops were checked durable, and the highest (view, op, checksum) it ever voted for.
        self.voted: dict[int, tuple[Replica, int, int]] = {}
        self.promised: dict[int, tuple[int, int, int]] = {}
        # The highest view each replica persisted (promised not to go below), until its disk is
        # lost.
        self.view_promised = [0] * n

    def _replica(self, r: int) -> Replica:
        server: VsrServer | None = self.env.nodes[r]
        assert server is not None, f"r{r} is down"
        return server.replica

    def _new_replica(self, r: int, incarnation: int) -> Replica:
        env = self.env
        return self.replica_class(r, self.n, self, env.stream(f"replica.{r}.{incarnation}"),
                                  env.bugs, env.timeout_base_ticks, self.workload.clients_max)

    # ---- the engine's Cluster hooks ------------------------------------------------------
    def start_server(self, index: int) -> VsrServer:
        self._write_superblock(index, SUPERBLOCK_FORMATTED)  # the cluster is formed: format
        return VsrServer(self, self._new_replica(index, 0))

    def restart_server(self, index: int, incarnation: int) -> tuple[VsrServer, Recovery]:
        self.unsynced[index].clear()  # the crash lost (or landed) every write in flight
        self.recovery_floor.pop(index, None)  # a recovery cut short by the crash: starts again
        log, superblock, damaged, why = self._read_back(index)
        server = VsrServer(self, self._new_replica(index, incarnation))
        server.recovered = (log, superblock, damaged)
        detail = f"log ops={len(log)} damaged={damaged} view={superblock[0]}{why}"
        return server, Recovery(len(log), damaged, detail)

    def _read_back(
        self, index: int, truncate: bool = True
    ) -> tuple[list[Entry], Superblock, bool, str]:
        """The superblock and log on replica `index`'s disk: (log, superblock, damaged, note).
        `truncate`: cut the disk at the log's end (a restart); a re-read the replica may still
        refuse leaves the disk as it is, so a refused re-read destroys no evidence."""
        disk = self.disks[index]
        bugs = self.env.bugs
        superblock, seq, blank = read_superblock(
            disk, self.superblock_copies, newest="superblock_first_copy" not in bugs
        )
        self.superblock_seq[index] = seq
        if blank:
            self.view_promised[index] = 0  # its disk was lost (or it is new): promises with it
        if superblock is not None:
            log, why = read_log(disk, superblock, verify="log_unverified_read" not in bugs,
                                truncate=truncate)
            holes = sum(entry[4] is BODY_EVICTED for entry in log)
            note = f" ({why})" if why else f" ({holes} to repair)" if holes else ""
            return log, superblock, bool(why), note
        if ("empty_disk_rejoins" in bugs and blank) or (
            "superblock_single_copy" in bugs and not blank
        ):
            # The planted bugs: a blank (or unreadable) disk taken for a new member's.
            disk.truncate(0)
            self._write_superblock(index, SUPERBLOCK_FORMATTED)
            return [], SUPERBLOCK_FORMATTED, False, " (formatted as new)"
        # A lost disk, a late join (or every superblock copy damaged): recover from nothing.
        return [], (0, LOST_LOG, -1, (0, 0)), True, " (empty disk)" if blank else " (no superblock)"

    def client(self, index: int, budget: int) -> Client:
        return Client(self.n + index, self.n, self, self.env.stream(f"client.{index}"),
                      self.workload, budget)

    def restart_client(self, index: int, incarnation: int, budget: int) -> Client:
        # A new session, request numbers from 1 again (the planted bug keeps the old session).
        session = 0 if "client_session_reuse" in self.env.bugs else incarnation
        return Client(self.n + index, self.n, self,
                      self.env.stream(f"client.{index}.{incarnation}"), self.workload, budget,
                      session)

    def on_return(self, client: int, index: int, output: Output, tag: int) -> None:
        op = tag
        if op > 0:
            if op > len(self.committed):
                raise Violation(
                    "durability", f"client got a reply for op {op}, which no replica committed"
                )
            self.acked[op] = self.committed[op - 1]

    def converged(self, core: tuple[int, ...]) -> str | None:
        nodes = self.env.nodes
        states: list[Replica] = []
        for r in core:
            server: VsrServer | None = nodes[r]
            if server is None or server.replica.status != NORMAL:
                return f"r{r} is not in normal status"
            states.append(server.replica)
        first = states[0]
        for rep in states:
            if rep.view != first.view:
                return "core replicas are in different views"
            if rep.commit != len(rep.log) or rep.commit != first.commit:
                return f"commit numbers differ ({[s.commit for s in states]})"
        for rep in states:
            if rep.kv.state_hash != first.kv.state_hash:
                raise Violation(
                    "convergence",
                    f"core replicas r{first.rid} and r{rep.rid} committed {first.commit} ops "
                    "but their states differ",
                )
        for op, checksum in self.acked.items():
            if op > len(first.log) or first.log[op - 1][5] != checksum:
                raise Violation("durability", f"acknowledged op {op} missing after convergence")
        return None

    # ---- ReplicaIO and ClientIO: the network ------------------------------------------------
    def send(self, src: int, dst: int, msg: Message) -> None:
        if msg[0] == PREPARE_OK and msg[3] in self.unsynced[src]:
            raise Violation(
                "durability",
                f"replica r{src} acknowledged op {msg[3]} (PrepareOk) while its write of that "
                "op was still in flight",
            )
        if msg[0] == RECOVERY and src not in self.recovery_floor:
            self.recovery_floor[src] = len(self.committed)
        self.env_send(src, dst, seal(msg))  # every message carries its checksum

    def monotonic_us(self, replica: int) -> int:
        return self.env.monotonic_us(replica)

    def wall_clock_us(self, replica: int) -> int:
        return self.env.wall_clock_us(replica)

    # ---- ReplicaIO: storage --------------------------------------------------------------
    def disk_write(self, replica: int, entry: Entry, parent: int, commit: int) -> None:
        self._check_chain(replica, entry, parent)
        data = self.encoded.get(entry[5])
        if data is None:
            data = self.encoded[entry[5]] = encode_entry(entry, parent)
        # Committed entries are never rewritten: the only sectors a misdirected write may hit.
        self.disks[replica].write(entry[0], data, commit)
        unsynced = self.unsynced[replica]
        unsynced[entry[0]] = unsynced.get(entry[0], 0) + 1

    def write_done(self, replica: int, slot: int) -> None:
        unsynced = self.unsynced[replica]
        count = unsynced.get(slot, 0)
        if count > 1:
            unsynced[slot] = count - 1
        else:
            unsynced.pop(slot, None)

    def entry_chains(self, entry: Entry, parent: int) -> bool:
        """`entry_valid(entry, parent)`, memoized for the run: each entry is hashed once, however
        many replicas verify it (a pure function of the entry; the protocol is unchanged)."""
        known = self.parents.get(entry[5])
        if known is not None and (known[0] is entry or known[0] == entry):
            return known[1] == parent
        if entry_valid(entry, parent):
            self.parents[entry[5]] = (entry, parent)
            return True
        return False

    def _check_chain(self, replica: int, entry: Entry, parent: int) -> None:
        """log_chain: the entry follows the replica's previous one (whose checksum is `parent`)."""
        op = entry[0]
        if self.entry_chains(entry, parent):
            return
        raise Violation(
            "log_chain",
            f"replica r{replica} wrote op {op} (view {entry[1]}, c{entry[2] - self.n}#{entry[3]}) "
            f"after an op {op - 1} it does not chain to: its log is not a hash chain (it "
            "diverged from the log the entry came from)",
        )

    def disk_truncate(self, replica: int, op_count: int) -> None:
        self.disks[replica].truncate(op_count)  # cancels the writes in flight past it
        unsynced = self.unsynced[replica]
        for slot in [s for s in unsynced if s > op_count]:
            del unsynced[slot]

    def disk_read(self, replica: int, op: int) -> bytes | Damaged | None:
        return self.disks[replica].read(op)

    def persist(
        self, replica: int, view: int, last_normal_view: int, lnv_base: int, head: Head
    ) -> None:
        disk = self.disks[replica]
        if lnv_base < 0:
            # The install (if any) is complete: the first superblock copy written intact switches
            # it in, so a crash leaves the previous log with the previous superblock or the new
            # log with the new one.
            disk.end_atomic()
        self._write_superblock(replica, (view, last_normal_view, lnv_base, head))
        if lnv_base >= 0:
            disk.begin_atomic()  # the install is unfinished: a restart reads the previous log
        if view < self.view_promised[replica]:
            raise Violation(
                "view_promise",
                f"replica r{replica} went back to view {view} after persisting view "
                f"{self.view_promised[replica]} (a promise not to take part in lower views)",
            )
        self.view_promised[replica] = view

    def _write_superblock(self, replica: int, superblock: Superblock) -> None:
        self.superblock_seq[replica] += 1
        write_superblock(self.disks[replica], superblock, self.superblock_seq[replica],
                         self.superblock_copies)

    def reload(self, replica: int) -> tuple[list[Entry], Superblock] | None:
        log, superblock, damaged, _ = self._read_back(replica, truncate=False)
        return None if damaged else (log, superblock)

    # ---- ReplicaIO: invariants -----------------------------------------------------------
    def on_vote(self, replica: int, view: int, op: int) -> None:
        """A replica votes for ops 1..op in `view` (PrepareOk, or a primary counting itself):
        each of them must be on its disk (a write of it completed), and it promises to keep them
        (checked at its next DoViewChange)."""
        rep = self._replica(replica)
        log = rep.log
        start = 1
        last = self.voted.get(replica)
        if last is not None and last[0] is rep and last[1] == view:
            start = last[2] + 1
        written = self.disks[replica].written
        encoded = self.encoded
        for k in range(start, op + 1):
            if written(k) != encoded.get(log[k - 1][5]):
                raise Violation(
                    "durability",
                    f"replica r{replica} voted for op {op} in view {view}, but its write of op "
                    f"{k} never completed",
                )
        if start <= op:
            self.voted[replica] = (rep, view, op)
        promised = self.promised.get(replica)
        if promised is None or (view, op) > promised[:2]:
            self.promised[replica] = (view, op, log[op - 1][5])

    def on_do_view_change(
        self, replica: int, view: int, last_normal_view: int, log: tuple[Entry, ...]
    ) -> None:
        self._check_promise(replica, last_normal_view, log, f"sent DoViewChange for view {view}")

    def on_resume(self, replica: int) -> None:
        rep = self._replica(replica)
        self._check_promise(replica, rep.last_normal_view, rep.log, "resumed after a restart")

    def _check_promise(
        self, replica: int, last_normal_view: int, log: tuple[Entry, ...] | list[Entry],
        action: str,
    ) -> None:
        """A replica that takes part with a log (last normal view, ops) keeps every op it voted
        for in that view (a log of a later view supersedes them)."""
        promised = self.promised.get(replica)
        if promised is None:
            return
        voted_view, op, checksum = promised
        if last_normal_view < voted_view or (
            last_normal_view == voted_view and (len(log) < op or log[op - 1][5] != checksum)
        ):
            raise Violation(
                "durability",
                f"replica r{replica} {action} with last normal view {last_normal_view} and "
                f"{len(log)} ops, but it had voted for op {op} in view {voted_view}: an "
                "acknowledged op was lost",
            )

    def on_commit(self, replica: int, entry: Entry, state_hash: int) -> None:
        op = entry[0]
        env = self.env
        detail = f"op={op} c{entry[2] - self.n}#{entry[3]} {entry[4]!r}" if env.record_trace else ""
        env.note(replica, "commit", op, entry[5] & 0xFFFFFFFF, detail)
        rep = self._replica(replica)
        if rep.status == NORMAL and rep.is_primary():
            views = self.commit_views
            if views.get(op, rep.view + 1) > rep.view:
                views[op] = rep.view
        committed = self.committed
        if op <= len(committed):
            if committed[op - 1] != entry[5]:
                raise Violation(
                    "agreement",
                    f"replica r{replica} committed op {op} = c{entry[2] - self.n}#{entry[3]} "
                    f"{entry[4]!r}, but another replica committed a different operation there",
                )
            if self.state_hashes[op - 1] != state_hash:
                raise Violation(
                    "convergence",
                    f"replica r{replica} state after op {op} differs from another replica's",
                )
        else:
            assert op == len(committed) + 1, (op, len(committed))
            committed.append(entry[5])
            self.state_hashes.append(state_hash)

    def on_status(self, replica: int) -> None:
        rep = self._replica(replica)
        detail = (f"{STATUS_NAMES[rep.status]} view={rep.view} ops={len(rep.log)}"
                  if self.env.record_trace else "")
        self.env.note(replica, "status", rep.view, rep.status, detail)

    def on_log_installed(self, replica: int, as_primary: bool) -> None:
        rep = self._replica(replica)
        log = rep.log
        detail = (f"view={rep.view} ops={len(log)} primary={as_primary}"
                  if self.env.record_trace else "")
        self.env.note(replica, "log_installed", len(log), int(as_primary), detail)
        if rep.commit > len(log):
            raise Violation(
                "durability",
                f"replica r{replica} installed a log of {len(log)} ops in view {rep.view} but had "
                f"committed {rep.commit}: committed operations were lost",
            )
        committed = self.committed
        for op in range(1, min(len(log), len(committed)) + 1):
            if op <= rep.commit and log[op - 1][5] != committed[op - 1]:
                raise Violation(
                    "agreement",
                    f"replica r{replica} replaced committed op {op} at view {rep.view}",
                )
        if as_primary:
            # Every op acknowledged in an earlier view (a primary of an older view may still form
            # from late DoViewChanges, after a later view committed more: it can commit nothing).
            views = self.commit_views
            for op, checksum in self.acked.items():
                if views.get(op, 0) < rep.view and (op > len(log) or log[op - 1][5] != checksum):
                    raise Violation(
                        "durability",
                        f"new primary r{replica} of view {rep.view} lacks acknowledged op {op} "
                        f"(log has {len(log)} ops)",
                    )

    def on_recovered(self, replica: int) -> None:
        """The recovery protocol's promise: its quorum of answers includes the primary of the
        latest view, whose log holds every op committed before the recovery began (the first
        RECOVERY of this incarnation: an attempt given up for a re-read of the disk leaves an
        earlier, weaker floor)."""
        floor = self.recovery_floor.pop(replica, 0)
        rep = self._replica(replica)
        log, committed = rep.log, self.committed
        for op in range(1, floor + 1):
            if op > len(log) or log[op - 1][5] != committed[op - 1]:
                raise Violation(
                    "durability",
                    f"replica r{replica} recovered in view {rep.view} with {len(log)} ops, "
                    f"lacking op {op}, committed before its recovery began",
                )

    def on_bound(self, name: str) -> None:
        self.env.bound(name)

    # ---- ClientIO ------------------------------------------------------------------------
    def history_call(self, client: int, operation: Operation) -> int:
        name, key, value, expected = operation
        return self.env.history_call(client, name, key, value, expected)  # type: ignore[arg-type]

    def history_return(self, index: int, result: Result, op: int) -> None:
        self.env.history_return(index, result, op, f"op {op}")

    def on_client_retry(self, client: int, request: int) -> None:
        self.env.note(client, "retry", request, 0, f"request #{request} timed out, resend to all")


class VsrSystem(System):
    """Viewstamped Replication (Liskov & Cowling 2012) with a KV state machine."""

    name = "vsr"
    bugs = BUGS
    model = "kv"
    message_names = MESSAGE_NAMES
    cluster_sizes = (1, 2, 3, 4, 5, 6)  # quorums are majorities: they intersect for even n too
    message_checksums = True
    coverage_paths = COVERAGE_PATHS
    # Numbered before the engine and the systems were split (kept: the trace hashes cover it).
    trace_kinds: Mapping[str, int] = MappingProxyType({"log_installed": 29})

    def __init__(self, replica_class: type[Replica] = Replica) -> None:
        self.replica_class = replica_class

    def start(self, env: Env) -> VsrCluster:
        return VsrCluster(env, self.replica_class)

    def describe_message(self, msg: Message) -> str:
        return describe(msg)

    def describe_write(self, slot: int, landed: int, ok: bool) -> str:
        return f"op={slot} slot={landed} ok={ok}"

    def report_event(
        self, kind: str, node: int, detail: str, memo: dict[Any, Any]
    ) -> tuple[str, str] | None:
        if kind != "status":
            return kind, detail
        status, _, rest = detail.partition(" ")
        view = rest.split(" ", 1)[0]
        # A view change ends when the replica is normal in a new view: that is the diamond.
        if status == "normal":
            if memo.get(node) == view:
                return None
            memo[node] = view
            return "view_change", view.replace("=", " ") + ", " + rest
        if status == "view_change":
            return "view_change_start", rest
        return status, rest
