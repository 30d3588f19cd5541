"""Simulated clocks: virtual time is one integer of microseconds; each server has its own clocks.

- Its **monotonic clock** runs at its own rate: the seed draws a drift per server (the `clock`
  fault class: up to the seed's spread, at most ±10%) and, mid-run, the nemesis changes it (a new
  drift within the same spread: `clock_drift`). It never jumps. The server's timer ticks every
  `TICK_US` of its monotonic time from a drawn phase offset, so drift and its changes reach every
  timeout a system measures in ticks (`Server.on_tick`).
- Its **wall clock** (`Env.wall_clock_us`) is the monotonic clock plus an offset (at first the
  server's phase offset), and the nemesis makes it jump, forwards or backwards, by up to the
  seed's `clock_jump_us_max` (`clock_jump`), as an NTP step or an operator would. Timers do not
  follow it: code that measures time with the wall clock meets the jumps, code that uses the
  monotonic clock or ticks does not.

Clients tick every `CLIENT_TICK_US` of virtual time; their clocks are virtual time, without drift.
"""

from __future__ import annotations

from voprd.sim.faults import FaultPlan
from voprd.sim.prng import Rng

TICK_US = 10_000
CLIENT_TICK_US = 10_000


class Clocks:
    __slots__ = (
        "anchor_local_us", "anchor_us", "drift_ppm", "offset_us", "spread_ppm", "tick_us",
        "wall_offset_us",
    )

    def __init__(self, plan: FaultPlan) -> None:
        self.drift_ppm = list(plan.drift_ppm)
        self.offset_us = plan.offset_us
        self.spread_ppm = plan.drift_spread_ppm
        self.tick_us = [TICK_US + TICK_US * drift // 1_000_000 for drift in self.drift_ppm]
        # The monotonic clock is piecewise linear: local time anchor_local_us at anchor_us, then
        # TICK_US of local time per tick_us of virtual time.
        replicas = len(self.drift_ppm)
        self.anchor_us = [0] * replicas
        self.anchor_local_us = [0] * replicas
        self.wall_offset_us = list(plan.offset_us)

    def skewed(self, r: int) -> bool:
        return bool(self.drift_ppm[r] or self.offset_us[r])

    def describe(self, r: int) -> str:
        return f"drift={self.drift_ppm[r]}ppm offset={self.offset_us[r]}us"

    def monotonic_us(self, r: int, now: int) -> int:
        return self.anchor_local_us[r] + (now - self.anchor_us[r]) * TICK_US // self.tick_us[r]

    def wall_clock_us(self, r: int, now: int) -> int:
        return self.monotonic_us(r, now) + self.wall_offset_us[r]

    def change_drift(self, r: int, now: int, rng: Rng) -> int:
        """A new drift for server r (within the seed's spread), from `now` on; returns it."""
        self.anchor_local_us[r] = self.monotonic_us(r, now)
        self.anchor_us[r] = now
        spread = self.spread_ppm
        drift = self.drift_ppm[r] = rng.between(-spread, spread)
        self.tick_us[r] = TICK_US + TICK_US * drift // 1_000_000
        return drift

    def jump(self, r: int, max_us: int, rng: Rng) -> int:
        """Step server r's wall clock by a drawn amount (never 0); returns it."""
        step = rng.between(1, max_us)
        if rng.below(2):
            step = -step
        self.wall_offset_us[r] += step
        return step
