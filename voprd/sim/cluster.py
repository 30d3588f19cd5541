"""The deterministic simulation of one seed: event loop, network, disks, nemesis, phases, checks.

A run is a pure function of (seed, options): one root PRNG split into named streams, virtual time
in integer microseconds, and a heap of `(time_us, sequence, kind, a, b)` tuples, the sequence
number breaking ties. Nothing reads the wall clock or iterates in hash order.
"""

from __future__ import annotations

import heapq
import traceback
from typing import Any

from voprd.check.history import HistoryOp
from voprd.options import RunOptions
from voprd.sim.faults import FaultPlan
from voprd.sim.prng import Streams
from voprd.sim.storage import Disk
from voprd.sim.trace import (
    KINDS,
    NODE_SIM,
    QUIET_KINDS,
    K,
    Record,
    Trace,
    build_trace,
    format_event,
    node_name,
    trace_hash,
)
from voprd.vsr.client import Client, Workload
from voprd.vsr.messages import (
    MESSAGE_NAMES,
    Entry,
    Message,
    Operation,
    describe,
    operation_text,
)
from voprd.vsr.replica import NORMAL, STATUS_NAMES, Replica
from voprd.vsr.state_machine import Result

TICK_US = 10_000
CLIENT_TICK_US = 10_000
NEMESIS_TICK_US = 10_000
SAFETY_TIME_US_MAX = 30_000_000
LIVENESS_TIME_US_MAX = 15_000_000
QUEUE_EVENTS_MAX = 200_000

EV_DELIVER, EV_TICK, EV_CLIENT_TICK, EV_DISK, EV_NEMESIS, EV_RESTART, EV_RESUME, EV_HEAL = range(8)
SAFETY, LIVENESS, DONE = 0, 1, 2

_K_DELIVER = K["deliver"]
_K_TICK = K["tick"]
_K_CLIENT_TICK = K["client_tick"]
_K_DISK = K["disk_write"]
_K_COMMIT = K["commit"]
_NO_PEER = NODE_SIM - 1


class Violation(Exception):
    """An invariant failed; carries the invariant name."""

    def __init__(self, invariant: str, message: str) -> None:
        super().__init__(message)
        self.invariant = invariant
        self.message = message


class Simulation:
    """Runs one seed. Implements ReplicaIO and ClientIO for the replicas and clients."""

    def __init__(self, seed: int, options: RunOptions, record_trace: bool = False) -> None:
        assert seed >= 0 and options.max_events >= 1
        self.seed = seed
        self.options = options
        self.streams = Streams(seed)
        self.plan = plan = FaultPlan(self.streams.stream("faults.plan"), options.faults, TICK_US)
        self.net_rng = self.streams.stream("network")
        self.disk_rng = self.streams.stream("storage")
        self.nemesis_rng = self.streams.stream("faults")
        self.bugs = frozenset(options.bugs)
        self.record_trace = record_trace
        self.n = n = plan.replicas
        self.nodes = n + plan.clients
        self.queue: list[tuple[int, int, int, int, Any]] = []
        self.seq = 0
        self.now = 0
        self.events = 0
        self.records: list[Record] = []
        self.details: list[str] = []
        self.peers: list[int] = []
        self.bounds: list[str] = []
        self.failure: tuple[str, str | None, str] | None = None
        self.phase = SAFETY
        self.liveness_deadline_us = 0
        self.core: tuple[int, ...] = ()
        self.fault_counts: dict[str, int] = {}
        # Network state.
        self.blocked = bytearray(self.nodes * self.nodes)
        self.inflight = [0] * (self.nodes * self.nodes)
        self.partition_id = 0
        self.partition_active = False
        # Replicas and disks.
        self.faulty = frozenset(plan.storage_faulty)
        self.disks = [Disk() for _ in range(n)]
        self.incarnation = [0] * n
        self.paused = [False] * n
        self.down_since_us = [-1] * n
        self.tick_us = [TICK_US + TICK_US * plan.drift_ppm[r] // 1_000_000 for r in range(n)]
        self.replicas: list[Replica | None] = [
            Replica(r, n, self, self.streams.stream(f"replica.{r}.0"), self.bugs,
                    plan.timeout_base_ticks)
            for r in range(n)
        ]
        # Invariant state: per op number, the committed entry checksum and state hash.
        self.committed: list[int] = []
        self.state_hashes: list[int] = []
        self.acked: dict[int, int] = {}
        self.commit_seen = [0] * n
        # Clients and history: [process, operation, call_us, return_us, output].
        self.history: list[list[Any]] = []
        workload = Workload(self.streams.stream("workload"))
        budgets = self._split_budget(plan.request_budget, plan.clients)
        self.clients = [
            Client(n + c, n, self, self.streams.stream(f"client.{c}"), workload, budgets[c])
            for c in range(plan.clients)
        ]

    # ---- scheduling -----------------------------------------------------------------------
    def _push(self, time_us: int, kind: int, a: int, b: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (time_us, self.seq, kind, a, b))

    def _note(self, node: int, kind: str, a: int = 0, b: int = 0, peer: int = _NO_PEER,
              detail: str = "") -> None:
        self.records.append((self.now, node, K[kind], a, b))
        if self.record_trace:
            self.details.append(detail)
            self.peers.append(peer)

    def _fault(self, node: int, kind: str, a: int = 0, b: int = 0, peer: int = _NO_PEER,
               detail: str = "") -> None:
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1
        self._note(node, kind, a, b, peer, detail)

    def _bound(self, name: str) -> None:
        if name not in self.bounds:
            self.bounds.append(name)
            self._note(NODE_SIM, "bound", len(self.bounds), 0, detail=name)

    @staticmethod
    def _split_budget(total: int, clients: int) -> list[int]:
        return [total // clients + (1 if c < total % clients else 0) for c in range(clients)]

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        self._note(NODE_SIM, "phase", SAFETY, 0, detail="safety " + plan.describe())
        for r in range(self.n):
            if plan.drift_ppm[r] or plan.offset_us[r]:
                self._fault(r, "clock_skew", plan.drift_ppm[r], plan.offset_us[r],
                            detail=f"drift={plan.drift_ppm[r]}ppm offset={plan.offset_us[r]}us")
            self._push(plan.offset_us[r] + 1, EV_TICK, r, 0)
        for c in range(len(self.clients)):
            self._push(1 + c, EV_CLIENT_TICK, c, None)
        self._push(NEMESIS_TICK_US, EV_NEMESIS, 0, None)
        try:
            self._loop()
        except Violation as violation:
            self.failure = ("invariant", violation.invariant, violation.message)
            self._note(NODE_SIM, "phase", DONE, 1, detail=f"violation {violation.invariant}")
        except Exception:
            self.failure = ("crash", None, traceback.format_exc())
            self._note(NODE_SIM, "phase", DONE, 2, detail="exception in replica code")

    def _loop(self) -> None:
        queue = self.queue
        pop = heapq.heappop
        push = heapq.heappush
        records = self.records
        record_trace = self.record_trace
        details = self.details
        peers = self.peers
        replicas = self.replicas
        clients = self.clients
        incarnation = self.incarnation
        paused = self.paused
        inflight = self.inflight
        commit_seen = self.commit_seen
        nodes = self.nodes
        n = self.n
        events_max = self.options.max_events
        events = self.events
        while queue and self.phase != DONE:
            if events >= events_max:
                self._bound("max_events")
                break
            time_us, _, kind, a, b = pop(queue)
            self.now = time_us
            events += 1
            self.events = events
            if kind == EV_DELIVER:
                src = b[1]
                inflight[src * nodes + a] -= 1
                records.append((time_us, a, _K_DELIVER, src, b[0]))
                if record_trace:
                    details.append(describe(b))
                    peers.append(src)
                if a < n:
                    replica = replicas[a]
                    if replica is None or paused[a]:
                        self._note(a, "drop_down", src, b[0], src, MESSAGE_NAMES[b[0]])
                        continue
                    replica.on_message(b)
                    if replica.commit < commit_seen[a]:
                        self._commit_regressed(a, replica)
                    commit_seen[a] = replica.commit
                else:
                    clients[a - n].on_reply(b)
            elif kind == EV_TICK:
                replica = replicas[a]
                if replica is None or incarnation[a] != b:
                    continue  # the timer chain of a crashed incarnation ends here
                records.append((time_us, a, _K_TICK, b, 0))
                if record_trace:
                    details.append("")
                    peers.append(_NO_PEER)
                self.seq += 1
                push(queue, (time_us + self.tick_us[a], self.seq, EV_TICK, a, b))
                if not paused[a]:
                    replica.on_tick()
                    if replica.commit < commit_seen[a]:
                        self._commit_regressed(a, replica)
                    commit_seen[a] = replica.commit
            elif kind == EV_CLIENT_TICK:
                records.append((time_us, n + a, _K_CLIENT_TICK, 0, 0))
                if record_trace:
                    details.append("")
                    peers.append(_NO_PEER)
                clients[a].on_tick(self.phase == SAFETY)
                self.seq += 1
                push(queue, (time_us + CLIENT_TICK_US, self.seq, EV_CLIENT_TICK, a, None))
            elif kind == EV_DISK:
                self._on_disk(a, b)
            elif kind == EV_NEMESIS:
                self._on_nemesis()
            elif kind == EV_RESTART:
                self._restart(a)
            elif kind == EV_RESUME:
                if paused[a]:
                    paused[a] = False
                    self._fault(a, "resume")
            elif kind == EV_HEAL and self.partition_active and self.partition_id == a:
                self._heal()

    def _commit_regressed(self, r: int, replica: Replica) -> None:
        raise Violation(
            "commit_monotonic",
            f"replica r{r} commit number went from {self.commit_seen[r]} to {replica.commit}",
        )

    # ---- network (ReplicaIO / ClientIO) ---------------------------------------------------
    def send(self, src: int, dst: int, msg: Message) -> None:
        nodes = self.nodes
        path = src * nodes + dst
        if self.blocked[path]:
            self._fault(src, "drop_partition", dst, msg[0], dst, describe(msg)
                        if self.record_trace else "")
            return
        plan = self.plan
        x = self.net_rng.next_u64()
        if (x & 0xFFFFF) < plan.loss_q20:
            self._fault(src, "drop_loss", dst, msg[0], dst,
                        describe(msg) if self.record_trace else "")
            return
        if self.inflight[path] >= plan.path_capacity:
            self._fault(src, "drop_capacity", dst, msg[0], dst,
                        describe(msg) if self.record_trace else "")
            return
        if len(self.queue) >= QUEUE_EVENTS_MAX:
            self._bound("queue_events")
            return
        delay_us = plan.delay_base_us + ((((x >> 20) & 0xFFFFF) * plan.delay_jitter_us) >> 20)
        if ((x >> 40) & 0xFFFFF) < plan.spike_q20:
            delay_us += self.net_rng.below(plan.spike_us_max) + 1
            self._fault(src, "delay_spike", dst, delay_us, dst)
        self.inflight[path] += 1
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay_us, self.seq, EV_DELIVER, dst, msg))
        if plan.dup_q20 and (self.net_rng.next_u64() & 0xFFFFF) < plan.dup_q20:
            self.inflight[path] += 1
            extra_us = self.net_rng.below(plan.delay_jitter_us + plan.delay_base_us + 1)
            self._push(self.now + delay_us + extra_us, EV_DELIVER, dst, msg)
            self._fault(src, "duplicate", dst, msg[0], dst)

    def _on_nemesis(self) -> None:
        self._push(self.now + NEMESIS_TICK_US, EV_NEMESIS, 0, None)
        self.records.append((self.now, NODE_SIM, K["nemesis"], self.phase, 0))
        if self.record_trace:
            self.details.append("")
            self.peers.append(_NO_PEER)
        if self.phase == LIVENESS:
            self._check_liveness()
            return
        if self.now >= SAFETY_TIME_US_MAX:
            self._bound("safety_time_limit")
            self._start_liveness()
            return
        plan = self.plan
        rng = self.nemesis_rng
        # One draw decides all three per-tick faults (20 bits each, probabilities in ppm).
        x = rng.next_u64()
        if plan.crash_ppm and (x & 0xFFFFF) * 1_000_000 < plan.crash_ppm << 20:
            up = [r for r in range(self.n) if self.replicas[r] is not None]
            # Crash where it hurts: half the time, prefer a replica with writes in flight.
            writing = [r for r in up if self.disks[r].pending]
            if writing and rng.below(2):
                self._crash(rng.pick(writing))
            elif up:
                self._crash(rng.pick(up))
        if plan.pause_ppm and ((x >> 20) & 0xFFFFF) * 1_000_000 < plan.pause_ppm << 20:
            up = [r for r in range(self.n) if self.replicas[r] is not None and not self.paused[r]]
            if up:
                r = rng.pick(up)
                self.paused[r] = True
                self._fault(r, "pause")
                self._push(self.now + rng.between(1_000, plan.pause_us_max), EV_RESUME, r, None)
        if (
            plan.partition_ppm and not self.partition_active
            and ((x >> 40) & 0xFFFFF) * 1_000_000 < plan.partition_ppm << 20
        ):
            self._partition()

    def _partition(self) -> None:
        rng = self.nemesis_rng
        nodes = self.nodes
        blocked = self.blocked
        style = rng.below(3) if self.n > 1 else 2
        if style == 2:
            victim = rng.below(self.n)
            for other in range(nodes):
                if other != victim:
                    blocked[victim * nodes + other] = 1
                    blocked[other * nodes + victim] = 1
            detail = f"isolate r{victim}"
        else:
            order = rng.shuffled(range(self.n))
            cut = rng.between(1, self.n - 1)
            side_a, side_b = order[:cut], order[cut:]
            for x in side_a:
                for y in side_b:
                    blocked[x * nodes + y] = 1
                    if style == 0:
                        blocked[y * nodes + x] = 1
            arrow = "<-/->" if style == 0 else "-/->"
            detail = f"{sorted(side_a)} {arrow} {sorted(side_b)}"
        self.partition_id += 1
        self.partition_active = True
        self._fault(NODE_SIM, "partition", style, self.partition_id, detail=detail)
        duration_us = rng.between(10_000, self.plan.partition_us_max)
        self._push(self.now + duration_us, EV_HEAL, self.partition_id, None)

    def _heal(self) -> None:
        self.blocked = bytearray(self.nodes * self.nodes)
        self.partition_active = False
        self._fault(NODE_SIM, "heal", self.partition_id)

    # ---- crash / restart ------------------------------------------------------------------
    def _crash(self, r: int) -> None:
        plan = self.plan
        disk = self.disks[r]
        torn: list[bool] = []
        if r in self.faulty and plan.torn_ppm:
            torn = [self.disk_rng.chance(plan.torn_ppm) for _ in disk.pending]
        lost = len(disk.pending)
        torn_slots = disk.crash(torn)
        self.replicas[r] = None
        self.incarnation[r] += 1
        self.paused[r] = False
        self.commit_seen[r] = 0
        self._fault(r, "crash", lost, len(torn_slots), detail=f"unsynced writes lost={lost}")
        for slot in torn_slots:
            self._fault(r, "disk_torn", slot, detail=f"slot {slot}")
        delay_us = self.nemesis_rng.between(1_000, max(1_000, plan.restart_us_max))
        self._push(self.now + delay_us, EV_RESTART, r, None)

    def _restart(self, r: int) -> None:
        if self.replicas[r] is not None:
            return
        if self.phase == LIVENESS and r not in self.core:
            return  # outside the core, a crashed replica stays down in the liveness phase
        plan = self.plan
        disk = self.disks[r]
        corrupt: set[int] = set()
        if r in self.faulty and plan.read_corrupt_ppm and self.phase == SAFETY:
            for slot in range(1, disk.slot_max() + 1):
                if self.disk_rng.chance(plan.read_corrupt_ppm):
                    corrupt.add(slot)
                    self._fault(r, "disk_read_corrupt", slot, detail=f"slot {slot}")
        log, damaged = disk.load(corrupt)
        inc = self.incarnation[r]
        replica = Replica(r, self.n, self, self.streams.stream(f"replica.{r}.{inc}"), self.bugs,
                          plan.timeout_base_ticks)
        self.replicas[r] = replica
        self._fault(r, "restart", len(log), int(damaged),
                    detail=f"log ops={len(log)} damaged={damaged} view={disk.superblock[0]}")
        view, last_normal_view, _ = disk.superblock
        replica.restart(log, view, last_normal_view, damaged)
        self.commit_seen[r] = replica.commit
        self._push(self.now + 1 + self.plan.offset_us[r], EV_TICK, r, inc)

    # ---- storage (ReplicaIO) --------------------------------------------------------------
    def disk_write(self, replica: int, entry: Entry, commit: int) -> None:
        plan = self.plan
        rng = self.disk_rng
        low, high = plan.write_latency_us_min, plan.write_latency_us_max
        # One draw: 32 bits of latency, 20 bits for the write-error decision.
        x = rng.next_u64()
        latency_us = low + (((x & 0xFFFFFFFF) * (high - low + 1)) >> 32)
        slot = entry[0]
        ok = True
        healthy = self.phase != SAFETY and replica in self.core
        if (
            plan.write_error_ppm and not healthy
            and ((x >> 32) & 0xFFFFF) * 1_000_000 < plan.write_error_ppm << 20
        ):
            ok = False
            self._fault(replica, "disk_write_error", slot, detail=f"slot {slot}")
        elif (plan.misdirect_ppm and replica in self.faulty and min(commit, slot - 1) >= 1
              and not healthy and rng.chance(plan.misdirect_ppm)):
            # The atlas: the write lands on an earlier, committed, durable sector that nothing
            # will rewrite, so reading the log back meets the misplaced sector before the gap.
            target = rng.between(1, min(commit, slot - 1))
            disk = self.disks[replica]
            if target in disk.sectors and all(w[0] != target for w in disk.pending.values()):
                self._fault(replica, "disk_misdirect", slot, target,
                            detail=f"slot {slot} written to {target}")
                slot = target
        write_id = self.disks[replica].submit(slot, entry, ok)
        self._push(self.now + latency_us, EV_DISK, replica, (self.incarnation[replica], write_id))

    def _on_disk(self, r: int, b: tuple[int, int]) -> None:
        write = self.disks[r].complete(b[1])
        if write is None:
            return
        self.records.append((self.now, r, _K_DISK, write[1][0], int(write[2])))
        if self.record_trace:
            self.details.append(f"op={write[1][0]} slot={write[0]} ok={write[2]}")
            self.peers.append(_NO_PEER)
        replica = self.replicas[r]
        if replica is None or self.incarnation[r] != b[0]:
            return
        replica.on_write_done(write[1][0], write[2])
        if replica.commit < self.commit_seen[r]:
            self._commit_regressed(r, replica)
        self.commit_seen[r] = replica.commit

    def disk_truncate(self, replica: int, op_count: int) -> None:
        self.disks[replica].truncate(op_count)

    def persist(self, replica: int, view: int, last_normal_view: int, lnv_base: int) -> None:
        disk = self.disks[replica]
        disk.superblock = (view, last_normal_view, lnv_base)
        if lnv_base >= 0:
            disk.begin_install()
        else:
            disk.end_install()

    # ---- invariants (ReplicaIO) -----------------------------------------------------------
    def on_commit(self, replica: int, entry: Entry, state_hash: int) -> None:
        op = entry[0]
        self.records.append((self.now, replica, _K_COMMIT, op, entry[5] & 0xFFFFFFFF))
        if self.record_trace:
            self.details.append(f"op={op} c{entry[2] - self.n}#{entry[3]} {entry[4]!r}")
            self.peers.append(_NO_PEER)
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
        rep = self.replicas[replica]
        assert rep is not None
        self._note(replica, "status", rep.view, rep.status,
                   detail=f"{STATUS_NAMES[rep.status]} view={rep.view} ops={len(rep.log)}")

    def on_log_installed(self, replica: int, as_primary: bool) -> None:
        rep = self.replicas[replica]
        assert rep is not None
        log = rep.log
        self._note(replica, "log_installed", len(log), int(as_primary),
                   detail=f"view={rep.view} ops={len(log)} primary={as_primary}")
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
            for op, checksum in self.acked.items():
                if op > len(log) or log[op - 1][5] != checksum:
                    raise Violation(
                        "durability",
                        f"new primary r{replica} of view {rep.view} lacks acknowledged op {op} "
                        f"(log has {len(log)} ops)",
                    )

    def on_bound(self, name: str) -> None:
        self._bound(name)

    # ---- clients (ClientIO) ---------------------------------------------------------------
    def history_call(self, client: int, operation: Operation) -> int:
        self.history.append([client - self.n, operation, self.now, None, None])
        self._note(client, "call", len(self.history), 0, detail=operation_text(operation))
        return len(self.history) - 1

    def history_return(self, index: int, result: Result, op: int) -> None:
        record = self.history[index]
        record[3] = self.now
        record[4] = result
        self._note(record[0] + self.n, "return", index + 1, op,
                   detail=f"{operation_text(record[1])} -> {result!r} (op {op})")
        if op > 0:
            if op > len(self.committed):
                raise Violation(
                    "durability", f"client got a reply for op {op}, which no replica committed"
                )
            self.acked[op] = self.committed[op - 1]
        if self.phase == SAFETY and all(c.idle and c.budget == 0 for c in self.clients):
            self._start_liveness()

    def on_client_retry(self, client: int, request: int) -> None:
        self._note(client, "retry", request, detail=f"request #{request} timed out, resend to all")

    # ---- phases ---------------------------------------------------------------------------
    def _start_liveness(self) -> None:
        """Heal a quorum core: restart and reconnect it, stop storage faults on it."""
        assert self.phase == SAFETY
        self.phase = LIVENESS
        quorum = (self.n - 1) // 2 + 1
        healthy = [r for r in range(self.n) if r not in self.faulty]
        order = self.nemesis_rng.shuffled(healthy)
        self.core = tuple(sorted(order[:quorum]))
        assert len(self.core) == quorum
        self.liveness_deadline_us = self.now + LIVENESS_TIME_US_MAX
        self._note(NODE_SIM, "phase", LIVENESS, len(self.core),
                   detail=f"liveness core={[f'r{r}' for r in self.core]}")
        if self.partition_active:
            self._heal()
        plan = self.plan
        plan.loss_q20 = plan.dup_q20 = plan.spike_q20 = 0
        plan.path_capacity = 1 << 30
        for r in self.core:
            if self.paused[r]:
                self.paused[r] = False
                self._fault(r, "resume")
            if self.replicas[r] is None:
                self._restart(r)

    def _check_liveness(self) -> None:
        core_ok, why = self._core_converged()
        pending = [c.node - self.n for c in self.clients if not c.idle]
        if core_ok and not pending:
            self.phase = DONE
            self._note(NODE_SIM, "phase", DONE, 0, detail="core converged, requests done")
            return
        if self.now >= self.liveness_deadline_us:
            self.phase = DONE
            reason = why if not core_ok else f"client requests still pending: {pending}"
            self.failure = (
                "liveness", "liveness",
                f"core {[f'r{r}' for r in self.core]} did not finish within "
                f"{LIVENESS_TIME_US_MAX // 1000} ms of healing: {reason}",
            )
            self._note(NODE_SIM, "phase", DONE, 3, detail="liveness failure: " + reason)

    def _core_converged(self) -> tuple[bool, str]:
        reps = [self.replicas[r] for r in self.core]
        states: list[Replica] = []
        for r, rep in zip(self.core, reps, strict=True):
            if rep is None or rep.status != NORMAL:
                return False, f"r{r} is not in normal status"
            states.append(rep)
        first = states[0]
        for rep in states:
            if rep.view != first.view:
                return False, "core replicas are in different views"
            if rep.commit != len(rep.log) or rep.commit != first.commit:
                return False, f"commit numbers differ ({[s.commit for s in states]})"
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
        return True, ""

    # ---- results --------------------------------------------------------------------------
    def history_ops(self) -> list[HistoryOp]:
        out = []
        for process, operation, call_us, return_us, result in self.history:
            name, key, value, expected = operation
            output: str | bool | None = None
            if return_us is not None and name in ("get", "cas"):
                output = result
            out.append(HistoryOp(
                process=process, op=name, key=key, value=value, expected=expected,
                call_us=call_us, return_us=return_us, output=output,
            ))
        return out

    def trace_hash(self) -> str:
        return trace_hash(self.records)

    def trace(self) -> Trace | None:
        if not self.record_trace:
            return None
        return build_trace(self.records, self.details, self.peers, self.n)

    def trace_tail(self, count: int) -> list[str]:
        if self.record_trace:
            trace = self.trace()
            assert trace is not None
            return [format_event(e) for e in trace[-count:]]
        tail = [r for r in self.records if r[2] not in QUIET_KINDS][-count:]
        return [
            f"{t / 1000:12.3f}ms {node_name(node, self.n):>4} {KINDS[k]} {a} {b}"
            for t, node, k, a, b in tail
        ]

