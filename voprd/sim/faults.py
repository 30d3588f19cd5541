"""The per-seed environment (swarm testing): cluster shape, workload size and fault probabilities.

Every probability is drawn from the seed's `faults` stream, and each selected fault class is
switched off entirely in some seeds, so each seed is a different environment, not only a different
schedule. The seed also draws the liveness core (a majority of servers, fixed from the start so
that faults which must spare it, such as whole-disk loss, know it); the storage fault atlas itself
is per sector and lives in `voprd.sim.storage`.
"""

from __future__ import annotations

from voprd.sim.prng import Rng


def quorum(replicas: int) -> int:
    """A majority of `replicas`: the size of the liveness core."""
    return replicas // 2 + 1


Q20 = 1 << 20  # probabilities of per-message faults are in units of 2**-20

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
    "pause": "crash",
    "resume": "crash",
    "disk_write_error": "storage",
    "disk_misdirect": "storage",
    "disk_torn": "storage",
    "disk_read_corrupt": "storage",
    "clock_skew": "clock",
    # The disk class (issue 16): failures of the disk itself beyond the classic storage faults.
    "disk_corrupt": "disk",
    "disk_latent_error": "disk",
    "disk_bad_sector": "disk",
    "disk_stale": "disk",
    "disk_full": "disk",
    "superblock_torn": "disk",
    "superblock_damage": "disk",
    "disk_lost": "disk",
    "disk_join": "disk",
}


class DiskFaults:
    """The fields of `FaultPlan` drawn for the liveness core and the `disk` class (issue 16):
    `FaultPlan._draw_disk` fills them after every other draw."""

    __slots__ = (
        "bad_sector_ppm", "core", "corrupt_ppm", "disk", "disk_full_ppm", "disk_full_us_max",
        "disk_loss_ppm", "join_replica", "join_us", "latent_ppm", "stale_ppm",
        "superblock_crash_ppm", "superblock_damage_ppm",
    )

    core: tuple[int, ...]
    disk: bool
    corrupt_ppm: int
    latent_ppm: int
    bad_sector_ppm: int
    disk_full_ppm: int
    disk_full_us_max: int
    stale_ppm: int
    superblock_crash_ppm: int
    superblock_damage_ppm: int
    disk_loss_ppm: int
    join_replica: int
    join_us: int


class FaultPlan(DiskFaults):
    __slots__ = (
        "clients", "clock", "crash", "crash_ppm", "delay_base_us", "delay_jitter_us",
        "drift_ppm", "dup_q20", "loss_q20", "misdirect_ppm", "network", "offset_us",
        "partition_ppm", "partition_us_max", "path_capacity", "pause_ppm", "pause_us_max",
        "read_corrupt_ppm", "replicas", "request_budget", "restart_us_max", "spike_q20",
        "spike_us_max", "storage", "switched_off", "timeout_base_ticks",
        "torn_ppm", "write_error_ppm", "write_latency_us_max", "write_latency_us_min",
    )

    def __init__(self, rng: Rng, classes: tuple[str, ...], tick_us: int) -> None:
        roll = rng.below(100)
        self.replicas = 1 if roll < 15 else (3 if roll < 65 else 5)
        self.clients = rng.between(1, 5)
        self.request_budget = rng.between(40, 240)
        self.timeout_base_ticks = rng.between(10, 25)
        # Swarm: each selected class is off in about one seed in six.
        switched: list[str] = []
        enabled: dict[str, bool] = {}
        for name in ("network", "crash", "storage", "clock"):
            on = name in classes and rng.below(6) != 0
            enabled[name] = on
            if name in classes and not on:
                switched.append(name)
        self.switched_off = tuple(switched)
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
            self.pause_ppm = rng.between(0, 20_000)
            self.restart_us_max = rng.between(20_000, 1_500_000)
            self.pause_us_max = rng.between(20_000, 800_000)

        self.write_latency_us_min = 20
        self.write_latency_us_max = 20
        self.write_error_ppm = self.misdirect_ppm = self.read_corrupt_ppm = self.torn_ppm = 0
        f = (self.replicas - 1) // 2
        if self.storage:
            self.write_latency_us_min = rng.between(5, 200)
            self.write_latency_us_max = self.write_latency_us_min + rng.between(0, 20_000)
            self.write_error_ppm = rng.between(0, 50_000)
        if f > 0 and (self.storage or self.crash):
            # These two draws chose the replicas of a per-replica atlas before issue 16; the atlas
            # is per sector now (voprd.sim.storage), and they are kept so later draws keep their
            # order.
            rng.between(1, f)
            rng.shuffled(range(self.replicas))
            if self.storage:
                self.misdirect_ppm = rng.between(0, 20_000)
                self.read_corrupt_ppm = rng.between(0, 50_000)
            if self.crash:
                self.torn_ppm = rng.between(0, 500_000)

        self.drift_ppm = [0] * self.replicas
        self.offset_us = [0] * self.replicas
        if self.clock:
            spread = rng.between(1_000, 100_000)
            for replica in range(self.replicas):
                self.drift_ppm[replica] = rng.between(-spread, spread)
                self.offset_us[replica] = rng.below(tick_us)

        self._draw_disk(rng, classes)

    def _draw_disk(self, rng: Rng, classes: tuple[str, ...]) -> None:
        """The liveness core and the `disk` class (issue 16). Drawn after everything else, so
        the draws above keep their order. Each disk fault kind is also off on its own in about
        one seed in four where the class is on (swarm testing per kind)."""
        n = self.replicas
        self.core = tuple(sorted(rng.shuffled(range(n))[:quorum(n)]))
        self.disk = "disk" in classes and rng.below(6) != 0
        if "disk" in classes and not self.disk:
            self.switched_off = (*self.switched_off, "disk")
        self.corrupt_ppm = self.latent_ppm = self.bad_sector_ppm = self.disk_full_ppm = 0
        self.disk_full_us_max = self.stale_ppm = self.superblock_crash_ppm = 0
        self.superblock_damage_ppm = self.disk_loss_ppm = self.join_us = 0
        self.join_replica = -1
        if not self.disk:
            return

        def kind(high: int) -> int:
            return 0 if rng.below(4) == 0 else rng.between(1, high)

        # Per nemesis tick (10 ms): a sector at rest rots, goes latent or bad; a disk fills up;
        # a superblock copy at rest is damaged (a quarter of superblock_damage_ppm).
        self.corrupt_ppm = kind(40_000)
        self.latent_ppm = kind(40_000)
        self.bad_sector_ppm = kind(1_500)
        self.disk_full_ppm = kind(4_000)
        self.disk_full_us_max = rng.between(20_000, 500_000)
        self.superblock_damage_ppm = kind(20_000)
        # Per completed write that replaces a different version: the write is lost (stale); a
        # tenth of it per superblock copy write.
        self.stale_ppm = kind(1_000_000)
        # Per superblock copy write on a live server: it crashes during that write.
        self.superblock_crash_ppm = kind(10_000)
        # Per crash of a server outside the core: its disk is lost (replaced by an empty one).
        outside = [r for r in range(n) if r not in self.core]
        self.disk_loss_ppm = kind(1_000_000) if outside else 0
        # A server outside the core is absent at the start and joins from an empty disk.
        if outside and rng.below(3) == 0:
            self.join_replica = rng.pick(outside)
            self.join_us = rng.between(50_000, 5_000_000)

    def describe(self) -> str:
        on = [n for n in ("network", "crash", "storage", "clock", "disk") if getattr(self, n)]
        return (
            f"replicas={self.replicas} clients={self.clients} budget={self.request_budget} "
            f"faults={','.join(on) or 'none'} off={','.join(self.switched_off) or '-'} "
            f"core={list(self.core)}"
            + (f" join=r{self.join_replica}" if self.join_replica >= 0 else "")
        )
