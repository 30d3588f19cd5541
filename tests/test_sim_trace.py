"""The readable trace: the events the HTML report draws are there and encode as msgspec Structs."""

from __future__ import annotations

import msgspec

from voprd.options import RunOptions
from voprd.sim.faults import FAULT_KIND_CLASS
from voprd.sim.run import simulate
from voprd.sim.trace import KindTable, Trace, TraceEvent, format_event
from voprd.systems.vsr import VSR


def test_trace_events_cover_messages_faults_view_changes_and_client_ops() -> None:
    kinds: set[str] = set()
    known = KindTable(VSR.trace_kinds).codes
    for seed in range(40, 48):
        outcome = simulate(seed, RunOptions(), VSR, record_trace=True)
        trace = outcome.trace
        assert trace is not None and outcome.result.status == "ok"
        times = [event.time_us for event in trace]
        assert times == sorted(times)
        for event in trace:
            assert event.kind in known
            kinds.add(event.kind)
            if event.kind == "deliver":
                assert event.peer and event.detail
        assert trace[0].kind == "phase" and trace[-1].kind == "phase"
        assert sum(e.kind == "call" for e in trace) == len(outcome.history)
        fault_events = sum(e.kind in FAULT_KIND_CLASS for e in trace)
        assert fault_events == sum(outcome.fault_counts.values())
    for kind in ("deliver", "commit", "call", "return", "status", "crash", "restart",
                 "partition", "heal", "drop_loss", "log_installed", "retry"):
        assert kind in kinds, kind


def test_trace_round_trips_through_json() -> None:
    outcome = simulate(7, RunOptions(), VSR, record_trace=True)
    assert outcome.trace is not None
    data = msgspec.json.encode(outcome.trace)
    assert msgspec.json.decode(data, type=Trace) == outcome.trace
    line = format_event(TraceEvent(time_us=1500, node="r1", kind="deliver", peer="r0",
                                   detail="prepare v0 op=1"))
    assert line.split() == ["1.500ms", "r1", "deliver", "<-", "r0", "prepare", "v0", "op=1"]
