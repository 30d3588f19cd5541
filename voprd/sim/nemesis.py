"""The nemesis: every 10 ms of the safety phase it may crash, pause or partition.

One PRNG draw (stream `faults`) per tick decides all three, 20 bits each against the seed's
probabilities. A crash loses the server's unsynced writes (tears them on atlas servers) and a
restart follows after a drawn delay; a paused server neither ticks nor receives (messages to it are
dropped) until it resumes. Half the crashes target a server with writes in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voprd.sim.events import EV_CALL, EV_TICK
from voprd.sim.phases import LIVENESS, SAFETY, SAFETY_TIME_US_MAX
from voprd.sim.trace import NO_PEER, NODE_SIM, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

NEMESIS_TICK_US = 10_000

_K_NEMESIS = K["nemesis"]
_K_CRASH = K["crash"]
_K_TORN = K["disk_torn"]
_K_RESTART = K["restart"]
_K_PAUSE = K["pause"]
_K_RESUME = K["resume"]


class Nemesis:
    __slots__ = ("plan", "rng", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan = sim.plan
        self.rng = sim.streams.stream("faults")

    def start(self) -> None:
        self.sim.push(NEMESIS_TICK_US, EV_CALL, 0, self.tick)

    def tick(self, _: int) -> None:
        sim = self.sim
        now = sim.now
        sim.push(now + NEMESIS_TICK_US, EV_CALL, 0, self.tick)
        sim.records.append((now, NODE_SIM, _K_NEMESIS, sim.phase, 0))
        if sim.record_trace:
            sim.details.append("")
            sim.peers.append(NO_PEER)
        if sim.phase != SAFETY or now >= SAFETY_TIME_US_MAX:
            sim.phases.nemesis_tick()
            return
        plan = self.plan
        rng = self.rng
        n = sim.n
        nodes = sim.nodes
        # One draw decides all three per-tick faults (20 bits each, probabilities in ppm).
        x = rng.next_u64()
        if plan.crash_ppm and (x & 0xFFFFF) * 1_000_000 < plan.crash_ppm << 20:
            up = [r for r in range(n) if nodes[r] is not None]
            writing = [r for r in up if sim.storage.disks[r].pending]
            if writing and rng.below(2):
                self.crash(rng.pick(writing))
            elif up:
                self.crash(rng.pick(up))
        if plan.pause_ppm and ((x >> 20) & 0xFFFFF) * 1_000_000 < plan.pause_ppm << 20:
            up = [r for r in range(n) if nodes[r] is not None and not sim.paused[r]]
            if up:
                r = rng.pick(up)
                sim.paused[r] = True
                sim.fault(r, _K_PAUSE)
                sim.push(sim.now + rng.between(1_000, plan.pause_us_max), EV_CALL, r, self.resume)
        if (
            plan.partition_ppm and not sim.network.partition_active
            and ((x >> 40) & 0xFFFFF) * 1_000_000 < plan.partition_ppm << 20
        ):
            sim.network.partition(rng)
        if plan.disk:
            sim.storage.tick()  # the disk class's faults at rest (voprd.sim.storage)

    def crash(self, r: int) -> None:
        sim = self.sim
        lost, torn_slots = sim.storage.crash(r)
        sim.nodes[r] = None
        sim.incarnation[r] += 1
        sim.paused[r] = False
        sim.fault(r, _K_CRASH, lost, len(torn_slots), detail=f"unsynced writes lost={lost}")
        for slot in torn_slots:
            sim.fault(r, _K_TORN, slot, detail=f"slot {slot}")
        delay_us = self.rng.between(1_000, max(1_000, self.plan.restart_us_max))
        sim.push(sim.now + delay_us, EV_CALL, r, self.restart)

    def restart(self, r: int) -> None:
        sim = self.sim
        if sim.nodes[r] is not None:
            return
        if sim.phase == LIVENESS and r not in sim.core:
            return  # outside the core, a crashed server stays down in the liveness phase
        sim.storage.before_restart(r)
        incarnation = sim.incarnation[r]
        server, recovery = sim.cluster.restart_server(r, incarnation)
        sim.nodes[r] = server
        sim.fault(r, _K_RESTART, recovery.items, int(recovery.damaged), detail=recovery.detail)
        server.restart()
        sim.push(sim.now + 1 + sim.clocks.offset_us[r], EV_TICK, r, incarnation)

    def resume(self, r: int) -> None:
        sim = self.sim
        if sim.paused[r]:
            sim.paused[r] = False
            sim.fault(r, _K_RESUME)
