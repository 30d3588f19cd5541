"""Regression tests for VSR bugs the simulator found (unit-level scenario + the original seed)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim_support import crash_and_recover, quiet_simulation, write_now
from voprd.options import RunOptions
from voprd.sim.prng import Rng
from voprd.sim.run import run_seed
from voprd.sim.system import Violation
from voprd.systems.vsr import VSR, VsrSystem
from voprd.systems.vsr.messages import (
    COMMIT,
    ENTRIES,
    GET_ENTRIES,
    PREPARE,
    PREPARE_OK,
    START_VIEW,
    Entry,
    Message,
    encode_entry,
    entry_valid,
    make_entry,
)
from voprd.systems.vsr.replica import NORMAL, REPAIR_BACKOFF_TICKS_MAX, VIEW_CHANGE, Replica
from voprd.systems.vsr.system import VsrCluster, load_log


class FakeIO:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []
        self.writes: list[Entry] = []
        self.superblock: tuple[int, int, int] = (0, 0, -1)
        self.truncated: list[int] = []
        self.paths: list[str] = []

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

    def cover(self, path: str) -> None:
        self.paths.append(path)

    def entry_chains(self, entry: Entry, parent: int) -> bool:
        return entry_valid(entry, parent)

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
    for entry in old:
        write_now(sim, disk, entry[0], encode_entry(entry))
    disk.begin_atomic()
    disk.truncate(8)
    new_ninth = make_entry(9, 2, 9, 9, ("put", "k", "new", None), old[7][5])
    write_now(sim, disk, 9, encode_entry(new_ninth))
    disk.write(10, encode_entry(new_ninth))  # still in flight at the crash
    crash_and_recover(sim, disk)
    log, damaged = load_log(disk)
    assert log == old and not damaged  # the previous log, whole
    disk.begin_atomic()
    disk.truncate(8)
    write_now(sim, disk, 9, encode_entry(new_ninth))
    disk.end_atomic()
    crash_and_recover(sim, disk)
    log, damaged = load_log(disk)
    assert log == [*old[:8], new_ninth] and not damaged


def test_original_seeds_pass() -> None:
    for seed in (324, 1173, 1485, 1523):
        result, _ = run_seed(seed, RunOptions(), VSR)
        assert result.status == "ok", (seed, result.message)


def test_a_primary_of_an_older_view_need_not_hold_ops_acknowledged_later() -> None:
    """Found with freezing pauses (seed 4 when pauses first froze): a paused replica resumed and
    handled DoViewChanges for view 24 held during the pause, while view 25 had already committed
    op 170; it became primary of view 24 without op 170. That view can commit nothing (its other
    members are in view 25), so the harness's durability check now asks a new primary only for
    the ops acknowledged in earlier views (a primary replies in the view it commits in)."""
    sim = quiet_simulation()
    cluster = sim.cluster
    assert isinstance(cluster, VsrCluster)
    log = _log(2)
    cluster.committed = [entry[5] for entry in log]
    cluster.state_hashes = [0, 0]
    cluster.acked = {2: log[1][5]}
    replica = cluster._replica(0)
    replica.view, replica.log, replica.commit = 24, log[:1], 0
    cluster.commit_views = {1: 20, 2: 25}
    cluster.on_log_installed(0, True)  # a dead view-24 primary without op 2: fine
    cluster.commit_views = {1: 20, 2: 23}
    with pytest.raises(Violation, match="lacks acknowledged op 2"):
        cluster.on_log_installed(0, True)


def test_a_backup_that_hears_nothing_times_out() -> None:
    """Found by `voprd selftest` (seed 749, a liveness failure with no bug on): an edit put the
    backups' view-change timeout under a planted bug's branch, so backups of a crashed primary
    never started a view change."""
    io = FakeIO()
    replica = _replica(io, rid=2)
    assert replica.status == NORMAL and not replica.is_primary()
    for _ in range(replica.timeout_ticks + 1):
        replica.on_tick()
    assert replica.status == VIEW_CHANGE and replica.view == 1


# ---- hash-chain checks and the bounded repair loop (issue 16) ---------------------------------


def _backup_in_view(io: FakeIO, log: list[Entry], commit: int, view: int = 1) -> Replica:
    """A durable backup (r2) in normal status in `view`, holding `log`, committed to `commit`."""
    replica = _replica(io)
    replica.restart(list(log), view - 1, view - 1, False)  # a view change for `view`
    replica.on_message((START_VIEW, 1, view, tuple(log), commit))
    _complete_writes(replica, io)
    assert replica.status == NORMAL and replica.view == view and replica.commit == commit
    io.sent.clear()
    return replica


def _fork(log: list[Entry], at: int, count: int, tag: str) -> list[Entry]:
    """`log[:at]` followed by `count` entries of another history."""
    forked = list(log[:at])
    parent = forked[-1][5] if forked else 0
    for op in range(at + 1, at + count + 1):
        entry = make_entry(op, 1, 9, 100 + op, ("put", "k", f"{tag}{op}", None), parent)
        forked.append(entry)
        parent = entry[5]
    return forked


def test_a_prepare_that_does_not_chain_is_divergence_repaired_from_the_commit_number() -> None:
    """A backup whose uncommitted suffix is not the primary's finds out at the first Prepare
    that does not chain to it, stops voting and takes the primary's log after its commit number
    (it would otherwise acknowledge op 7 by number and commit op 5 and 6 of another history)."""
    io = FakeIO()
    mine = _log(6)
    replica = _backup_in_view(io, mine, commit=4)
    primary_log = _fork(mine, 4, 3, "p")  # ops 5..7 of the primary differ from ours
    replica.on_message((PREPARE, 1, 1, primary_log[6], 4))
    assert replica.log == mine  # the entry is not appended
    assert io.paths[-2:] == ["chain_mismatch", "state_transfer"]
    assert io.sent == [(1, (GET_ENTRIES, 2, 1, 4))]  # from the commit number
    replica.on_message((COMMIT, 1, 1, 6, 7))
    assert replica.commit == 4 and PREPARE_OK not in io.kinds()  # neither commits nor votes
    replica.on_message((ENTRIES, 1, 1, tuple(primary_log[4:]), 6, 7))
    assert replica.log == primary_log and replica.transfer is None
    assert PREPARE_OK not in io.kinds()  # not before the new entries are durable
    _complete_writes(replica, io)
    assert (1, (PREPARE_OK, 2, 1, 7)) in io.sent
    replica.on_message((COMMIT, 1, 1, 6, 7))
    assert replica.commit == 6


def test_repaired_entries_that_do_not_chain_start_a_transfer() -> None:
    io = FakeIO()
    mine = _log(5)
    replica = _backup_in_view(io, mine, commit=3)
    replica.on_message((COMMIT, 1, 1, 3, 8))  # behind: asks for entries after 5
    assert (1, (GET_ENTRIES, 2, 1, 5)) in io.sent
    primary_log = _fork(mine, 4, 4, "p")
    replica.on_message((ENTRIES, 1, 1, tuple(primary_log[5:]), 3, 8))
    assert replica.log == mine and replica.transfer == []
    assert "chain_mismatch" in io.paths
    assert io.sent[-1] == (1, (GET_ENTRIES, 2, 1, 3))


def test_a_transfer_that_does_not_chain_to_the_committed_prefix_is_never_installed() -> None:
    io = FakeIO()
    mine = _log(5)
    replica = _backup_in_view(io, mine, commit=5)
    replica.on_message((COMMIT, 1, 4, 5, 7))  # view 4 exists: state transfer from op 5
    assert replica.transfer == [] and io.sent[-1] == (1, (GET_ENTRIES, 2, 4, 5))
    other = _fork(mine, 4, 3, "x")  # its op 5 differs from our committed op 5
    replica.on_message((ENTRIES, 1, 4, tuple(other[5:]), 5, 7))
    assert replica.log == mine and replica.transfer == [] and "transfer_mismatch" in io.paths


def test_a_start_view_whose_log_does_not_chain_is_ignored() -> None:
    io = FakeIO()
    replica = _backup_in_view(io, _log(4), commit=2)
    broken = [*_log(4), *_fork(_log(4), 4, 2, "b")[4:]]
    broken[4] = make_entry(5, 1, 9, 5, ("put", "k", "z", None), 12345)  # a wrong parent
    replica.on_message((START_VIEW, 1, 4, tuple(broken), 2))
    assert replica.view == 1 and replica.log == _log(4) and "log_rejected" in io.paths


def test_repair_requests_back_off_while_replies_bring_nothing() -> None:
    """Nothing bounded the repair ping-pong: a backup asked again on every Commit showing it
    behind (and at once after every reply). Now a request that follows no progress waits
    1, 2, 4, ... up to REPAIR_BACKOFF_TICKS_MAX ticks; a reply that helps resets it."""
    io = FakeIO()
    mine = _log(3)
    replica = _backup_in_view(io, mine, commit=3)
    for _ in range(400):  # the primary's heartbeat every tick, its replies all lost
        replica.on_tick()
        replica.on_message((COMMIT, 1, 1, 3, 10))
    requests = [msg for _, msg in io.sent if msg[0] == GET_ENTRIES]
    assert 400 // REPAIR_BACKOFF_TICKS_MAX <= len(requests) <= 400 // REPAIR_BACKOFF_TICKS_MAX + 8
    assert "repair_backoff" in io.paths
    io.sent.clear()
    more = _fork(mine, 3, 7, "m")
    replica.on_message((ENTRIES, 1, 1, tuple(more[3:6]), 3, 10))  # progress: asks on at once
    assert [msg for _, msg in io.sent if msg[0] == GET_ENTRIES] == [(GET_ENTRIES, 2, 1, 6)]
    replica.on_message((ENTRIES, 1, 1, tuple(more[6:]), 3, 10))
    assert replica.log == more


def test_divergence_is_caught_where_it_starts_in_a_run() -> None:
    """A backup whose op 7 silently differs from the primary's: its own chain check repairs it at
    op 8; without the check, the log_chain invariant catches it there (not later, at commit)."""

    class Divergent(Replica):
        def _append(self, entry: Entry) -> None:
            if self.rid == 1 and entry[0] == 7:
                parent = self.log[-1][5] if self.log else 0
                entry = make_entry(7, entry[1], entry[2], entry[3], ("put", "evil", "x", None),
                                   parent)
            super()._append(entry)

    class DivergentUnchecked(Divergent):
        def _chains(self, entry: Entry, parent: int) -> bool:
            return True

    seed = 4  # three replicas, no faults
    options = RunOptions(faults=())
    repaired, _ = run_seed(seed, options, VsrSystem(Divergent))
    assert repaired.status == "ok", repaired.message
    assert repaired.coverage.get("chain_mismatch", 0) >= 1
    caught, _ = run_seed(seed, options, VsrSystem(DivergentUnchecked))
    assert (caught.status, caught.invariant) == ("failed", "log_chain"), caught.message
    assert "r1 wrote op 8" in (caught.message or "")
