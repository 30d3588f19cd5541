"""Regression tests for VSR bugs the simulator found (unit-level scenario + the original seed)."""

from __future__ import annotations

from typing import Any

from tests.sim_support import crash_and_recover, quiet_simulation, write_now
from voprd.options import RunOptions
from voprd.sim.prng import Rng
from voprd.sim.run import run_seed
from voprd.sim.storage import UNWRITTEN, Disk
from voprd.sim.system import Damaged
from voprd.systems.vsr import VSR
from voprd.systems.vsr.messages import (
    COMMIT,
    ENTRIES,
    EVICTED,
    GET_ENTRIES,
    PREPARE_OK,
    REPAIR_REPLY,
    REPAIR_REQUEST,
    START_VIEW,
    Entry,
    Message,
    encode_entry,
    make_entry,
)
from voprd.systems.vsr.replica import (
    NORMAL,
    RECOVERING,
    UNKNOWN,
    VIEW_CHANGE,
    WRITE_BACKOFF_TICKS_MAX,
    Head,
    Replica,
)
from voprd.systems.vsr.system import SUPERBLOCK_FORMATTED, hole, load_log, read_log


class FakeIO:
    """The replica's IO without an engine: a dict for a disk, a list for the network."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []
        self.writes: list[Entry] = []
        self.superblock: tuple[int, int, int] = (0, 0, -1)
        self.head: Head = (0, 0)
        self.truncated: list[int] = []
        # What a read returns per op (absent: nothing written).
        self.disk: dict[int, bytes | Damaged] = {}
        self.votes: list[tuple[int, int]] = []
        self.reloaded: tuple[list[Entry], tuple[int, int, int, Head]] | None = None

    def send(self, src: int, dst: int, msg: Message) -> None:
        self.sent.append((dst, msg))

    def disk_write(self, replica: int, entry: Entry, parent: int, commit: int) -> None:
        self.writes.append(entry)
        self.disk[entry[0]] = encode_entry(entry, parent)

    def disk_truncate(self, replica: int, op_count: int) -> None:
        self.truncated.append(op_count)

    def disk_read(self, replica: int, op: int) -> bytes | Damaged | None:
        return self.disk.get(op)

    def persist(
        self, replica: int, view: int, last_normal_view: int, lnv_base: int, head: Head
    ) -> None:
        self.superblock = (view, last_normal_view, lnv_base)
        self.head = head

    def reload(self, replica: int) -> tuple[list[Entry], tuple[int, int, int, Head]] | None:
        return self.reloaded

    def on_vote(self, replica: int, view: int, op: int) -> None:
        self.votes.append((view, op))

    def on_do_view_change(
        self, replica: int, view: int, last_normal_view: int, log: tuple[Entry, ...]
    ) -> None:
        pass

    def on_resume(self, replica: int) -> None:
        pass

    def on_commit(self, replica: int, entry: Entry, state_hash: int) -> None:
        pass

    def on_status(self, replica: int) -> None:
        pass

    def on_log_installed(self, replica: int, as_primary: bool) -> None:
        pass

    def on_bound(self, name: str) -> None:
        pass

    def kinds(self) -> list[int]:
        return [msg[0] for _, msg in self.sent]


def _log(count: int, view: int = 0, tag: str = "") -> list[Entry]:
    log: list[Entry] = []
    parent = 0
    for op in range(1, count + 1):
        entry = make_entry(op, view, 9, op, ("put", "k", f"{tag}{op}", None), parent)
        log.append(entry)
        parent = entry[5]
    return log


def _replica(io: Any, rid: int = 2) -> Replica:
    return Replica(rid, 3, io, Rng(1), frozenset(), 10)


def _complete_writes(replica: Replica, io: FakeIO) -> None:
    for entry in io.writes:
        replica.on_write_done(entry[0], True)
    io.writes.clear()


def test_state_transfer_keeps_the_old_log_until_the_new_one_is_complete() -> None:
    """Seeds 324 and 1485 (soaks): a backup that learned of a view from a Commit truncated its log
    to its commit number (0 right after a restart) while claiming a last normal view, so a later
    view change preferred its short log over one holding committed ops."""
    io = FakeIO()
    replica = _replica(io)
    old = _log(10)
    replica.restart(list(old), 0, 0, False)  # now in view change for view 1
    _complete_writes(replica, io)
    replica.commit = 9
    assert replica.status == VIEW_CHANGE and replica.view == 1
    io.sent.clear()
    replica.on_message((COMMIT, 1, 1, 9, 10))  # view 1 exists; we missed its StartView
    assert replica.status == NORMAL and replica.log == old and replica.last_normal_view == 0
    assert PREPARE_OK not in io.kinds()
    assert (1, (GET_ENTRIES, 2, 1, 9)) in io.sent
    io.sent.clear()
    new_tenth = make_entry(10, 1, 9, 99, ("put", "k", "new", None), old[8][5])
    replica.on_message((ENTRIES, 1, 1, (new_tenth,), 9, 10))
    assert replica.log == [*old[:9], new_tenth] and replica.last_normal_view == 1
    assert io.superblock == (1, 0, 9)  # install unfinished until the new entry is durable
    assert PREPARE_OK not in io.kinds()
    _complete_writes(replica, io)
    assert io.superblock == (1, 1, -1)
    assert PREPARE_OK in io.kinds()


def test_unfinished_install_restarts_from_the_previous_log() -> None:
    """Seed 1523 (soak): a replica installed a StartView log, persisted last normal view 2 at
    once, crashed before the new entries were durable and restarted claiming a view-2 log that
    lacked a committed op."""
    io = FakeIO()
    replica = _replica(io, rid=1)  # a backup in view 2
    old = _log(10, view=0, tag="old")
    replica.restart(list(old), 1, 0, False)
    new = old[:8]
    parent = new[-1][5]
    for op in (9, 10, 11):
        entry = make_entry(op, 2, 9, op, ("put", "k", f"new{op}", None), parent)
        new.append(entry)
        parent = entry[5]
    replica.on_message((START_VIEW, 2, 2, tuple(new), 8))
    assert replica.view == 2 and replica.last_normal_view == 2 and replica.log == new
    assert io.superblock == (2, 0, 8)
    assert PREPARE_OK not in io.kinds()
    _complete_writes(replica, io)
    assert io.superblock == (2, 2, -1)
    assert PREPARE_OK in io.kinds()


def test_disk_install_is_copy_on_write() -> None:
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    old = _log(10, tag="old")
    parent = 0
    for entry in old:
        write_now(sim, disk, entry[0], encode_entry(entry, parent))
        parent = entry[5]
    disk.begin_atomic()
    disk.truncate(8)
    new_ninth = make_entry(9, 2, 9, 9, ("put", "k", "new", None), old[7][5])
    write_now(sim, disk, 9, encode_entry(new_ninth, old[7][5]))
    disk.write(10, encode_entry(new_ninth, old[7][5]))  # still in flight at the crash
    crash_and_recover(sim, disk)
    log, damaged = load_log(disk, SUPERBLOCK_FORMATTED)
    assert log == old and not damaged  # the previous log, whole
    disk.begin_atomic()
    disk.truncate(8)
    write_now(sim, disk, 9, encode_entry(new_ninth, old[7][5]))
    disk.end_atomic()
    disk.write_superblock(b"the switch")  # the superblock switches the update in
    crash_and_recover(sim, disk)
    log, damaged = load_log(disk, (2, 0, -1, (9, new_ninth[5])))
    assert log == [*old[:8], new_ninth] and not damaged


def test_original_seeds_pass() -> None:
    for seed in (324, 1173, 1485, 1523):
        result, _ = run_seed(seed, RunOptions(), VSR)
        assert result.status == "ok", (seed, result.message)


# ---- found by the storage faults of issue 16 -------------------------------------------------
OLD_CLASSES = ("network", "crash", "storage", "clock")


def _write_log(disk: Disk, sim: Any, log: list[Entry]) -> None:
    parent = 0
    for entry in log:
        write_now(sim, disk, entry[0], encode_entry(entry, parent))
        parent = entry[5]


def _disk_with(log: list[Entry]) -> tuple[Any, Disk]:
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    _write_log(disk, sim, log)
    return sim, disk


def test_a_misdirected_write_makes_holes_not_a_short_log() -> None:
    """Seeds 103 and 192 (old classes): the write of op S landed on an earlier sector T and S kept
    nothing; a gap at S was taken for the end of the log, dropping acknowledged ops. The misplaced
    entry at T names S: both become holes (their checksums known from the entries after them)."""
    log = _log(10)
    _, disk = _disk_with(log)
    disk.overlay[4] = disk.sectors[8]  # op 8's data landed on sector 4
    disk.overlay[8] = UNWRITTEN  # and sector 8 kept nothing
    got, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "" and len(got) == 10
    assert [e[0] for e in got if e[4] is EVICTED] == [4, 8]
    assert got[3][5] == log[3][5] and got[7][5] == log[7][5]
    # When the misplaced write was the last one, nothing names it: the log is damaged.
    short = log[:8]
    _, disk = _disk_with(short)
    disk.overlay[4] = disk.sectors[8]
    disk.overlay[8] = UNWRITTEN
    got, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "op 8 lost" and len(got) == 3


def test_a_stale_sector_is_caught_by_the_head_and_view_in_the_superblock() -> None:
    """A lost write leaves an older entry that verifies and may chain: an install in view 2 put a
    new op 6 over an old one (head 6), then op 7 was appended in view 2."""
    old = _log(7, view=1, tag="old")
    new = old[:5]
    sixth = make_entry(6, 2, 9, 6, ("put", "k", "new6", None), new[-1][5])
    seventh = make_entry(7, 2, 9, 7, ("put", "k", "new7", None), sixth[5])
    new += [sixth, seventh]
    superblock = (2, 2, -1, (6, sixth[5]))
    sim, disk = _disk_with(old)
    disk.truncate(5)
    _write_log(disk, sim, new)
    assert read_log(disk, superblock) == (new, "")
    # Sector 6 lost its write: it holds old op 6, which chains to op 5. The head catches it.
    disk.overlay[6] = encode_entry(old[5], old[4][5])
    got, why = read_log(disk, superblock)
    assert why == "" and got[5] == hole(6, sixth[5])
    # Sector 7 (after the head, the last entry) holds old op 7 of view 1: the view catches it,
    # and nothing names the right op 7: the log is damaged, not silently older.
    del disk.overlay[6]
    disk.overlay[7] = encode_entry(old[6], old[5][5])
    got, why = read_log(disk, superblock)
    assert why == "op 7 lost" and got == new[:6]
    assert read_log(disk, (2, 1, -1, (0, 0)))[1] == ""  # without the anchor, old op 7 looks fine


def test_holes_are_repaired_backwards_then_rewritten_highest_first() -> None:
    """Seeds 127 and 209 (old classes), 990 and 2785: after a restart, a repaired sector holding a
    misdirected write's data was rewritten before the sector that write was meant for; a crash in
    between lost that evidence, and the next read-back took the gap for the end of the log. Holes
    are now fetched (a run of them backwards: each repaired entry names its parent), then rewritten
    one at a time from the highest op down."""
    io = FakeIO()
    replica = _replica(io)
    log = _log(8)
    damaged = list(log)
    damaged[6] = hole(7, log[6][5])  # known: op 8 names it
    damaged[5] = hole(6, UNKNOWN)  # below a hole: learned when op 7 is repaired
    damaged[2] = hole(3, log[2][5])
    replica.restart(damaged, 0, 0, False)
    assert replica.status == RECOVERING and replica.restart_repair
    asked = sorted(msg[2] for _, msg in io.sent if msg[0] == REPAIR_REQUEST)
    assert asked == [3, 3, 7, 7]  # both others, for each hole whose checksum is known
    replica.on_message((REPAIR_REPLY, 0, log[6], log[5][5]))
    assert (0, (REPAIR_REQUEST, 2, 6, log[5][5])) in io.sent  # op 6 is now known
    replica.on_message((REPAIR_REPLY, 1, log[2], log[1][5]))
    assert not io.writes and replica.status == RECOVERING  # nothing rewritten before all arrive
    replica.on_message((REPAIR_REPLY, 0, log[5], log[4][5]))
    assert replica.status == VIEW_CHANGE and replica.log == log
    assert [e[0] for e in io.writes] == [7]  # the highest first, one at a time
    replica.on_write_done(7, True)
    assert [e[0] for e in io.writes] == [7, 6]
    replica.on_write_done(6, True)
    replica.on_write_done(3, True)
    assert [e[0] for e in io.writes] == [7, 6, 3] and not replica.pending


def test_a_wrong_repair_reply_is_refused() -> None:
    io = FakeIO()
    replica = _replica(io)
    log = _log(4)
    replica.restart([*log[:2], hole(3, log[2][5]), log[3]], 0, 0, False)
    other = make_entry(3, 0, 9, 3, ("put", "k", "other", None), log[1][5])
    replica.on_message((REPAIR_REPLY, 0, other, log[1][5]))  # another entry
    replica.on_message((REPAIR_REPLY, 0, log[2], 12345))  # does not verify with that parent
    assert replica.repairing == {3: log[2][5]} and replica.status == RECOVERING


def test_two_failing_writes_of_one_slot_do_not_leave_it_pending() -> None:
    """Seed 33: a repair rewrote a slot while its failing write was being retried; one retry was
    scheduled for both, the slot stayed pending forever and the replica never voted again."""
    io = FakeIO()
    replica = _replica(io)
    replica.restart([], 0, 0, False)
    replica.on_message((START_VIEW, 1, 1, tuple(_log(3, view=0)), 0))
    entry = replica.log[2]
    replica._write(entry)  # a second write of op 3 in flight
    assert replica.pending[3] == 2
    replica.on_write_done(3, False)  # the other write covers it
    assert replica.pending[3] == 1 and not replica.retry_at
    replica.on_write_done(3, False)  # retried at once
    replica.on_write_done(3, False)  # then with a backoff
    assert replica.pending[3] == 1 and 3 in replica.retry_at
    for _ in range(WRITE_BACKOFF_TICKS_MAX):
        replica.on_tick()
    replica.on_write_done(3, True)
    replica.on_write_done(1, True)
    replica.on_write_done(2, True)
    assert not replica.pending and replica.durable_op() == 3


def test_a_recovering_replica_keeps_what_it_read_over_a_shorter_re_read() -> None:
    io = FakeIO()
    replica = _replica(io)
    log = _log(6)
    replica.restart(list(log[:4]), 0, 0, True)  # damaged: the recovery protocol
    assert replica.status == RECOVERING
    io.reloaded = (log[:3], (0, 0, -1, (0, 0)))
    assert not replica._reread()  # knows less than it read at the restart: keep recovering
    io.reloaded = (log, (0, 0, -1, (0, 0)))
    assert replica._reread() and replica.status == VIEW_CHANGE and replica.log == log


def test_storage_seeds_pass() -> None:
    """The seeds that found the bugs above (with the code of that time; the environment draws
    changed since, so the scenarios above are the real regression tests)."""
    for seed, faults in ((57, None), (107, None), (33, None), (990, None), (2785, None),
                         (103, OLD_CLASSES), (127, OLD_CLASSES), (192, None),
                         (209, OLD_CLASSES)):
        options = RunOptions() if faults is None else RunOptions(faults=faults)
        result, _ = run_seed(seed, options, VSR)
        assert result.status == "ok", (seed, result.message)
