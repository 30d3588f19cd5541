"""Regression tests for VSR bugs the simulator found (unit-level scenario + the original seed)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.sim_support import crash_and_recover, quiet_simulation, write_now
from voprd.options import RunOptions
from voprd.sim.prng import Rng
from voprd.sim.run import run_seed
from voprd.sim.storage import (
    SUPERBLOCK_COPIES,
    UNWRITTEN,
    Disk,
    ServerCrashed,
    Storage,
    seal_sector,
    superblock_address,
)
from voprd.sim.system import DAMAGED, Damaged, Violation
from voprd.systems.vsr import VSR, VsrSystem
from voprd.systems.vsr.messages import (
    BODY_EVICTED,
    COMMIT,
    ENTRIES,
    GET_ENTRIES,
    PREPARE,
    PREPARE_OK,
    REPAIR_REPLY,
    REPAIR_REQUEST,
    START_VIEW,
    Entry,
    Message,
    encode_entry,
    entry_valid,
    make_entry,
)
from voprd.systems.vsr.replica import (
    HOLE_REPAIR_TICKS_MAX,
    NORMAL,
    RECOVERING,
    REPAIR_BACKOFF_TICKS_MAX,
    REREAD_TICKS,
    UNKNOWN,
    VIEW_CHANGE,
    WRITE_BACKOFF_TICKS_MAX,
    Head,
    Replica,
)
from voprd.systems.vsr.system import (
    SUPERBLOCK_FORMATTED,
    VsrCluster,
    hole,
    load_log,
    read_log,
    read_superblock,
    write_superblock,
)


class FakeIO:
    """The replica's IO without an engine: a dict for a disk, a list for the network."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []
        self.writes: list[Entry] = []
        self.superblock: tuple[int, int, int] = (0, 0, -1)
        self.head: Head = (0, 0)
        self.truncated: list[int] = []
        self.paths: list[str] = []
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

    def cover(self, path: str) -> None:
        self.paths.append(path)

    def on_recovered(self, replica: int) -> None:
        pass

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
    assert [e[0] for e in got if e[4] is BODY_EVICTED] == [4, 8]
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


def test_an_install_that_cancels_the_rewrite_in_flight_starts_the_next() -> None:
    """Seed 103203: a replica restarted with holes, repaired them and was rewriting them (highest
    first, one at a time, each started by the completion of the one before) when it installed a
    view's log that differed above the lower holes. The install's truncate cancelled the rewrite
    in flight, so the next one never started: the lower holes stayed pending, the replica never
    voted again, and as primary of a 2-of-3 core it could commit nothing. The install now starts
    the next rewrite itself."""
    io = FakeIO()
    replica = _replica(io)
    log = _log(8)
    damaged = list(log)
    damaged[6] = hole(7, log[6][5])
    damaged[2] = hole(3, log[2][5])
    replica.restart(damaged, 0, 0, False)
    replica.on_message((REPAIR_REPLY, 0, log[6], log[5][5]))
    replica.on_message((REPAIR_REPLY, 0, log[2], log[1][5]))
    assert replica.status == VIEW_CHANGE and replica.view == 1
    assert [e[0] for e in io.writes] == [7]  # op 7 in flight, op 3 waits for it
    new_log = _fork(log, 4, 4, "new")  # view 1's log keeps ops 1-4: the truncate cancels op 7
    replica.on_message((START_VIEW, 1, 1, tuple(new_log), 0))
    assert replica.status == NORMAL and io.truncated[-1] == 4
    assert [e[0] for e in io.writes] == [7, 3, 5, 6, 7, 8]  # the rewrite of op 3 is started
    for op in (3, 5, 6, 7, 8):
        replica.on_write_done(op, True)
    assert not replica.pending and replica.durable_op() == 8
    assert (1, (PREPARE_OK, 2, 1, 8)) in io.sent


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


def test_a_re_read_corrects_a_stale_sector_below_a_hole() -> None:
    """Seed 100859 (liveness): a restart read back a stale sector (op 5, of an older view) below
    a hole (op 6): it verified on its own and named a stale parent (hole op 4). Nobody could
    supply the holes, so the replica fell back to the recovery protocol; with the other replicas
    recovering or in a view change that was stuck, and once the liveness phase healed its disk,
    every re-read was refused as knowing less, because it differed from the stale op 5. Only
    what the chain pins (the head down to the highest hole below it) must now match."""
    io = FakeIO()
    replica = _replica(io)
    old = _log(8)
    log = _fork(old, 2, 6, "new")  # view 1's log: ops 3-8 replaced view 0's
    head: Head = (8, log[7][5])
    damaged = list(log)
    damaged[5] = hole(6, log[5][5])  # named by op 7
    damaged[4] = old[4]  # stale: a lost write left view 0's op 5, which verifies on its own
    damaged[3] = hole(4, old[3][5])  # named by the stale op 5
    replica.restart(damaged, 1, 1, False, head)
    assert replica.restart_repair
    for _ in range(HOLE_REPAIR_TICKS_MAX):
        replica.on_tick()
    assert replica.status == RECOVERING and not replica.restart_repair  # nobody had them
    io.reloaded = (log, (1, 1, -1, head))  # the healed disk reads back view 1's log
    while replica.ticks % REREAD_TICKS:
        replica.on_tick()
    assert replica.status == VIEW_CHANGE and replica.log == log
    # What the chain pins still counts: a re-read with another op 6 (the hole) is refused.
    replica = _replica(io)
    replica.restart(damaged, 1, 1, False, head)
    replica._start_recovery()
    io.reloaded = (_fork(log, 5, 3, "other"), (1, 1, -1, head))
    assert not replica._reread() and replica.status == RECOVERING


def test_a_re_read_ends_at_a_torn_sector_once_it_reads_back_never_written() -> None:
    """Seed 309542 (liveness): a crash tore op 15's first write while op 16's had completed. The
    restart read a hole at 15 (named by op 16); nobody held it, so the replica fell back to the
    recovery protocol, which could not finish (the third replica was recovering, the second in
    a view change). The liveness heal showed sector 15 as it is, never written, so every re-read
    ended at op 14 and was refused as knowing less: the core never converged. A sector that read
    back something that failed and now reads back nothing never completed a write, so nothing
    from it up was voted: the re-read is taken. A gap a misplaced entry named is still refused
    (its write completed; the evidence may have been rewritten since)."""
    log = _log(6)
    sim, disk = _disk_with(log[:4])
    write_now(sim, disk, 6, encode_entry(log[5], log[4][5]))
    disk.overlay[5] = DAMAGED  # op 5's first write torn at the crash
    damaged, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "" and damaged[4] == hole(5, log[4][5]) and damaged[5] == log[5]
    io = FakeIO()
    replica = _replica(io)
    replica.restart(damaged, 0, 0, False)
    assert replica.restart_repair
    for _ in range(HOLE_REPAIR_TICKS_MAX):
        replica.on_tick()
    assert replica.status == RECOVERING and not replica.restart_repair  # nobody had op 5
    disk.heal()  # the liveness heal: sector 5 reads back its last good write, none
    healed, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "" and healed == log[:4]
    io.reloaded = (healed, SUPERBLOCK_FORMATTED)
    while replica.ticks % REREAD_TICKS:
        replica.on_tick()
    assert replica.status == VIEW_CHANGE and replica.log == log[:4]
    # A gap that a misplaced entry named (op 5's write landed on sector 2, sector 5 kept
    # nothing): once that evidence is rewritten, the re-read ending at op 4 is still refused.
    sim, disk = _disk_with(log)
    disk.overlay[2] = disk.sectors[5]
    disk.overlay[5] = UNWRITTEN
    damaged, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "" and [e[0] for e in damaged if e[4] is BODY_EVICTED] == [2, 5]
    replica = _replica(io)
    replica.restart(damaged, 0, 0, False)
    replica._start_recovery()
    del disk.overlay[2]  # sector 2 rewritten: no entry names the gap at 5 any more
    short, why = read_log(disk, SUPERBLOCK_FORMATTED)
    assert why == "" and short == log[:4]
    io.reloaded = (short, SUPERBLOCK_FORMATTED)
    assert not replica._reread() and replica.status == RECOVERING


def test_a_superblock_write_overwrites_the_newest_copy_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 100355: a crash cut a superblock write short after copy 0 (copy 1 torn), so the
    newest superblock (the one that switched a StartView install in) was on copy 0 only. The
    restart's superblock write began with copy 0 and a second crash tore it: the replica read
    back the superblock of the unfinished install (last normal view 0) over the new view's
    log, without the op it had voted for in view 0. The copies that do not hold the newest
    version are written first, so one that does survives a crash during the write."""
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    old: tuple[int, int, int, Head] = (2, 0, 2, (0, 0))  # the install begun (view 2, lnv 0)
    new: tuple[int, int, int, Head] = (2, 2, -1, (2, 7))  # the install switched in (lnv 2)
    write_superblock(disk, old, 5, SUPERBLOCK_COPIES)
    # Seq 6's write reached copy 0, then a crash tore copy 1.
    disk.write_superblock(seal_sector(superblock_address(0), msgspec.msgpack.encode((6, *new))))
    disk.superblock_overlay[1] = DAMAGED
    assert read_superblock(disk, SUPERBLOCK_COPIES) == (new, 6, False)
    order: list[int] = []
    sim.plan.disk = True
    sim.plan.superblock_crash_ppm = 1_000_000  # the restart's write crashes on its first copy
    sim.nodes[0] = object()  # type: ignore[call-overload]
    write_copy = Storage.write_superblock

    def record(storage: Storage, disk: Disk, copy: int, data: bytes) -> None:
        order.append(copy)
        write_copy(storage, disk, copy, data)

    monkeypatch.setattr(Storage, "write_superblock", record)
    with pytest.raises(ServerCrashed):
        write_superblock(disk, new, 7, SUPERBLOCK_COPIES)
    assert order == [1]  # the torn copy first, the only copy of seq 6 last
    assert read_superblock(disk, SUPERBLOCK_COPIES)[0] == new


def test_storage_seeds_pass() -> None:
    """The seeds that found the bugs above (with the code of that time; the environment draws
    changed since, so the scenarios above are the real regression tests)."""
    for seed, faults in ((57, None), (107, None), (33, None), (990, None), (2785, None),
                         (103, OLD_CLASSES), (127, OLD_CLASSES), (192, None),
                         (209, OLD_CLASSES), (103203, None), (100355, None),
                         (102992, None), (100859, None),
                         (309542, None)):
        options = RunOptions() if faults is None else RunOptions(faults=faults)
        result, _ = run_seed(seed, options, VSR)
        assert result.status == "ok", (seed, result.message)


def test_a_refused_re_read_leaves_the_disk_as_it_was() -> None:
    """A recovering replica's re-read (`VsrCluster.reload`) may be refused; it must not cut the
    disk at the log's end as a restart's read-back does, or a refused re-read would destroy the
    sectors past that end (evidence of what the replica wrote). A taken re-read is cut by the
    replica itself, like a restart."""
    log = _log(6)
    sim, disk = _disk_with(log)
    del disk.sectors[5]  # a gap: the log reads back as ops 1..4, sector 6 lies past its end
    cluster = sim.cluster
    assert isinstance(cluster, VsrCluster)
    reloaded = cluster.reload(0)
    assert reloaded is not None and len(reloaded[0]) == 4
    assert disk.read(6) is not None  # still there
    got, why = read_log(disk, SUPERBLOCK_FORMATTED)  # a restart's read-back
    assert why == "" and len(got) == 4 and disk.read(6) is None
