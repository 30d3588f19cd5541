"""Simulated clocks: virtual time is one integer of microseconds; each server's timer ticks at its
own drifting period from its own phase offset (the `clock` fault class draws both per seed).

Servers see time only through their ticks (`Server.on_tick`), so drift and offset change every
timeout a system measures in ticks. Clients tick every `CLIENT_TICK_US`, without drift.
"""

from __future__ import annotations

from voprd.sim.faults import FaultPlan

TICK_US = 10_000
CLIENT_TICK_US = 10_000


class Clocks:
    __slots__ = ("drift_ppm", "offset_us", "tick_us")

    def __init__(self, plan: FaultPlan) -> None:
        self.drift_ppm = plan.drift_ppm
        self.offset_us = plan.offset_us
        self.tick_us = [TICK_US + TICK_US * drift // 1_000_000 for drift in plan.drift_ppm]

    def skewed(self, r: int) -> bool:
        return bool(self.drift_ppm[r] or self.offset_us[r])

    def describe(self, r: int) -> str:
        return f"drift={self.drift_ppm[r]}ppm offset={self.offset_us[r]}us"
