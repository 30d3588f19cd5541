"""The engine knows no system: static and runtime import checks, and its own pieces (disks, trace
kinds, the system-facing Env) tested without any system logic in the way."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from tests.sim_support import crash_and_recover, quiet_simulation, write_now
from voprd.options import RunOptions
from voprd.sim.engine import SimEnv
from voprd.sim.system import DAMAGED, System
from voprd.sim.trace import ENGINE_KINDS, KindTable
from voprd.systems.vsr import VSR
from voprd.targets.loader import TargetNotFound, load_system

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "voprd" / "sim"


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_the_engine_never_imports_a_system() -> None:
    offenders = [
        (path.name, name) for path in sorted(SIM.glob("*.py")) for name in _imports(path)
        if name == "voprd.systems" or name.startswith("voprd.systems.")
    ]
    assert not offenders, offenders
    assert len(list(SIM.glob("*.py"))) >= 10  # the scan saw the engine


def test_importing_the_engine_loads_no_system_and_no_target() -> None:
    modules = sorted(f"voprd.sim.{p.stem}" for p in SIM.glob("*.py") if p.stem != "__init__")
    script = (
        f"import sys, {', '.join(modules)}\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('voprd.systems', 'voprd.targets')))\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_disk_faults_change_what_a_read_returns() -> None:
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    write_now(sim, disk, 1, b"one")
    write_now(sim, disk, 2, b"two")
    assert (disk.read(1), disk.read(2), disk.read(3)) == (b"one", b"two", None)
    # Corrupt at a restart: that sector reads back damaged until rewritten.
    crash_and_recover(sim, disk, corrupt={2})
    assert (disk.read(1), disk.read(2)) == (b"one", DAMAGED)
    write_now(sim, disk, 2, b"two again")
    assert disk.read(2) == b"two again"
    # A misdirected write: sent to slot 3, it lands on a settled sector (1 or 2), which then
    # reads back slot 3's data; slot 3 keeps what it held (nothing). The system was told it
    # succeeded, and `written` says what it wrote.
    sim.storage.f = 1  # the atlas of a 3-server cluster
    sim.plan.misdirect_ppm = 1_000_000
    write_now(sim, disk, 3, b"three", settled=2)
    assert sim.fault_counts["disk_misdirect"] == 1 and disk.read(3) is None
    assert [disk.read(1), disk.read(2)].count(b"three") == 1
    assert (disk.written(1), disk.written(2), disk.written(3)) == (b"one", b"two again", b"three")
    sim.plan.misdirect_ppm = 0
    # Torn at a crash: a write in flight reads back as a read error.
    disk.write(4, b"four")
    torn = disk.crash([True])
    assert torn == [4] and disk.read(4) is DAMAGED


def test_truncate_drops_sectors_and_cancels_writes_in_flight() -> None:
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    for slot in (1, 2, 3):
        write_now(sim, disk, slot, bytes([slot]))
    disk.write(4, b"\x04")
    disk.truncate(2)
    assert (disk.read(2), disk.read(3)) == (b"\x02", None)
    assert not disk.pending


def test_superblock_and_atomic_updates() -> None:
    sim = quiet_simulation()
    disk = sim.storage.disks[0]
    assert sim.storage.disks[0].read_superblock() is not None  # the VSR formats its disks
    write_now(sim, disk, 1, b"old")
    disk.write_superblock(b"sb1")
    disk.begin_atomic()
    write_now(sim, disk, 1, b"new")
    disk.begin_atomic()  # a second begin keeps the first snapshot
    crash_and_recover(sim, disk)
    assert (disk.read(1), disk.read_superblock()) == (b"old", b"sb1")
    disk.begin_atomic()
    write_now(sim, disk, 1, b"new")
    disk.end_atomic()
    crash_and_recover(sim, disk)  # complete, but no superblock has switched it in yet
    assert disk.read(1) == b"old"
    disk.begin_atomic()
    write_now(sim, disk, 1, b"new")
    disk.end_atomic()
    disk.write_superblock(b"sb2")
    crash_and_recover(sim, disk)
    assert (disk.read(1), disk.read_superblock()) == (b"new", b"sb2")


def test_kind_table_refuses_collisions() -> None:
    table = KindTable({"mine": 64})
    assert table.codes["mine"] == 64 and table.names[64] == "mine"
    assert set(table.system_codes) == {"mine", "status", "commit", "retry"}
    with pytest.raises(ValueError, match="engine kind"):
        KindTable({"crash": 99})
    with pytest.raises(ValueError, match="taken by the engine"):
        KindTable({"mine": ENGINE_KINDS["deliver"]})
    with pytest.raises(ValueError, match="used twice"):
        KindTable({"a": 70, "b": 70})
    with pytest.raises(ValueError, match="outside"):
        KindTable({"a": 256})


def test_env_guards_the_engine_streams_and_trace_kinds() -> None:
    sim = quiet_simulation()
    env = SimEnv(sim, sim.network.send)
    with pytest.raises(ValueError, match="engine's"):
        env.stream("network")
    assert env.stream("mine").next_u64() == env.stream("mine").next_u64()
    with pytest.raises(ValueError, match="not one of the system's"):
        env.note(0, "crash")
    env.note(0, "commit", 1, 2)
    assert sim.records[-1][1:] == (0, ENGINE_KINDS["commit"], 1, 2)


def test_unknown_bugs_name_the_system() -> None:
    with pytest.raises(ValueError, match="unknown bug 'nope' for system 'vsr'"):
        VSR.validate_bugs(["nope"])
    with pytest.raises(ValueError, match="known: none"):
        System().validate_bugs(["x"])
    assert RunOptions().target == "builtin"


class CollidingKinds(System):
    """Not runnable: its trace kind takes an engine code (loaded by the test below)."""

    name = "colliding"
    message_names = ("ping",)
    trace_kinds = MappingProxyType({"mine": ENGINE_KINDS["crash"]})


class UnknownModel(System):
    name = "unknown_model"
    message_names = ("ping",)
    model = "no_such_model"


class NeedsArguments(System):
    def __init__(self, size: int) -> None:
        self.size = size


def test_an_external_binary_is_no_engine_system() -> None:
    """`exec` replays run the binary (tests/test_exec_daemon.py); the engine refuses it."""
    with pytest.raises(TargetNotFound, match="external binary"):
        load_system("exec")


@pytest.mark.parametrize(("spec", "why"), [
    ("tests.test_sim_engine:CollidingKinds", "taken by the engine"),
    ("tests.test_sim_engine:UnknownModel", "unknown model"),
    ("tests.test_sim_engine:NeedsArguments", "NeedsArguments() failed"),
    ("tests.targets_for_tests:Flaky", "not a simulation-engine system"),
])
def test_targets_the_engine_cannot_run_are_refused_in_one_line(spec: str, why: str) -> None:
    with pytest.raises(TargetNotFound, match=re.escape(why)):
        load_system(spec)
    once = subprocess.run(
        [sys.executable, "-m", "voprd", "--once", "--seed", "0", "--target", spec],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert once.returncode == 2 and once.stdout == "", once.stderr
    assert once.stderr.count("\n") == 1 and "--target" in once.stderr and why in once.stderr
