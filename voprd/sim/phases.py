"""The phases of a run: safety (faults on, the workload runs), then liveness (a healed core must
finish every request and converge), then done.

Safety ends when every client is done (`Client.done`) or at `SAFETY_TIME_US_MAX` (reported as the
bound `safety_time_limit`). The liveness phase picks a quorum core of servers outside the storage
atlas, restarts and resumes it, heals and calms the network and stops storage faults on it; the
rest stay as they are. Every pending client request must then complete and the system's
`Cluster.converged(core)` must hold within `LIVENESS_TIME_US_MAX`, else the failure `liveness`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voprd.sim.trace import NODE_SIM, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

SAFETY, LIVENESS, DONE = 0, 1, 2
SAFETY_TIME_US_MAX = 30_000_000
LIVENESS_TIME_US_MAX = 15_000_000

_K_PHASE = K["phase"]
_K_RESUME = K["resume"]


class Phases:
    __slots__ = ("liveness_deadline_us", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.liveness_deadline_us = 0

    def begin(self) -> None:
        sim = self.sim
        sim.note(NODE_SIM, _K_PHASE, SAFETY, 0, detail="safety " + sim.plan.describe())

    def nemesis_tick(self) -> None:
        """A nemesis tick past the safety phase (or its time limit): advance the phases."""
        sim = self.sim
        if sim.phase == LIVENESS:
            self.check_liveness()
            return
        assert sim.now >= SAFETY_TIME_US_MAX
        sim.bound("safety_time_limit")
        self.start_liveness()

    def workload_returned(self) -> None:
        """A client operation returned: the safety phase ends once every client is done."""
        sim = self.sim
        if sim.phase == SAFETY and all(sim.nodes[c].done for c in sim.client_nodes):
            self.start_liveness()

    def start_liveness(self) -> None:
        """Heal a quorum core: restart and reconnect it, stop storage faults on it and lift the
        damage on its disks."""
        sim = self.sim
        assert sim.phase == SAFETY
        sim.phase = LIVENESS
        # The core is drawn with the seed (FaultPlan.core): faults that must spare it know it.
        sim.core = sim.plan.core
        self.liveness_deadline_us = sim.now + LIVENESS_TIME_US_MAX
        sim.note(NODE_SIM, _K_PHASE, LIVENESS, len(sim.core),
                 detail=f"liveness core={[f'r{r}' for r in sim.core]}")
        sim.network.calm()
        sim.storage.heal(sim.core)
        for r in sim.core:
            if sim.paused[r]:
                sim.paused[r] = False
                sim.fault(r, _K_RESUME)
            if sim.nodes[r] is None:
                sim.nemesis.restart(r)

    def check_liveness(self) -> None:
        sim = self.sim
        why = sim.cluster.converged(sim.core)
        pending = [c - sim.n for c in sim.client_nodes if not sim.nodes[c].idle]
        if why is None and not pending:
            self.finish(0, "core converged, requests done")
            return
        if sim.now >= self.liveness_deadline_us:
            reason = why if why is not None else f"client requests still pending: {pending}"
            sim.failure = (
                "liveness", "liveness",
                f"core {[f'r{r}' for r in sim.core]} did not finish within "
                f"{LIVENESS_TIME_US_MAX // 1000} ms of healing: {reason}",
            )
            self.finish(3, "liveness failure: " + reason)

    def finish(self, code: int, detail: str) -> None:
        """The run is over: note why (0 passed, 1 violation, 2 exception, 3 liveness) and stop
        the event loop (its queue is emptied)."""
        sim = self.sim
        sim.phase = DONE
        sim.note(NODE_SIM, _K_PHASE, DONE, code, detail=detail)
        sim.queue.clear()
