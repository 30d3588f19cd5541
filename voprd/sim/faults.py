"""The per-seed environment (swarm testing): cluster shape, workload size and fault probabilities.

Every probability is drawn from the seed's `faults.plan` stream, and each selected fault class is
switched off entirely in some seeds, so each seed is a different environment, not only a different
schedule. The fault atlas lives here too: storage damage (torn writes, corruption, misdirected
writes) is confined to at most f replicas, so every quorum keeps one intact copy of committed data.

Swarm families: a fault class (`--faults`) holds fault families (`SWARM_FAMILIES`: the four classes
are families of their own; each new kind of fault registers its family there, append-only). A seed
switches each family of a selected class on or off with `FaultPlan.family(name)` (off in about one
seed in `SWARM_OFF_ONE_IN`, drawn from the family's own stream `swarm.<name>`, so adding a family
moves no other draw) and draws its intensities with `FaultPlan.level(name, rng, low, high)`.

Focus seeds: seeds from `FOCUS_SEED_BASE` up are a separate space (the daemon's coverage-steered
extra seeds, `voprd.core.coverage`): bits 40..55 hold a family's code (`family_code`), and such a
seed draws exactly like any other except that the focused family (and its class) is on, its
`level`s land in the upper half of their range and the cluster has at least
`FOCUS_REPLICAS_MIN` servers. The seed number alone still decides the run.
"""

from __future__ import annotations

import hashlib

from voprd.sim.prng import Rng, Streams

Q20 = 1 << 20  # probabilities of per-message faults are in units of 2**-20
SWARM_OFF_ONE_IN = 6  # a selected family is off in about one seed in six

# Fault family -> its class (`--faults` selects classes). Append-only: a family's name is its
# identity in focus seeds and in configuration fingerprints.
SWARM_FAMILIES: dict[str, str] = {
    "network": "network",
    "crash": "crash",
    "storage": "storage",
    "clock": "clock",
}

FOCUS_SEED_BASE = 1 << 62
FOCUS_REPLICAS_MIN = 3  # a focus seed's cluster: one server exercises no replication protocol
FOCUS_CODE_SHIFT = 40
FOCUS_SERIAL_MASK = (1 << FOCUS_CODE_SHIFT) - 1


def family_code(name: str) -> int:
    """A family's code in focus seeds (16 bits, never 0), from its name."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return 1 + int.from_bytes(digest, "little") % 0xFFFF


def focus_seed(family: str, serial: int) -> int:
    """The focus seed number `serial` (any integer; its low 40 bits are used) of `family`."""
    return FOCUS_SEED_BASE | (family_code(family) << FOCUS_CODE_SHIFT) | (
        serial & FOCUS_SERIAL_MASK)


def is_focus_seed(seed: int) -> bool:
    return seed >= FOCUS_SEED_BASE


def seed_focus(seed: int) -> str | None:
    """The family a focus seed focuses on (None: not a focus seed, or an unknown family)."""
    if not is_focus_seed(seed):
        return None
    code = (seed >> FOCUS_CODE_SHIFT) & 0xFFFF
    return next((name for name in SWARM_FAMILIES if family_code(name) == code), None)

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
        "_classes", "_streams", "clients", "clock", "crash", "crash_ppm", "delay_base_us",
        "delay_jitter_us", "drift_ppm", "dup_q20", "families", "focus", "loss_q20",
        "misdirect_ppm", "network", "offset_us", "partition_ppm", "partition_us_max",
        "path_capacity", "pause_ppm", "pause_us_max", "read_corrupt_ppm", "replicas",
        "request_budget", "restart_us_max", "spike_q20", "spike_us_max", "storage",
        "storage_faulty", "switched_off", "timeout_base_ticks", "torn_ppm", "write_error_ppm",
        "write_latency_us_max", "write_latency_us_min",
    )

    def __init__(
        self, rng: Rng, classes: tuple[str, ...], tick_us: int, streams: Streams | None = None
    ) -> None:
        self._classes = classes
        self._streams = streams
        # The focused family of a focus seed (see the module docstring), else None.
        self.focus = seed_focus(streams.seed) if streams is not None else None
        focus_class = SWARM_FAMILIES[self.focus] if self.focus is not None else None
        # Every family of a selected class this seed decided on: name -> on.
        self.families: dict[str, bool] = {}
        roll = rng.below(100)
        self.replicas = 1 if roll < 15 else (3 if roll < 65 else 5)
        if self.focus is not None:
            self.replicas = max(self.replicas, FOCUS_REPLICAS_MIN)  # a focus needs replication
        self.clients = rng.between(1, 5)
        self.request_budget = rng.between(40, 240)
        self.timeout_base_ticks = rng.between(10, 25)
        # Swarm: each selected class is off in about one seed in six.
        switched: list[str] = []
        enabled: dict[str, bool] = {}
        for name in ("network", "crash", "storage", "clock"):
            on = name in classes and (rng.below(SWARM_OFF_ONE_IN) != 0 or name == focus_class)
            enabled[name] = on
            if name in classes:
                self.families[name] = on
                if not on:
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
            level = self.level
            self.loss_q20 = level("network", rng, 0, Q20 // 10 - 1)  # up to 10%
            self.dup_q20 = level("network", rng, 0, Q20 // 20 - 1)
            self.spike_q20 = level("network", rng, 0, Q20 // 20 - 1)
            self.spike_us_max = rng.between(10_000, 300_000)
            self.path_capacity = rng.between(4, 64)
            self.partition_ppm = level("network", rng, 0, 25_000)
            self.partition_us_max = rng.between(50_000, 2_000_000)

        self.crash_ppm = self.pause_ppm = 0
        self.restart_us_max = self.pause_us_max = 0
        if self.crash:
            self.crash_ppm = self.level("crash", rng, 0, 12_000)
            self.pause_ppm = self.level("crash", rng, 0, 20_000)
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
            self.write_error_ppm = self.level("storage", rng, 0, 50_000)
        if f > 0 and (self.storage or self.crash):
            # The atlas: at most f replicas may have their disk damaged.
            count = rng.between(1, f)
            order = rng.shuffled(range(self.replicas))
            self.storage_faulty = tuple(sorted(order[:count]))
            if self.storage:
                self.misdirect_ppm = self.level("storage", rng, 0, 20_000)
                self.read_corrupt_ppm = self.level("storage", rng, 0, 200_000)
            if self.crash:
                self.torn_ppm = self.level("crash", rng, 0, 500_000)

        self.drift_ppm = [0] * self.replicas
        self.offset_us = [0] * self.replicas
        if self.clock:
            spread = self.level("clock", rng, 1_000, 100_000)
            for replica in range(self.replicas):
                self.drift_ppm[replica] = rng.between(-spread, spread)
                self.offset_us[replica] = rng.below(tick_us)

    def family(self, name: str) -> bool:
        """Swarm testing for the fault family `name` (registered in `SWARM_FAMILIES`): is it on
        in this seed? Off if its class is off in this seed (or not selected); otherwise off in
        about one seed in `SWARM_OFF_ONE_IN`, drawn from the family's own stream `swarm.<name>`
        (so adding a family moves no other draw); always on in a seed focused on it. Ask once
        per family, after the class draws; a plan made without `streams` leaves new families
        off."""
        fault_class = SWARM_FAMILIES[name]
        assert name not in self.families, f"family {name!r} decided twice"
        if fault_class not in self._classes:
            return False
        class_on = bool(getattr(self, fault_class))
        on = class_on and self._streams is not None and (
            name == self.focus
            or self._streams.stream(f"swarm.{name}").below(SWARM_OFF_ONE_IN) != 0)
        self.families[name] = on
        if class_on and not on:
            self.switched_off = (*self.switched_off, name)
        return on

    def level(self, name: str, rng: Rng, low: int, high: int) -> int:
        """An intensity of family `name` drawn from `rng` in [low, high]: one draw, always; in a
        seed focused on the family it lands in the upper half of the range instead."""
        value = rng.between(low, high)
        if name == self.focus:
            value = high - (high - value) // 2
        return value

    def fingerprint(self) -> str:
        """The configuration this seed drew, coarsely: cluster shape and the fault families on
        (what a bound that recurs is counted per; budgets and probabilities left out)."""
        on = [name for name, enabled in self.families.items() if enabled]
        return f"replicas={self.replicas} clients={self.clients} on={','.join(on) or 'none'}"

    def families_on(self) -> list[str]:
        return [name for name, enabled in self.families.items() if enabled]

    def describe(self) -> str:
        on = [n for n in ("network", "crash", "storage", "clock") if getattr(self, n)]
        return (
            f"replicas={self.replicas} clients={self.clients} budget={self.request_budget} "
            f"faults={','.join(on) or 'none'} off={','.join(self.switched_off) or '-'} "
            f"storage_faulty={list(self.storage_faulty)}"
            + ("" if self.focus is None else f" focus={self.focus}")
        )
