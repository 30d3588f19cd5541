"""The phases of a run: safety (faults on, the workload runs), then liveness (a healed core must
finish every request and converge), then done.

Safety ends when every client is done (`Client.done`), at `SAFETY_TIME_US_MAX` (reported as the
bound `safety_time_limit`), or once it has used its share of the run's events
(`safety_events_max`: three quarters of `max_events`, reported as the bound `safety_events_limit`),
so a storm in the safety phase still leaves the liveness phase events to prove convergence in. A
bound reached in the safety phase is reported, never a failure: faults may legitimately slow the
workload down. The liveness phase picks a quorum core of servers outside the storage atlas,
restarts and resumes it, heals and calms the network and stops storage faults on it; the rest stay
as they are (the core's size is the system's `System.core_size`, a majority by default); every
gray failure ends and crashed clients restart. Every pending client request must then complete
and the system's
`Cluster.converged(core)` must hold within `LIVENESS_TIME_US_MAX`, else the failure `liveness`.
A bound reached in the liveness phase (`max_events`, the network's `queue_events`, a system's own
`env.bound`) is a verdict too: the failure `liveness` (the core did not converge within it; a
livelock or a message storm does not pass).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voprd.sim.trace import NODE_SIM, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

SAFETY, LIVENESS, DONE = 0, 1, 2
SAFETY_TIME_US_MAX = 30_000_000
LIVENESS_TIME_US_MAX = 15_000_000
# The safety phase may use at most this share of `max_events` (numerator, denominator).
SAFETY_EVENTS_SHARE = (3, 4)

_K_PHASE = K["phase"]


class Phases:
    __slots__ = ("liveness_deadline_us", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.liveness_deadline_us = 0

    @staticmethod
    def safety_events_max(max_events: int) -> int:
        """The events the safety phase may use; the rest are the liveness phase's."""
        numerator, denominator = SAFETY_EVENTS_SHARE
        return max_events * numerator // denominator

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
        """A client operation returned: the safety phase ends once every client is done (a
        crashed client is not: it restarts with what is left of its budget)."""
        sim = self.sim
        nodes = sim.nodes
        if sim.phase == SAFETY and all(
            nodes[c] is not None and nodes[c].done for c in sim.client_nodes
        ):
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
        sim.slowdowns.calm()
        sim.storage.heal(sim.core)
        for r in sim.core:
            sim.nemesis.resume(r)
            if sim.nodes[r] is None:
                sim.nemesis.restart(r)
        for c in sim.client_nodes:
            if sim.nodes[c] is None:
                sim.nemesis.restart_client(c)

    def events_exhausted(self) -> None:
        """The safety phase used its share of the run's events: report it and heal."""
        self.sim.bound("safety_events_limit")
        self.start_liveness()

    def _not_converged(self) -> str | None:
        """Why the core has not converged (None: it has, and no request is pending)."""
        sim = self.sim
        why = sim.cluster.converged(sim.core)
        if why is not None:
            return why
        pending = [c - sim.n for c in sim.client_nodes if not sim.nodes[c].idle]
        return f"client requests still pending: {pending}" if pending else None

    def check_liveness(self) -> None:
        sim = self.sim
        reason = self._not_converged()
        if reason is None:
            self.finish(0, "core converged, requests done")
            return
        if sim.now >= self.liveness_deadline_us:
            sim.failure = (
                "liveness", "liveness",
                f"core {[f'r{r}' for r in sim.core]} did not finish within "
                f"{LIVENESS_TIME_US_MAX // 1000} ms of healing: {reason}",
            )
            self.finish(3, "liveness failure: " + reason)

    def bound_verdict(self, name: str) -> None:
        """A bound reached in the liveness phase ends the run with the failure `liveness`: a
        healed core converges well within the bounds (the check runs every 10 ms), so a core that
        needed all of them, or a storm after it converged, is a livelock to report."""
        sim = self.sim
        assert sim.phase == LIVENESS
        reason = self._not_converged() or "it had converged, but the events did not stop"
        elapsed_ms = (sim.now - self.liveness_deadline_us + LIVENESS_TIME_US_MAX) // 1000
        sim.failure = (
            "liveness", "liveness",
            f"bound {name} reached {elapsed_ms} ms into the liveness phase: core "
            f"{[f'r{r}' for r in sim.core]} did not converge within it ({reason})",
        )
        self.finish(3, f"liveness failure: bound {name}")

    def finish(self, code: int, detail: str) -> None:
        """The run is over: note why (0 passed, 1 violation, 2 exception, 3 liveness) and stop
        the event loop (its queue is emptied)."""
        sim = self.sim
        sim.phase = DONE
        sim.note(NODE_SIM, _K_PHASE, DONE, code, detail=detail)
        sim.queue.clear()
