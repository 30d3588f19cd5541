"""RunPicture: everything an HTML report shows about one run, independent of the simulator.

The renderer reads only this; an adapter (`voprd.report.from_sim`) fills it from the simulator's
trace, history and checker verdict. Times are simulated microseconds since the start of the run.
Nodes (replicas, clients) are referred to by their index in `RunPicture.nodes`; client operations
by `ClientOp.id`, which is unique within a picture.

High-volume records (`Message`, `NodeEvent`) are `array_like` so the JSON embedded in the page stays
small: a message is `[send_us, deliver_us, src, dst, kind, status, detail]`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PICTURE_FORMAT_VERSION = 1

OpOutcome = Literal["ok", "rejected", "unknown"]
MessageStatus = Literal["delivered", "dropped", "in_flight"]
NodeKind = Literal["replica", "client"]
LinVerdict = Literal["linearizable", "not_linearizable", "unknown", "not_checked"]
RunStatus = Literal["ok", "failed"]


class RunConfig(msgspec.Struct, kw_only=True):
    """What defined the run: the seed, the options, and what the seed drew (swarm testing)."""

    seed: int
    target: str = "builtin"
    faults: list[str] = msgspec.field(default_factory=list)
    bugs: list[str] = msgspec.field(default_factory=list)
    max_events: int = 0
    replica_count: int = 0
    client_count: int = 0
    # Seed-drawn parameters (fault probabilities, delays, workload mix) as display strings.
    drawn: dict[str, str] = msgspec.field(default_factory=dict)
    # Injected faults by trace kind (the engine's fault_counts).
    fault_counts: dict[str, int] = msgspec.field(default_factory=dict)


class Verdict(msgspec.Struct, kw_only=True):
    status: RunStatus
    kind: str | None = None
    invariant: str | None = None
    message: str | None = None
    # When the failure was detected (simulated time), if known: the report centres on it.
    failure_us: int | None = None
    # When the things the failure names happened (for a lost acknowledged write: its commit, the
    # reply to the client, the client's call): the report opens on a window that includes them.
    cause_us: list[int] = msgspec.field(default_factory=list)
    events: int = 0
    simulated_time_us: int = 0
    trace_hash: str = ""
    bounds_reached: list[str] = msgspec.field(default_factory=list)
    # Injected faults per trace kind (the `faults:` line of `voprd --once -v`).
    fault_counts: dict[str, int] = msgspec.field(default_factory=dict)


class Node(msgspec.Struct, kw_only=True):
    name: str
    kind: NodeKind = "replica"


class ClientOp(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One client operation: a bar from call to return (open-ended when the outcome is unknown)."""

    id: int
    process: int
    key: str
    op: str
    call_us: int
    return_us: int | None = None
    value: str | None = None
    expected: str | None = None
    output: str | bool | None = None
    outcome: OpOutcome = "ok"


class LinExplanation(msgspec.Struct, kw_only=True):
    """Why one key's history is not linearizable: the longest linearizable order the checker found
    and the operation that cannot be placed after it."""

    key: str
    prefix: list[int]
    blocker: int | None = None
    # The operation that proves it: the read that can never be linearized once the blocker is
    # placed (or the blocker itself, when nothing later is to blame).
    witness: int | None = None
    # The model state after the prefix, as text (e.g. the key's value).
    state_after_prefix: str | None = None


class Linearizability(msgspec.Struct, kw_only=True):
    verdict: LinVerdict = "not_checked"
    model: str = "kv"
    explanations: list[LinExplanation] = msgspec.field(default_factory=list)
    message: str | None = None

    def highlighted_ops(self) -> list[int]:
        """Operation ids the explanation involves, in explanation order, without repeats."""
        seen: dict[int, None] = {}
        for explanation in self.explanations:
            for op_id in explanation.prefix:
                seen.setdefault(op_id, None)
            if explanation.blocker is not None:
                seen.setdefault(explanation.blocker, None)
            if explanation.witness is not None:
                seen.setdefault(explanation.witness, None)
        return list(seen)


class Message(msgspec.Struct, array_like=True):
    """A message between two nodes; `deliver_us` is None when it was dropped or never arrived."""

    send_us: int
    deliver_us: int | None
    src: int
    dst: int
    kind: str
    status: MessageStatus = "delivered"
    detail: str = ""


class NodeEvent(msgspec.Struct, array_like=True):
    """Something that happened at one node: `crash`, `restart`, `pause`, `resume`, `view_change`,
    `commit`, `recovered`, `state_transfer`, ... (known kinds get their own symbol)."""

    time_us: int
    node: int
    kind: str
    detail: str = ""


class FaultEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An injected fault: an interval (`end_us` set: partition until heal, crash until restart,
    pause until resume; None with `open_ended`: still active at the end) or an instant."""

    id: int
    kind: str
    start_us: int
    end_us: int | None = None
    open_ended: bool = False
    nodes: list[int] = msgspec.field(default_factory=list)
    detail: str = ""


class Density(msgspec.Struct, kw_only=True):
    """Per-interval counts over the whole run, including what was collapsed: the overview strip
    and the shaded 'collapsed' stretches of the space-time diagram are drawn from this."""

    start_us: int = 0
    bucket_us: int = 1
    messages: list[int] = msgspec.field(default_factory=list)
    dropped: list[int] = msgspec.field(default_factory=list)
    commits: list[int] = msgspec.field(default_factory=list)
    # Of `messages`/`commits`, how many are not drawn individually.
    collapsed_messages: list[int] = msgspec.field(default_factory=list)
    collapsed_commits: list[int] = msgspec.field(default_factory=list)


class TimeWindow(msgspec.Struct, kw_only=True):
    start_us: int
    end_us: int
    label: str = ""


class TimeMarker(msgspec.Struct, kw_only=True):
    """A moment that concerns the whole run (e.g. the start of the liveness phase)."""

    time_us: int
    label: str


class RunPicture(msgspec.Struct, kw_only=True):
    format_version: int = PICTURE_FORMAT_VERSION
    title: str = ""
    config: RunConfig
    verdict: Verdict
    reproduce: str
    nodes: list[Node] = msgspec.field(default_factory=list)
    ops: list[ClientOp] = msgspec.field(default_factory=list)
    linearizability: Linearizability = msgspec.field(default_factory=Linearizability)
    messages: list[Message] = msgspec.field(default_factory=list)
    node_events: list[NodeEvent] = msgspec.field(default_factory=list)
    faults: list[FaultEvent] = msgspec.field(default_factory=list)
    markers: list[TimeMarker] = msgspec.field(default_factory=list)
    # Filled by `voprd.report.collapse`: the region kept in full detail, the counts, and one
    # sentence per thing that was collapsed or left out.
    focus: TimeWindow | None = None
    density: Density | None = None
    notes: list[str] = msgspec.field(default_factory=list)

    def end_us(self) -> int:
        """The last time anything in the picture happens (at least the run's simulated time)."""
        end = self.verdict.simulated_time_us
        for op in self.ops:
            end = max(end, op.call_us, op.return_us or 0)
        for message in self.messages:
            end = max(end, message.send_us, message.deliver_us or 0)
        for event in self.node_events:
            end = max(end, event.time_us)
        for fault in self.faults:
            end = max(end, fault.start_us, fault.end_us or 0)
        return end


def op_outcome(op: str, return_us: int | None, output: str | bool | None) -> OpOutcome:
    """How an operation is coloured: unknown outcome, a cas that did not apply, or ok."""
    if return_us is None:
        return "unknown"
    if op == "cas" and output is False:
        return "rejected"
    return "ok"
