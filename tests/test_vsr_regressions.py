"""Regression tests for VSR bugs the simulator found (unit-level scenario + the original seed)."""

from __future__ import annotations

from typing import Any

from tests.sim_support import crash_and_recover, quiet_simulation, write_now
from voprd.options import RunOptions
from voprd.sim.prng import Rng
from voprd.sim.run import run_seed
from voprd.sim.system import Damaged
from voprd.systems.vsr import VSR
from voprd.systems.vsr.messages import (
    COMMIT,
    ENTRIES,
    GET_ENTRIES,
    PREPARE_OK,
    START_VIEW,
    Entry,
    Message,
    encode_entry,
    make_entry,
)
from voprd.systems.vsr.replica import NORMAL, VIEW_CHANGE, Head, Replica
from voprd.systems.vsr.system import SUPERBLOCK_FORMATTED, load_log


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

    def reload(self, replica: int) -> None:
        return None

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
