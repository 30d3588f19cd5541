"""Bounds are verdicts: a bound reached in the liveness phase fails the run (`liveness`); in the
safety phase it is reported and the run goes on to the liveness phase with its share of events."""

from __future__ import annotations

from typing import Any

import pytest

from voprd.options import RunOptions
from voprd.sim.phases import LIVENESS_TIME_US_MAX, Phases
from voprd.sim.run import run_seed, simulate
from voprd.sim.system import Env, Message, Output, Recovery, System

PING = 0
BALLS_PER_TICK = 20


class Toy(System):
    """A toy system whose misbehaviour is chosen per test: `storm` ("safety", "liveness" or
    "always": every server tick starts balls bouncing between the server and a client forever),
    `bound_in` (the phase in which a client reports the bound `toy_limit`), `converges`."""

    name = "toy"
    message_names = ("ping",)

    def __init__(self, storm: str = "", bound_in: str = "", converges: bool = True) -> None:
        self.storm = storm
        self.bound_in = bound_in
        self.converges = converges

    def start(self, env: Env) -> ToyCluster:
        return ToyCluster(self, env)


class ToyCluster:
    def __init__(self, system: Toy, env: Env) -> None:
        self.system = system
        self.env = env
        self.liveness = False

    def storming(self) -> bool:
        storm = self.system.storm
        return storm == "always" or storm == ("liveness" if self.liveness else "safety")

    def start_server(self, index: int) -> ToyServer:
        return ToyServer(self, index)

    def restart_server(self, index: int, incarnation: int) -> tuple[ToyServer, Recovery]:
        return ToyServer(self, index), Recovery(0, False, "")

    def client(self, index: int, budget: int) -> ToyClient:
        return ToyClient(self, self.env.replicas + index, budget)

    def on_return(self, client: int, index: int, output: Output, tag: int) -> None:
        pass

    def converged(self, core: tuple[int, ...]) -> str | None:
        return None if self.system.converges else "never converges"


class ToyServer:
    def __init__(self, cluster: ToyCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index

    def on_message(self, msg: Message) -> None:
        if self.cluster.storming():
            self.cluster.env.send(self.index, msg[1], (PING, self.index))

    def on_tick(self) -> None:
        cluster = self.cluster
        if cluster.storming():
            for _ in range(BALLS_PER_TICK):
                cluster.env.send(self.index, cluster.env.replicas, (PING, self.index))

    def on_write_done(self, slot: int, ok: bool) -> None:
        pass

    def restart(self) -> None:
        pass


class ToyClient:
    def __init__(self, cluster: ToyCluster, node: int, budget: int) -> None:
        self.cluster = cluster
        self.node = node
        self.budget = budget
        self.pending: int | None = None

    @property
    def idle(self) -> bool:
        return self.pending is None

    @property
    def done(self) -> bool:
        return self.idle and self.budget == 0

    def on_message(self, msg: Message) -> None:
        if self.cluster.storming():
            self.cluster.env.send(self.node, msg[1], (PING, self.node))

    def on_tick(self, may_start: bool) -> None:
        cluster = self.cluster
        env = cluster.env
        if not may_start:
            cluster.liveness = True
        if cluster.system.bound_in == ("safety" if may_start else "liveness"):
            env.bound("toy_limit")
        if self.pending is not None:
            index, self.pending = self.pending, None
            env.history_return(index, "")
        elif may_start and self.budget:
            self.budget -= 1
            self.pending = env.history_call(self.node, "get", "k")


NO_FAULTS = RunOptions(faults=(), max_events=20_000)


def _run(system: Toy, seed: int = 1, options: RunOptions = NO_FAULTS) -> Any:
    return run_seed(seed, options, system)[0]


def test_a_well_behaved_toy_passes_without_bounds() -> None:
    result = _run(Toy())
    assert (result.status, result.bounds_reached) == ("ok", [])


def test_a_bound_in_the_safety_phase_is_reported_not_a_failure() -> None:
    result = _run(Toy(bound_in="safety"))
    assert result.status == "ok", result.message
    assert result.bounds_reached == ["toy_limit"]


def test_a_bound_in_the_liveness_phase_is_a_liveness_failure() -> None:
    result = _run(Toy(bound_in="liveness", converges=False))
    assert (result.status, result.kind, result.invariant) == ("failed", "liveness", "liveness")
    assert "bound toy_limit reached" in (result.message or "")
    assert "never converges" in (result.message or "")


def test_a_bound_in_the_liveness_phase_of_a_converged_core_fails_too() -> None:
    # The bound comes before the first convergence check: a livelock to report all the same.
    result = _run(Toy(bound_in="liveness"))
    assert (result.status, result.kind) == ("failed", "liveness")
    assert result.bounds_reached == ["toy_limit"]
    assert "it had converged, but the events did not stop" in (result.message or "")


def test_a_storm_in_the_liveness_phase_fails_at_max_events_before_the_deadline() -> None:
    outcome = simulate(1, NO_FAULTS, Toy(storm="liveness", converges=False))
    result = outcome.result
    assert (result.status, result.kind) == ("failed", "liveness"), result.message
    assert result.events == NO_FAULTS.max_events
    assert result.bounds_reached == ["max_events"]
    assert "bound max_events reached" in (result.message or "")
    # The storm burnt the events long before the liveness phase's time limit.
    assert result.simulated_time_ms < LIVENESS_TIME_US_MAX // 1000


def test_a_storm_in_the_safety_phase_leaves_the_liveness_phase_its_share() -> None:
    result = _run(Toy(storm="safety"))
    assert result.status == "ok", result.message
    assert result.bounds_reached == ["safety_events_limit"]
    assert Phases.safety_events_max(NO_FAULTS.max_events) < result.events < NO_FAULTS.max_events


def test_a_storm_that_never_stops_fails_in_the_liveness_phase() -> None:
    result = _run(Toy(storm="always", converges=False))
    assert (result.status, result.kind) == ("failed", "liveness")
    assert result.bounds_reached == ["safety_events_limit", "max_events"]


@pytest.mark.parametrize("storm", ["liveness", "always"])
def test_bound_verdicts_are_deterministic(storm: str) -> None:
    first = _run(Toy(storm=storm, converges=False), seed=4)
    again = _run(Toy(storm=storm, converges=False), seed=4)
    assert (first.trace_hash, first.events, first.message) == (
        again.trace_hash, again.events, again.message)
