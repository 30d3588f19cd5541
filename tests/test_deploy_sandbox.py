"""The daemon's workload still works inside voprd.service's sandbox.

No systemd manager runs here (no `systemd-run`), so tests/unit_sandbox.py rebuilds the unit's
restrictions from the unit file with the kernel mechanisms systemd uses (mount namespace,
unprivileged uid without capabilities, NoNewPrivileges, seccomp allow list, address families,
MemoryDenyWriteExecute). tests/unit_probe.py exercises what the daemon does at the OS level;
once the daemon is in the tree, a short real batch runs in the same sandbox too.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path

import pytest

from tests import unit_sandbox
from tests.deploy_support import ROOT

pytestmark = pytest.mark.skipif(
    unit_sandbox.unavailable() is not None, reason=str(unit_sandbox.unavailable())
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # the sandbox's user reaches its state directory through it
    state = tmp_path / "state"
    state.mkdir()
    return state


def test_probe_works_and_restrictions_hold(state_dir: Path) -> None:
    probe = str(ROOT / "tests" / "unit_probe.py")
    proc = unit_sandbox.run(state_dir, [sys.executable, probe, unit_sandbox.STATE_IN_SANDBOX], 120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    # What the daemon needs works:
    assert results["loop"].startswith("uvloop")
    assert results["pool_fork"] == results["pool_spawn"] == [0, 1, 4, 9]
    assert results["sd_notify"] == "READY=1\nSTATUS=probe"
    assert results["tcp_AF_INET"] == "ping"
    assert results["tcp_AF_INET6"] in ("ping", "no ::1 here: Cannot assign requested address")
    assert results["signal"] == "SIGUSR1"
    assert results["durable_write"] == '{"last_seed": 1}'
    assert (state_dir / "checkpoint.json").read_text() == '{"last_seed": 1}'
    assert results["uid"] == unit_sandbox.SANDBOX_UID
    # ... and the restrictions were really in force while it did:
    assert results["seccomp_mode"] == "2"
    assert results["write_venv"] == "EROFS"
    assert results["netlink"] == results["packet"] == "EAFNOSUPPORT"
    assert results["mmap_wx"] == "EPERM"
    assert results["ptrace"] == "EPERM"


@pytest.mark.skipif(
    importlib.util.find_spec("voprd.service.app") is None
    or importlib.util.find_spec("voprd.sim.reproduce") is None,
    reason="the daemon (voprd.service.app) and simulator are not in this branch yet",
)
def test_daemon_batch_runs_in_the_sandbox(state_dir: Path) -> None:
    notify_path = state_dir / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    notify_path.chmod(0o777)
    receiver.settimeout(0)
    try:
        notify = f"{unit_sandbox.STATE_IN_SANDBOX}/notify.sock"
        proc = unit_sandbox.run(
            state_dir, [sys.executable, "-m", "voprd", "--seed", "0", "-n", "20", "--workers", "2"],
            240, env={"NOTIFY_SOCKET": notify},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        messages = []
        for _ in range(10_000):
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                break
        assert any("READY=1" in m for m in messages), messages
        assert (state_dir / "checkpoint.json").exists()
        once_argv = [sys.executable, "-m", "voprd", "--once", "--seed", "3"]
        once = unit_sandbox.run(state_dir, once_argv, 120)
        assert once.returncode in (0, 1), once.stderr[-3000:]  # 1: the seed found a failure
    finally:
        receiver.close()
