"""The simulated network: delay, loss, duplication, per-path capacity, partitions, slow paths,
late replays and corruption.

Every path (src, dst) between nodes (servers and clients) is independent. A message's fate is one
PRNG draw split into bit fields (loss, jitter, spike), plus one more for a duplicate. Partitions
are started by the nemesis and heal after a drawn duration, several at once (up to the seed's
`partitions_max`): symmetric, asymmetric, isolate-one (also cutting clients), bridges (two sides
that cannot talk, both talking to one bridge server: not transitive) and a client cut off from
some servers. A path may be slow (`slow`, a delay multiplier the gray failures of
`voprd.sim.gray` set). Every so many messages (stream `network.2`) one is either corrupted in
flight (`corrupt`: a leaf of its payload changed, for systems that checksum their messages) or
also delivered again much later (a replay of an old message). The liveness phase heals and calms
the network (`calm`).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

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
_K_REPLAY = K["replay"]
_K_CORRUPT = K["corrupt"]

# Partition styles (the trace's `partition` event, field a).
SYMMETRIC, ASYMMETRIC, ISOLATE, BRIDGE, CLIENT_CUT, PEERS_CUT = range(6)
# "Never" for the countdown to the next replayed or corrupted message.
_NEVER = 1 << 62


class Network:
    __slots__ = (
        "blocked", "corrupt_q20", "countdown", "describe", "inflight", "last_corrupted", "nodes",
        "partition_id",
        "partitions", "plan", "queue", "replay_id", "replay_q20", "replays", "rng", "rng2", "seq",
        "sim", "slow",
    )

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan = plan = sim.plan
        self.rng = sim.streams.stream("network")
        self.rng2 = sim.streams.stream("network.2")
        self.queue = sim.queue
        self.seq = sim.seq
        self.describe = sim.system.describe_message
        self.nodes = nodes = sim.nodes_total
        # Path src -> dst is index src * nodes + dst. `blocked` counts the partitions cutting it.
        self.blocked = bytearray(nodes * nodes)
        self.inflight = [0] * (nodes * nodes)
        # Delay multiplier per path (1: healthy; gray failures make it 10 to 1000).
        self.slow = [1] * (nodes * nodes)
        self.partition_id = 0
        # Active partitions: id -> the paths it cuts.
        self.partitions: dict[int, list[int]] = {}
        # Corruption only for a system that checksums its messages (else it could not tell).
        self.corrupt_q20 = plan.corrupt_q20 if sim.system.message_checksums else 0
        self.replay_q20 = plan.replay_q20
        self.replays: dict[int, tuple[int, Message]] = {}
        self.replay_id = 0
        # The message last corrupted (what arrives instead of what was sent; for the report).
        self.last_corrupted: Message = ()
        self.countdown = self._gap()

    @property
    def partition_active(self) -> bool:
        return bool(self.partitions)

    def send(self, src: int, dst: int, msg: Message) -> None:
        sim = self.sim
        if not 0 <= dst < self.nodes:
            # A system's own error (say, a destination read from a message it did not verify):
            # refused here, where its stack shows who sent it, not when the delivery fails.
            raise ValueError(f"env.send from node {src} to node {dst}: no such node "
                             f"(nodes are 0..{self.nodes - 1})")
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
        slow = self.slow[path]
        if slow != 1:
            delay_us *= slow
        countdown = self.countdown - 1
        if countdown:
            self.countdown = countdown
        else:
            msg = self._gray_message(src, dst, msg, now + delay_us)
        self.inflight[path] += 1
        heapq.heappush(self.queue, (now + delay_us, next(self.seq), EV_DELIVER, dst, msg))
        if plan.dup_q20 and (self.rng.next_u64() & 0xFFFFF) < plan.dup_q20:
            self.inflight[path] += 1
            extra_us = self.rng.below(plan.delay_jitter_us + plan.delay_base_us + 1)
            sim.push(now + delay_us + extra_us, EV_DELIVER, dst, msg)
            sim.fault(src, _K_DUPLICATE, dst, msg[0], dst)

    # ---- replays and corruption ------------------------------------------------------------
    def _gap(self) -> int:
        """Messages until the next replayed or corrupted one (mean 2**20 / their rates)."""
        rate = self.replay_q20 + self.corrupt_q20
        if not rate:
            return _NEVER
        return self.rng2.between(1, max(1, 2 * (1 << 20) // rate - 1))

    def _gray_message(self, src: int, dst: int, msg: Message, arrival_us: int) -> Message:
        """This message is corrupted, or it will also arrive again much later; returns what is
        sent now."""
        rng = self.rng2
        sim = self.sim
        self.countdown = self._gap()
        if rng.below(self.replay_q20 + self.corrupt_q20) < self.corrupt_q20:
            corrupted, where = corrupt(msg, rng)
            self.last_corrupted = corrupted
            sim.fault(src, _K_CORRUPT, dst, msg[0], dst,
                      f"{self.describe(msg)}: {where}" if sim.record_trace else "")
            return corrupted
        later_us = arrival_us + rng.between(self.plan.replay_us_max // 10, self.plan.replay_us_max)
        self.replay_id += 1
        replay_id = self.replay_id
        self.replays[replay_id] = (dst, msg)
        sim.push(later_us, EV_CALL, replay_id, self._replay_event)
        sim.fault(src, _K_REPLAY, dst, (later_us - sim.now) // 1000, dst,
                  f"{self.describe(msg)} again at {later_us / 1000:.3f}ms"
                  if sim.record_trace else "")
        return msg

    def _replay_event(self, replay_id: int) -> None:
        dst, msg = self.replays.pop(replay_id)
        self.sim.deliver(dst, msg)

    # ---- partitions ------------------------------------------------------------------------
    def partition(self, rng: Rng) -> None:
        """Start a partition drawn from `rng` (the nemesis'; the later shapes from `rng2`); it
        heals after a drawn duration."""
        sim = self.sim
        n = sim.n
        nodes = self.nodes
        plan = self.plan
        rng2 = self.rng2
        cut: list[tuple[int, int]] = []  # (src, dst) pairs
        if plan.bridge_ppm and n >= 3 and rng2.chance(plan.bridge_ppm):
            style = BRIDGE
            order = rng2.shuffled(range(n))
            bridge, rest = order[0], order[1:]
            split = rng2.between(1, len(rest) - 1)
            side_a, side_b = sorted(rest[:split]), sorted(rest[split:])
            cut = [(x, y) for x in side_a for y in side_b]
            cut += [(y, x) for x, y in cut]
            detail = f"bridge r{bridge}: {side_a} <-/-> {side_b}"
        elif plan.partition_clients_ppm and rng2.chance(plan.partition_clients_ppm):
            if n > 1 and rng2.below(2):
                # One server cut off from the other servers, its clients still reach it.
                style = PEERS_CUT
                victim = rng2.below(n)
                cut = [(victim, r) for r in range(n) if r != victim]
                cut += [(r, victim) for r in range(n) if r != victim]
                detail = f"r{victim} <-/-> servers"
            else:
                style = CLIENT_CUT
                client = rng2.between(n, nodes - 1)
                servers = sorted(rng2.shuffled(range(n))[:rng2.between(1, n)])
                cut = [(client, r) for r in servers] + [(r, client) for r in servers]
                detail = f"c{client - n} <-/-> {servers}"
        else:
            style = rng.below(3) if n > 1 else ISOLATE
            if style == ISOLATE:
                victim = rng.below(n)
                cut = [(victim, other) for other in range(nodes) if other != victim]
                cut += [(other, victim) for other in range(nodes) if other != victim]
                detail = f"isolate r{victim}"
            else:
                order = rng.shuffled(range(n))
                split = rng.between(1, n - 1)
                side_a, side_b = order[:split], order[split:]
                cut = [(x, y) for x in side_a for y in side_b]
                if style == SYMMETRIC:
                    cut += [(y, x) for x in side_a for y in side_b]
                arrow = "<-/->" if style == SYMMETRIC else "-/->"
                detail = f"{sorted(side_a)} {arrow} {sorted(side_b)}"
        self.partition_id += 1
        paths = [x * nodes + y for x, y in cut]
        for path in paths:
            self.blocked[path] += 1
        self.partitions[self.partition_id] = paths
        sim.fault(NODE_SIM, _K_PARTITION, style, self.partition_id,
                  detail=f"#{self.partition_id} {detail}")
        duration_us = rng.between(10_000, plan.partition_us_max)
        sim.push(sim.now + duration_us, EV_CALL, self.partition_id, self.heal)

    def heal(self, partition_id: int) -> None:
        paths = self.partitions.pop(partition_id, None)
        if paths is None:
            return  # healed already (the liveness phase heals every partition)
        for path in paths:
            self.blocked[path] -= 1
        self.sim.fault(NODE_SIM, _K_HEAL, partition_id, detail=f"#{partition_id}")

    def calm(self) -> None:
        """The liveness phase: heal, and no more loss, duplicates, spikes, capacity drops,
        replays or corruption (replays already scheduled still arrive)."""
        for partition_id in list(self.partitions):
            self.heal(partition_id)
        plan = self.plan
        plan.loss_q20 = plan.dup_q20 = plan.spike_q20 = 0
        plan.path_capacity = 1 << 30
        self.replay_q20 = self.corrupt_q20 = 0
        self.countdown = _NEVER


def corrupt(msg: Message, rng: Rng) -> tuple[Message, str]:
    """A copy of `msg` with one leaf of its payload changed (items 0 and 1, the type and the
    sender, are the envelope the engine routes by, and stay). Leaves are ints (one bit flipped),
    bools (negated), strs and bytes (one character or byte changed); containers keep their shape
    and every leaf keeps its type, so code that skips the checksum meets plausible data.
    Returns the copy and where it was changed."""
    leaves: list[tuple[int, ...]] = []

    def walk(value: Any, where: tuple[int, ...]) -> None:
        if isinstance(value, tuple | list):
            for index, item in enumerate(value):
                walk(item, (*where, index))
        elif isinstance(value, int | str | bytes) and (not isinstance(value, str | bytes) or value):
            leaves.append(where)

    for index in range(2, len(msg)):
        walk(msg[index], (index,))
    if not leaves:
        return msg, "nothing to corrupt"
    where = leaves[rng.below(len(leaves))]

    def change(value: Any, rest: tuple[int, ...]) -> Any:
        if rest:
            items = list(value)
            items[rest[0]] = change(items[rest[0]], rest[1:])
            if hasattr(value, "_fields"):  # a NamedTuple stays one
                return type(value)(*items)
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, bool):
            return not value
        if isinstance(value, int):
            return value ^ (1 << rng.below(max(8, value.bit_length())))
        position = rng.below(len(value))
        if isinstance(value, bytes):
            flipped = value[position] ^ (1 << rng.below(8))
            return value[:position] + bytes((flipped,)) + value[position + 1:]
        code = ord(value[position])
        replacement = chr(code ^ (1 << rng.below(5)) or 0x41)
        return value[:position] + replacement + value[position + 1:]

    changed = change(msg, where)
    return changed, "field " + ".".join(str(i) for i in where)
