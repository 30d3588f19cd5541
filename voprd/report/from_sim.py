"""RunPicture from a simulator run: rerun the seed with its trace, note every message sent,
check the client history, and translate it all into the report's model.

Works for any system: the engine's kinds (faults, phases) are drawn here, the system's own trace
events become node events through `System.report_event`, and messages are named and described by
the system. The trace records a delivered message only at its arrival, so `_RecordingSimulation`
also notes each message when a node sends it (through `env.send`), and arrivals are paired with
sends. It only observes: the run's trace hash is checked against the plain run's, so the picture
is of exactly the run `voprd --once` reports.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from typing import Any

import msgspec

from voprd.check.checker import check_history
from voprd.check.formats import HistoryOpError, from_history_ops
from voprd.check.history import HistoryOp
from voprd.check.models import Model
from voprd.check.search import SearchOutcome, fast_search
from voprd.events import SeedResult
from voprd.options import RunOptions, reproduce_command
from voprd.report.model import (
    ClientOp,
    FaultEvent,
    Linearizability,
    LinExplanation,
    Message,
    Node,
    NodeEvent,
    RunConfig,
    RunPicture,
    TimeMarker,
    Verdict,
    op_outcome,
)
from voprd.sim.engine import Simulation
from voprd.sim.faults import FAULT_KIND_CLASS
from voprd.sim.linearizability import (
    INVARIANT,
    INVARIANT_UNKNOWN,
    LINEARIZABILITY_STEPS_MAX,
)
from voprd.sim.run import simulate
from voprd.sim.system import Message as Message_
from voprd.sim.system import System
from voprd.sim.trace import K, KindTable, TraceEvent

# Bound on the search that rebuilds the explanation of a refuted key (the checker already decided
# it, so this only repeats the search on one part).
EXPLAIN_STEPS_MAX = 5_000_000
_EXPLAIN_SLICE_STEPS = 65_536
_DROP_CODES = frozenset({K["drop_partition"], K["drop_loss"], K["drop_capacity"]})
_DUPLICATE_CODE = K["duplicate"]
_REPLAY_CODE = K["replay"]  # one more copy, much later
_CORRUPT_CODE = K["corrupt"]  # what arrives is the corrupted message
_STORAGE_KINDS = frozenset(
    kind for kind, fault_class in FAULT_KIND_CLASS.items() if fault_class in ("storage", "disk")
)
_SLOW_KINDS = frozenset({"slow_disk", "slow_link", "slow_node"})
_NODE_NAME = re.compile(r"^([rc])(\d+)$")
# An operation number named by a violation message (`lacks acknowledged op 3`; not `2 ops`), and
# the one in a commit's or a reply's detail (`op=3`).
_NAMED_OP = re.compile(r"\bop (\d+)\b")
_DETAIL_OP = re.compile(r"\bop=(\d+)\b")


class _Sent(msgspec.Struct, array_like=True):
    send_us: int
    src: int
    dst: int
    name: str
    text: str
    # Why the network dropped it at the sender (a drop_* trace kind), or None if it was queued.
    dropped: str | None
    copies: int


class _RecordingSimulation(Simulation):
    """The simulation, also noting every message a node sends (through `env.send`) and what the
    network did with it (the trace records it appended during the send)."""

    def __init__(self, seed: int, options: RunOptions, system: System) -> None:
        self.sent: list[_Sent] = []
        super().__init__(seed, options, system, record_trace=True)
        # What the seed drew, before the liveness phase changes any of it.
        plan = self.plan
        slots = {name for cls in type(plan).__mro__ for name in getattr(cls, "__slots__", ())}
        self.drawn = {name: str(getattr(plan, name)) for name in sorted(slots)
                      if not name.startswith("_")}

    def _sender(self) -> Callable[[int, int, Message_], None]:
        network_send = super()._sender()
        names = self.kinds.names
        message_names = self.system.message_names
        describe = self.system.describe_message

        def send(src: int, dst: int, msg: Message_) -> None:
            records_before = len(self.records)
            network_send(src, dst, msg)
            kinds = [record[2] for record in self.records[records_before:]]
            dropped = next((names[k] for k in kinds if k in _DROP_CODES), None)
            copies = 0 if dropped else 1 + kinds.count(_DUPLICATE_CODE) + kinds.count(_REPLAY_CODE)
            arrives = self.network.last_corrupted if _CORRUPT_CODE in kinds else msg
            self.sent.append(
                _Sent(self.now, src, dst, message_names[msg[0]], describe(arrives), dropped, copies)
            )

        return send


def _node_index(name: str, replicas: int) -> int | None:
    found = _NODE_NAME.match(name)
    if found is None:
        return None
    number = int(found.group(2))
    return number if found.group(1) == "r" else replicas + number


def _partition_nodes(detail: str, replicas: int) -> list[int]:
    """The side a partition cuts off: `isolate r1` -> [1]; `[0] <-/-> [1, 2]` -> [0];
    `bridge r1: [0] <-/-> [2]` -> [0, 2]; `c1 <-/-> [0]` -> [client 1, 0]; `r2 <-/-> servers`
    -> [2]."""
    isolated = re.match(r"isolate r(\d+)|r(\d+) <-/-> servers", detail)
    if isolated:
        return [int(isolated.group(1) or isolated.group(2))]
    bridge = re.match(r"bridge r\d+: \[([\d, ]*)\] <-/-> \[([\d, ]*)\]", detail)
    if bridge:
        sides = bridge.group(1) + "," + bridge.group(2)
        return [int(x) for x in sides.split(",") if x.strip()]
    client = re.match(r"c(\d+) <-/-> \[([\d, ]*)\]", detail)
    if client:
        servers = [int(x) for x in client.group(2).split(",") if x.strip()]
        return [replicas + int(client.group(1)), *servers]
    side = re.match(r"\[([\d, ]*)\]", detail)
    if side:
        return [int(x) for x in side.group(1).split(",") if x.strip()]
    return list(range(replicas))


def _messages(
    sim: _RecordingSimulation, trace: list[TraceEvent], replicas: int
) -> list[Message]:
    """Pair each arrival in the trace with its send: per (src, dst, contents), in send order
    (identical messages on one path, e.g. repeated heartbeats, are paired first-sent first)."""
    messages: list[Message] = []
    pending: dict[tuple[int, int, str], collections.deque[int]] = {}
    for sent in sim.sent:
        if sent.dropped is not None:
            messages.append(Message(
                sent.send_us, None, sent.src, sent.dst, sent.name, "dropped",
                f"{sent.dropped}: {sent.text}",
            ))
            continue
        for _ in range(sent.copies):
            pending.setdefault((sent.src, sent.dst, sent.text), collections.deque()).append(
                len(messages)
            )
            messages.append(Message(
                sent.send_us, None, sent.src, sent.dst, sent.name, "in_flight", sent.text
            ))
    last_arrival: tuple[int, int, int] | None = None  # (time_us, dst, message index)
    for event in trace:
        if event.kind == "deliver":
            src, dst = _node_index(event.peer, replicas), _node_index(event.node, replicas)
            if src is None or dst is None:
                continue
            queue = pending.get((src, dst, event.detail))
            if not queue:
                continue  # sent before recording could see it: cannot happen in a full rerun
            index = queue.popleft()
            message = messages[index]
            message.deliver_us = event.time_us
            message.status = "delivered"
            last_arrival = (event.time_us, dst, index)
        elif event.kind == "drop_down" and last_arrival is not None:
            # Logged right after the arrival it refers to: the receiver was crashed or paused.
            dst = _node_index(event.node, replicas)
            if last_arrival[:2] == (event.time_us, dst):
                message = messages[last_arrival[2]]
                message.status = "dropped"
                message.detail = "drop_down (receiver crashed or paused): " + message.detail
    messages.sort(key=lambda m: (m.send_us, m.src, m.dst))
    return messages


def _events_and_faults(
    trace: list[TraceEvent], replicas: int, end_us: int, system: System, kinds: KindTable
) -> tuple[list[NodeEvent], list[FaultEvent], list[TimeMarker]]:
    events: list[NodeEvent] = []
    faults: list[FaultEvent] = []
    markers: list[TimeMarker] = []
    open_interval: dict[tuple[str, int], FaultEvent] = {}
    # Partitions and gray slowdowns by their id (several may be active at once).
    open_by_id: dict[tuple[str, str], FaultEvent] = {}
    memo: dict[Any, Any] = {}
    system_kinds = kinds.system_codes

    def add_fault(kind: str, start_us: int, nodes: list[int], detail: str) -> FaultEvent:
        fault = FaultEvent(id=len(faults), kind=kind, start_us=start_us, nodes=nodes,
                           detail=detail)
        faults.append(fault)
        return fault

    for event in trace:
        kind, t = event.kind, event.time_us
        node = _node_index(event.node, replicas)
        if kind == "phase":
            markers.append(TimeMarker(time_us=t, label=event.detail.split(" replicas=")[0]))
        elif kind == "partition":
            ident, _, shape = event.detail.partition(" ")
            open_by_id[("partition", ident)] = add_fault(
                "partition", t, _partition_nodes(shape, replicas), event.detail
            )
        elif kind == "heal":
            started = open_by_id.pop(("partition", event.detail.split(" ")[0]), None)
            if started is not None:
                started.end_us = t
        elif node is None:
            continue
        elif kind in _SLOW_KINDS:
            peer = _node_index(event.peer, replicas) if event.peer else None
            nodes = [node] if peer is None else [node, peer]
            open_by_id[("gray", event.detail.split(" ")[0])] = add_fault(
                "gray", t, nodes, f"{kind} {event.detail}"
            )
        elif kind == "slow_end":
            started = open_by_id.pop(("gray", event.detail.split(" ")[0]), None)
            if started is not None:
                started.end_us = t
        elif kind in ("replay", "corrupt"):
            add_fault("network", t, [node], f"{kind} -> {event.peer}: {event.detail}")
        elif kind in ("clock_jump", "clock_drift"):
            add_fault("clock", t, [node], f"{kind} {event.detail}")
        elif kind == "client_crash":
            open_interval[("crash", node)] = add_fault("crash", t, [node], "client crash")
            events.append(NodeEvent(t, node, "crash", event.detail))
        elif kind == "client_restart":
            started = open_interval.pop(("crash", node), None)
            if started is not None:
                started.end_us = t
            events.append(NodeEvent(t, node, "restart", event.detail))
        elif kind in ("crash", "pause"):
            open_interval[(kind, node)] = add_fault(kind, t, [node], event.detail)
            events.append(NodeEvent(t, node, kind, event.detail))
        elif kind in ("restart", "resume"):
            started = open_interval.pop(("crash" if kind == "restart" else "pause", node), None)
            if started is not None:
                started.end_us = t
            events.append(NodeEvent(t, node, kind, event.detail))
        elif kind == "clock_skew":
            fault = add_fault("clock", t, [node], event.detail)
            fault.end_us = end_us
        elif kind in _STORAGE_KINDS:
            add_fault("storage", t, [node], f"{kind} {event.detail}")
        elif kind in system_kinds:
            shown = system.report_event(kind, node, event.detail, memo)
            if shown is not None:
                events.append(NodeEvent(t, node, shown[0], shown[1]))
    for fault in [*open_interval.values(), *open_by_id.values()]:
        fault.open_ended = True
    return events, faults, markers


def _explanation(history: list[HistoryOp], key: str, model: Model) -> LinExplanation | None:
    """The longest linearizable order and the blocking operation for one refuted key."""
    parts = model.partition(from_history_ops(enumerate(history, start=1)))
    part = next((p for p in parts if p and p[0].key == key), None)
    if part is None:
        return None
    search = fast_search(model, part, _EXPLAIN_SLICE_STEPS)
    outcome: SearchOutcome | None = None
    used = 0
    try:
        used = next(search)
        while used < EXPLAIN_STEPS_MAX:
            used = search.send(used + _EXPLAIN_SLICE_STEPS)
    except StopIteration as stop:
        outcome = stop.value
    search.close()
    if outcome is None or outcome.linearizable:
        return None
    witness = outcome.reason if outcome.reason is not None else outcome.blocker
    return LinExplanation(
        key=key,
        prefix=[part[i].line for i in outcome.prefix],
        blocker=None if outcome.blocker is None else part[outcome.blocker].line,
        witness=None if witness is None else part[witness].line,
        state_after_prefix=model.describe_state(outcome.blocker_state),
    )


def _cause_times(message: str | None, events: list[NodeEvent], messages: list[Message],
                 ops: list[ClientOp], replicas: int) -> list[int]:
    """When what a violation names happened: for each operation number it names (`acknowledged
    op 3`), its first commit, the first reply for it (sent and delivered) and the client call that
    reply answered."""
    named = {int(number) for number in _NAMED_OP.findall(message or "")}
    if not named:
        return []
    first: dict[tuple[str, int], int] = {}  # (commit|reply, op) -> index of its first one
    items: list[NodeEvent | Message] = [*events, *messages]
    for index, item in enumerate(items):
        match = _DETAIL_OP.search(item.detail)
        if match and int(match[1]) in named and item.kind in ("commit", "reply"):
            first.setdefault((item.kind, int(match[1])), index)
    times: list[int] = []
    for (kind, _op), index in first.items():
        if kind == "commit":
            times.append(events[index].time_us)
            continue
        reply = messages[index - len(events)]
        times.append(reply.send_us)
        if reply.deliver_us is not None:
            times.append(reply.deliver_us)
            times += [op.call_us for op in ops if op.return_us == reply.deliver_us
                      and op.process == reply.dst - replicas]
    return sorted(times)


def _linearizability(
    history: list[HistoryOp], result: SeedResult, model: Model
) -> Linearizability:
    """The simulator's verdict on the history, with the exact order explained per refuted key.

    The simulator checks every history that passed the replica invariants (HISTORY_CHECKS), so a
    passing seed is linearizable and an undecided one is already reported; the checker only runs
    again here to find the refuted keys, or for a seed that failed a replica invariant first."""
    if result.status == "ok":
        return Linearizability(verdict="linearizable", model=model.name)
    if result.invariant == INVARIANT_UNKNOWN:
        return Linearizability(verdict="unknown", model=model.name, message=result.message)
    try:
        verdict = check_history(
            history, model=model, budget_ms=None, max_steps=LINEARIZABILITY_STEPS_MAX
        )
    except HistoryOpError:  # an operation the model cannot give: refuted as it is
        return Linearizability(verdict="not_linearizable", model=model.name,
                               message=result.message)
    assert result.invariant != INVARIANT or verdict.verdict == "not_linearizable", (
        "the checker's verdict is a function of the history"
    )
    lin = Linearizability(verdict=verdict.verdict, model=model.name)
    if verdict.verdict != "linearizable":
        lin.message = verdict.explanation
    for key in verdict.failing_keys:
        explanation = _explanation(history, key, model)
        if explanation is not None:
            lin.explanations.append(explanation)
    return lin


def picture_for_seed(seed: int, options: RunOptions, system: System) -> RunPicture:
    """Run `seed` (as `voprd --once` does) and again with recording; picture the run."""
    official = simulate(seed, options, system)
    result = official.result
    sim = _RecordingSimulation(seed, options, system)
    sim.run()
    # The recording run must be the very run that was reported.
    assert sim.trace_hash() == result.trace_hash, "recording changed the run"
    trace = sim.trace() or []
    replicas = sim.n
    history = sim.history_ops()
    nodes = [Node(name=f"r{r}", kind="replica") for r in range(replicas)]
    nodes += [Node(name=f"c{c}", kind="client") for c in range(len(sim.client_nodes))]
    ops = [
        ClientOp(
            id=line, process=op.process, key=op.key, op=op.op, call_us=op.call_us,
            return_us=op.return_us, value=op.value, expected=op.expected, output=op.output,
            outcome=op_outcome(op.op, op.return_us, op.output),
        )
        for line, op in enumerate(history, start=1)
    ]
    end_us = sim.now
    events, faults, markers = _events_and_faults(trace, replicas, end_us, system, sim.kinds)
    lin = _linearizability(history, result, system.linearizability_model())
    status, kind, invariant, message = result.status, result.kind, result.invariant, result.message
    failure_us = next(
        (m.time_us for m in reversed(markers)
         if m.label.startswith(("violation", "liveness failure", "exception"))),
        None,
    )
    messages = _messages(sim, trace, replicas)
    cause_us = _cause_times(message, events, messages, ops, replicas) if failure_us else []
    return RunPicture(
        config=RunConfig(
            seed=seed, target=options.target, faults=list(options.faults),
            bugs=list(options.bugs), max_events=options.max_events, replica_count=replicas,
            client_count=len(sim.client_nodes), drawn=sim.drawn,
            fault_counts=dict(official.fault_counts),
        ),
        verdict=Verdict(
            status=status, kind=kind, invariant=invariant, message=message,
            failure_us=failure_us, cause_us=cause_us, events=result.events,
            simulated_time_us=end_us,
            trace_hash=result.trace_hash, bounds_reached=list(result.bounds_reached),
            fault_counts=dict(sorted(sim.fault_counts.items())),
        ),
        reproduce=reproduce_command(seed, options),
        nodes=nodes,
        ops=ops,
        linearizability=lin,
        messages=messages,
        node_events=events,
        faults=faults,
        markers=markers,
    )
