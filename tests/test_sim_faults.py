"""Each fault class fires over a range of seeds; `--faults none` fires none; classes stay apart
(the `partition` class adds partitions of its own shapes: their events are the network's kinds)."""

from __future__ import annotations

from collections import Counter

import pytest

from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.faults import FAULT_KIND_CLASS
from voprd.sim.run import simulate
from voprd.systems.vsr import VSR

SEEDS = range(100, 130)


def _class_counts(faults: tuple[str, ...]) -> tuple[Counter[str], Counter[str]]:
    by_class: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for seed in SEEDS:
        outcome = simulate(seed, RunOptions(faults=faults), VSR)
        assert outcome.result.status == "ok", (seed, outcome.result.message)
        for kind, count in outcome.fault_counts.items():
            by_kind[kind] += count
            by_class[FAULT_KIND_CLASS[kind]] += count
    return by_class, by_kind


def test_all_faults_fire_every_class_and_kind() -> None:
    by_class, by_kind = _class_counts(FAULT_CLASSES)
    assert set(by_class) == set(FAULT_CLASSES) - {"partition"}, by_class
    for kind in ("drop_loss", "duplicate", "partition", "heal", "crash", "restart", "pause",
                 "disk_write_error", "disk_read_corrupt", "disk_torn", "clock_skew",
                 "drop_capacity", "delay_spike", "disk_misdirect", "clock_jump", "clock_drift",
                 "slow_disk", "slow_link", "slow_node", "slow_end", "replay", "corrupt",
                 "client_crash", "client_restart"):
        assert by_kind[kind] > 0, (kind, by_kind)
    # Every kind of the disk class, too (disk_stale needs a rewritten sector: tested on its own).
    for kind in ("disk_corrupt", "disk_latent_error", "disk_bad_sector", "disk_full",
                 "superblock_torn", "superblock_damage", "disk_join"):
        assert by_kind[kind] > 0, (kind, by_kind)


def test_no_faults_fire_none() -> None:
    by_class, _ = _class_counts(())
    assert sum(by_class.values()) == 0, by_class


@pytest.mark.parametrize("only", FAULT_CLASSES)
def test_one_class_fires_only_itself(only: str) -> None:
    by_class, _ = _class_counts((only,))
    fires_as = "network" if only == "partition" else only
    assert by_class[fires_as] > 0
    # A crash during a superblock write (a `disk` fault) is a crash and a restart too.
    caused = {"crash"} if only == "disk" else set()
    assert set(by_class) - caused == {fires_as}, by_class
