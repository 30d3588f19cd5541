"""The engine's disks (voprd/sim/storage.py): raw bytes, what each storage fault does to a read,
the sealed helpers, the superblock copies and their crash, the atlas, disk loss, late joins and
the liveness heal. Driven directly on a quiet simulation's disks (no event loop)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.sim_support import crash_and_recover, quiet_simulation, quiet_simulation_of, write_now
from voprd.options import RunOptions
from voprd.sim.engine import Simulation
from voprd.sim.run import simulate
from voprd.sim.storage import (
    SUPERBLOCK_COPIES,
    Disk,
    ServerCrashed,
    seal_sector,
    superblock_address,
    unseal_sector,
)
from voprd.sim.system import DAMAGED
from voprd.sim.trace import K
from voprd.systems.vsr import VSR


def _cluster_disk() -> tuple[Simulation, Disk]:
    """Server 0's disk of a quiet simulation, with the atlas of a 3-server cluster."""
    sim = quiet_simulation()
    sim.storage.f = 1
    return sim, sim.storage.disks[0]


def test_a_read_returns_the_bytes_unverified_and_sealed_reads_verify() -> None:
    sim, disk = _cluster_disk()
    write_now(sim, disk, 1, seal_sector(1, b"payload"))
    assert disk.read_sealed(1) == b"payload" and disk.read_sealed(2) is None
    # Silent corruption: a bit flipped at rest changes what a read returns, not what was written.
    raw = disk.read(1)
    assert isinstance(raw, bytes)
    disk.overlay[1] = raw[:-1] + bytes([raw[-1] ^ 1])
    assert disk.read(1) != raw and disk.written(1) == raw
    assert disk.read_sealed(1) is DAMAGED  # the seal's checksum catches it
    # Data written for another address does not unseal here (a misdirected write).
    assert unseal_sector(2, seal_sector(1, b"x")) is DAMAGED
    assert unseal_sector(1, seal_sector(1, b"x")) == b"x"
    assert unseal_sector(1, DAMAGED) is DAMAGED and unseal_sector(1, None) is None


def _fire(sim: Simulation, kind: str) -> int:
    """Inject one fault at rest of `kind` on the (only) server's disk; returns its slot."""
    code = K[kind]
    before = sim.fault_counts.get(kind, 0)
    for _ in range(100):
        sim.storage._at_rest(code)
        if sim.fault_counts.get(kind, 0) > before:
            return int(sim.records[-1][3])
    raise AssertionError(f"{kind} never fired")


def test_at_rest_faults_damage_a_written_sector_until_it_is_rewritten() -> None:
    sim, disk = _cluster_disk()
    for slot in (1, 2, 3):
        write_now(sim, disk, slot, bytes([slot]) * 8)
    slot = _fire(sim, "disk_corrupt")  # silent: other bytes, no error
    data = disk.read(slot)
    assert isinstance(data, bytes) and data != bytes([slot]) * 8
    assert disk.written(slot) == bytes([slot]) * 8
    write_now(sim, disk, slot, b"fresh")  # a rewrite clears it
    assert disk.read(slot) == b"fresh"
    slot = _fire(sim, "disk_latent_error")  # found on read: a read error
    assert disk.read(slot) is DAMAGED
    write_now(sim, disk, slot, b"again")
    assert disk.read(slot) == b"again"
    slot = _fire(sim, "disk_bad_sector")
    assert disk.bad == {slot} and disk.read(slot) is DAMAGED
    disk.write(slot, b"no")  # a bad sector fails every write, and stays unreadable
    assert disk.pending[disk.next_write_id - 1][3] is False
    disk.truncate(0)
    assert disk.read(slot) is DAMAGED


def test_a_lost_write_leaves_the_previous_version_for_reads() -> None:
    sim, disk = _cluster_disk()
    sim.plan.stale_ppm = 1_000_000
    write_now(sim, disk, 1, seal_sector(1, b"old"))  # nothing before it: never lost
    assert disk.read_sealed(1) == b"old" and "disk_stale" not in sim.fault_counts
    write_now(sim, disk, 1, seal_sector(1, b"new"))
    assert sim.fault_counts["disk_stale"] == 1
    assert disk.read_sealed(1) == b"old"  # stale, and it still verifies: only the system knows
    assert unseal_sector(1, disk.written(1)) == b"new"
    # Truncated data is a previous version too.
    write_now(sim, disk, 2, b"two")
    disk.truncate(1)
    sim.plan.stale_ppm = 0
    write_now(sim, disk, 2, b"TWO")
    assert disk.read(2) == b"TWO" and disk.previous[2] == b"two"


def test_a_full_disk_fails_writes_for_a_while() -> None:
    sim, disk = _cluster_disk()
    disk.full_until_us = sim.now + 1_000
    disk.write(1, b"x")
    assert disk.pending[disk.next_write_id - 1][3] is False
    sim.now += 2_000
    disk.write(1, b"x")
    assert disk.pending[disk.next_write_id - 1][3] is True


def test_a_crash_during_a_superblock_copy_write_tears_that_copy_only() -> None:
    sim, disk = _cluster_disk()
    for copy in range(SUPERBLOCK_COPIES):
        disk.write_superblock(b"old", copy)
    sim.plan.disk = True
    sim.plan.superblock_crash_ppm = 1_000_000
    sim.nodes[0] = object()  # a live server
    with pytest.raises(ServerCrashed) as crashed:
        disk.write_superblock(b"new", 1)
    assert crashed.value.node == 0
    assert isinstance(crashed.value, BaseException) and not isinstance(crashed.value, Exception)
    assert disk.read_superblock(1) in (DAMAGED, b"old")
    assert [disk.read_superblock(c) for c in (0, 2, 3)] == [b"old"] * 3
    with pytest.raises(ValueError, match="outside"):
        disk.write_superblock(b"x", SUPERBLOCK_COPIES)
    assert superblock_address(0) == -1 and superblock_address(3) == -4


def test_an_atomic_update_is_switched_in_by_the_next_superblock_copy() -> None:
    sim, disk = _cluster_disk()
    write_now(sim, disk, 1, b"old")
    disk.begin_atomic()
    write_now(sim, disk, 1, b"new")
    disk.end_atomic()
    sim.plan.disk = True
    sim.plan.superblock_crash_ppm = 1_000_000  # the switch never lands
    sim.nodes[0] = object()
    with pytest.raises(ServerCrashed):
        disk.write_superblock(b"sb", 0)
    crash_and_recover(sim, disk)
    assert disk.read(1) == b"old"


def test_the_atlas_allows_at_most_f_damaged_copies_per_sector() -> None:
    sim = quiet_simulation_of(3)  # f = 1
    assert sim.storage.f == 1
    storage = sim.storage
    a, b, c = storage.disks
    for disk in (a, b, c):
        write_now(sim, disk, 1, b"x")
        write_now(sim, disk, 2, b"y")
    assert storage.may_damage(0, 1)
    a.overlay[1] = DAMAGED
    assert not storage.may_damage(0, 1)  # no second fault on a damaged sector
    assert not storage.may_damage(1, 1) and not storage.may_damage(2, 1)
    assert storage.may_damage(1, 2)  # another sector: spread per sector, not per server
    write_now(sim, a, 1, b"x")  # rewritten: repaired
    assert storage.may_damage(1, 1)
    # A lost disk counts as damaged wherever it held data, until rewritten.
    c.wipe()
    assert not storage.may_damage(0, 2) and c.read(1) is None and c.read_superblock() is None
    write_now(sim, c, 2, b"y")
    assert storage.may_damage(0, 2)


def test_a_restart_draws_read_damage_on_the_sectors_it_reverts_to() -> None:
    # Seed 102992: a misdirected write left op 64's data on sector 3; an install then rewrote
    # sector 3 in an atomic update that a crash cut short. The restart drew its read damage on
    # the discarded update (sector 3 looked clean) and then reverted: sector 3 was damaged again
    # and the evidence of op 64 was gone (the log silently ended at op 63).
    sim, disk = _cluster_disk()
    for slot in (1, 2, 3):
        write_now(sim, disk, slot, b"x%d" % slot)
    disk.overlay[3] = b"evidence"  # a misdirected write's data
    disk.begin_atomic()
    write_now(sim, disk, 3, b"new")  # the update rewrites it: clean until reverted
    sim.plan.read_corrupt_ppm = 1_000_000  # every sector the atlas allows reads back damaged
    sim.storage.before_restart(0)
    assert disk.read(3) == b"evidence"  # damaged already: not damaged again
    assert disk.read(1) is DAMAGED and disk.read(2) is DAMAGED


def test_the_atlas_counts_the_sectors_an_unfinished_update_would_revert_to() -> None:
    sim = quiet_simulation_of(3)  # f = 1
    storage = sim.storage
    a, b, _ = storage.disks
    for disk in storage.disks:
        write_now(sim, disk, 1, b"x")
    a.overlay[1] = DAMAGED
    a.begin_atomic()
    write_now(sim, a, 1, b"y")  # clean now, damaged again if a restart reverts the update
    assert not storage.may_damage(1, 1) and not storage.may_damage(0, 1)
    storage.before_restart(0)  # reverted: the one damaged copy is a's
    assert a.read(1) is DAMAGED and b.read(1) == b"x"


def test_one_server_is_never_damaged() -> None:
    sim = quiet_simulation_of(1)
    assert not sim.storage.may_damage(0, 1)


def test_the_liveness_heal_lifts_damage_on_the_core() -> None:
    sim, disk = _cluster_disk()
    write_now(sim, disk, 1, b"one")
    disk.overlay[1] = DAMAGED
    disk.bad.add(1)
    disk.full_until_us = 10**9
    disk.superblock_overlay[0] = DAMAGED
    sim.storage.heal((0,))
    assert disk.read(1) == b"one" and not disk.bad and disk.full_until_us == 0
    assert disk.read_superblock(0) == disk.written_superblock(0) is not None


def test_every_disk_fault_kind_fires_and_the_runs_pass() -> None:
    """Over 40 seeds with all faults: each kind of the disk class happens (disk_stale needs a
    rewritten sector, disk_lost a crash outside the core with the atlas allowing it), and every
    run passes."""
    kinds: Counter[str] = Counter()
    for seed in range(40):
        outcome = simulate(seed, RunOptions(), VSR)
        assert outcome.result.status == "ok", (seed, outcome.result.message)
        kinds.update(outcome.fault_counts)
    for kind in ("disk_corrupt", "disk_latent_error", "disk_bad_sector", "disk_full",
                 "disk_stale", "superblock_torn", "superblock_damage", "disk_join",
                 "disk_lost"):
        assert kinds[kind] > 0, (kind, kinds)


def test_a_late_join_starts_absent_and_joins_from_an_empty_disk() -> None:
    seed = next(s for s in range(200)
                if Simulation(s, RunOptions(), VSR).plan.join_replica >= 0)
    sim = Simulation(seed, RunOptions(), VSR, record_trace=True)
    joiner = sim.plan.join_replica
    assert joiner not in sim.plan.core and sim.nodes[joiner] is None
    assert sim.storage.disks[joiner].read_superblock() is None  # never formatted
    sim.run()
    trace = sim.trace()
    assert trace is not None
    joined = [e for e in trace if e.kind == "disk_join"]
    restarted = [e for e in trace if e.kind == "restart" and e.node == f"r{joiner}"]
    assert joined and restarted and "empty disk" in restarted[0].detail
