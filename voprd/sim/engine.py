"""The deterministic simulation of one seed: the event loop, scheduling and the trace log.

A run is a pure function of (seed, options, system): one root PRNG split into named streams,
virtual time in integer microseconds, and a heap of `(time_us, sequence, kind, a, b)` events
(`voprd.sim.events`), the sequence number breaking ties. Nothing reads the wall clock or iterates
in hash order. The concerns live in their own modules, each an object of the run holding this
`Simulation`: `network`, `storage` (disks), `nemesis` (crash, pause, partition), `clocks`,
`phases` (safety, liveness), `history` (client operations), `slowdowns` (gray failures); the
system under test plugs in through `voprd.sim.system` and knows the engine only as its `Env`.

The loop is specialised for speed: deliveries, server ticks, client ticks and disk completions have
their own branch with the heap operations inlined; rarer events are `EV_CALL` callbacks.
"""

from __future__ import annotations

import heapq
import itertools
import traceback
from collections.abc import Callable
from typing import Any

from voprd.check.history import HistoryOp, OpName
from voprd.options import RunOptions
from voprd.sim.clock import CLIENT_TICK_US, TICK_US, Clocks
from voprd.sim.events import EV_CALL, EV_CLIENT_TICK, EV_DELIVER, EV_DISK, EV_TICK
from voprd.sim.faults import FaultPlan, check_cluster_shape
from voprd.sim.gray import Slowdowns
from voprd.sim.history import History
from voprd.sim.nemesis import Nemesis
from voprd.sim.network import Network
from voprd.sim.phases import DONE, LIVENESS, SAFETY, Phases
from voprd.sim.prng import Rng, Streams
from voprd.sim.storage import Disk, ServerCrashed, Storage
from voprd.sim.system import Cluster, Message, Output, System, Violation
from voprd.sim.trace import (
    NO_PEER,
    NODE_SIM,
    QUIET_KINDS,
    K,
    KindTable,
    Record,
    Trace,
    build_trace,
    format_event,
    node_name,
    trace_hash,
)

# The engine's own PRNG streams; systems name theirs anything else.
ENGINE_STREAMS = frozenset({
    "faults.plan", "network", "storage", "faults", "faults.plan.2", "network.2", "faults.2",
    "storage.disk",
})
# Messages held for a paused (frozen) server, at most (a receive buffer): later ones are dropped.
HOLD_MAX = 1_000

_K_DELIVER = K["deliver"]
_K_DROP_DOWN = K["drop_down"]
_K_TICK = K["tick"]
_K_CLIENT_TICK = K["client_tick"]
_K_CLOCK_SKEW = K["clock_skew"]
_K_BOUND = K["bound"]
_K_PHASE = K["phase"]
_K_HOLD = K["hold"]

Failure = tuple[str, str | None, str]  # (kind, invariant, message)


class RunOver(Exception):
    """Unwinds the event loop (and any system code on the stack) when a bound reached in the
    liveness phase ended the run."""


class Simulation:
    """Runs one seed of `system`."""

    def __init__(
        self, seed: int, options: RunOptions, system: System, record_trace: bool = False
    ) -> None:
        assert seed >= 0 and options.max_events >= 1
        self.seed = seed
        self.options = options
        self.system = system
        self.kinds = KindTable(system.trace_kinds)
        self.streams = Streams(seed)
        sizes = tuple(system.cluster_sizes)
        check_cluster_shape(sizes, system.core_size)
        self.plan = plan = FaultPlan(
            self.streams.stream("faults.plan"), options.faults, TICK_US, sizes=sizes,
            core_size=system.core_size, rng2=self.streams.stream("faults.plan.2"),
            streams=self.streams,
        )
        self.bugs = frozenset(options.bugs)
        self.n = n = plan.replicas
        self.nodes_total = n + plan.clients
        self.client_nodes = range(n, self.nodes_total)
        # Scheduling and the trace log.
        self.queue: list[tuple[int, int, int, int, Any]] = []
        self.seq = itertools.count(1)
        self.now = 0
        self.events = 0
        self.record_trace = record_trace
        self.records: list[Record] = []
        self.details: list[str] = []
        self.peers: list[int] = []
        self.fault_counts: dict[str, int] = {}
        self.bounds: list[str] = []
        self.coverage: dict[str, int] = dict.fromkeys(system.coverage_paths, 0)
        self.failure: Failure | None = None
        self.phase = SAFETY
        self.core: tuple[int, ...] = ()
        # Nodes: servers 0..n-1 (None while crashed), then clients.
        self.nodes: list[Any] = [None] * self.nodes_total
        self.incarnation = [0] * n
        self.paused = [False] * self.nodes_total
        # What arrived for a paused server, handled when it resumes: ("m", message) or
        # ("w", (incarnation, slot, ok)) for a disk completion.
        self.held: list[list[tuple[str, Any]]] = [[] for _ in range(n)]
        self.client_incarnation = [0] * plan.clients
        self.clocks = Clocks(plan)
        self.network = Network(self)
        self.storage = Storage(self)
        self.slowdowns = Slowdowns(self)
        self.history = History(self)
        self.cluster: Cluster = system.start(SimEnv(self, self._sender()))
        # Client crashes only for a system whose cluster can restart a client.
        self.client_restarts = callable(getattr(self.cluster, "restart_client", None))
        self.nemesis = Nemesis(self)
        self.phases = Phases(self)
        for r in range(n):
            if r != plan.join_replica:  # a server that joins later starts absent
                self.nodes[r] = self.cluster.start_server(r)
        self.client_budgets = budgets = self._split_budget(plan.request_budget, plan.clients)
        for c in range(plan.clients):
            self.nodes[n + c] = self.cluster.client(c, budgets[c])

    def _sender(self) -> Callable[[int, int, Message], None]:
        """What the system's `env.send` is (a subclass may observe sends)."""
        return self.network.send

    @staticmethod
    def _split_budget(total: int, clients: int) -> list[int]:
        return [total // clients + (1 if c < total % clients else 0) for c in range(clients)]

    # ---- scheduling and the trace log -----------------------------------------------------
    def push(self, time_us: int, kind: int, a: int, b: Any) -> None:
        heapq.heappush(self.queue, (time_us, next(self.seq), kind, a, b))

    def schedule(self, time_us: int, callback: Callable[[int], None], arg: int = 0) -> None:
        """Run `callback(arg)` at `time_us` (>= now)."""
        assert time_us >= self.now
        self.push(time_us, EV_CALL, arg, callback)

    def note(self, node: int, code: int, a: int = 0, b: int = 0, peer: int = NO_PEER,
             detail: str = "") -> None:
        self.records.append((self.now, node, code, a, b))
        if self.record_trace:
            self.details.append(detail)
            self.peers.append(peer)

    def fault(self, node: int, code: int, a: int = 0, b: int = 0, peer: int = NO_PEER,
              detail: str = "") -> None:
        name = self.kinds.names[code]
        self.fault_counts[name] = self.fault_counts.get(name, 0) + 1
        self.note(node, code, a, b, peer, detail)

    def bound(self, name: str) -> None:
        """An explicit limit was reached: reported in the result's `bounds_reached`; in the
        liveness phase it is also the verdict (`Phases.bound_verdict`) and ends the run."""
        if name not in self.bounds:
            self.bounds.append(name)
            self.note(NODE_SIM, _K_BOUND, len(self.bounds), 0, detail=name)
        if self.phase == LIVENESS:
            self.phases.bound_verdict(name)
            raise RunOver(name)

    # ---- deliveries off the loop's fast path: replays, paused servers --------------------
    def deliver(self, dst: int, msg: Message) -> None:
        """Deliver `msg` now (as the loop does, for deliveries that are not queue events)."""
        node = self.nodes[dst]
        if node is not None and dst < self.n and self.paused[dst]:
            self.hold(dst, msg)
            return
        src = msg[1]
        self.note(dst, _K_DELIVER, src, msg[0], src,
                  self.system.describe_message(msg) if self.record_trace else "")
        if node is None:
            self.note(dst, _K_DROP_DOWN, src, msg[0], src, self.system.message_names[msg[0]])
            return
        node.on_message(msg)

    def hold(self, r: int, msg: Message) -> None:
        """A message for paused server r: held until it resumes (dropped if its buffer is full)."""
        src = msg[1]
        held = self.held[r]
        if len(held) >= HOLD_MAX:
            self.note(r, _K_DROP_DOWN, src, msg[0], src, "paused, receive buffer full")
            return
        held.append(("m", msg))
        self.note(r, _K_HOLD, src, msg[0], src,
                  self.system.describe_message(msg) if self.record_trace else "")

    def write_done(self, r: int, incarnation: int, slot: int, ok: bool) -> None:
        """A disk write of server r completed (voprd.sim.storage): tell the server, unless that
        incarnation is gone; a paused one learns it when it resumes."""
        server = self.nodes[r]
        if server is None or self.incarnation[r] != incarnation:
            return
        if self.paused[r]:
            self.held[r].append(("w", (incarnation, slot, ok)))
            return
        server.on_write_done(slot, ok)

    def cancel_held_writes(self, r: int, slot_count: int) -> None:
        """Server r truncated its disk to `slot_count` sectors: the completions held for it of
        writes to later sectors are cancelled, as those writes are (`Disk.truncate`)."""
        held = self.held[r]
        if held:
            self.held[r] = [h for h in held if h[0] == "m" or h[1][1] <= slot_count]

    def release(self, r: int) -> None:
        """Server r resumed: handle what was held for it, in arrival order per source (each
        peer's messages in order, as over a connection; the disk's completions in order), the
        sources interleaved at random (as a process finds several sockets ready at once). What
        it handles may truncate its disk, cancelling held completions: `cancel_held_writes`."""
        held = self.held[r]
        sources: dict[int, list[tuple[str, Any]]] = {}
        for item in held:
            sources.setdefault(item[1][1] if item[0] == "m" else -1, []).append(item)
        if len(sources) > 1:
            rng = self.nemesis.rng2
            queues = [queue[::-1] for queue in sources.values()]
            order: list[tuple[str, Any]] = []
            while queues:
                pick = rng.below(len(queues))
                order.append(queues[pick].pop())
                if not queues[pick]:
                    queues.pop(pick)
            self.held[r] = order
        while self.held[r] and self.nodes[r] is not None and not self.paused[r]:
            what, item = self.held[r].pop(0)
            if what == "m":
                self.deliver(r, item)
            else:
                self.write_done(r, *item)

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> None:
        self.phases.begin()
        clocks = self.clocks
        for r in range(self.n):
            if clocks.skewed(r):
                self.fault(r, _K_CLOCK_SKEW, clocks.drift_ppm[r], clocks.offset_us[r],
                           detail=clocks.describe(r))
            self.push(clocks.offset_us[r] + 1, EV_TICK, r, 0)
        for c in self.client_nodes:
            self.push(1 + c - self.n, EV_CLIENT_TICK, c, None)
        self.nemesis.start()
        self.storage.start()
        try:
            # The safety phase gets a share of the events, so a storm in it still leaves the
            # liveness phase room to prove convergence (a bound there is a verdict).
            self._run(self.phases.safety_events_max(self.options.max_events))
            if self.phase == SAFETY and self.queue:
                self.phases.events_exhausted()
            self._run(self.options.max_events)
            if self.queue:
                self.bound("max_events")
        except RunOver:
            pass  # the run ended at a bound in the liveness phase (its verdict is recorded)
        except Violation as violation:
            self.failure = ("invariant", violation.invariant, violation.message)
            self.note(NODE_SIM, _K_PHASE, DONE, 1, detail=f"violation {violation.invariant}")
        except Exception:
            self.failure = ("crash", None, traceback.format_exc())
            self.note(NODE_SIM, _K_PHASE, DONE, 2, detail="exception in replica code")

    def _run(self, events_max: int) -> None:
        """`_loop` to `events_max`, through servers that die inside a handler."""
        while True:
            try:
                self._loop(events_max)
            except ServerCrashed as crashed:
                # A server died inside its handler (during a superblock write): crash it and go
                # on with the next event.
                self.nemesis.crash(crashed.node)
                continue
            return

    def _loop(self, events_max: int) -> None:
        """Run events until the queue is empty (the run finished) or `events_max` events ran."""
        queue = self.queue
        pop = heapq.heappop
        push = heapq.heappush
        seq = self.seq
        records = self.records
        append = records.append
        record_trace = self.record_trace
        details = self.details
        peers = self.peers
        nodes = self.nodes
        incarnation = self.incarnation
        paused = self.paused
        inflight = self.network.inflight
        nodes_total = self.nodes_total
        tick_us = self.clocks.tick_us
        complete_write = self.storage.complete
        describe = self.system.describe_message
        message_names = self.system.message_names
        # Locals, not globals, in the loop; its branches in order of frequency (VSR: ticks 25%,
        # client ticks 23%, deliveries 20%, nemesis 9%, disk completions 6% of events).
        ev_tick, ev_client_tick, ev_deliver, ev_disk = EV_TICK, EV_CLIENT_TICK, EV_DELIVER, EV_DISK
        k_tick, k_client_tick, k_deliver = _K_TICK, _K_CLIENT_TICK, _K_DELIVER
        client_tick_us = CLIENT_TICK_US
        no_peer = NO_PEER
        safety = SAFETY
        events = self.events
        try:
            for events in range(self.events + 1, events_max + 1):
                if not queue:  # finishing the run (Phases.finish) empties the queue
                    events -= 1
                    return
                time_us, _, kind, a, b = pop(queue)
                self.now = time_us
                if kind == ev_tick:
                    node = nodes[a]
                    if node is None or incarnation[a] != b:
                        continue  # the timer chain of a crashed incarnation ends here
                    append((time_us, a, k_tick, b, 0))
                    if record_trace:
                        details.append("")
                        peers.append(no_peer)
                    push(queue, (time_us + tick_us[a], next(seq), ev_tick, a, b))
                    if not paused[a]:
                        node.on_tick()
                elif kind == ev_client_tick:
                    append((time_us, a, k_client_tick, 0, 0))
                    if record_trace:
                        details.append("")
                        peers.append(no_peer)
                    node = nodes[a]
                    if node is not None:  # else crashed, restarting
                        node.on_tick(self.phase == safety)
                    push(queue, (time_us + client_tick_us, next(seq), ev_client_tick, a, None))
                elif kind == ev_deliver:
                    src = b[1]
                    inflight[src * nodes_total + a] -= 1
                    node = nodes[a]
                    if paused[a] and node is not None:
                        self.hold(a, b)
                        continue
                    append((time_us, a, k_deliver, src, b[0]))
                    if record_trace:
                        details.append(describe(b))
                        peers.append(src)
                    if node is None:
                        self.note(a, _K_DROP_DOWN, src, b[0], src, message_names[b[0]])
                        continue
                    node.on_message(b)
                elif kind == ev_disk:
                    complete_write(a, b)
                else:
                    b(a)
        finally:
            self.events = events

    # ---- results --------------------------------------------------------------------------
    def coverage_counts(self) -> dict[str, int]:
        """The protocol paths this run exercised (non-zero counts, in the system's order)."""
        return {path: count for path, count in self.coverage.items() if count}

    def history_ops(self) -> list[HistoryOp]:
        return self.history.ops()

    def trace_hash(self) -> str:
        return trace_hash(self.records)

    def trace(self) -> Trace | None:
        if not self.record_trace:
            return None
        return build_trace(self.records, self.details, self.peers, self.n, self.kinds)

    def trace_tail(self, count: int) -> list[str]:
        if self.record_trace:
            trace = self.trace()
            assert trace is not None
            return [format_event(e) for e in trace[-count:]]
        tail = [r for r in self.records if r[2] not in QUIET_KINDS][-count:]
        names = self.kinds.names
        return [
            f"{t / 1000:12.3f}ms {node_name(node, self.n):>4} {names[k]} {a} {b}"
            for t, node, k, a, b in tail
        ]


class SimEnv:
    """The engine as a system sees it (`voprd.sim.system.Env`)."""

    __slots__ = (
        "bugs", "clients", "nodes", "record_trace", "replicas", "seed", "send", "sim",
        "timeout_base_ticks",
    )

    def __init__(self, sim: Simulation, send: Callable[[int, int, Message], None]) -> None:
        self.sim = sim
        self.seed = sim.seed
        self.bugs = sim.bugs
        self.replicas = sim.n
        self.clients = sim.plan.clients
        self.timeout_base_ticks = sim.plan.timeout_base_ticks
        self.record_trace = sim.record_trace
        self.nodes = sim.nodes
        self.send = send

    @property
    def now(self) -> int:
        return self.sim.now

    def monotonic_us(self, node: int) -> int:
        sim = self.sim
        return sim.clocks.monotonic_us(node, sim.now) if node < sim.n else sim.now

    def wall_clock_us(self, node: int) -> int:
        sim = self.sim
        return sim.clocks.wall_clock_us(node, sim.now) if node < sim.n else sim.now

    def stream(self, name: str) -> Rng:
        if name in ENGINE_STREAMS:
            raise ValueError(f"PRNG stream {name!r} is the engine's; name yours differently")
        return self.sim.streams.stream(name)

    def disk(self, index: int) -> Disk:
        return self.sim.storage.disks[index]

    def note(self, node: int, kind: str, a: int = 0, b: int = 0, detail: str = "") -> None:
        sim = self.sim
        code = sim.kinds.system_codes.get(kind)
        if code is None:
            raise ValueError(f"trace kind {kind!r} is not one of the system's (System.trace_kinds)")
        sim.records.append((sim.now, node, code, a, b))
        if sim.record_trace:
            sim.details.append(detail)
            sim.peers.append(NO_PEER)

    def bound(self, name: str) -> None:
        self.sim.bound(name)

    def cover(self, path: str) -> None:
        coverage = self.sim.coverage
        if path not in coverage:
            raise ValueError(f"coverage path {path!r} is not one of the system's "
                             "(System.coverage_paths)")
        coverage[path] += 1

    def history_call(
        self, client: int, op: OpName, key: str = "", value: str | None = None,
        expected: str | None = None,
    ) -> int:
        return self.sim.history.call(client, op, key, value, expected)

    def history_return(self, index: int, output: Output, tag: int = 0, note: str = "") -> None:
        self.sim.history.ret(index, output, tag, note)
