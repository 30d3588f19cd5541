"""A plain in-process loop over seeds (the baseline the daemon benchmark compares against)."""

from __future__ import annotations

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.sim.run import run_seed
from voprd.sim.system import System


def run_plain_loop(
    start: int, count: int, options: RunOptions, system: System
) -> list[SeedResult]:
    assert start >= 0 and count >= 0
    return [run_seed(seed, options, system)[0] for seed in range(start, start + count)]
