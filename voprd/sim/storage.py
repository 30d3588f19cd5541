"""A simulated disk per replica: checksummed log sectors, a superblock, and injected faults.

Writes complete after a latency; until then they are unsynced and a crash loses (or, on replicas
the fault atlas allows, tears) them. Reading the log back verifies every sector's checksum, its
position and the hash chain, so torn writes, read corruption and misdirected writes are detected.
The superblock (view, last normal view, lnv_base) is written atomically and synchronously (as if
kept in redundant copies that are never all torn at once). Log installs are copy-on-write: while
the superblock marks one unfinished (lnv_base >= 0), the previous log stays readable, and a
restart reads it (`shadow`), as a log written to a second area and switched by the superblock.
"""

from __future__ import annotations

from voprd.vsr.messages import Entry, entry_valid

# A stored sector: (entry, stored checksum). A stored checksum != entry checksum is a torn sector.
Sector = tuple[Entry, int]
# A write in flight: (target slot, entry, ok).
PendingWrite = tuple[int, Entry, bool]


class Disk:
    __slots__ = ("next_write_id", "pending", "sectors", "shadow", "superblock")

    def __init__(self) -> None:
        self.sectors: dict[int, Sector] = {}
        self.pending: dict[int, PendingWrite] = {}
        self.next_write_id = 0
        self.superblock = (0, 0, -1)  # (view, last normal view, lnv_base)
        self.shadow: dict[int, Sector] | None = None

    def begin_install(self) -> None:
        if self.shadow is None:
            self.shadow = dict(self.sectors)

    def end_install(self) -> None:
        self.shadow = None

    def submit(self, slot: int, entry: Entry, ok: bool) -> int:
        write_id = self.next_write_id
        self.next_write_id += 1
        self.pending[write_id] = (slot, entry, ok)
        return write_id

    def complete(self, write_id: int) -> PendingWrite | None:
        """Finish a write; None if it was cancelled (truncation) or lost (crash)."""
        write = self.pending.pop(write_id, None)
        if write is not None and write[2]:
            slot, entry, _ = write
            self.sectors[slot] = (entry, entry[5])
        return write

    def truncate(self, op_count: int) -> None:
        """Durably drop every sector after `op_count` and cancel writes of entries after it."""
        for slot in [s for s in self.sectors if s > op_count]:
            del self.sectors[slot]
        for write_id in [w for w, (_, e, _) in self.pending.items() if e[0] > op_count]:
            del self.pending[write_id]

    def crash(self, torn: list[bool]) -> list[int]:
        """Lose every unsynced write; `torn[i]` tears the i-th pending one instead. Returns the
        slots left torn."""
        torn_slots = []
        for index, (slot, entry, ok) in enumerate(self.pending.values()):
            if ok and index < len(torn) and torn[index]:
                self.sectors[slot] = (entry, entry[5] ^ 1)
                torn_slots.append(slot)
        self.pending.clear()
        return torn_slots

    def load(self, corrupt_reads: set[int]) -> tuple[list[Entry], bool]:
        """Read the log back. Returns (valid prefix, damaged). A gap ends the log (later sectors
        were never acknowledged, so they are dropped); a sector that fails verification, or one
        in `corrupt_reads`, marks the log damaged."""
        if self.shadow is not None:
            self.sectors = self.shadow  # the install never finished: read the previous log
            self.shadow = None
        log: list[Entry] = []
        parent = 0
        damaged = False
        slot = 1
        while True:
            sector = self.sectors.get(slot)
            if sector is None:
                break
            entry, stored = sector
            if (
                slot in corrupt_reads or stored != entry[5] or entry[0] != slot
                or not entry_valid(entry, parent)
            ):
                damaged = True
                break
            log.append(entry)
            parent = entry[5]
            slot += 1
        if not damaged:
            self.truncate(len(log))
        return log, damaged

    def slot_max(self) -> int:
        return max(self.sectors, default=0)
