"""Trace of a run: one compact record per simulated event, hashed; readable events on request.

Every event is recorded as a tuple of five integers `(time_us, node, kind, a, b)` (cheap: no
formatting). The trace hash is blake2b over the msgpack encoding of that list, so it covers every
event whether or not a readable trace was asked for. With `record_trace`, a parallel list keeps a
short text per event, and `TraceEvent` Structs are built from both for the CLI and the HTML report.
"""

from __future__ import annotations

import hashlib

import msgspec

KINDS: tuple[str, ...] = (
    "deliver", "drop_partition", "drop_loss", "drop_capacity", "drop_down", "duplicate",
    "delay_spike", "tick", "client_tick", "disk_write", "disk_write_error", "disk_misdirect",
    "disk_torn", "disk_read_corrupt", "nemesis", "crash", "restart", "pause", "resume",
    "partition", "heal", "status", "commit", "call", "return", "retry", "phase", "clock_skew",
    "bound", "log_installed", "send",
)
K = {name: code for code, name in enumerate(KINDS)}
# Kinds hashed but left out of the readable trace (periodic timers would drown everything else).
QUIET_KINDS = frozenset({K["tick"], K["client_tick"], K["nemesis"]})

NODE_SIM = -1

Record = tuple[int, int, int, int, int]


class TraceEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One readable trace event (for `-v`, `--trace-file` and the HTML report).

    node: "r<i>" replica, "c<i>" client, "sim" the simulator (faults, phases).
    peer: the other end of a message ("" otherwise). kind: one of KINDS.
    """

    time_us: int
    node: str
    kind: str
    peer: str = ""
    detail: str = ""


Trace = list[TraceEvent]


def node_name(node: int, replicas: int) -> str:
    if node == NODE_SIM:
        return "sim"
    if node < replicas:
        return f"r{node}"
    return f"c{node - replicas}"


def trace_hash(records: list[Record]) -> str:
    return hashlib.blake2b(msgspec.msgpack.encode(records), digest_size=16).hexdigest()


def build_trace(
    records: list[Record], details: list[str], peers: list[int], replicas: int
) -> Trace:
    assert len(records) == len(details) == len(peers)
    out: Trace = []
    for (time_us, node, kind, _a, _b), detail, peer in zip(records, details, peers, strict=True):
        if kind in QUIET_KINDS:
            continue
        out.append(TraceEvent(
            time_us=time_us,
            node=node_name(node, replicas),
            kind=KINDS[kind],
            peer="" if peer == NODE_SIM - 1 else node_name(peer, replicas),
            detail=detail,
        ))
    return out


def format_event(event: TraceEvent) -> str:
    """One readable line: time in ms, node, kind, peer, detail."""
    peer = f" {event.peer}" if event.peer else ""
    arrow = " <-" if event.kind == "deliver" else (" ->" if event.peer else "")
    text = f"{event.time_us / 1000:12.3f}ms {event.node:>4} {event.kind}{arrow}{peer}"
    return f"{text} {event.detail}".rstrip()
