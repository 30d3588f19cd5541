"""Soak (excluded by default; run with `pytest -m soak`): 2,000 seeds with all faults must pass."""

from __future__ import annotations

import pytest

from voprd.options import RunOptions
from voprd.sim.batch import run_plain_loop
from voprd.systems.vsr import VSR


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_two_thousand_seeds_with_all_faults_pass() -> None:
    results = run_plain_loop(0, 2000, RunOptions(), VSR)
    failed = [(r.seed, r.kind, r.invariant, r.message) for r in results if r.status != "ok"]
    assert not failed, failed[:3]
    assert len(results) == 2000
