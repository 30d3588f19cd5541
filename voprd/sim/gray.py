"""Gray failures: parts of the cluster that get slow, not dead (the `gray` fault class).

The nemesis starts them (its stream `faults.2`): one server's disk gets slow (its write latency
times 10 to the seed's `slow_factor_max`, up to 1000: `disk` is the multiplier the storage
applies), one link (both directions between a server and another node) or every link of one
server (a slow node), each for a drawn while, after which it heals by itself. Several may overlap;
the largest factor wins. The liveness phase ends them all (`calm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voprd.sim.events import EV_CALL
from voprd.sim.prng import Rng
from voprd.sim.trace import NO_PEER, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

_K_SLOW_DISK = K["slow_disk"]
_K_SLOW_LINK = K["slow_link"]
_K_SLOW_NODE = K["slow_node"]
_K_SLOW_END = K["slow_end"]

# What a slowdown slows.
DISK, PATHS = 0, 1


class Slowdowns:
    __slots__ = ("active", "disk", "next_id", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        # Write-latency multiplier per server (1: healthy), applied by voprd.sim.storage.
        self.disk = [1] * sim.n
        # Active slowdowns: id -> (DISK or PATHS, factor, the servers or the paths it slows).
        self.active: dict[int, tuple[int, int, tuple[int, ...]]] = {}
        self.next_id = 0

    def start(self, rng: Rng) -> None:
        """Start a slowdown drawn from `rng` (the nemesis'); it ends after a drawn while."""
        sim = self.sim
        plan = sim.plan
        n, nodes = sim.n, sim.nodes_total
        factor = rng.between(10, plan.slow_factor_max)
        duration_us = rng.between(10_000, plan.slow_us_max)
        what = rng.below(3)
        self.next_id += 1
        if what == 0:
            r = rng.below(n)
            self.active[self.next_id] = (DISK, factor, (r,))
            code, node, peer, detail = _K_SLOW_DISK, r, NO_PEER, f"disk x{factor}"
        elif what == 1:
            r = rng.below(n)
            other = rng.below(nodes - 1)
            other += other >= r
            paths: tuple[int, ...] = (r * nodes + other, other * nodes + r)
            self.active[self.next_id] = (PATHS, factor, paths)
            code, node, peer, detail = _K_SLOW_LINK, r, other, f"link x{factor}"
        else:
            r = rng.below(n)
            paths = tuple(
                path for other in range(nodes) if other != r
                for path in (r * nodes + other, other * nodes + r)
            )
            self.active[self.next_id] = (PATHS, factor, paths)
            code, node, peer, detail = _K_SLOW_NODE, r, NO_PEER, f"every link x{factor}"
        self._apply(self.next_id)
        sim.fault(node, code, factor, self.next_id, peer,
                  f"#{self.next_id} {detail} for {duration_us / 1000:.0f}ms")
        sim.push(sim.now + duration_us, EV_CALL, self.next_id, self.end)

    def end(self, slowdown_id: int) -> None:
        entry = self.active.pop(slowdown_id, None)
        if entry is None:
            return  # ended already (the liveness phase ends them all)
        self._apply(slowdown_id, entry)
        node = entry[2][0] if entry[0] == DISK else entry[2][0] // self.sim.nodes_total
        self.sim.fault(node, _K_SLOW_END, slowdown_id, detail=f"#{slowdown_id}")

    def calm(self) -> None:
        for slowdown_id in list(self.active):
            self.end(slowdown_id)

    def _apply(self, slowdown_id: int, ended: tuple[int, int, tuple[int, ...]] | None = None
               ) -> None:
        """Recompute the multipliers of what slowdown `slowdown_id` covers (the largest factor of
        the active slowdowns covering each)."""
        kind, _, targets = ended if ended is not None else self.active[slowdown_id]
        array = self.disk if kind == DISK else self.sim.network.slow
        covered = set(targets)
        best = dict.fromkeys(targets, 1)
        for other_kind, factor, others in self.active.values():
            if other_kind == kind:
                for target in others:
                    if target in covered and factor > best[target]:
                        best[target] = factor
        for target in targets:
            array[target] = best[target]
