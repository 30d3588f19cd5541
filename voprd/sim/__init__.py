"""voprd.sim: the deterministic simulation engine. It knows no system under test: a system plugs in
through `voprd.sim.system` (System, Cluster, Server, Client, Env, Disk, Violation), and
`run_seed(seed, options, system)` / `simulate(...)` run one seed of it (voprd.sim.run). Message
checksums for systems: `seal` / `unseal` (voprd.sim.checksum); sealed disk sectors:
`seal_sector` / `unseal_sector` (voprd.sim.storage)."""

from voprd.sim.checksum import seal, unseal
from voprd.sim.run import Outcome, run_seed, simulate
from voprd.sim.storage import SUPERBLOCK_COPIES, seal_sector, superblock_address, unseal_sector
from voprd.sim.system import (
    DAMAGED,
    Client,
    Cluster,
    Damaged,
    Disk,
    Env,
    Recovery,
    Server,
    System,
    Violation,
)

__all__ = [
    "DAMAGED",
    "SUPERBLOCK_COPIES",
    "Client",
    "Cluster",
    "Damaged",
    "Disk",
    "Env",
    "Outcome",
    "Recovery",
    "Server",
    "System",
    "Violation",
    "run_seed",
    "seal",
    "seal_sector",
    "simulate",
    "superblock_address",
    "unseal",
    "unseal_sector",
]
