"""deploy/systemd/voprd.service: `systemd-analyze verify` and `security --offline=true`, plus the
settings the daemon's behaviour depends on (notify, watchdog, drain, restart)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy_support import BOOTSTRAP, BOOTSTRAP_UNIT, UNIT, VENV_BIN
from voprd.config import Settings

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_MAX = 2.0
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze missing (.ci/run installs systemd via apt)"
)


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    """key -> values in order (systemd allows repeated keys), section names prefixed."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


@needs_systemd_analyze
def test_verify_prints_nothing(tmp_path: Path) -> None:
    # verify needs ExecStart's binary to exist: a copy pointing at this venv's voprd script.
    voprd = VENV_BIN / "voprd"
    assert voprd.exists()
    text = UNIT.read_text()
    assert "ExecStart=/opt/voprd/venv/bin/voprd " in text
    copy = tmp_path / "voprd.service"
    copy.write_text(text.replace("ExecStart=/opt/voprd/venv/bin/voprd ", f"ExecStart={voprd} "))
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "")


@needs_systemd_analyze
def test_verify_would_catch_a_typo(tmp_path: Path) -> None:
    # The check above can fail: an unknown key is reported on stderr (with exit 0).
    copy = tmp_path / "voprd.service"
    copy.write_text(
        UNIT.read_text()
        .replace("ExecStart=/opt/voprd/venv/bin/voprd ", f"ExecStart={VENV_BIN / 'voprd'} ")
        .replace("ProtectHome=yes", "ProtectHom=yes")
    )
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectHom" in proc.stderr


@needs_systemd_analyze
def test_security_exposure_at_most_two() -> None:
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for voprd\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    assert float(match[1]) <= EXPOSURE_MAX, proc.stdout


def test_notify_watchdog_restart_and_drain() -> None:
    unit = unit_settings()
    defaults = Settings()
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.Restart"] == ["always"]
    assert seconds(unit["Service.RestartSec"][0]) >= 5  # a crash loop cannot spin the CPU
    assert unit["Unit.StartLimitIntervalSec"] == ["0"]  # ... and never gives up
    # The watchdog must outlast the longest silent stretch: one seed up to --seed-timeout.
    assert seconds(unit["Service.WatchdogSec"][0]) > defaults.seed_timeout_s
    # systemd must not SIGKILL a daemon that is still draining (--drain-timeout) and flushing.
    assert seconds(unit["Service.TimeoutStopSec"][0]) >= defaults.drain_timeout_s + 20
    # SIGTERM to the daemon only: it drains its own workers.
    assert unit["Service.KillMode"] == ["mixed"]
    assert unit["Service.ExecStart"] == ["/opt/voprd/venv/bin/voprd daemon $VOPRD_ARGS"]
    assert unit["Service.EnvironmentFile"] == ["-/etc/default/voprd"]
    assert unit["Service.StateDirectory"] == ["voprd"]  # $STATE_DIRECTORY: the daemon's state
    assert unit["Service.DynamicUser"] == ["yes"]


def test_hardening_keeps_what_the_daemon_needs() -> None:
    unit = unit_settings()
    # AF_UNIX: sd_notify and multiprocessing; AF_INET/6: AWS APIs and the metadata service.
    assert unit["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    filters = unit["Service.SystemCallFilter"]
    assert filters[0] == "@system-service"
    denied = filters[1].removeprefix("~").split()
    # Worker processes are forked and set resource limits (--worker-memory-mb): keep those.
    assert not {"@process", "@resources", "@signal", "@ipc"} & set(denied)
    for key in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp",
                "PrivateDevices", "MemoryDenyWriteExecute"):
        assert unit[f"Service.{key}"] in (["yes"], ["strict"]), key


@needs_systemd_analyze
def test_bootstrap_unit_verifies_and_retries_until_installed(tmp_path: Path) -> None:
    """voprd-bootstrap.service runs bootstrap.sh --wait at every boot, retried on failure."""
    text = BOOTSTRAP_UNIT.read_text()
    assert "ExecStart=/opt/voprd/bootstrap.sh --wait\n" in text
    copy = tmp_path / "voprd-bootstrap.service"
    copy.write_text(text.replace("/opt/voprd/bootstrap.sh", str(BOOTSTRAP)))
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "")
    unit = unit_settings(BOOTSTRAP_UNIT)
    assert unit["Service.Type"] == ["exec"]  # boot (multi-user.target) never waits for it
    assert unit["Service.Restart"] == ["on-failure"]
    assert seconds(unit["Service.RestartSec"][0]) >= 10
    assert unit["Unit.StartLimitIntervalSec"] == ["0"]
    assert unit["Unit.After"] == ["network-online.target"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_memory_and_task_backstops_for_workers_and_an_external_target() -> None:
    """An exec target escapes the per-worker memory limit: the unit caps itself below the
    machine (the SSM agent and journald survive), a killed worker is the supervisor's to
    replace (OOMPolicy=continue, not a stop of the daemon), and tasks are bounded."""
    unit = unit_settings()
    (memory,) = unit["Service.MemoryMax"]
    assert memory.endswith("%") and 50 <= int(memory[:-1]) <= 90
    # c7g.medium: 2 GiB, one worker of 1 GiB (--worker-memory-mb) plus the daemon fit in it.
    assert 2048 * int(memory[:-1]) / 100 > Settings().worker_memory_mb + 256
    assert unit["Service.OOMPolicy"] == ["continue"]
    (tasks,) = unit["Service.TasksMax"]
    assert 512 <= int(tasks) <= 4096


@needs_systemd_analyze
def test_bootstrap_unit_takes_the_hardening_its_steps_allow() -> None:
    unit = unit_settings(BOOTSTRAP_UNIT)
    for key in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "ProtectClock", "ProtectHostname", "RestrictRealtime", "RestrictNamespaces",
                "LockPersonality"):
        assert unit[f"Service.{key}"] == ["yes"], key
    assert unit["Service.ProtectHome"] == ["read-only"]
    # What dnf, rpm, pip and systemctl need stays: root, a writable system, the network.
    for absent in ("ProtectSystem", "User", "DynamicUser", "CapabilityBoundingSet",
                   "SystemCallFilter", "PrivateNetwork"):
        assert f"Service.{absent}" not in unit, absent
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(BOOTSTRAP_UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for voprd-bootstrap\.service: (\d+\.\d+)",
                      proc.stdout)
    assert match and float(match[1]) <= 6.0, proc.stdout[-1500:]  # 9.6 without the hardening
