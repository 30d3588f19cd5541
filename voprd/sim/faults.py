"""The per-seed environment (swarm testing): cluster shape, workload size and fault probabilities.

Every probability is drawn from the seed's `faults.plan` stream (the fault families added later,
and the later additions to older classes, from `faults.plan.2`, so the older draws never move),
and each selected fault class is switched off entirely in some seeds, so each seed is a different
environment, not only a different schedule. The cluster size is drawn among the sizes the system
supports (`System.cluster_sizes`). The seed also draws the liveness core (`System.core_size`
servers, a majority by default, fixed from the start so that faults which must spare it, such as
whole-disk loss, know it); the storage fault atlas itself is per sector and lives in
`voprd.sim.storage`.

Swarm families: a fault class (`--faults`) holds fault families (`SWARM_FAMILIES`: every class is
a family of its own; each new kind of fault registers its family there, append-only). A seed
switches each selected class on or off (off in about one seed in `SWARM_OFF_ONE_IN`), and a family
added inside a class with `FaultPlan.family(name)` (drawn from the family's own stream
`swarm.<name>`, so adding a family moves no other draw); it draws intensities with
`FaultPlan.level(name, rng, low, high)`.

Focus seeds: seeds from `FOCUS_SEED_BASE` up are a separate space (the daemon's coverage-steered
extra seeds, `voprd.core.coverage`): bits 40..55 hold a family's code (`family_code`), and such a
seed draws exactly like any other except that the focused family (and its class) is on, its
`level`s land in the upper half of their range and the cluster has at least
`FOCUS_REPLICAS_MIN` servers when the system supports such a size. The seed number alone still
decides the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from voprd.options import FAULT_CLASSES
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
    "partition": "partition",
    "pause": "pause",
    "time": "time",
    "gray": "gray",
    "replay": "replay",
    "corrupt": "corrupt",
    "clients": "clients",
    "disk": "disk",
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

# The classes drawn from the first plan stream (before the later families were added).
_FIRST_CLASSES = ("network", "crash", "storage", "clock")
# The classes drawn from the second plan stream (`FaultPlan._draw_later`); `disk` is drawn last
# from the first stream (`FaultPlan._draw_disk`).
_LATER_CLASSES = ("partition", "pause", "time", "gray", "replay", "corrupt", "clients")

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
        "_classes", "_streams", "bridge_ppm", "client_crash_ppm", "client_restart_us_max",
        "clients", "clients_faults", "clock", "clock_drift_ppm", "clock_jump_ppm",
        "clock_jump_us_max", "corrupt", "corrupt_q20", "crash", "crash_ppm",
        "delay_base_us", "delay_jitter_us", "drift_ppm", "drift_spread_ppm", "dup_q20", "families",
        "focus", "gray", "loss_q20", "misdirect_ppm", "network", "offset_us", "partition",
        "partition_clients_ppm", "partition_ppm", "partition_us_max", "partitions_max",
        "path_capacity", "pause", "pause_ppm", "pause_us_max", "read_corrupt_ppm", "replay",
        "replay_q20", "replay_us_max", "replicas", "request_budget", "restart_us_max",
        "slow_factor_max", "slow_ppm", "slow_us_max", "spike_q20", "spike_us_max", "storage",
        "switched_off", "time", "timeout_base_ticks", "torn_ppm",
        "write_error_ppm", "write_latency_us_max", "write_latency_us_min",
    )

    def __init__(
        self, rng: Rng, classes: tuple[str, ...], tick_us: int,
        sizes: Sequence[int] = DEFAULT_CLUSTER_SIZES,
        core_size: Callable[[int], int] = majority, rng2: Rng | None = None,
        streams: Streams | None = None,
    ) -> None:
        self._classes = classes
        self._streams = streams
        # The focused family of a focus seed (see the module docstring), else None.
        self.focus = seed_focus(streams.seed) if streams is not None else None
        # Every family of a selected class this seed decided on: name -> on.
        self.families: dict[str, bool] = {}
        weights = [SIZE_WEIGHTS[size] for size in sizes]
        roll = rng.below(sum(weights))
        for size, weight in zip(sizes, weights, strict=True):
            if roll < weight:
                self.replicas = size
                break
            roll -= weight
        if self.focus is not None and self.replicas < FOCUS_REPLICAS_MIN:
            # A focus needs replication: the smallest supported size that has it, if any.
            self.replicas = min((s for s in sizes if s >= FOCUS_REPLICAS_MIN),
                                default=self.replicas)
        # The size of the liveness core (the servers healed in the liveness phase), as the
        # system requires; which servers it holds is drawn last (_draw_disk).
        core_n = core_size(self.replicas)
        self.clients = rng.between(1, 5)
        self.request_budget = rng.between(40, 240)
        self.timeout_base_ticks = rng.between(10, 25)
        # Swarm: each selected class is off in about one seed in six.
        switched: list[str] = []
        enabled = self._swarm(rng, _FIRST_CLASSES, classes, switched)
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
            # Drawn here since pauses were once part of the crash class (the class `pause` says
            # whether they happen: FaultPlan._draw_later).
            self.pause_ppm = self.level("pause", rng, 0, 20_000)
            self.restart_us_max = rng.between(20_000, 1_500_000)
            self.pause_us_max = rng.between(20_000, 800_000)

        self.write_latency_us_min = 20
        self.write_latency_us_max = 20
        self.write_error_ppm = self.misdirect_ppm = self.read_corrupt_ppm = self.torn_ppm = 0
        f = self.replicas - core_n
        if self.storage:
            self.write_latency_us_min = rng.between(5, 200)
            self.write_latency_us_max = self.write_latency_us_min + rng.between(0, 20_000)
            self.write_error_ppm = self.level("storage", rng, 0, 50_000)
        if f > 0 and (self.storage or self.crash):
            # These two draws chose the replicas of a per-replica atlas before issue 16; the atlas
            # is per sector now (voprd.sim.storage), and they are kept so later draws keep their
            # order.
            rng.between(1, f)
            rng.shuffled(range(self.replicas))
            if self.storage:
                self.misdirect_ppm = self.level("storage", rng, 0, 20_000)
                self.read_corrupt_ppm = self.level("storage", rng, 0, 50_000)
            if self.crash:
                self.torn_ppm = self.level("crash", rng, 0, 500_000)

        self.drift_ppm = [0] * self.replicas
        self.offset_us = [0] * self.replicas
        self.drift_spread_ppm = 0
        if self.clock:
            spread = self.drift_spread_ppm = self.level("clock", rng, 1_000, 100_000)
            for replica in range(self.replicas):
                self.drift_ppm[replica] = rng.between(-spread, spread)
                self.offset_us[replica] = rng.below(tick_us)
        self._draw_later(rng2 if rng2 is not None else rng, classes, switched)
        self.switched_off = tuple(switched)
        self._draw_disk(rng, classes, core_n)

    def _draw_later(self, rng: Rng, classes: tuple[str, ...], switched: list[str]) -> None:
        """The fault families added after the first four classes, and the later additions to
        those (several partitions at once, bridges, clients cut off; drift changes and wall-clock
        jumps), from their own stream. Each class is off in about one seed in six, too."""
        enabled = self._swarm(rng, _LATER_CLASSES, classes, switched)
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
            self.pause_ppm = self.level("pause", rng, 0, 20_000)
            self.pause_us_max = rng.between(20_000, 800_000)

        # partition: several partitions at once; bridges (not transitive), a client cut off from
        # some servers, a server cut off from the other servers (its clients still reach it).
        self.partitions_max = 1
        self.bridge_ppm = self.partition_clients_ppm = 0
        if self.partition:
            if not self.network:  # else the network class drew how often and how long
                self.partition_ppm = self.level("partition", rng, 0, 25_000)
                self.partition_us_max = rng.between(50_000, 2_000_000)
            self.partitions_max = self.level("partition", rng, 1, 3)
            self.bridge_ppm = self.level("partition", rng, 0, 400_000)
            self.partition_clients_ppm = self.level("partition", rng, 0, 400_000)
        # time: the drift changes mid-run (within the seed's spread); the wall clock jumps.
        self.clock_drift_ppm = self.clock_jump_ppm = self.clock_jump_us_max = 0
        if self.time:
            if not self.drift_spread_ppm:  # the clock class is off: no drift at first
                self.drift_spread_ppm = rng.between(1_000, 100_000)
            self.clock_drift_ppm = self.level("time", rng, 0, 10_000)
            self.clock_jump_ppm = self.level("time", rng, 0, 10_000)
            self.clock_jump_us_max = rng.between(10_000, 5_000_000)
        # gray: one server's disk, one link or one node's links become 10-1000x slower, a while.
        self.slow_ppm = self.slow_factor_max = self.slow_us_max = 0
        if self.gray:
            self.slow_ppm = self.level("gray", rng, 500, 8_000)  # up to 0.8 per second
            self.slow_factor_max = self.level("gray", rng, 10, 1_000)
            self.slow_us_max = rng.between(50_000, 2_000_000)
        # replay: a copy of a message delivered again much later (after view changes).
        self.replay_q20 = self.replay_us_max = 0
        if self.replay:
            self.replay_q20 = self.level("replay", rng, 1, Q20 // 50)  # up to 2% of messages
            self.replay_us_max = rng.between(200_000, 5_000_000)
        # corrupt: a message's payload changed in flight (for systems that checksum messages).
        self.corrupt_q20 = 0
        if self.corrupt:
            self.corrupt_q20 = self.level("corrupt", rng, 1, Q20 // 100)  # up to 1% of messages
        # clients: a client crashes (its open operation's outcome unknown) and restarts.
        self.client_crash_ppm = self.client_restart_us_max = 0
        if self.clients_faults:
            self.client_crash_ppm = self.level("clients", rng, 0, 8_000)
            self.client_restart_us_max = rng.between(1_000, 500_000)

    def _swarm(
        self, rng: Rng, names: tuple[str, ...], classes: tuple[str, ...], switched: list[str]
    ) -> dict[str, bool]:
        """Swarm testing for the classes `names`: a selected class is off in about one seed in
        `SWARM_OFF_ONE_IN` (one draw each, in order), always on in a seed focused on it. Records
        the decisions in `families` and the classes switched off in `switched`."""
        focus_class = SWARM_FAMILIES[self.focus] if self.focus is not None else None
        enabled: dict[str, bool] = {}
        for name in names:
            on = name in classes and (rng.below(SWARM_OFF_ONE_IN) != 0 or name == focus_class)
            enabled[name] = on
            if name in classes:
                self.families[name] = on
                if not on:
                    switched.append(name)
        return enabled

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
        class_on = bool(getattr(self, _CLASS_FLAG.get(fault_class, fault_class)))
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

    def _draw_disk(self, rng: Rng, classes: tuple[str, ...], core_n: int) -> None:
        """The liveness core and the `disk` class (issue 16). Drawn after everything else, so
        the draws above keep their order. Each disk fault kind is also off on its own in about
        one seed in four where the class is on (swarm testing per kind)."""
        n = self.replicas
        self.core = tuple(sorted(rng.shuffled(range(n))[:core_n]))
        self.disk = "disk" in classes and (rng.below(SWARM_OFF_ONE_IN) != 0 or self.focus == "disk")
        if "disk" in classes:
            self.families["disk"] = self.disk
            if not self.disk:
                self.switched_off = (*self.switched_off, "disk")
        self.corrupt_ppm = self.latent_ppm = self.bad_sector_ppm = self.disk_full_ppm = 0
        self.disk_full_us_max = self.stale_ppm = self.superblock_crash_ppm = 0
        self.superblock_damage_ppm = self.disk_loss_ppm = self.join_us = 0
        self.join_replica = -1
        if not self.disk:
            return

        def kind(high: int) -> int:
            return 0 if rng.below(4) == 0 else self.level("disk", rng, 1, high)

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
        on = [n for n in FAULT_CLASSES if getattr(self, _CLASS_FLAG.get(n, n))]
        return (
            f"replicas={self.replicas} clients={self.clients} budget={self.request_budget} "
            f"faults={','.join(on) or 'none'} off={','.join(self.switched_off) or '-'} "
            f"core={list(self.core)}"
            + (f" join=r{self.join_replica}" if self.join_replica >= 0 else "")
            + ("" if self.focus is None else f" focus={self.focus}")
        )


# The FaultPlan attribute that says a class is on (where it differs from the class name).
_CLASS_FLAG = {"clients": "clients_faults"}
