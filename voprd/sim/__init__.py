"""voprd.sim: the deterministic simulator. `run_seed` runs one seed; see voprd.sim.run."""

from voprd.sim.run import Outcome, run_seed, simulate

__all__ = ["Outcome", "run_seed", "simulate"]
