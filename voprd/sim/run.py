"""Run one seed of a system: the public entry points of the simulation engine.

`run_seed(seed, options, system, record_trace=False) -> (SeedResult, Trace | None)` is what
targets, the CLI and tests call; `simulate` returns everything (history, fault counts) for callers
that need it. The system comes from the caller (`voprd.targets.loader.load_system` resolves
`--target`): the engine imports none.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from voprd.check.history import HistoryOp
from voprd.check.models import Model
from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.sim.engine import Simulation
from voprd.sim.linearizability import check_linearizability
from voprd.sim.system import System
from voprd.sim.trace import Trace

TRACE_TAIL_EVENTS = 40

# Checks of the recorded client history against the system's model, run after the simulation when
# it passed the system's invariants (so every passing seed's history is checked). Each returns
# None, or (invariant, message) for a violation. Linearizability is always on.
HistoryCheck = Callable[[list[HistoryOp], Model], "tuple[str, str] | None"]
HISTORY_CHECKS: list[HistoryCheck] = [check_linearizability]


class Outcome(msgspec.Struct, kw_only=True):
    result: SeedResult
    history: list[HistoryOp]
    fault_counts: dict[str, int]
    trace: Trace | None = None
    environment: str = ""


def simulate(
    seed: int, options: RunOptions, system: System, *, record_trace: bool = False
) -> Outcome:
    system.validate_bugs(options.bugs)
    started = time.process_time()
    sim = Simulation(seed, options, system, record_trace)
    sim.run()
    history = sim.history_ops()
    failure = sim.failure
    if failure is None:
        model = system.linearizability_model()
        for check in HISTORY_CHECKS:
            verdict = check(history, model)
            if verdict is not None:
                failure = ("invariant", verdict[0], verdict[1])
                break
    result = SeedResult(
        seed=seed,
        status="ok" if failure is None else "failed",
        events=sim.events,
        simulated_time_ms=sim.now // 1000,
        trace_hash=sim.trace_hash(),
        bounds_reached=list(sim.bounds),
        config=sim.plan.fingerprint(),
        coverage=sim.coverage_counts(),
    )
    if failure is not None:
        result.kind = failure[0]  # type: ignore[assignment]
        result.invariant = failure[1]
        result.message = failure[2]
        result.history = [msgspec.to_builtins(op) for op in history]
        result.trace_tail = sim.trace_tail(TRACE_TAIL_EVENTS)
    result.duration_s = time.process_time() - started
    return Outcome(
        result=result, history=history, fault_counts=dict(sorted(sim.fault_counts.items())),
        trace=sim.trace(), environment=sim.plan.describe(),
    )


def run_seed(
    seed: int, options: RunOptions, system: System, *, record_trace: bool = False
) -> tuple[SeedResult, Trace | None]:
    """Run one seed (twice with options.check_determinism); deterministic in (seed, options)."""
    outcome = simulate(seed, options, system, record_trace=record_trace)
    if options.check_determinism:
        check_determinism(outcome.result, options, system)
    return outcome.result, outcome.trace


def check_determinism(result: SeedResult, options: RunOptions, system: System) -> None:
    """Run the seed again in fresh state; mark `result` failed (nondeterminism) if it differs."""
    again = simulate(result.seed, options, system).result
    if (again.trace_hash, again.events) != (result.trace_hash, result.events):
        result.status = "failed"
        result.kind = "nondeterminism"
        result.invariant = None
        result.message = (
            f"trace hash {result.trace_hash} ({result.events} events) on the first run, "
            f"{again.trace_hash} ({again.events} events) on the second"
        )
