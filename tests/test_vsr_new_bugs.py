"""The planted bugs only the later fault families (and even cluster sizes) catch: each is caught
with every fault on, the caught seed passes without it, it is caught by its own family alone (on
top of the first four classes), and it is not caught with the later families off and the cluster
sizes of before (1, 3, 5). The default suite checks a few dozen seeds; the soak-marked test checks
2,000 (BENCHMARKS.md has the seeds-to-detection)."""

from __future__ import annotations

import pytest

from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.run import run_seed
from voprd.systems.vsr import VsrSystem

FIRST_CLASSES = ("network", "crash", "storage", "clock")
# bug -> (invariants that catch it, the class that alone catches it on top of the first four;
# None: even cluster sizes).
NEW_BUGS: dict[str, tuple[set[str], str | None]] = {
    "quorum_ceil_half": ({"durability", "agreement", "liveness"}, None),
    "skip_message_checksum": (
        {"convergence", "agreement", "durability", "linearizability", "liveness", None}, "corrupt"
    ),
    "eviction_by_local_recency": ({"convergence"}, "clients"),
    "client_session_reuse": ({"liveness", "linearizability"}, "clients"),
    "old_request_reexecuted": ({"linearizability"}, "replay"),
    "fsync_watchdog_ticks": ({"durability"}, "gray"),
    "fsync_watchdog_monotonic": ({"durability"}, "pause"),
    "fsync_watchdog_wall_clock": ({"durability"}, "time"),
}
SEED_BUDGET = 40
# Caught without the later faults on a few seeds of 2,000 all the same: the first classes' delay
# spikes (up to 300 ms) and duplicates deliver an old request late now and then (3 of seeds
# 0..1999: 170, 1810, 1981), where the replay class does it in about 1 seed in 7.
RARE_WITHOUT: dict[str, int] = {"old_request_reexecuted": 5}


def _system(sizes: tuple[int, ...] | None = None) -> VsrSystem:
    system = VsrSystem()
    if sizes is not None:
        system.cluster_sizes = sizes
    return system


def _first_failure(
    bug: str, faults: tuple[str, ...], system: VsrSystem, seeds: range
) -> tuple[int, str | None] | None:
    for seed in seeds:
        result, _ = run_seed(seed, RunOptions(faults=faults, bugs=(bug,)), system)
        if result.status == "failed":
            return seed, result.invariant
    return None


@pytest.mark.parametrize("bug", sorted(NEW_BUGS))
def test_caught_with_every_fault_and_the_seed_passes_without_the_bug(bug: str) -> None:
    system = _system()
    found = _first_failure(bug, FAULT_CLASSES, system, range(SEED_BUDGET))
    assert found is not None, f"{bug} survived {SEED_BUDGET} seeds"
    seed, invariant = found
    assert invariant in NEW_BUGS[bug][0], (seed, invariant)
    clean, _ = run_seed(seed, RunOptions(), system)
    assert clean.status == "ok", (seed, clean.message)


@pytest.mark.parametrize("bug", sorted(NEW_BUGS))
def test_caught_by_its_own_family(bug: str) -> None:
    family = NEW_BUGS[bug][1]
    faults = FIRST_CLASSES if family is None else (*FIRST_CLASSES, family)
    system = _system()  # even sizes among them
    assert _first_failure(bug, faults, system, range(4 * SEED_BUDGET)) is not None


@pytest.mark.parametrize("bug", sorted(NEW_BUGS))
def test_not_caught_without_the_later_faults(bug: str) -> None:
    assert _first_failure(bug, FIRST_CLASSES, _system((1, 3, 5)), range(SEED_BUDGET)) is None


@pytest.mark.soak
@pytest.mark.parametrize("bug", sorted(NEW_BUGS))
def test_not_caught_without_the_later_faults_over_two_thousand_seeds(bug: str) -> None:
    system = _system((1, 3, 5))
    failed = sum(
        run_seed(seed, RunOptions(faults=FIRST_CLASSES, bugs=(bug,)), system)[0].status != "ok"
        for seed in range(2_000)
    )
    assert failed <= RARE_WITHOUT.get(bug, 0), failed
