"""Helpers that drive the engine's simulated disks directly (tests/test_sim_storage.py, the VSR
regression tests): a real `Simulation` of the VSR with no faults, its server 0's disk, and writes
completed at once instead of through the event loop."""

from __future__ import annotations

from voprd.options import RunOptions
from voprd.sim.engine import Simulation
from voprd.sim.storage import Disk
from voprd.systems.vsr import VSR


def quiet_simulation(seed: int = 0) -> Simulation:
    return Simulation(seed, RunOptions(faults=()), VSR)


def quiet_simulation_of(replicas: int) -> Simulation:
    """A quiet simulation of the first seed that draws `replicas` servers."""
    for seed in range(1000):
        sim = quiet_simulation(seed)
        if sim.n == replicas:
            return sim
    raise AssertionError(f"no seed below 1000 draws {replicas} servers")


def write_now(sim: Simulation, disk: Disk, slot: int, data: bytes, settled: int = 0) -> int:
    """Submit a write and complete it at once; returns its write id."""
    disk.write(slot, data, settled)
    write_id = disk.next_write_id - 1
    sim.storage.complete(disk.node, (-1, write_id))  # incarnation -1: no server is told
    return write_id


def crash_and_recover(sim: Simulation, disk: Disk, corrupt: set[int] | None = None) -> None:
    """Lose the writes in flight, then read back as a restart does (reverting an unfinished
    atomic update)."""
    sim.storage.crash(disk.node)
    disk.recover(set() if corrupt is None else corrupt)
