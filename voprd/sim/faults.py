"""The per-seed environment (swarm testing): cluster shape, workload size and fault probabilities.

Every probability is drawn from the seed's `faults.plan` stream (the fault families added later,
and the later additions to older classes, from `faults.plan.2`, so the older draws never move),
and each selected fault class is switched off entirely in some seeds, so each seed is a different
environment, not only a different schedule. The cluster size is drawn among the sizes the system
supports (`System.cluster_sizes`). The fault atlas lives here too: storage damage (torn writes,
corruption, misdirected writes) is confined to at most `replicas - core` replicas (f for a
majority core), so every quorum keeps one intact copy of committed data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from voprd.options import FAULT_CLASSES
from voprd.sim.prng import Rng

Q20 = 1 << 20  # probabilities of per-message faults are in units of 2**-20

# The classes drawn from the first plan stream (before the later families were added).
_FIRST_CLASSES = ("network", "crash", "storage", "clock")

# Cluster sizes the engine can run, and each size's weight in the seed's draw among the sizes a
# system supports (for the sizes 1, 3, 5 the draw is the one made before other sizes existed).
CLUSTER_SIZE_MAX = 7
SIZE_WEIGHTS: dict[int, int] = {1: 15, 2: 10, 3: 50, 4: 20, 5: 35, 6: 12, 7: 10}
DEFAULT_CLUSTER_SIZES: tuple[int, ...] = (1, 3, 5)


def majority(replicas: int) -> int:
    """The default liveness core and quorum: more than half of the servers."""
    return replicas // 2 + 1


def check_cluster_shape(sizes: Sequence[int], core_size: Callable[[int], int]) -> None:
    """Raise ValueError unless the engine can run these cluster sizes with this core size."""
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"cluster_sizes must be distinct sizes, at least one: {list(sizes)}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size not in SIZE_WEIGHTS:
            raise ValueError(f"cluster size {size!r} is not one of 1..{CLUSTER_SIZE_MAX}")
        core = core_size(size)
        if isinstance(core, bool) or not isinstance(core, int) or not 1 <= core <= size:
            raise ValueError(f"core_size({size}) = {core!r}: must be between 1 and {size}")

# Which fault class each injected-fault trace kind belongs to.
FAULT_KIND_CLASS: dict[str, str] = {
    "drop_loss": "network",
    "drop_partition": "network",
    "drop_capacity": "network",
    "duplicate": "network",
    "delay_spike": "network",
    "partition": "network",
    "heal": "network",
    "crash": "crash",
    "restart": "crash",
    "pause": "pause",
    "resume": "pause",
    "disk_write_error": "storage",
    "disk_misdirect": "storage",
    "disk_torn": "storage",
    "disk_read_corrupt": "storage",
    "clock_skew": "clock",
    "clock_jump": "time",
    "clock_drift": "time",
    "slow_disk": "gray",
    "slow_link": "gray",
    "slow_node": "gray",
    "slow_end": "gray",
    "replay": "replay",
    "corrupt": "corrupt",
    "client_crash": "clients",
    "client_restart": "clients",
}


class FaultPlan:
    __slots__ = (
        "bridge_ppm", "client_crash_ppm", "client_restart_us_max", "clients", "clients_faults",
        "clock", "clock_drift_ppm", "clock_jump_ppm", "clock_jump_us_max", "core", "corrupt",
        "corrupt_q20", "crash", "crash_ppm", "delay_base_us", "delay_jitter_us", "drift_ppm",
        "drift_spread_ppm", "dup_q20", "gray", "loss_q20", "misdirect_ppm", "network",
        "offset_us", "partition", "partition_clients_ppm", "partition_ppm", "partition_us_max",
        "partitions_max", "path_capacity", "pause", "pause_ppm", "pause_us_max",
        "read_corrupt_ppm", "replay", "replay_q20", "replay_us_max", "replicas",
        "request_budget", "restart_us_max", "slow_factor_max", "slow_ppm", "slow_us_max",
        "spike_q20", "spike_us_max", "storage", "storage_faulty", "switched_off", "time",
        "timeout_base_ticks", "torn_ppm", "write_error_ppm", "write_latency_us_max",
        "write_latency_us_min",
    )

    def __init__(
        self, rng: Rng, classes: tuple[str, ...], tick_us: int,
        sizes: Sequence[int] = DEFAULT_CLUSTER_SIZES,
        core_size: Callable[[int], int] = majority, rng2: Rng | None = None,
    ) -> None:
        weights = [SIZE_WEIGHTS[size] for size in sizes]
        roll = rng.below(sum(weights))
        for size, weight in zip(sizes, weights, strict=True):
            if roll < weight:
                self.replicas = size
                break
            roll -= weight
        # The liveness core (the servers healed in the liveness phase), as the system requires.
        self.core = core_size(self.replicas)
        self.clients = rng.between(1, 5)
        self.request_budget = rng.between(40, 240)
        self.timeout_base_ticks = rng.between(10, 25)
        # Swarm: each selected class is off in about one seed in six.
        switched: list[str] = []
        enabled: dict[str, bool] = {}
        for name in _FIRST_CLASSES:
            on = name in classes and rng.below(6) != 0
            enabled[name] = on
            if name in classes and not on:
                switched.append(name)
        self.network = enabled["network"]
        self.crash = enabled["crash"]
        self.storage = enabled["storage"]
        self.clock = enabled["clock"]

        # Network: the delay distribution exists without faults; loss etc. only with them.
        self.delay_base_us = rng.between(50, 2_000)
        self.delay_jitter_us = rng.between(0, 8_000)
        self.loss_q20 = self.dup_q20 = self.spike_q20 = 0
        self.spike_us_max = 0
        self.path_capacity = 1 << 30
        self.partition_ppm = 0
        self.partition_us_max = 0
        if self.network:
            self.loss_q20 = rng.below(Q20 // 10)  # up to 10%
            self.dup_q20 = rng.below(Q20 // 20)
            self.spike_q20 = rng.below(Q20 // 20)
            self.spike_us_max = rng.between(10_000, 300_000)
            self.path_capacity = rng.between(4, 64)
            self.partition_ppm = rng.between(0, 25_000)
            self.partition_us_max = rng.between(50_000, 2_000_000)

        self.crash_ppm = self.pause_ppm = 0
        self.restart_us_max = self.pause_us_max = 0
        if self.crash:
            self.crash_ppm = rng.between(0, 12_000)
            # Drawn here since pauses were once part of the crash class (the class `pause` says
            # whether they happen: FaultPlan._draw_later).
            self.pause_ppm = rng.between(0, 20_000)
            self.restart_us_max = rng.between(20_000, 1_500_000)
            self.pause_us_max = rng.between(20_000, 800_000)

        self.write_latency_us_min = 20
        self.write_latency_us_max = 20
        self.write_error_ppm = self.misdirect_ppm = self.read_corrupt_ppm = self.torn_ppm = 0
        self.storage_faulty: tuple[int, ...] = ()
        f = self.replicas - self.core
        if self.storage:
            self.write_latency_us_min = rng.between(5, 200)
            self.write_latency_us_max = self.write_latency_us_min + rng.between(0, 20_000)
            self.write_error_ppm = rng.between(0, 50_000)
        if f > 0 and (self.storage or self.crash):
            # The atlas: at most f replicas may have their disk damaged.
            count = rng.between(1, f)
            order = rng.shuffled(range(self.replicas))
            self.storage_faulty = tuple(sorted(order[:count]))
            if self.storage:
                self.misdirect_ppm = rng.between(0, 20_000)
                self.read_corrupt_ppm = rng.between(0, 200_000)
            if self.crash:
                self.torn_ppm = rng.between(0, 500_000)

        self.drift_ppm = [0] * self.replicas
        self.offset_us = [0] * self.replicas
        self.drift_spread_ppm = 0
        if self.clock:
            spread = self.drift_spread_ppm = rng.between(1_000, 100_000)
            for replica in range(self.replicas):
                self.drift_ppm[replica] = rng.between(-spread, spread)
                self.offset_us[replica] = rng.below(tick_us)
        self._draw_later(rng2 if rng2 is not None else rng, classes, switched)
        self.switched_off = tuple(switched)

    def _draw_later(self, rng: Rng, classes: tuple[str, ...], switched: list[str]) -> None:
        """The fault families added after the first four classes, and the later additions to
        those (several partitions at once, bridges, clients cut off; drift changes and wall-clock
        jumps), from their own stream. Each class is off in about one seed in six, too."""
        enabled: dict[str, bool] = {}
        for name in FAULT_CLASSES[len(_FIRST_CLASSES):]:
            on = name in classes and rng.below(6) != 0
            enabled[name] = on
            if name in classes and not on:
                switched.append(name)
        self.partition = enabled["partition"]
        self.pause = enabled["pause"]
        self.time = enabled["time"]
        self.gray = enabled["gray"]
        self.replay = enabled["replay"]
        self.corrupt = enabled["corrupt"]
        self.clients_faults = enabled["clients"]

        # pause: a server freezes, process, timers and disk completions (voprd.sim.nemesis).
        if not self.pause:
            self.pause_ppm = self.pause_us_max = 0
        elif not self.crash:  # else drawn with the crash class (see above)
            self.pause_ppm = rng.between(0, 20_000)
            self.pause_us_max = rng.between(20_000, 800_000)

        # partition: several partitions at once; bridges (not transitive), a client cut off from
        # some servers, a server cut off from the other servers (its clients still reach it).
        self.partitions_max = 1
        self.bridge_ppm = self.partition_clients_ppm = 0
        if self.partition:
            if not self.network:  # else the network class drew how often and how long
                self.partition_ppm = rng.between(0, 25_000)
                self.partition_us_max = rng.between(50_000, 2_000_000)
            self.partitions_max = rng.between(1, 3)
            self.bridge_ppm = rng.between(0, 400_000)
            self.partition_clients_ppm = rng.between(0, 400_000)
        # time: the drift changes mid-run (within the seed's spread); the wall clock jumps.
        self.clock_drift_ppm = self.clock_jump_ppm = self.clock_jump_us_max = 0
        if self.time:
            if not self.drift_spread_ppm:  # the clock class is off: no drift at first
                self.drift_spread_ppm = rng.between(1_000, 100_000)
            self.clock_drift_ppm = rng.between(0, 10_000)
            self.clock_jump_ppm = rng.between(0, 10_000)
            self.clock_jump_us_max = rng.between(10_000, 5_000_000)
        # gray: one server's disk, one link or one node's links become 10-1000x slower, a while.
        self.slow_ppm = self.slow_factor_max = self.slow_us_max = 0
        if self.gray:
            self.slow_ppm = rng.between(500, 8_000)  # up to 0.8 per second
            self.slow_factor_max = rng.between(10, 1_000)
            self.slow_us_max = rng.between(50_000, 2_000_000)
        # replay: a copy of a message delivered again much later (after view changes).
        self.replay_q20 = self.replay_us_max = 0
        if self.replay:
            self.replay_q20 = rng.between(1, Q20 // 50)  # up to 2% of messages
            self.replay_us_max = rng.between(200_000, 5_000_000)
        # corrupt: a message's payload changed in flight (for systems that checksum messages).
        self.corrupt_q20 = 0
        if self.corrupt:
            self.corrupt_q20 = rng.between(1, Q20 // 100)  # up to 1% of messages
        # clients: a client crashes (its open operation's outcome unknown) and restarts.
        self.client_crash_ppm = self.client_restart_us_max = 0
        if self.clients_faults:
            self.client_crash_ppm = rng.between(0, 8_000)
            self.client_restart_us_max = rng.between(1_000, 500_000)

    def describe(self) -> str:
        on = [n for n in FAULT_CLASSES if getattr(self, _CLASS_FLAG.get(n, n))]
        return (
            f"replicas={self.replicas} clients={self.clients} budget={self.request_budget} "
            f"faults={','.join(on) or 'none'} off={','.join(self.switched_off) or '-'} "
            f"storage_faulty={list(self.storage_faulty)}"
        )


# The FaultPlan attribute that says a class is on (where it differs from the class name).
_CLASS_FLAG = {"clients": "clients_faults"}
