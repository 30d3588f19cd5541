"""The builtin target: the engine with the VSR system (`voprd.systems.vsr`)."""

from __future__ import annotations

from voprd.systems.vsr import VSR
from voprd.targets.engine import EngineTarget


class BuiltinTarget(EngineTarget):
    def __init__(self) -> None:
        super().__init__(VSR, "builtin")
