"""Planted bugs: off by default, and each one the simulator's invariants can see is caught."""

from __future__ import annotations

import pytest

from voprd.options import RunOptions
from voprd.sim.run import run_seed, simulate
from voprd.vsr.bugs import BUGS

SEED_BUDGET = 60

# Bugs the replica-level invariants catch (the others need the linearizability checker).
CAUGHT_BY_INVARIANTS = {
    "commit_without_quorum": {"durability", "agreement"},
    "view_change_own_log": {"durability", "agreement"},
    "ack_before_fsync": {"durability", "agreement"},
    "rejoin_without_recovery": {"agreement", "durability", "liveness"},
    "start_view_commit_regress": {"commit_monotonic"},
}


def test_bugs_are_off_by_default() -> None:
    assert RunOptions().bugs == ()
    assert set(CAUGHT_BY_INVARIANTS) <= set(BUGS)


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY_INVARIANTS))
def test_planted_bug_is_caught(bug: str) -> None:
    for seed in range(SEED_BUDGET):
        result, _ = run_seed(seed, RunOptions(bugs=(bug,)))
        if result.status == "failed":
            assert result.invariant in CAUGHT_BY_INVARIANTS[bug], (seed, result.message)
            clean, _ = run_seed(seed, RunOptions())
            assert clean.status == "ok", (seed, clean.message)
            return
    pytest.fail(f"{bug} survived {SEED_BUDGET} seeds")


def test_invariants_exercised_by_the_planted_bugs() -> None:
    # Together the bugs exercise at least three different replica-level invariants.
    covered = set().union(*CAUGHT_BY_INVARIANTS.values())
    assert {"durability", "agreement", "commit_monotonic"} <= covered


def test_duplicate_execution_is_visible_in_the_history() -> None:
    """no_client_table executes a retried append twice: the unique token shows up twice in a
    later read, which the linearizability checker (and this simple scan) can see."""
    def duplicated_token(bugs: tuple[str, ...], seeds: range) -> int | None:
        for seed in seeds:
            outcome = simulate(seed, RunOptions(faults=("network",), bugs=bugs))
            for op in outcome.history:
                if op.op == "get" and isinstance(op.output, str):
                    tokens = [t for t in op.output.split(",") if t]
                    if len(tokens) != len(set(tokens)):
                        return seed
        return None

    seed = duplicated_token(("no_client_table",), range(80))
    assert seed is not None
    assert duplicated_token((), range(seed, seed + 1)) is None
