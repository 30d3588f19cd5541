"""Simulated disks: one per server, sectors of raw bytes, a superblock area, and the storage faults.

A disk stores exactly the bytes a system writes and returns what the medium holds: the engine does
not verify anything on a read. A system checks what it reads itself (its own checksums, positions,
hash chains), or uses the sealed helpers (`write_sealed`/`read_sealed`,
`seal_sector`/`unseal_sector`), which frame data with a checksum over the data and the address
it was written to. So code that forgets to verify can read garbage, a stale version of a sector or
another sector's data.

Every disk keeps, per sector, the bytes of the last write that completed ok (what the system made
durable: `written`, for invariant checks only) and an overlay of what the medium returns instead
for a damaged sector: other bytes (silent corruption, a stale version, a misdirected write's
data), `DAMAGED` (the device reports a read error: a torn write, a latent sector error, a bad
sector), or nothing (a write that never reached it). Rewriting a sector clears its overlay, except
on a bad sector, where writes fail. An atomic update (`begin_atomic`/`end_atomic`) keeps the
sectors as they were at its start until the superblock switches it in: the first superblock copy
written intact after `end_atomic`; a restart before that reads the old sectors (`shadow`).

Faults (`voprd.sim.faults` draws their probabilities):
- classic `storage`: write latency and transient write errors; misdirected writes (the data lands
  on an earlier settled sector, and the sector it was sent to keeps what it held); sectors that
  read back `DAMAGED` from a restart on; writes in flight torn (`DAMAGED`) at a crash.
- `disk`: silent corruption at rest (bits flipped), latent sector errors (a sector at rest goes
  unreadable), permanent bad sectors (unreadable and unwritable), disk full (every write fails for
  a while), lost writes (a write completes but the sector keeps its previous version: a stale
  read), a crash during a superblock copy write (that copy torn or not written), damage to a
  superblock copy at rest, whole-disk loss of a server outside the core (its disk replaced by an
  empty one at a crash), and a server outside the core joining late from an empty disk.

The fault atlas (after TigerBeetle's ClusterFaultAtlas): damage is spread per sector across
servers, never more than f = servers - core size damaged copies of one sector at a time (a lost disk
counts as damaged at every sector it held until they are rewritten), so every committed sector a
quorum wrote stays intact on one of them. The superblock area holds `SUPERBLOCK_COPIES` copies; at
most one is damaged at rest per disk, plus the one being written at a crash. A misdirected write
only lands on a settled sector with no write in flight to it. Disk loss and late joins only hit
servers outside the liveness core (`FaultPlan.core`, drawn up front). In the liveness phase faults
stop on the core and its disks are healed (overlays, bad sectors and full disks are lifted: every
sector reads back its last good write, as TigerBeetle's storage does for the core).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from zlib import crc32

from voprd.sim.events import EV_DISK
from voprd.sim.phases import SAFETY
from voprd.sim.system import DAMAGED, Damaged
from voprd.sim.trace import NO_PEER, K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation
    from voprd.sim.faults import FaultPlan
    from voprd.sim.prng import Rng

# The superblock area: this many copies, each written (synchronously) on its own.
SUPERBLOCK_COPIES: Final = 4
# A superblock copy write is lost with the probability of a data sector's lost write over this.
SUPERBLOCK_STALE_DIVISOR: Final = 10
SEAL_BYTES: Final = 4


class _Unwritten:
    """An overlay: the sector reads back as never written (a write that did not reach it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNWRITTEN"


UNWRITTEN: Final = _Unwritten()
# A sentinel distinct from every overlay value (the overlay dict's "missing").
UNWRITTEN_MISS: Final = object()
Overlay = bytes | Damaged | _Unwritten
# A write in flight: (slot it lands on, slot it was sent to, data, ok).
PendingWrite = tuple[int, int, bytes, bool]


def superblock_address(copy: int) -> int:
    """The address a superblock copy is sealed with (data sectors use their slot, >= 1)."""
    return -1 - copy


def seal_sector(address: int, data: bytes) -> bytes:
    """`data` framed with a checksum over the data and its address (4 bytes, little endian)."""
    return (crc32(data, address & 0xFFFFFFFF)).to_bytes(SEAL_BYTES, "little") + data


def unseal_sector(address: int, raw: bytes | Damaged | None) -> bytes | Damaged | None:
    """The data of a sealed sector read from `address`: None if never written, `DAMAGED` if the
    read failed or the checksum does not match (corrupt, torn, or written for another address)."""
    if raw is None or isinstance(raw, Damaged):
        return raw
    data = raw[SEAL_BYTES:]
    if len(raw) < SEAL_BYTES or int.from_bytes(raw[:SEAL_BYTES], "little") != crc32(
        data, address & 0xFFFFFFFF
    ):
        return DAMAGED
    return data


class ServerCrashed(BaseException):
    """Raised inside a server's handler when the engine crashes that server in the middle of a
    superblock write: the rest of the handler never runs. A BaseException, so a system's
    `except Exception` does not swallow it; the engine's loop catches it and crashes the server."""

    def __init__(self, node: int) -> None:
        super().__init__(node)
        self.node = node


_K_DISK_WRITE = K["disk_write"]
_K_WRITE_ERROR = K["disk_write_error"]
_K_MISDIRECT = K["disk_misdirect"]
_K_READ_CORRUPT = K["disk_read_corrupt"]
_K_CORRUPT = K["disk_corrupt"]
_K_LATENT = K["disk_latent_error"]
_K_BAD_SECTOR = K["disk_bad_sector"]
_K_STALE = K["disk_stale"]
_K_FULL = K["disk_full"]
_K_SB_TORN = K["superblock_torn"]
_K_SB_DAMAGE = K["superblock_damage"]
_K_LOST = K["disk_lost"]
_K_JOIN = K["disk_join"]
_K_HEAL = K["disk_heal"]


class Disk:
    """One server's disk; the system-facing methods are those of `voprd.sim.system.Disk`."""

    __slots__ = (
        "bad", "full_until_us", "lost", "next_write_id", "node", "overlay", "pending", "previous",
        "sectors", "shadow", "storage", "superblock_overlay", "superblocks", "switch_pending",
    )

    def __init__(self, storage: Storage, node: int) -> None:
        self.storage = storage
        self.node = node
        # slot -> the data of its last write that completed ok (the system's durable data).
        self.sectors: dict[int, bytes] = {}
        # slot -> what the medium returns instead (damaged sectors only).
        self.overlay: dict[int, Overlay] = {}
        # slot -> the version the sector held before its current data (a stale read returns it).
        self.previous: dict[int, bytes] = {}
        self.bad: set[int] = set()
        self.lost: set[int] = set()  # sectors a lost disk held, until rewritten (atlas only)
        self.full_until_us = 0
        self.pending: dict[int, PendingWrite] = {}
        self.next_write_id = 0
        self.superblocks: list[bytes | None] = [None] * SUPERBLOCK_COPIES
        self.superblock_overlay: dict[int, Overlay] = {}
        self.shadow: tuple[dict[int, bytes], dict[int, Overlay]] | None = None
        # end_atomic was called: the next superblock copy that lands switches the update in.
        self.switch_pending = False

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
        elif (plan.misdirect_ppm and min(settled, slot - 1) >= 1
              and not healthy and rng.chance(plan.misdirect_ppm)):
            # The write lands on an earlier, settled, durable sector that nothing will rewrite,
            # so reading back meets the misplaced sector before the one it was sent to.
            target = rng.between(1, min(settled, slot - 1))
            if (
                target in self.sectors and target not in self.bad
                and all(w[0] != target for w in self.pending.values())
                and storage.may_damage(r, target) and storage.may_damage(r, slot)
            ):
                sim.fault(r, _K_MISDIRECT, slot, target, detail=f"slot {slot} written to {target}")
                landed = target
        if ok and (self.full_until_us > sim.now or slot in self.bad):
            ok = False  # disk full (ENOSPC) or a bad sector: the `disk` class
        write_id = self.next_write_id
        self.next_write_id += 1
        self.pending[write_id] = (landed, slot, data, ok)
        sim.push(sim.now + latency_us, EV_DISK, r, (sim.incarnation[r], write_id))

    def read(self, slot: int) -> bytes | Damaged | None:
        overlay = self.overlay
        if overlay:
            found = overlay.get(slot, UNWRITTEN_MISS)
            if found is not UNWRITTEN_MISS:
                return None if found is UNWRITTEN else found  # type: ignore[return-value]
        return self.sectors.get(slot)

    def write_sealed(self, slot: int, data: bytes, settled: int = 0) -> None:
        self.write(slot, seal_sector(slot, data), settled)

    def read_sealed(self, slot: int) -> bytes | Damaged | None:
        return unseal_sector(slot, self.read(slot))

    def truncate(self, slot_count: int) -> None:
        sectors = self.sectors
        for slot in [s for s in sectors if s > slot_count]:
            self.previous[slot] = sectors.pop(slot)
        for slot in [s for s in self.overlay if s > slot_count and s not in self.bad]:
            del self.overlay[slot]
        for write_id in [w for w, write in self.pending.items() if write[1] > slot_count]:
            del self.pending[write_id]
        self.storage.sim.cancel_held_writes(self.node, slot_count)  # completions held by a pause

    def read_superblock(self, copy: int = 0) -> bytes | Damaged | None:
        found = self.superblock_overlay.get(copy, UNWRITTEN_MISS)
        if found is not UNWRITTEN_MISS:
            return None if found is UNWRITTEN else found  # type: ignore[return-value]
        return self.superblocks[copy]

    def write_superblock(self, data: bytes, copy: int = 0) -> None:
        if not 0 <= copy < SUPERBLOCK_COPIES:
            raise ValueError(f"superblock copy {copy} is outside 0..{SUPERBLOCK_COPIES - 1}")
        self.storage.write_superblock(self, copy, data)

    def begin_atomic(self) -> None:
        if self.shadow is None:
            self.shadow = (dict(self.sectors), dict(self.overlay))
        self.switch_pending = False

    def end_atomic(self) -> None:
        if self.shadow is not None:
            self.switch_pending = True

    def written(self, slot: int) -> bytes | None:
        """The data of the last write to `slot` that completed ok, whatever the medium did with it
        since: for invariant checks (did the system make it durable?), never for server logic."""
        return self.sectors.get(slot)

    def written_superblock(self, copy: int = 0) -> bytes | None:
        """Like `written`, for a superblock copy."""
        return self.superblocks[copy]

    # ---- the engine's side ----------------------------------------------------------------
    def slot_max(self) -> int:
        return max(self.sectors, default=0)

    def damaged(self, slot: int) -> bool:
        """The atlas' view: this disk's copy of `slot` is not what was written last, or is
        damaged in the sectors an unfinished atomic update keeps (a restart reverts to them)."""
        shadow = self.shadow
        return (slot in self.overlay or slot in self.lost
                or (shadow is not None and slot in shadow[1]))

    def store(self, slot: int, data: bytes) -> None:
        """A write completed ok on `slot` (the sector it was sent to and landed on)."""
        old = self.sectors.get(slot)
        if old is not None and old != data:
            self.previous[slot] = old
        self.sectors[slot] = data
        if self.overlay and slot not in self.bad:
            self.overlay.pop(slot, None)
        if self.lost:
            self.lost.discard(slot)

    def misdirect(self, landed: int, slot: int, data: bytes) -> None:
        """A write sent to `slot` completed ok but landed on `landed`: the system's data for
        `slot` is `data`, the medium has it at `landed`, and `slot` keeps what it held."""
        held: Overlay = self.read(slot) or UNWRITTEN
        self.store(slot, data)
        self.overlay[slot] = held
        self.overlay[landed] = data

    def crash(self, torn: list[bool]) -> list[int]:
        """Lose every unsynced write; `torn[i]` tears the i-th pending one instead (it reads back
        as a read error). Returns the slots left torn."""
        torn_slots = []
        for index, (landed, _slot, _data, ok) in enumerate(self.pending.values()):
            if ok and index < len(torn) and torn[index]:
                self.overlay[landed] = DAMAGED
                torn_slots.append(landed)
        self.pending.clear()
        return torn_slots

    def revert(self) -> None:
        """At a restart: an unfinished atomic update reverts to the sectors it started from."""
        self.switch_pending = False
        if self.shadow is not None:
            self.sectors, self.overlay = self.shadow
            self.shadow = None
            for slot in self.bad:
                self.overlay[slot] = DAMAGED

    def recover(self, corrupt_reads: set[int]) -> None:
        """At a restart: an unfinished atomic update reverts; these sectors read back damaged."""
        self.revert()
        for slot in corrupt_reads:
            self.overlay[slot] = DAMAGED

    def wipe(self) -> list[int]:
        """The disk is replaced by an empty one. Returns the sectors it held."""
        held = sorted(self.sectors)
        self.lost = set(held) | self.lost
        self.sectors = {}
        self.overlay = {}
        self.previous = {}
        self.bad = set()
        self.full_until_us = 0
        self.pending.clear()
        self.superblocks = [None] * SUPERBLOCK_COPIES
        self.superblock_overlay = {}
        self.shadow = None
        self.switch_pending = False
        return held

    def heal(self) -> bool:
        """The liveness phase on a core server: every sector reads back its last good write.
        Returns True if anything was damaged."""
        changed = bool(self.overlay or self.bad or self.superblock_overlay or self.full_until_us)
        self.overlay = {}
        self.bad = set()
        self.superblock_overlay = {}
        self.full_until_us = 0
        if self.shadow is not None:
            self.shadow = (self.shadow[0], {})
        return changed


class Storage:
    """The disks of one run and the faults injected into them."""

    __slots__ = ("disk_rng", "disks", "f", "plan", "rng", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.plan: FaultPlan = sim.plan
        self.rng = sim.streams.stream("storage")
        # The disk class draws from its own stream, so the classic faults' draws never move.
        self.disk_rng: Rng = sim.streams.stream("storage.disk")
        self.disks = [Disk(self, r) for r in range(sim.n)]
        self.f = sim.n - len(sim.plan.core)  # servers outside the core: (n - 1) // 2 for a majority

    # ---- the atlas ------------------------------------------------------------------------
    def may_damage(self, r: int, slot: int) -> bool:
        """May server r's copy of `slot` be damaged now? At most f damaged copies per sector, and
        a damaged sector is not damaged again before it is rewritten (so the evidence a fault
        leaves, such as a misdirected write's data, stays until the system repairs it)."""
        if self.f == 0 or self.disks[r].damaged(slot):
            return False
        others = 0
        for disk in self.disks:
            if disk.node != r and disk.damaged(slot):
                others += 1
        return others < self.f

    def _may_damage_superblock(self, disk: Disk, copy: int) -> bool:
        return all(c == copy for c in disk.superblock_overlay)

    # ---- writes ---------------------------------------------------------------------------
    def complete(self, r: int, b: tuple[int, int]) -> None:
        """A write's completion event: note it, tell the server (if the same incarnation)."""
        disk = self.disks[r]
        write = disk.pending.pop(b[1], None)
        if write is None:
            return  # cancelled (truncation) or lost (crash)
        landed, slot, data, ok = write
        if ok:
            if landed != slot:
                disk.misdirect(landed, slot, data)
            elif self.plan.stale_ppm:
                before = disk.sectors.get(slot)
                if before is None:
                    before = disk.previous.get(slot)
                if before is not None and before != data:
                    self._maybe_lose(disk, slot, data, before)
                else:
                    disk.store(slot, data)
            else:
                disk.store(slot, data)
        sim = self.sim
        sim.records.append((sim.now, r, _K_DISK_WRITE, slot, int(ok)))
        if sim.record_trace:
            sim.details.append(sim.system.describe_write(slot, landed, ok))
            sim.peers.append(NO_PEER)
        sim.write_done(r, b[0], slot, ok)  # the server learns it (later, if it is paused)

    def _maybe_lose(self, disk: Disk, slot: int, data: bytes, before: bytes) -> None:
        """A write over a different earlier version `before` completed: maybe it is lost (the
        sector keeps `before`; the server is told it succeeded)."""
        sim = self.sim
        r = disk.node
        disk.store(slot, data)
        if (
            (sim.phase == SAFETY or r not in sim.core) and slot not in disk.bad
            and self.may_damage(r, slot) and self.disk_rng.chance(self.plan.stale_ppm)
        ):
            disk.overlay[slot] = before
            sim.fault(r, _K_STALE, slot, detail=f"slot {slot} keeps its previous version")

    def write_superblock(self, disk: Disk, copy: int, data: bytes) -> None:
        """A superblock copy write (synchronous): it may be interrupted by a crash (the copy is
        torn or not written, and the server dies here), or lost (the copy keeps its previous
        version)."""
        sim = self.sim
        plan = self.plan
        r = disk.node
        if (
            plan.disk and sim.nodes[r] is not None and (sim.phase == SAFETY or r not in sim.core)
        ):
            rng = self.disk_rng
            if plan.superblock_crash_ppm and rng.chance(plan.superblock_crash_ppm):
                torn = rng.below(2) == 1
                if torn:
                    disk.superblocks[copy] = data
                    disk.superblock_overlay[copy] = DAMAGED
                sim.fault(r, _K_SB_TORN, copy, int(torn),
                          detail=f"crash while writing superblock copy {copy}: "
                                 + ("torn" if torn else "not written"))
                raise ServerCrashed(r)
            held = disk.superblocks[copy]
            if (
                plan.stale_ppm and held is not None and held != data
                and self._may_damage_superblock(disk, copy)
                and rng.chance(plan.stale_ppm // SUPERBLOCK_STALE_DIVISOR)
            ):
                disk.superblocks[copy] = data
                disk.superblock_overlay[copy] = held
                sim.fault(r, _K_STALE, superblock_address(copy),
                          detail=f"superblock copy {copy} write lost (keeps its previous version)")
                return
        disk.superblocks[copy] = data
        disk.superblock_overlay.pop(copy, None)
        if disk.switch_pending:  # the superblock switches a completed atomic update in
            disk.shadow = None
            disk.switch_pending = False

    # ---- faults at rest (a nemesis tick of the safety phase) ------------------------------
    def tick(self) -> None:
        """One draw decides the faults at rest of this tick (16 bits each, probabilities in ppm):
        silent corruption, a latent sector error, a bad sector, a full disk, superblock damage."""
        plan = self.plan
        if not plan.disk:
            return
        rng = self.disk_rng
        x = rng.next_u64()
        if plan.corrupt_ppm and (x & 0xFFFF) * 1_000_000 < plan.corrupt_ppm << 16:
            self._at_rest(_K_CORRUPT)
        if plan.latent_ppm and ((x >> 16) & 0xFFFF) * 1_000_000 < plan.latent_ppm << 16:
            self._at_rest(_K_LATENT)
        if plan.bad_sector_ppm and ((x >> 32) & 0xFFFF) * 1_000_000 < plan.bad_sector_ppm << 16:
            self._at_rest(_K_BAD_SECTOR)
        if plan.disk_full_ppm and ((x >> 48) & 0xFFFF) * 1_000_000 < plan.disk_full_ppm << 16:
            self._disk_full()
        if plan.superblock_damage_ppm and rng.chance(plan.superblock_damage_ppm // 4):
            self._superblock_at_rest()

    def _at_rest(self, code: int) -> None:
        sim = self.sim
        rng = self.disk_rng
        disk = self.disks[rng.below(sim.n)]
        top = disk.slot_max()
        if top == 0:
            return
        slot = rng.between(1, top)
        r = disk.node
        if slot not in disk.sectors or not self.may_damage(r, slot) or slot in disk.bad:
            return
        if code == _K_CORRUPT:
            data = bytearray(disk.sectors[slot])
            flips = rng.between(1, 3)
            for _ in range(flips):
                bit = rng.below(len(data) * 8)
                data[bit >> 3] ^= 1 << (bit & 7)
            disk.overlay[slot] = bytes(data)
            detail = f"slot {slot}: {flips} bit(s) flipped at rest"
        elif code == _K_LATENT:
            disk.overlay[slot] = DAMAGED
            detail = f"slot {slot} unreadable (latent sector error)"
        else:
            disk.overlay[slot] = DAMAGED
            disk.bad.add(slot)
            detail = f"slot {slot} bad: reads and writes fail"
        sim.fault(r, code, slot, detail=detail)

    def _disk_full(self) -> None:
        sim = self.sim
        rng = self.disk_rng
        r = rng.below(sim.n)
        duration_us = rng.between(1_000, self.plan.disk_full_us_max)
        disk = self.disks[r]
        disk.full_until_us = max(disk.full_until_us, sim.now + duration_us)
        sim.fault(r, _K_FULL, duration_us // 1000,
                  detail=f"disk full (writes fail) for {duration_us // 1000} ms")

    def _superblock_at_rest(self) -> None:
        sim = self.sim
        rng = self.disk_rng
        disk = self.disks[rng.below(sim.n)]
        copy = rng.below(SUPERBLOCK_COPIES)
        current = disk.superblocks[copy]
        if current is None or not self._may_damage_superblock(disk, copy):
            return
        if rng.below(2):
            disk.superblock_overlay[copy] = DAMAGED
            what = "unreadable"
        else:
            data = bytearray(current)
            bit = rng.below(len(data) * 8)
            data[bit >> 3] ^= 1 << (bit & 7)
            disk.superblock_overlay[copy] = bytes(data)
            what = "a bit flipped"
        sim.fault(disk.node, _K_SB_DAMAGE, copy, 1, detail=f"superblock copy {copy} {what} at rest")

    # ---- crashes, restarts, the liveness phase --------------------------------------------
    def crash(self, r: int) -> tuple[int, list[int]]:
        """Lose (or tear) the writes in flight, and maybe lose the whole disk. Returns (lost,
        torn slots)."""
        plan = self.plan
        disk = self.disks[r]
        torn: list[bool] = []
        if plan.torn_ppm and self.f:
            torn = [
                self.rng.chance(plan.torn_ppm) and self.may_damage(r, write[0])
                for write in disk.pending.values()
            ]
        lost = len(disk.pending)
        torn_slots = disk.crash(torn)
        if plan.disk_loss_ppm and r not in plan.core and self.disk_rng.chance(plan.disk_loss_ppm):
            self._lose_disk(disk)
        return lost, torn_slots

    def _lose_disk(self, disk: Disk) -> None:
        r = disk.node
        sim = self.sim
        # The atlas: every sector it held counts as damaged until rewritten.
        if not all(self.may_damage(r, slot) for slot in disk.sectors):
            return
        held = disk.wipe()
        sim.fault(r, _K_LOST, len(held), detail=f"disk replaced by an empty one ({len(held)} "
                                                  "sectors lost)")

    def before_restart(self, r: int) -> None:
        """Draw the sectors that read back damaged from this restart (safety phase only), and
        revert an unfinished atomic update."""
        sim = self.sim
        plan = self.plan
        disk = self.disks[r]
        # Revert first: the sectors that read back damaged are drawn on (and the atlas checks)
        # the sectors this restart reads, not those of an update it discards (else a sector
        # damaged in the reverted version, such as a misdirected write's evidence, is damaged
        # again and more than f copies of a sector can be damaged; seed 102992).
        disk.revert()
        corrupt: set[int] = set()
        if plan.read_corrupt_ppm and self.f and sim.phase == SAFETY:
            for slot in range(1, disk.slot_max() + 1):
                if self.rng.chance(plan.read_corrupt_ppm) and self.may_damage(r, slot):
                    corrupt.add(slot)
                    sim.fault(r, _K_READ_CORRUPT, slot, detail=f"slot {slot}")
        disk.recover(corrupt)

    def start(self) -> None:
        """Schedule the late join of an absent server (if the seed drew one)."""
        plan = self.plan
        if plan.join_replica >= 0:
            self.sim.schedule(plan.join_us, self._join, plan.join_replica)

    def _join(self, r: int) -> None:
        sim = self.sim
        if sim.nodes[r] is not None:
            return
        sim.fault(r, _K_JOIN, detail="joins the cluster from an empty disk")
        sim.nemesis.restart(r)

    def heal(self, core: tuple[int, ...]) -> None:
        """The liveness phase: the core's disks read back their last good writes."""
        for r in core:
            if self.disks[r].heal():
                self.sim.note(r, _K_HEAL, detail="liveness: storage faults lifted on the core")

