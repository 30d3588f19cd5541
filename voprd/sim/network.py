"""The simulated network: delay, loss, duplication, per-path capacity, partitions.

Every path (src, dst) between nodes (servers and clients) is independent. A message's fate is one
PRNG draw split into bit fields (loss, jitter, spike), plus one more for a duplicate. Partitions
(symmetric, asymmetric, isolate-one, also cutting clients) are started by the nemesis and heal
after a drawn duration; the liveness phase heals them and calms the network (`calm`).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from voprd.sim.events import EV_CALL, EV_DELIVER
from voprd.sim.prng import Rng
from voprd.sim.system import Message
from voprd.sim.trace import NODE_SIM, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

# Bound on the events queued at once: a system that floods the network is cut off (reported).
QUEUE_EVENTS_MAX = 200_000

_K_DROP_PARTITION = K["drop_partition"]
_K_DROP_LOSS = K["drop_loss"]
_K_DROP_CAPACITY = K["drop_capacity"]
_K_DUPLICATE = K["duplicate"]
_K_DELAY_SPIKE = K["delay_spike"]
_K_PARTITION = K["partition"]
_K_HEAL = K["heal"]


class Network:
    __slots__ = (
        "blocked", "describe", "inflight", "nodes", "partition_active", "partition_id", "plan",
        "queue", "rng", "seq", "sim",
    )

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan = sim.plan
        self.rng = sim.streams.stream("network")
        self.queue = sim.queue
        self.seq = sim.seq
        self.describe = sim.system.describe_message
        self.nodes = nodes = sim.nodes_total
        # Path src -> dst is index src * nodes + dst.
        self.blocked = bytearray(nodes * nodes)
        self.inflight = [0] * (nodes * nodes)
        self.partition_id = 0
        self.partition_active = False

    def send(self, src: int, dst: int, msg: Message) -> None:
        sim = self.sim
        path = src * self.nodes + dst
        if self.blocked[path]:
            sim.fault(src, _K_DROP_PARTITION, dst, msg[0], dst,
                      self.describe(msg) if sim.record_trace else "")
            return
        plan = self.plan
        x = self.rng.next_u64()
        if (x & 0xFFFFF) < plan.loss_q20:
            sim.fault(src, _K_DROP_LOSS, dst, msg[0], dst,
                      self.describe(msg) if sim.record_trace else "")
            return
        if self.inflight[path] >= plan.path_capacity:
            sim.fault(src, _K_DROP_CAPACITY, dst, msg[0], dst,
                      self.describe(msg) if sim.record_trace else "")
            return
        if len(self.queue) >= QUEUE_EVENTS_MAX:
            sim.bound("queue_events")
            return
        now = sim.now
        delay_us = plan.delay_base_us + ((((x >> 20) & 0xFFFFF) * plan.delay_jitter_us) >> 20)
        if ((x >> 40) & 0xFFFFF) < plan.spike_q20:
            delay_us += self.rng.below(plan.spike_us_max) + 1
            sim.fault(src, _K_DELAY_SPIKE, dst, delay_us, dst)
        self.inflight[path] += 1
        heapq.heappush(self.queue, (now + delay_us, next(self.seq), EV_DELIVER, dst, msg))
        if plan.dup_q20 and (self.rng.next_u64() & 0xFFFFF) < plan.dup_q20:
            self.inflight[path] += 1
            extra_us = self.rng.below(plan.delay_jitter_us + plan.delay_base_us + 1)
            sim.push(now + delay_us + extra_us, EV_DELIVER, dst, msg)
            sim.fault(src, _K_DUPLICATE, dst, msg[0], dst)

    def partition(self, rng: Rng) -> None:
        """Start a partition drawn from `rng` (the nemesis'); it heals after a drawn duration."""
        sim = self.sim
        n = sim.n
        nodes = self.nodes
        blocked = self.blocked
        style = rng.below(3) if n > 1 else 2
        if style == 2:
            victim = rng.below(n)
            for other in range(nodes):
                if other != victim:
                    blocked[victim * nodes + other] = 1
                    blocked[other * nodes + victim] = 1
            detail = f"isolate r{victim}"
        else:
            order = rng.shuffled(range(n))
            cut = rng.between(1, n - 1)
            side_a, side_b = order[:cut], order[cut:]
            for x in side_a:
                for y in side_b:
                    blocked[x * nodes + y] = 1
                    if style == 0:
                        blocked[y * nodes + x] = 1
            arrow = "<-/->" if style == 0 else "-/->"
            detail = f"{sorted(side_a)} {arrow} {sorted(side_b)}"
        self.partition_id += 1
        self.partition_active = True
        sim.fault(NODE_SIM, _K_PARTITION, style, self.partition_id, detail=detail)
        duration_us = rng.between(10_000, self.plan.partition_us_max)
        sim.push(sim.now + duration_us, EV_CALL, self.partition_id, self._heal_event)

    def _heal_event(self, partition_id: int) -> None:
        if self.partition_active and self.partition_id == partition_id:
            self.heal()

    def heal(self) -> None:
        self.blocked = bytearray(self.nodes * self.nodes)
        self.partition_active = False
        self.sim.fault(NODE_SIM, _K_HEAL, self.partition_id)

    def calm(self) -> None:
        """The liveness phase: heal, and no more loss, duplicates, spikes or capacity drops."""
        if self.partition_active:
            self.heal()
        plan = self.plan
        plan.loss_q20 = plan.dup_q20 = plan.spike_q20 = 0
        plan.path_capacity = 1 << 30
