"""Regression tests for VSR bugs the simulator found (unit-level scenario + the original seed)."""

from __future__ import annotations

from typing import Any

from voprd.options import RunOptions
from voprd.sim.prng import Rng
from voprd.sim.run import run_seed
from voprd.vsr.messages import (
    COMMIT,
    ENTRIES,
    GET_ENTRIES,
    PREPARE_OK,
    START_VIEW,
    Entry,
    Message,
    make_entry,
)
from voprd.vsr.replica import NORMAL, VIEW_CHANGE, Replica


class FakeIO:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []
        self.writes: list[Entry] = []
        self.superblock: tuple[int, int, int] = (0, 0, -1)
        self.truncated: list[int] = []

    def send(self, src: int, dst: int, msg: Message) -> None:
        self.sent.append((dst, msg))

    def disk_write(self, replica: int, entry: Entry, commit: int) -> None:
        self.writes.append(entry)

    def disk_truncate(self, replica: int, op_count: int) -> None:
        self.truncated.append(op_count)

    def persist(self, replica: int, view: int, last_normal_view: int, lnv_base: int) -> None:
        self.superblock = (view, last_normal_view, lnv_base)

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


def test_state_transfer_does_not_claim_the_new_view_until_caught_up() -> None:
    """Seed 324 (first soak): a backup that learned of view 1 from a Commit truncated its log to
    its commit number and claimed last_normal_view=1, so the next view change preferred its
    shorter log over one holding a committed op."""
    io = FakeIO()
    replica = _replica(io)
    replica.restart(_log(10), 0, 0, -1, False)  # now in view change for view 1
    _complete_writes(replica, io)
    replica.commit = 9
    assert replica.status == VIEW_CHANGE and replica.view == 1
    io.sent.clear()
    replica.on_message((COMMIT, 1, 1, 9, 10))  # view 1 exists; we missed its StartView
    assert replica.status == NORMAL and len(replica.log) == 9
    assert replica.last_normal_view == 0 and io.superblock == (1, 0, 9)
    assert PREPARE_OK not in io.kinds() and GET_ENTRIES in io.kinds()
    io.sent.clear()
    replica.on_message((ENTRIES, 1, 1, (_log(10)[9],), 9, 10))
    assert replica.last_normal_view == 1 and len(replica.log) == 10
    assert io.superblock == (1, 0, 9)  # not durable yet: the superblock still says view 0
    assert PREPARE_OK not in io.kinds()
    _complete_writes(replica, io)
    assert io.superblock == (1, 1, -1)
    assert PREPARE_OK in io.kinds()


def test_superblock_view_follows_a_durable_log_and_restart_cuts_an_unfinished_install() -> None:
    """Seed 1523 (second soak): a replica installed a StartView log, persisted last normal view 2
    at once, crashed before the new entries were durable and restarted claiming a view-2 log
    that lacked a committed op."""
    io = FakeIO()
    replica = _replica(io, rid=1)  # a backup in view 2
    old = _log(10, view=0, tag="old")
    replica.restart(list(old), 1, 0, -1, False)
    _complete_writes(replica, io)
    new = old[:8]
    parent = new[-1][5]
    for op in (9, 10, 11):
        entry = make_entry(op, 2, 9, op, ("put", "k", f"new{op}", None), parent)
        new.append(entry)
        parent = entry[5]
    replica.on_message((START_VIEW, 2, 2, tuple(new), 8))
    assert replica.view == 2 and replica.last_normal_view == 2
    assert io.superblock == (2, 0, 8) and 8 in io.truncated
    assert PREPARE_OK not in io.kinds()
    # Crash now: the durable log is the old one cut at 8 plus whatever new entries landed.
    durable = old[:8] + new[8:9]
    view, lnv, base = io.superblock
    io2 = FakeIO()
    restarted = _replica(io2, rid=1)
    restarted.restart(list(durable), view, lnv, base, False)
    assert len(restarted.log) == 8 and restarted.last_normal_view == 0
    assert io2.truncated[0] == 8
    # Without a crash, the install completes once durable.
    _complete_writes(replica, io)
    assert io.superblock == (2, 2, -1)
    assert PREPARE_OK in io.kinds()


def test_original_seeds_pass() -> None:
    for seed in (324, 1523):
        result, _ = run_seed(seed, RunOptions())
        assert result.status == "ok", (seed, result.message)
