"""The builtin system: the VSR cluster of this package plugged into the simulation engine.

`VsrSystem` describes it (planted bugs, the `kv` model, its messages, its trace kind
`log_installed`). `VsrCluster` is one run's harness: the replicas' `ReplicaIO` and the clients'
`ClientIO`. It stores log entries on the engine's disks as bytes (`encode_entry`) and reads them
back at a restart, verifying positions and the hash chain, and it checks the invariants:
`log_chain` (every entry a replica writes chains to the entry before it in its log: a backup never
holds a log that diverged from the primary's), `agreement` (same op number -> same committed
entry, also when a log is replaced),
`commit_monotonic` (per replica incarnation, after every event), `durability` (no PrepareOk for
an op whose write is still in flight; a reply only for a committed op; a new primary's log holds
every op acknowledged in an earlier view; no installed log shorter than the commit number),
`convergence` (same state hash after the same op, and across the core at the end) and
`view_monotonic` (a replica never goes back below a view it persisted: it may have promised
it). Messages are sealed with a checksum here (`voprd.sim.checksum`), verified by `VsrServer`
for its replica and by the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from voprd.sim.checksum import seal, unseal
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
    MESSAGE_NAMES,
    PREPARE_OK,
    Entry,
    Operation,
    decode_entry,
    describe,
    encode_entry,
    entry_valid,
)
from voprd.systems.vsr.replica import NORMAL, STATUS_NAMES, Replica
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
)


# The superblock at rest: (view, last normal view, lnv_base); never written: (0, 0, -1).
Superblock = tuple[int, int, int]
_superblock_decoder = msgspec.msgpack.Decoder(Superblock)
SUPERBLOCK_EMPTY: Superblock = (0, 0, -1)


def load_log(disk: Disk) -> tuple[list[Entry], bool]:
    """Read the log back. Returns (valid prefix, damaged). A gap ends the log (later sectors were
    never acknowledged, so they are dropped); a sector that fails verification (the engine's
    checksum, its position, or the hash chain) marks the log damaged."""
    log: list[Entry] = []
    parent = 0
    damaged = False
    slot = 1
    while True:
        data = disk.read(slot)
        if data is None:
            break
        entry = None if isinstance(data, Damaged) else decode_entry(data)
        if entry is None or entry[0] != slot or not entry_valid(entry, parent):
            damaged = True
            break
        log.append(entry)
        parent = entry[5]
        slot += 1
    if not damaged:
        disk.truncate(len(log))
    return log, damaged


def read_superblock(disk: Disk) -> Superblock:
    data = disk.read_superblock()
    return SUPERBLOCK_EMPTY if data is None else _superblock_decoder.decode(data)


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
        log, (view, last_normal_view, _), damaged = self.recovered
        self.recovered = None
        self.replica.restart(log, view, last_normal_view, damaged)
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
        # Per replica: slot -> writes issued and not yet completed (as the harness sees them,
        # whatever the replica believes).
        self.unsynced: list[dict[int, int]] = [{} for _ in range(n)]
        # Per replica: the highest view it persisted (view_monotonic).
        self.views = [0] * n
        # Entry checksum -> its bytes at rest (each entry is written on every replica, and
        # checksums identify entries: see voprd.systems.vsr.messages).
        self.encoded: dict[int, bytes] = {}
        # Entry checksum -> (the entry, its parent's checksum), once verified (log_chain).
        self.parents: dict[int, tuple[Entry, int]] = {}
        self.cover = env.cover

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
        return VsrServer(self, self._new_replica(index, 0))

    def restart_server(self, index: int, incarnation: int) -> tuple[VsrServer, Recovery]:
        self.unsynced[index].clear()  # the crash lost (or landed) every write in flight
        disk = self.disks[index]
        log, damaged = load_log(disk)
        superblock = read_superblock(disk)
        self.views[index] = superblock[0]  # the view it may have promised: never below it
        server = VsrServer(self, self._new_replica(index, incarnation))
        server.recovered = (log, superblock, damaged)
        detail = f"log ops={len(log)} damaged={damaged} view={superblock[0]}"
        return server, Recovery(len(log), damaged, detail)

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
        self.env_send(src, dst, seal(msg))  # every message carries its checksum

    def monotonic_us(self, replica: int) -> int:
        return self.env.monotonic_us(replica)

    def wall_clock_us(self, replica: int) -> int:
        return self.env.wall_clock_us(replica)

    # ---- ReplicaIO: storage --------------------------------------------------------------
    def disk_write(self, replica: int, entry: Entry, commit: int) -> None:
        self._check_chain(replica, entry)
        data = self.encoded.get(entry[5])
        if data is None:
            data = self.encoded[entry[5]] = encode_entry(entry)
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

    def _check_chain(self, replica: int, entry: Entry) -> None:
        """log_chain: the entry follows the replica's previous one."""
        op = entry[0]
        log = self._replica(replica).log
        if self.entry_chains(entry, log[op - 2][5] if op > 1 else 0):
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

    def persist(self, replica: int, view: int, last_normal_view: int, lnv_base: int) -> None:
        if view < self.views[replica]:
            raise Violation(
                "view_monotonic",
                f"replica r{replica} went back to view {view} after persisting view "
                f"{self.views[replica]} (a view it may have promised to others)",
            )
        self.views[replica] = view
        disk = self.disks[replica]
        disk.write_superblock(msgspec.msgpack.encode((view, last_normal_view, lnv_base)))
        if lnv_base >= 0:
            disk.begin_atomic()  # the install is unfinished: a restart reads the previous log
        else:
            disk.end_atomic()

    # ---- ReplicaIO: invariants -----------------------------------------------------------
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
