"""The nemesis: every 10 ms of the safety phase it may crash, pause or partition, and (the later
fault families) slow something down, crash a client, change a clock's drift or jump a wall clock.

One PRNG draw (stream `faults`) per tick decides the first three, 20 bits each against the seed's
probabilities; one draw of stream `faults.2` the later four, 16 bits each. A crash loses the
server's unsynced writes (tears them on atlas servers) and a restart follows after a drawn delay.
A paused server is frozen, process and all: it neither ticks nor receives, and its disk
completions wait too; what arrives for it is held (`Simulation.hold`, up to `HOLD_MAX` messages)
and handled in arrival order when it resumes, late. Half the crashes target a server with writes
in flight. A crashed client loses its open operation (its outcome stays unknown) and restarts
after a drawn delay as a new session (`Cluster.restart_client`, for systems that have it).
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
_K_CLIENT_CRASH = K["client_crash"]
_K_CLIENT_RESTART = K["client_restart"]
_K_CLOCK_DRIFT = K["clock_drift"]
_K_CLOCK_JUMP = K["clock_jump"]


class Nemesis:
    __slots__ = ("later", "plan", "rng", "rng2", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan = plan = sim.plan
        self.rng = sim.streams.stream("faults")
        self.rng2 = sim.streams.stream("faults.2")
        # Any of the later mid-run faults (then one more draw per tick).
        self.later = bool(
            plan.slow_ppm or plan.clock_drift_ppm or plan.clock_jump_ppm
            or (plan.client_crash_ppm and sim.client_restarts)
        )

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
            plan.partition_ppm and len(sim.network.partitions) < plan.partitions_max
            and ((x >> 40) & 0xFFFFF) * 1_000_000 < plan.partition_ppm << 20
        ):
            sim.network.partition(rng)
        if plan.disk:
            sim.storage.tick()  # the disk class's faults at rest (voprd.sim.storage)
        if self.later:
            self._later_faults()

    def _later_faults(self) -> None:
        """The later families' per-tick decisions: one draw, 16 bits each."""
        sim = self.sim
        plan = self.plan
        rng = self.rng2
        x = rng.next_u64()
        if plan.slow_ppm and (x & 0xFFFF) * 1_000_000 < plan.slow_ppm << 16:
            sim.slowdowns.start(rng)
        if (
            plan.client_crash_ppm and sim.client_restarts
            and ((x >> 16) & 0xFFFF) * 1_000_000 < plan.client_crash_ppm << 16
        ):
            running = [c for c in sim.client_nodes
                       if sim.nodes[c] is not None and not sim.nodes[c].done]
            if running:
                self.crash_client(rng.pick(running))
        if plan.clock_drift_ppm and ((x >> 32) & 0xFFFF) * 1_000_000 < plan.clock_drift_ppm << 16:
            r = rng.below(sim.n)
            drift = sim.clocks.change_drift(r, sim.now, rng)
            sim.fault(r, _K_CLOCK_DRIFT, drift, detail=f"drift now {drift}ppm")
        if plan.clock_jump_ppm and ((x >> 48) & 0xFFFF) * 1_000_000 < plan.clock_jump_ppm << 16:
            r = rng.below(sim.n)
            step = sim.clocks.jump(r, plan.clock_jump_us_max, rng)
            sim.fault(r, _K_CLOCK_JUMP, step, detail=f"wall clock {step / 1000:+.3f}ms")

    def crash(self, r: int) -> None:
        sim = self.sim
        lost, torn_slots = sim.storage.crash(r)
        sim.nodes[r] = None
        sim.incarnation[r] += 1
        sim.paused[r] = False
        sim.held[r].clear()  # what a frozen process had not handled dies with it
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
        """Unfreeze server r: what was held for it is handled now, in arrival order."""
        sim = self.sim
        if sim.paused[r]:
            sim.paused[r] = False
            sim.fault(r, _K_RESUME, len(sim.held[r]))
            sim.release(r)

    def crash_client(self, c: int) -> None:
        sim = self.sim
        sim.nodes[c] = None
        index = c - sim.n
        sim.client_incarnation[index] += 1
        sim.fault(c, _K_CLIENT_CRASH, sim.client_incarnation[index])
        delay_us = self.rng2.between(1_000, max(1_000, self.plan.client_restart_us_max))
        sim.push(sim.now + delay_us, EV_CALL, c, self.restart_client)

    def restart_client(self, c: int) -> None:
        """A crashed client comes back as a new session, with what is left of its budget."""
        sim = self.sim
        if sim.nodes[c] is not None:
            return
        index = c - sim.n
        budget = max(0, sim.client_budgets[index] - sim.history.calls[index])
        incarnation = sim.client_incarnation[index]
        sim.nodes[c] = sim.cluster.restart_client(index, incarnation, budget)  # type: ignore[attr-defined]
        sim.fault(c, _K_CLIENT_RESTART, incarnation, budget, detail=f"budget left {budget}")
        sim.phases.workload_returned()  # it may have nothing left to do
