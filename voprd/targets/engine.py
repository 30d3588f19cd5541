"""Engine-backed targets: a system plugged into the simulation engine, run in the worker process.

`--target builtin` is the VSR system (`voprd.systems.vsr`); a plugin's `--target` names its own
`voprd.sim.system.System` (`voprd.targets.loader` resolves both).
"""

from __future__ import annotations

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.sim.run import run_seed
from voprd.sim.system import System


class EngineTarget:
    def __init__(self, system: System, name: str) -> None:
        self.system = system
        self.name = name

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        return run_seed(seed, options, self.system)[0]
