"""The target interface: run one seed, return its result. Targets run inside worker processes."""

from __future__ import annotations

from typing import Protocol

from voprd.events import SeedResult
from voprd.options import RunOptions


class Target(Protocol):
    """A system under test. `run` must be deterministic in (seed, options)."""

    name: str

    def run(self, seed: int, options: RunOptions) -> SeedResult: ...
