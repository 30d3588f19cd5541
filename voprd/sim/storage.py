"""Simulated disks: one per server, sectors of opaque bytes with checksums, and the storage faults.

A sector is `(data, checksum)`; the engine computes the checksum over the data and the address
the write was sent to (like T10 protection information's reference tag), so a torn write, a corrupt
read and a misdirected write all read back as `DAMAGED`. Writes complete after a latency; until
then they are unsynced, and a crash loses them (or, on servers the fault atlas allows, tears them).
The superblock is written atomically and synchronously (as if kept in redundant copies that are
never all torn at once). An atomic update (`begin_atomic`/`end_atomic`) keeps the sectors as they
were at its start until it ends; a restart in between reads those (`shadow`).

The fault atlas: torn writes, misdirected writes and corrupt reads only hit the servers of
`FaultPlan.storage_faulty` (at most f of them), and a misdirected write only lands on a sector the
system declared settled (never rewritten), that is durable, with no write in flight to it: so every
quorum keeps an intact copy of committed data. Write errors hit any server (the system retries).
In the liveness phase the core's disks are healthy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zlib import crc32  # a sector's checksum: crc32(data, address)

from voprd.sim.events import EV_DISK
from voprd.sim.phases import SAFETY
from voprd.sim.system import DAMAGED, Damaged
from voprd.sim.trace import NO_PEER, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

# A stored sector: (data, stored checksum).
Sector = tuple[bytes, int]
# A write in flight: (slot it lands on, slot it was sent to, data, ok).
PendingWrite = tuple[int, int, bytes, bool]


_K_DISK_WRITE = K["disk_write"]
_K_WRITE_ERROR = K["disk_write_error"]
_K_MISDIRECT = K["disk_misdirect"]
_K_TORN = K["disk_torn"]
_K_READ_CORRUPT = K["disk_read_corrupt"]


class Disk:
    """One server's disk; the system-facing methods are those of `voprd.sim.system.Disk`."""

    __slots__ = (
        "corrupt_reads", "next_write_id", "node", "pending", "sectors", "shadow", "storage",
        "superblock",
    )

    def __init__(self, storage: Storage, node: int) -> None:
        self.storage = storage
        self.node = node
        self.sectors: dict[int, Sector] = {}
        self.pending: dict[int, PendingWrite] = {}
        self.next_write_id = 0
        self.superblock: bytes | None = None
        self.shadow: dict[int, Sector] | None = None
        # Sectors that read back corrupt since the last restart (drawn by the engine), until
        # rewritten.
        self.corrupt_reads: set[int] = set()

    # ---- the system's view ----------------------------------------------------------------
    def write(self, slot: int, data: bytes, settled: int = 0) -> None:
        storage = self.storage
        sim = storage.sim
        plan = storage.plan
        rng = storage.rng
        r = self.node
        low, high = plan.write_latency_us_min, plan.write_latency_us_max
        # One draw: 32 bits of latency, 20 bits for the write-error decision.
        x = rng.next_u64()
        latency_us = low + (((x & 0xFFFFFFFF) * (high - low + 1)) >> 32)
        latency_us *= sim.slowdowns.disk[r]  # a gray failure: a slow disk (voprd.sim.gray)
        landed = slot
        ok = True
        healthy = sim.phase != SAFETY and r in sim.core
        if (
            plan.write_error_ppm and not healthy
            and ((x >> 32) & 0xFFFFF) * 1_000_000 < plan.write_error_ppm << 20
        ):
            ok = False
            sim.fault(r, _K_WRITE_ERROR, slot, detail=f"slot {slot}")
        elif (plan.misdirect_ppm and r in sim.faulty and min(settled, slot - 1) >= 1
              and not healthy and rng.chance(plan.misdirect_ppm)):
            # The atlas: the write lands on an earlier, settled, durable sector that nothing
            # will rewrite, so reading back meets the misplaced sector before any gap.
            target = rng.between(1, min(settled, slot - 1))
            if target in self.sectors and all(w[0] != target for w in self.pending.values()):
                sim.fault(r, _K_MISDIRECT, slot, target, detail=f"slot {slot} written to {target}")
                landed = target
        write_id = self.next_write_id
        self.next_write_id += 1
        self.pending[write_id] = (landed, slot, data, ok)
        sim.push(sim.now + latency_us, EV_DISK, r, (sim.incarnation[r], write_id))

    def read(self, slot: int) -> bytes | Damaged | None:
        sector = self.sectors.get(slot)
        if sector is None:
            return None
        data, stored = sector
        if slot in self.corrupt_reads or stored != crc32(data, slot):
            return DAMAGED
        return data

    def truncate(self, slot_count: int) -> None:
        for slot in [s for s in self.sectors if s > slot_count]:
            del self.sectors[slot]
        for write_id in [w for w, write in self.pending.items() if write[1] > slot_count]:
            del self.pending[write_id]
        self.storage.sim.cancel_held_writes(self.node, slot_count)  # completions held by a pause

    def read_superblock(self) -> bytes | None:
        return self.superblock

    def write_superblock(self, data: bytes) -> None:
        self.superblock = data

    def begin_atomic(self) -> None:
        if self.shadow is None:
            self.shadow = dict(self.sectors)

    def end_atomic(self) -> None:
        self.shadow = None

    # ---- the engine's side ----------------------------------------------------------------
    def slot_max(self) -> int:
        return max(self.sectors, default=0)

    def crash(self, torn: list[bool]) -> list[int]:
        """Lose every unsynced write; `torn[i]` tears the i-th pending one instead. Returns the
        slots left torn."""
        torn_slots = []
        for index, (landed, slot, data, ok) in enumerate(self.pending.values()):
            if ok and index < len(torn) and torn[index]:
                self.sectors[landed] = (data, crc32(data, slot) ^ 1)
                torn_slots.append(landed)
        self.pending.clear()
        return torn_slots

    def recover(self, corrupt_reads: set[int]) -> None:
        """At a restart: an unfinished atomic update reverts; these sectors read back corrupt."""
        if self.shadow is not None:
            self.sectors = self.shadow
            self.shadow = None
        self.corrupt_reads = corrupt_reads


class Storage:
    """The disks of one run and the faults injected into them."""

    __slots__ = ("disks", "plan", "rng", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan = sim.plan
        self.rng = sim.streams.stream("storage")
        self.disks = [Disk(self, r) for r in range(sim.n)]

    def complete(self, r: int, b: tuple[int, int]) -> None:
        """A write's completion event: note it, tell the server (if the same incarnation)."""
        disk = self.disks[r]
        write = disk.pending.pop(b[1], None)
        if write is None:
            return  # cancelled (truncation) or lost (crash)
        landed, slot, data, ok = write
        if ok:
            disk.sectors[landed] = (data, crc32(data, slot))
            disk.corrupt_reads.discard(landed)
        sim = self.sim
        sim.records.append((sim.now, r, _K_DISK_WRITE, slot, int(ok)))
        if sim.record_trace:
            sim.details.append(sim.system.describe_write(slot, landed, ok))
            sim.peers.append(NO_PEER)
        sim.write_done(r, b[0], slot, ok)  # the server learns it (later, if it is paused)

    def crash(self, r: int) -> tuple[int, list[int]]:
        """Lose (or, on atlas servers, tear) the writes in flight. Returns (lost, torn slots)."""
        plan = self.plan
        disk = self.disks[r]
        torn: list[bool] = []
        if r in self.sim.faulty and plan.torn_ppm:
            torn = [self.rng.chance(plan.torn_ppm) for _ in disk.pending]
        lost = len(disk.pending)
        return lost, disk.crash(torn)

    def before_restart(self, r: int) -> None:
        """Draw the sectors that read back corrupt at this restart (atlas servers, safety phase
        only), and revert an unfinished atomic update."""
        sim = self.sim
        plan = self.plan
        disk = self.disks[r]
        corrupt: set[int] = set()
        if r in sim.faulty and plan.read_corrupt_ppm and sim.phase == SAFETY:
            for slot in range(1, disk.slot_max() + 1):
                if self.rng.chance(plan.read_corrupt_ppm):
                    corrupt.add(slot)
                    sim.fault(r, _K_READ_CORRUPT, slot, detail=f"slot {slot}")
        disk.recover(corrupt)
