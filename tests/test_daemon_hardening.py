"""The daemon process on an operator's worst day, as real processes with real signals: signal
storms through start-up and shutdown, a stopped worker, a journal that lies, bad input of every
kind, an unsafe, full, read-only or vanished state directory, symlinks planted in it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.test_daemon_e2e import (
    FLAKY,
    MISBEHAVING,
    ROOT,
    checkpoint,
    env_with,
    events,
    failure_files,
    flaky_failing,
    run,
    start,
    voprd,
    wait_for,
)
from voprd.core.records import JournalRecord, read_failure, write_journal_record

SEED_MAX = 2**64 - 1


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def signal_storm(pid: int, signum: int = signal.SIGUSR1, pause_s: float = 0.002) -> Iterator[
        list[int]]:
    """Send `signum` to `pid` as fast as `pause_s` allows until the block ends; yields a list
    holding the count sent."""
    sent = [0]
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            sent[0] += 1
            time.sleep(pause_s)

    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()


def refused_in_one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The exit-2 contract: status 2, exactly one line on stderr, no traceback anywhere."""
    err, out = proc.stderr.decode(), proc.stdout.decode()
    assert proc.returncode == 2, (proc.returncode, err[-3000:], out[-2000:])
    assert "Traceback" not in err + out, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def journal_lines(state: Path) -> list[bytes]:
    """The journal's complete lines (a torn last one left out)."""
    path = state / "checkpoint.json.journal"
    return path.read_bytes().split(b"\n")[:-1] if path.exists() else []


# --- signals ---------------------------------------------------------------------------------


def start_to_files(state: Path, tmp_path: Path, *args: str, env: dict[str, str]
                   ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A daemon whose stdout and stderr go to files (so nothing needs reading while it exits)."""
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(voprd("--state-dir", str(state), *args), cwd=ROOT, env=env,
                                stdout=out, stderr=err)
    return proc, out_path, err_path


def wait_exited_unreaped(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Block until `proc` has exited, leaving it unreaped (its pid cannot be reused yet, so a
    signal storm aimed at it until then hits nobody else)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the daemon did not exit in time")


def test_a_sigusr1_storm_through_shutdown_ends_in_exit_0_with_the_final_summary(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc, out_path, err_path = start_to_files(
        state, tmp_path, "--target", FLAKY, "--workers", "2", "--json", "--drain-timeout", "10",
        env=env_with(VOPRD_TEST_WORK_MS="20"))
    try:
        wait_for(lambda: (state / "checkpoint.json").exists()
                 and checkpoint(state).total_iterations >= 20, timeout_s=60)
        with signal_storm(proc.pid) as sent:
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            wait_exited_unreaped(proc, timeout_s=60)  # the storm goes on to the very end
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out_path.read_bytes(), err_path.read_bytes()
    assert sent[0] > 50, "the storm was too weak to prove anything"
    assert proc.returncode == 0, (proc.returncode, err.decode()[-3000:])
    kinds = [kind for kind, _ in events(out)]
    assert kinds[-1] == "batch_complete" and "status" in kinds
    assert "Traceback" not in err.decode()
    cp = checkpoint(state)
    seen = {int(d["seed"]) for kind, d in events(out) if kind == "iteration"}  # type: ignore[call-overload]
    assert set(range(cp.watermark)) | set(cp.done_above) == seen


def caught_signals(pid: int) -> int:
    """The mask of signals `pid` has handlers for (/proc/PID/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def test_status_and_stop_signals_during_start_up_are_remembered_not_fatal(
    tmp_path: Path,
) -> None:
    """SIGUSR1 and SIGHUP from the moment the CLI holds them (before the daemon's modules are
    imported, before its event loop exists): it lives, drains at once and exits 0."""
    state = tmp_path / "state"
    proc = start(state, "--target", FLAKY, "--workers", "1",
                 env=env_with(VOPRD_TEST_LOAD_MS="1000"))
    held = (1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGHUP - 1))
    try:
        wait_for(lambda: proc.poll() is not None or caught_signals(proc.pid) & held == held,
                 timeout_s=60)
        for _ in range(20):
            proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGHUP)
        for _ in range(20):
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.01)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (proc.returncode, err.decode()[-3000:])
    log = out.decode()
    assert '"signal": "SIGHUP"' in log and '"event": "drain"' in log
    assert '"event": "batch_complete"' in log and "Traceback" not in err.decode()
    assert (state / "status.json").exists()  # the status request was answered


def test_sighup_drains_and_a_second_signal_skips_the_grace_period(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = start(state, "--target", MISBEHAVING, "--seed", "6", "-n", "1000", "--workers", "1",
                 "--drain-timeout", "300", capture=False)
    try:
        wait_for(lambda: (state / "checkpoint.json").exists() and checkpoint(state).watermark == 7,
                 timeout_s=60)
        time.sleep(0.3)  # seed 7 hangs now: the drain would wait for it for 300 s
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal waits for the in-flight seed"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)  # far less than the 300 s grace period
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    cp = checkpoint(state)
    assert (cp.watermark, cp.total_iterations, cp.total_failures) == (7, 1, 0)
    assert failure_files(state) == []  # the abandoned seed runs again next time


# --- workers ---------------------------------------------------------------------------------


def worker_boards(daemon_pid: int) -> dict[int, str]:
    """The daemon's worker processes and their board files (from their command lines)."""
    found = {}
    for pid in children(daemon_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"voprd.service.worker" in argv:
            config = msgspec.json.decode(argv[argv.index(b"voprd.service.worker") + 1])
            found[pid] = config["board_path"]
    return found


def test_a_worker_sigstopped_before_its_first_seed_is_replaced(tmp_path: Path) -> None:
    from voprd.service.protocol import Board

    state, run_log = tmp_path / "state", tmp_path / "ran.txt"
    env = env_with(VOPRD_TEST_LOAD_MS="1500", VOPRD_TEST_RUN_LOG=str(run_log))
    proc = start(state, "--target", FLAKY, "-n", "30", "--workers", "2", "--json",
                 "--seed-timeout", "3", env=env)
    stopped: list[int] = []
    try:
        def stop_a_loading_worker() -> bool:
            for pid, board_path in worker_boards(proc.pid).items():
                board = Board(board_path)
                beating = board.read().heartbeat_s > 0
                board.close()
                if beating and not run_log.exists():  # alive, loading: before its first seed
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                    return True
            return False

        wait_for(stop_a_loading_worker, timeout_s=60)
        out, err = proc.communicate(timeout=180)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err.decode()[-3000:]  # Flaky's failures: the run finished
    iterations = {int(d["seed"]): d for kind, d in events(out)  # type: ignore[call-overload]
                  if kind == "iteration"}
    assert sorted(iterations) == list(range(30))
    assert {s for s, d in iterations.items() if d["status"] == "failed"} == flaky_failing(0, 30)
    assert all(d["kind"] == "invariant" for d in iterations.values() if d["status"] == "failed")
    # The stopped worker was killed for its silence (a healthy one starved of CPU for seconds on
    # a loaded machine may be too: that costs a restart, never a seed).
    silent = [line for line in err.decode().splitlines() if '"worker_silent"' in line]
    assert any(f'"pid": {stopped[0]},' in line for line in silent), err.decode()[-3000:]


# --- the journal -----------------------------------------------------------------------------


def killed_with_an_unproven_failure(state: Path, env: dict[str, str], *args: str
                                    ) -> tuple[list[bytes], int]:
    """Run the daemon, SIGKILL it, until its journal holds a failed record whose seed the
    checkpoint does not count yet; return the journal's lines and that line's index."""
    for _ in range(10):  # bound: a kill right after a compaction leaves too short a journal
        proc = start(state, *args, env=env, capture=False)
        try:
            wait_for(lambda: len(journal_lines(state)) >= 8, timeout_s=60)
        finally:
            proc.kill()
            proc.wait()
        cp, lines = checkpoint(state), journal_lines(state)
        for index, line in enumerate(lines[1:], start=1):
            record = msgspec.json.decode(line.partition(b" ")[2])
            if record[1] and record[0] >= cp.watermark and record[0] not in cp.done_above:
                return lines, index
    raise AssertionError("never caught a journal with an unproven failure")


def test_an_edited_journal_line_neither_skips_a_seed_nor_loses_its_failure(
    tmp_path: Path,
) -> None:
    state, run_log = tmp_path / "state", tmp_path / "ran.txt"
    env = env_with(VOPRD_TEST_WORK_MS="30", VOPRD_TEST_FAIL_EVERY="3",
                   VOPRD_TEST_RUN_LOG=str(run_log))
    args = ("--target", FLAKY, "-n", "200", "--workers", "2")
    lines, index = killed_with_an_unproven_failure(state, env, *args)
    check, _, body = lines[index].partition(b" ")
    record = msgspec.json.decode(body)
    seed = record[0]
    # The same seed, well-formed, now "passed" and without its failure; the checksum kept.
    record[1:4] = [False, None, None]
    lines[index] = check + b" " + msgspec.json.encode(record)
    (state / "checkpoint.json.journal").write_bytes(b"\n".join(lines))
    run_log.unlink()
    final = run(state, *args, env=env, timeout_s=240)
    assert final.returncode == 1, final.stderr.decode()[-3000:]
    log = final.stdout.decode()
    assert '"event": "journal_untrusted"' in log and "fails its checksum" in log
    assert list(state.glob("checkpoint.json.journal.untrusted-*"))
    ran = {int(line) for line in run_log.read_text().split()}
    assert seed in ran, "the seed of the edited line ran again"
    cp = checkpoint(state)
    failing = {s for s in range(200) if s % 3 == 2}
    assert (cp.watermark, cp.done_above, cp.total_iterations) == (200, [], 200)
    assert cp.total_failures == len(failing)
    archived = sorted(read_failure(path.read_bytes()).seed for path in failure_files(state))
    assert archived == sorted(failing), "each failure archived once, the edited one included"


def test_an_appended_out_of_range_journal_record_is_not_counted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ("--target", FLAKY, "--seed", "1000", "--workers", "2")
    assert run(state, *args, "-n", "40").returncode == 1
    stored = checkpoint(state)
    journal = state / "checkpoint.json.journal"
    # A record with a valid checksum for this run, for a seed this run does not have.
    forged = write_journal_record(JournalRecord(seed=999, failed=False), stored.run_id)
    journal.write_bytes(journal.read_bytes() + forged)
    again = run(state, *args, "-n", "60")
    assert again.returncode == 1, again.stderr.decode()[-3000:]
    assert "seed 999 is not in the run" in again.stdout.decode()
    cp = checkpoint(state)
    assert (cp.watermark, cp.done_above, cp.total_iterations) == (1060, [], 60)
    assert cp.total_failures == len(flaky_failing(1000, 60))


# --- bad input: exit 2, one line, no traceback -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "config", "words"),
    [
        (["--config", "/etc"], None, "/etc is a directory"),
        (["--config", "{config}"], b"seed = 1\n\xff\xfe\n", "not UTF-8"),
        (["--config", "{config}"], b'faults = ["bogus"]\n', "faults: unknown fault class"),
        (["--config", "{config}"], b"seed = 18446744073709551616\n", "seed: must be at most"),
        (["--config", "{config}"], b"workers = 100000\n", "workers: must be at most"),
        # This test's daemon target is not an engine system: it has no planted bugs at all.
        (["--config", "{config}"], b'bugs = ["nope"]\n', "bugs: planted bugs need a simulation"),
        (["--once", "--seed", "1", "--bug", "nope"], None, "--bug: unknown bug 'nope'"),
        (["--config", "{config}"], b'seed_timeout_s = inf\n', "seed_timeout_s: must be at"),
        (["--config", "{config}"], b'exec_cmd = "\'x"\ntarget = "exec"\n', "exec_cmd: not a"),
        (["--seed", "18446744073709551616", "-n", "1"], None, "--seed: must be at most"),
        (["--seed", "18446744073709551615", "-n", "2"], None, "past the largest seed"),
        (["--once", "--seed", "18446744073709551616"], None, "--seed: must be at most"),
        (["--target", "exec", "--exec", "  ", "-n", "1"], None, "--exec: names no command"),
        (["--state-dir", "a\x01b", "-n", "1"], None, "control character"),
        (["--sns-topic-arn", "not-an-arn", "-n", "1"], None, "not an SNS topic ARN"),
        (["--once", "--seed", "3", "--trace-file", "/nonexistent/t.txt"], None,
         "cannot write /nonexistent/t.txt"),
    ],
)
def test_bad_input_is_exit_2_with_one_line_naming_it(
    tmp_path: Path, args: list[str], config: bytes | None, words: str
) -> None:
    if config is not None:
        (tmp_path / "voprd.toml").write_bytes(config)
    argv = [arg.replace("{config}", str(tmp_path / "voprd.toml")) for arg in args]
    proc = subprocess.run(voprd("--state-dir", str(tmp_path / "state"), "--target", FLAKY,
                                *argv) if "--once" not in argv else voprd(*argv),
                          cwd=ROOT, env=env_with(), capture_output=True, timeout=60)
    assert words in refused_in_one_line(proc)


def test_seeds_up_to_2_to_the_64_minus_1_run_everywhere(tmp_path: Path) -> None:
    top = run(tmp_path / "a", "--target", FLAKY, "--seed", str(SEED_MAX), "-n", "1", "--json")
    assert top.returncode == 0, top.stderr.decode()[-3000:]
    assert [int(d["seed"]) for k, d in events(top.stdout) if k == "iteration"] == [SEED_MAX]  # type: ignore[call-overload]
    cp = checkpoint(tmp_path / "a")
    assert (cp.watermark, cp.total_iterations) == (2**64, 1)
    again = run(tmp_path / "a", "--target", FLAKY, "--seed", str(SEED_MAX), "-n", "1")
    assert again.returncode == 0 and b"run already finished" in again.stdout
    # Past 2^63 (a struct.error crash loop once), with the file's seed written as text.
    (tmp_path / "v.toml").write_text(f'seed = "{2**63}"\niterations = 7\n')
    high = run(tmp_path / "b", "--target", FLAKY, "--config", str(tmp_path / "v.toml"),
               "--workers", "2", "--json")
    assert high.returncode == 1, high.stderr.decode()[-3000:]  # 2^63 + 5: seed % 7 == 6
    seen = sorted(int(d["seed"]) for k, d in events(high.stdout) if k == "iteration")  # type: ignore[call-overload]
    assert seen == list(range(2**63, 2**63 + 7))
    assert [read_failure(p.read_bytes()).seed for p in failure_files(tmp_path / "b")] == [
        2**63 + 5]
    once = subprocess.run(voprd("--once", "--seed", str(SEED_MAX)), cwd=ROOT, env=env_with(),
                          capture_output=True, timeout=120)
    assert once.returncode in (0, 1) and once.stdout.startswith(f"seed {SEED_MAX}: ".encode())


# --- the state directory -----------------------------------------------------------------------


def test_an_unusable_state_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is not a directory" in refused_in_one_line(run(a_file, "--target", FLAKY, "-n", "1"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    line = refused_in_one_line(run(shared, "--target", FLAKY, "-n", "1"))
    assert "writable by group or others (mode 0775)" in line
    if os.geteuid() == 0:  # only root can give a directory away
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        assert "owned by uid 65534" in refused_in_one_line(
            run(foreign, "--target", FLAKY, "-n", "1"))
    created = tmp_path / "new" / "state"
    assert run(created, "--target", FLAKY, "-n", "10", "--workers", "1").returncode == 1
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    for path in created.rglob("*"):  # the daemon's files are its own (umask 077)
        assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path


def _unshare_works() -> bool:
    try:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _unshare_works(), reason="needs `unshare -m` (a private mount namespace) to mount a "
    "read-only or a tiny file system")


def in_mount_namespace(mount: str, *args: str, env: dict[str, str],
                       timeout_s: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run the daemon in a private mount namespace after the shell command `mount`."""
    script = f'{mount} && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *voprd(*args)], cwd=ROOT,
                          env=env, capture_output=True, timeout=timeout_s)


@needs_mounts
def test_a_read_only_state_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    proc = in_mount_namespace(f"mount --bind {state} {state} && mount -o remount,ro,bind {state}",
                              "--state-dir", str(state), "--target", FLAKY, "-n", "5",
                              env=env_with())
    line = refused_in_one_line(proc)
    assert str(state) in line and ("not writable" in line or "Read-only" in line)


@needs_mounts
def test_a_state_directory_that_fills_up_stops_the_daemon_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    proc = in_mount_namespace(f"mount -t tmpfs -o size=256k,mode=0700 tmpfs {state}",
                              "--state-dir", str(state), "--target", FLAKY, "--workers", "2",
                              env=env_with(VOPRD_TEST_FAIL_EVERY="2", VOPRD_TEST_WORK_MS="0"))
    assert "No space left on device" in refused_in_one_line(proc)


def test_a_state_directory_removed_under_the_daemon_stops_it_in_one_line(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    proc = start(state, "--target", FLAKY, "--workers", "2", env=env_with(VOPRD_TEST_WORK_MS="5"))
    try:
        wait_for(lambda: (state / "checkpoint.json").exists()
                 and checkpoint(state).total_iterations >= 10, timeout_s=60)
        for _ in range(100):  # bound: the daemon may add a file while the tree goes
            shutil.rmtree(state, ignore_errors=True)
            if not state.exists():
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = refused_in_one_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    # Said as soon as the daemon sees the directory gone; a file that vanished mid-removal
    # (the daemon was writing while the tree went) is named instead.
    assert (f"state directory {state} was removed while the daemon ran" in line
            or (str(state) in line and "No such file or directory" in line)), line


# --- symlinks ----------------------------------------------------------------------------------


def test_symlinks_planted_at_temporary_names_are_never_followed(tmp_path: Path) -> None:
    state, victim = tmp_path / "state", tmp_path / "victim.txt"
    victim.write_text("precious\n")
    state.mkdir(mode=0o700)
    # The fixed temporary names older versions wrote through, and SQLite's outbox companions.
    planted = ["checkpoint.json.tmp", "checkpoint.json.prev.tmp", "checkpoint.json.journal.tmp",
               "status.json.tmp", "voprd.pid.tmp"]
    for name in planted:
        (state / name).symlink_to(victim)
    proc = start(state, "--target", FLAKY, "--workers", "2", "-n", "300", "--json",
                 env=env_with(VOPRD_TEST_WORK_MS="5"))
    try:
        wait_for(lambda: (state / "checkpoint.json").exists(), timeout_s=60)
        proc.send_signal(signal.SIGUSR1)  # a status dump (status.json's temporary file too)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err.decode()[-3000:]
    assert victim.read_text() == "precious\n"
    assert all((state / name).is_symlink() for name in planted)
    assert checkpoint(state).total_iterations == 300


@pytest.mark.parametrize("name", ["alerts.log", "checkpoint.json", "voprd.pid",
                                  "aws-outbox.sqlite3-wal", "failures"])
def test_a_symlink_at_a_state_path_is_refused_not_followed(tmp_path: Path, name: str) -> None:
    state, victim = tmp_path / "state", tmp_path / "victim"
    victim.mkdir() if name == "failures" else victim.write_text("precious\n")
    state.mkdir(mode=0o700)
    (state / name).symlink_to(victim)
    line = refused_in_one_line(run(state, "--target", FLAKY, "-n", "20"))
    assert f"{state / name} is a symbolic link" in line
    assert (list(victim.iterdir()) == [] if victim.is_dir()
            else victim.read_text() == "precious\n")


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_outbox_never_writes_through_a_planted_symlink(tmp_path: Path, suffix: str) -> None:
    """The daemon refuses these at start-up (above); the outbox alone refuses or works around
    them too: SQLite opens every file of the database with O_NOFOLLOW."""
    import sqlite3

    from voprd.sinks.outbox import Outbox, Priority

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (tmp_path / f"outbox.sqlite3{suffix}").symlink_to(victim)
    with contextlib.suppress(sqlite3.OperationalError, OSError):  # refusing to open is fine
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        for index in range(20):
            outbox.put("s3", "checkpoint", f"k{index}", b"x" * 1000, priority=Priority.ESSENTIAL)
        outbox.close()
    assert victim.read_bytes() == b"precious\n"
