"""The per-seed environment (swarm testing): cluster shape, workload size and fault probabilities.

Every probability is drawn from the seed's `faults` stream, and each selected fault class is
switched off entirely in some seeds, so each seed is a different environment, not only a different
schedule. The fault atlas lives here too: storage damage (torn writes, corruption, misdirected
writes) is confined to at most f replicas, so every quorum keeps one intact copy of committed data.
"""

from __future__ import annotations

from voprd.sim.prng import Rng

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
}


class FaultPlan:
    __slots__ = (
        "clients", "clock", "crash", "crash_ppm", "delay_base_us", "delay_jitter_us",
        "drift_ppm", "dup_q20", "loss_q20", "misdirect_ppm", "network", "offset_us",
        "partition_ppm", "partition_us_max", "path_capacity", "pause_ppm", "pause_us_max",
        "read_corrupt_ppm", "replicas", "request_budget", "restart_us_max", "spike_q20",
        "spike_us_max", "storage", "storage_faulty", "switched_off", "timeout_base_ticks",
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
        self.storage_faulty: tuple[int, ...] = ()
        f = (self.replicas - 1) // 2
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
        if self.clock:
            spread = rng.between(1_000, 100_000)
            for replica in range(self.replicas):
                self.drift_ppm[replica] = rng.between(-spread, spread)
                self.offset_us[replica] = rng.below(tick_us)

    def fingerprint(self) -> str:
        """The configuration this seed drew, coarsely: cluster shape and the fault classes on
        (what a bound that recurs is counted per; budgets and probabilities left out)."""
        on = [n for n in ("network", "crash", "storage", "clock") if getattr(self, n)]
        return f"replicas={self.replicas} clients={self.clients} on={','.join(on) or 'none'}"

    def describe(self) -> str:
        on = [n for n in ("network", "crash", "storage", "clock") if getattr(self, n)]
        return (
            f"replicas={self.replicas} clients={self.clients} budget={self.request_budget} "
            f"faults={','.join(on) or 'none'} off={','.join(self.switched_off) or '-'} "
            f"storage_faulty={list(self.storage_faulty)}"
        )
