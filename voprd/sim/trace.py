"""Trace of a run: one compact record per simulated event, hashed; readable events on request.

Every event is recorded as a tuple of five integers `(time_us, node, kind, a, b)` (cheap: no
formatting). The trace hash is blake2b over the msgpack encoding of that list, so it covers every
event whether or not a readable trace was asked for. With `record_trace`, a parallel list keeps a
short text per event, and `TraceEvent` Structs are built from both for the CLI and the HTML report.

Kind codes are part of the trace format (the hash covers them), so each has a fixed number.
`ENGINE_KINDS` are the engine's; new engine kinds take unused codes below `SYSTEM_KIND_CODE_MIN`.
A system adds its own kinds (`System.trace_kinds`, explicit codes, `SYSTEM_KIND_CODE_MIN` and up
for new systems); `KindTable` is the union for one run, and refuses a collision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

ENGINE_KINDS: dict[str, int] = {
    "deliver": 0, "drop_partition": 1, "drop_loss": 2, "drop_capacity": 3, "drop_down": 4,
    "duplicate": 5, "delay_spike": 6, "tick": 7, "client_tick": 8, "disk_write": 9,
    "disk_write_error": 10, "disk_misdirect": 11, "disk_torn": 12, "disk_read_corrupt": 13,
    "nemesis": 14, "crash": 15, "restart": 16, "pause": 17, "resume": 18, "partition": 19,
    "heal": 20,
    # Kinds for systems to note (the report knows them): a node's protocol status changed, it
    # committed (executed) an operation, a client retried a request.
    "status": 21, "commit": 22, "retry": 25,
    "call": 23, "return": 24, "phase": 26, "clock_skew": 27, "bound": 28, "send": 30,
    # Code 29 belongs to the builtin system (numbered before the engine and the systems were
    # split); the engine never takes it. New engine kinds: 31 to 63.
    # Gray failures, replays, corruption, clock changes, client crashes, held messages (48-58).
    "replay": 48, "corrupt": 49, "slow_disk": 50, "slow_link": 51, "slow_node": 52,
    "slow_end": 53, "clock_jump": 54, "clock_drift": 55, "client_crash": 56,
    "client_restart": 57, "hold": 58,
    # The disk class (voprd.sim.storage): failures of the disk itself (31-40).
    "disk_corrupt": 31, "disk_latent_error": 32, "disk_bad_sector": 33, "disk_stale": 34,
    "disk_full": 35, "superblock_torn": 36, "superblock_damage": 37, "disk_lost": 38,
    "disk_join": 39, "disk_heal": 40,
}
SYSTEM_KIND_CODE_MIN = 64
KIND_CODE_MAX = 255
# The kinds above that systems note (everything else in ENGINE_KINDS the engine notes itself).
SYSTEM_VOCABULARY = frozenset({"status", "commit", "retry"})
K = ENGINE_KINDS
# Kinds hashed but left out of the readable trace (periodic timers would drown everything else).
QUIET_KINDS = frozenset({K["tick"], K["client_tick"], K["nemesis"]})

NODE_SIM = -1
NO_PEER = NODE_SIM - 1

Record = tuple[int, int, int, int, int]


class KindTable:
    """The trace kinds of one run: the engine's and one system's, by name and by code."""

    __slots__ = ("codes", "names", "system_codes")

    def __init__(self, system_kinds: Mapping[str, int]) -> None:
        codes = dict(ENGINE_KINDS)
        for name, code in system_kinds.items():
            if name in codes:
                raise ValueError(f"trace kind {name!r} is already an engine kind")
            if not 0 <= code <= KIND_CODE_MAX or code in ENGINE_KINDS.values():
                raise ValueError(
                    f"trace kind {name!r}: code {code} is taken by the engine or outside "
                    f"0..{KIND_CODE_MAX} (use {SYSTEM_KIND_CODE_MIN} and up)"
                )
            if code in codes.values():
                raise ValueError(f"trace kind {name!r}: code {code} is used twice")
            codes[name] = code
        self.codes = codes
        self.names = {code: name for name, code in codes.items()}
        # The kinds a system may note: its own and the engine's vocabulary for systems.
        self.system_codes = {
            name: codes[name] for name in sorted(frozenset(system_kinds) | SYSTEM_VOCABULARY)
        }


class TraceEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One readable trace event (for `-v`, `--trace-file` and the HTML report).

    node: "r<i>" replica (server), "c<i>" client, "sim" the simulator (faults, phases).
    peer: the other end of a message ("" otherwise). kind: an engine or system kind name.
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
    records: list[Record], details: list[str], peers: list[int], replicas: int,
    kinds: KindTable,
) -> Trace:
    assert len(records) == len(details) == len(peers)
    names = kinds.names
    out: Trace = []
    for (time_us, node, kind, _a, _b), detail, peer in zip(records, details, peers, strict=True):
        if kind in QUIET_KINDS:
            continue
        out.append(TraceEvent(
            time_us=time_us,
            node=node_name(node, replicas),
            kind=names[kind],
            peer="" if peer == NO_PEER else node_name(peer, replicas),
            detail=detail,
        ))
    return out


def format_event(event: TraceEvent) -> str:
    """One readable line: time in ms, node, kind, peer, detail."""
    peer = f" {event.peer}" if event.peer else ""
    arrow = " <-" if event.kind == "deliver" else (" ->" if event.peer else "")
    text = f"{event.time_us / 1000:12.3f}ms {event.node:>4} {event.kind}{arrow}{peer}"
    return f"{text} {event.detail}".rstrip()
