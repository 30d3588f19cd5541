"""Swarm families, focus seeds and coverage in the engine: deterministic, reproducible from the
seed number alone, and without moving any draw of an ordinary seed."""

from __future__ import annotations

import pytest

from tests.test_sim_verdicts import Toy, ToyCluster
from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.clock import TICK_US
from voprd.sim.engine import Simulation
from voprd.sim.faults import (
    FOCUS_REPLICAS_MIN,
    FOCUS_SEED_BASE,
    SWARM_FAMILIES,
    SWARM_OFF_ONE_IN,
    FaultPlan,
    family_code,
    focus_seed,
    is_focus_seed,
    seed_focus,
)
from voprd.sim.prng import Rng, Streams
from voprd.sim.run import run_seed
from voprd.sim.system import Env
from voprd.systems.vsr import VSR
from voprd.systems.vsr.system import COVERAGE_PATHS


def _plan(seed: int, classes: tuple[str, ...] = FAULT_CLASSES) -> FaultPlan:
    streams = Streams(seed)
    return FaultPlan(streams.stream("faults.plan"), classes, TICK_US, streams=streams)


def test_family_codes_are_distinct_and_focus_seeds_round_trip() -> None:
    codes = [family_code(name) for name in SWARM_FAMILIES]
    assert len(set(codes)) == len(codes) and all(0 < code <= 0xFFFF for code in codes)
    for name in SWARM_FAMILIES:
        seed = focus_seed(name, 12345)
        assert is_focus_seed(seed) and seed_focus(seed) == name and seed < 1 << 63
    assert not is_focus_seed(FOCUS_SEED_BASE - 1) and seed_focus(7) is None


def test_an_ordinary_seed_draws_as_before_and_a_plan_without_streams_too() -> None:
    for seed in range(50):
        with_streams = _plan(seed)
        without = FaultPlan(Streams(seed).stream("faults.plan"), FAULT_CLASSES, TICK_US)
        assert with_streams.describe() == without.describe()
        assert with_streams.focus is None


def test_families_switch_off_in_some_seeds_from_their_own_stream() -> None:
    SWARM_FAMILIES["test_family"] = "storage"
    try:
        ons = []
        for seed in range(600):
            plan = _plan(seed)
            before = plan.describe()
            on = plan.family("test_family")
            ons.append(on)
            if not plan.storage:
                assert not on  # its class is off in this seed
            assert plan.families["test_family"] is on
            assert ("test_family" in plan.switched_off) is (not on and plan.storage)
            assert ("test_family" in plan.fingerprint()) is on
            assert before.split(" off=")[0] == plan.describe().split(" off=")[0]
            again = _plan(seed)
            assert again.family("test_family") is on  # deterministic
        off_share = ons.count(False) / len(ons)
        # Off when storage is (1/6) or the family itself is (1/6 of the rest): about 0.31.
        assert 0.2 < off_share < 0.45, off_share
        assert not _plan(1, ("network",)).family("test_family")  # class not selected
        focused = focus_seed("test_family", 1)
        streams = Streams(focused)
        plan = FaultPlan(streams.stream("faults.plan"), FAULT_CLASSES, TICK_US, streams=streams)
        assert plan.storage and plan.family("test_family")  # a focus forces it (and its class)
    finally:
        del SWARM_FAMILIES["test_family"]
    assert SWARM_OFF_ONE_IN == 6


@pytest.mark.parametrize("family", list(SWARM_FAMILIES))
def test_a_focus_seed_forces_its_family_on_and_raises_its_levels(family: str) -> None:
    flag = {"clients": "clients_faults"}.get(family, family)  # `clients` is the client count
    plans = [_plan(focus_seed(family, serial)) for serial in range(200)]
    assert all(plan.focus == family and getattr(plan, flag) for plan in plans)
    assert all(plan.replicas >= FOCUS_REPLICAS_MIN for plan in plans)
    assert all(f"focus={family}" in plan.describe() for plan in plans)
    unfocused = [_plan(seed) for seed in range(200)]
    knob = {"network": "loss_q20", "crash": "crash_ppm", "storage": "write_error_ppm",
            "clock": "drift_ppm", "partition": "bridge_ppm", "pause": "pause_ppm",
            "time": "clock_jump_ppm", "gray": "slow_ppm", "replay": "replay_q20",
            "corrupt": "corrupt_q20", "clients": "client_crash_ppm", "disk": "latent_ppm"}[family]

    def mean(values: list[int]) -> float:
        return sum(values) / len(values)

    def value(plan: FaultPlan) -> int:
        raw = getattr(plan, knob)
        return max(abs(d) for d in raw) if isinstance(raw, list) else raw

    on = [value(p) for p in unfocused if getattr(p, flag)]
    assert mean([value(p) for p in plans]) > 1.3 * mean(on)


def test_level_keeps_the_draw_count() -> None:
    plan = _plan(focus_seed("crash", 3))
    first, second = Rng(9), Rng(9)
    assert plan.level("crash", first, 0, 1000) >= 500
    plan.level("network", second, 0, 1000)
    assert first.next_u64() == second.next_u64()


def test_a_focus_seed_is_reproduced_by_its_number_alone() -> None:
    seed = focus_seed("storage", 77)
    first, _ = run_seed(seed, RunOptions(), VSR)
    again, _ = run_seed(seed, RunOptions(), VSR)
    assert first.status == "ok", first.message
    assert (first.trace_hash, first.events, first.coverage) == (
        again.trace_hash, again.events, again.coverage)
    assert "storage" in first.config


def test_the_vsr_reports_its_paths_and_the_configuration() -> None:
    seen: set[str] = set()
    for seed in range(30):
        result, _ = run_seed(seed, RunOptions(), VSR)
        assert set(result.coverage) <= set(COVERAGE_PATHS)
        assert all(count > 0 for count in result.coverage.values())
        assert list(result.coverage) == [p for p in COVERAGE_PATHS if p in result.coverage]
        assert result.config.startswith("replicas=")
        seen |= set(result.coverage)
    assert {"view_change", "start_view", "state_transfer", "repair", "recovery"} <= seen


def test_cover_refuses_an_undeclared_path() -> None:
    class Covering(Toy):
        coverage_paths = ("tick",)

        def start(self, env: Env) -> ToyCluster:
            env.cover("tick")
            with pytest.raises(ValueError, match="coverage_paths"):
                env.cover("tock")
            return ToyCluster(self, env)

    sim = Simulation(1, RunOptions(faults=()), Covering())
    assert sim.coverage_counts() == {"tick": 1}
