"""The builtin target: the simulated VSR cluster of voprd.sim, run in the worker process."""

from __future__ import annotations

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.sim.run import run_seed


class BuiltinTarget:
    name = "builtin"

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        return run_seed(seed, options)[0]
