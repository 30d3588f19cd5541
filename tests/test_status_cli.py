"""`voprd status` is not a confused deputy (issue 14): run as root against a state directory the
daemon's user controls, it signals only the voprd unit's main process or a process of the state
directory's owner, never follows a symbolic link or opens a FIFO there, and prints nothing that a
terminal would act on. Real processes, a real flock, real signals; `systemctl` is a stub on PATH
where the unit's MainPID matters (this machine has no systemd)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from voprd.events import BackendHealth, FingerprintCount, StatusData, WorkerStatus

NOBODY = 65534
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[1;1H\x9b31m\x07\x00"


def status_json(pid: int, invariant: str = "linearizability") -> bytes:
    status = StatusData(
        pid=pid, state="running", uptime_s=5.0, first_seed=0, end_seed=None, watermark=3,
        seeds_done=3, seeds_done_this_start=3, rate_per_s=1.0, total_failures=1,
        failures_by_fingerprint=[FingerprintCount(fingerprint="ab12", invariant=invariant,
                                                  count=1, first_seed=2)],
        workers=[WorkerStatus(index=0, pid=None, seed=None, running_s=0.0, restarts=0)],
        last_checkpoint="s3://b/checkpoints/latest.json\x1b[8m", last_checkpoint_age_s=1.0,
        backend=BackendHealth(name="local", healthy=True, detail="ok" + ESCAPES),
        pending_alerts=0,
    )
    return msgspec.json.encode(status)


# A stand-in daemon: holds the state dir's lock (as voprd does), writes the pid it is told to
# (its own, or a victim's), and answers SIGUSR1 by writing status.json with hostile text.
FAKE_DAEMON = textwrap.dedent("""
    import fcntl, os, signal, sys, time
    state, planted, status = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    lock = open(os.path.join(state, "voprd.pid"), "a+")
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.seek(0); lock.truncate()
    lock.write(f"{planted or os.getpid()}\\n"); lock.flush()
    def answer(signum, frame):
        tmp = os.path.join(state, "status.json.tmp")
        with open(tmp, "wb") as f:
            f.write(status.replace(b"PID", str(os.getpid()).encode()))
        os.replace(tmp, os.path.join(state, "status.json"))
        with open(os.path.join(state, "answered"), "a") as f:
            f.write("x")
    signal.signal(signal.SIGUSR1, answer)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


def start_fake_daemon(state: Path, planted: int = 0) -> subprocess.Popen[str]:
    status = status_json(0, invariant="lin" + ESCAPES + "\nforged line").decode()
    status = status.replace('"pid":0', '"pid":PID', 1)
    proc = subprocess.Popen([sys.executable, "-c", FAKE_DAEMON, str(state), str(planted), status],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process of this user (SIGUSR1 would kill it: its default action)."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def run_status(state: Path, *args: str, systemctl_pid: int | None = None,
               tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VOPRD_STATE_DIR"}
    if systemctl_pid is not None:
        assert tmp is not None
        fake = tmp / "bin"
        fake.mkdir(exist_ok=True)
        (fake / "systemctl").write_text(
            f"#!/bin/sh\n[ \"$*\" = 'show --property=MainPID --value voprd' ] && "
            f"echo {systemctl_pid}\n")
        (fake / "systemctl").chmod(0o755)
        env["PATH"] = f"{fake}:{env['PATH']}"
    return subprocess.run([sys.executable, "-m", "voprd", "status", "--state-dir", str(state),
                           *args], capture_output=True, text=True, timeout=60, env=env)


def assert_alive(proc: subprocess.Popen[bytes]) -> None:
    time.sleep(0.2)
    assert proc.poll() is None, "the unrelated process was signalled"


def test_planted_pid_of_an_unrelated_process_is_not_signalled(
    tmp_path: Path, victim: subprocess.Popen[bytes]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if os.geteuid() == 0:
        os.chown(state, NOBODY, NOBODY)  # the daemon's (dynamic) user owns the state dir
    else:
        pytest.skip("needs root: the deputy is `sudo voprd status`")
    daemon = start_fake_daemon(state, planted=victim.pid)
    try:
        proc = run_status(state)
        assert proc.returncode == 1
        assert proc.stdout.strip() == (
            f"voprd status: pid {victim.pid} from {state}/voprd.pid is neither the voprd unit's "
            f"main process nor a process of the state directory's owner (uid {NOBODY}; it runs "
            "as uid 0): not signalled")
        assert_alive(victim)
        # systemd's MainPID of the unit is another process: still refused.
        proc = run_status(state, systemctl_pid=daemon.pid, tmp=tmp_path)
        assert proc.returncode == 1 and "not signalled" in proc.stdout
        assert_alive(victim)
        assert not (state / "answered").exists()
    finally:
        daemon.kill()
        daemon.wait()


def test_pid_one_and_a_dead_pid_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for planted, says in ((1, "names pid 1: not signalled"), (dead.pid, "is not running")):
        daemon = start_fake_daemon(state, planted=planted)
        try:
            proc = run_status(state)
            assert proc.returncode == 1 and says in proc.stdout, proc.stdout
        finally:
            daemon.kill()
            daemon.wait()


def test_the_units_main_pid_is_answered_even_as_another_user(tmp_path: Path) -> None:
    """Under systemd the unit's MainPID is the daemon, whoever owns the directory."""
    state = tmp_path / "state"
    state.mkdir()
    if os.geteuid() == 0:
        os.chown(state, NOBODY, NOBODY)
    daemon = start_fake_daemon(state)
    try:
        proc = run_status(state, systemctl_pid=daemon.pid, tmp=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (state / "answered").read_text() == "x"
    finally:
        daemon.kill()
        daemon.wait()


def test_status_of_the_owners_daemon_is_printed_without_escape_sequences(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    daemon = start_fake_daemon(state)
    try:
        proc = run_status(state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert f"voprd pid {daemon.pid}: running" in out
        assert "\n    ab12 lin forged line: 1 (first seed 2)\n" in out  # flattened: one line
        assert "  backend: local healthy ok" in out
        as_json = run_status(state, "--json")
        assert as_json.returncode == 0
        for text in (out, as_json.stdout):
            assert not any(ch in text for ch in "\x1b\x07\x00\x9b"), repr(text)
        assert msgspec.json.decode(as_json.stdout)["pid"] == daemon.pid
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.parametrize("name", ["status.json", "voprd.pid"])
def test_symlinked_state_files_are_not_followed(tmp_path: Path, name: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000::::::\n")
    (state / name).symlink_to(secret)
    if name == "voprd.pid":
        (state / "status.json").write_bytes(status_json(1))
    proc = run_status(state)
    assert proc.returncode == 1
    assert proc.stdout.strip().endswith(f"{state}/{name} is a symbolic link: not read")
    assert "secret" not in proc.stdout + proc.stderr


def test_a_fifo_or_a_huge_status_file_is_refused_without_blocking(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "status.json")
    proc = run_status(state)
    assert proc.returncode == 1 and "status.json is not a regular file: not read" in proc.stdout
    (state / "status.json").unlink()
    (state / "status.json").write_bytes(b" " * (4 * 1024 * 1024 + 1))
    proc = run_status(state)
    assert proc.returncode == 1 and "larger than 4 MiB" in proc.stdout


def test_last_status_with_escape_sequences_and_a_broken_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_bytes(status_json(7, invariant="x\x1b[2Jy"))
    proc = run_status(state)
    assert proc.returncode == 1
    assert "last status written:" in proc.stdout and "    ab12 xy: 1" in proc.stdout
    assert "\x1b" not in proc.stdout
    (state / "status.json").write_bytes(b'{"pid": "\x1b[2J"}')
    proc = run_status(state)
    assert proc.returncode == 1 and "status.json does not decode" in proc.stdout
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stdout
