"""The exec target under a real daemon process (local backend): foreign JSON-lines binaries,
exit-status simulators, one alert per cause, replays, refusals, leaked children, the environment,
and the shipped examples."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_daemon_e2e import ROOT, checkpoint, env_with, events, run, start, voprd, wait_for
from tests.test_exec_target import FAKE_SIM, FAKE_VOPR, wait_gone
from voprd import procs
from voprd.core.records import FailureRecord, read_failure

TINY_VOPR = str(ROOT / "examples" / "exec-json-lines" / "tiny_vopr.py")
TINY_SIM = str(ROOT / "examples" / "exec-exit-code" / "tiny_sim.sh")


def iterations(stdout: bytes) -> dict[int, dict[str, object]]:
    """The daemon's iteration events by seed, asserting each seed is reported exactly once."""
    by_seed: dict[int, dict[str, object]] = {}
    for kind, data in events(stdout):
        if kind == "iteration":
            seed = int(data["seed"])  # type: ignore[call-overload]
            assert seed not in by_seed, f"seed {seed} reported twice"
            by_seed[seed] = data
    return by_seed


def alerts(state: Path) -> list[str]:
    """alerts.log split into alerts (each starts with its Subject line)."""
    text = (state / "alerts.log").read_text()
    return ["Subject:" + part for part in text.split("Subject:")[1:]]


def archived(state: Path) -> list[FailureRecord]:
    return [read_failure(path.read_bytes()) for path in sorted((state / "failures").glob("*.json"))]


def replay(reproduce: str) -> subprocess.CompletedProcess[bytes]:
    words = shlex.split(reproduce)
    assert words[0] == "voprd"
    return subprocess.run(voprd(*words[1:]), cwd=ROOT, env=env_with(), capture_output=True,
                          timeout=120)


def test_twenty_seeds_failing_one_foreign_assertion_give_one_alert(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run(state, "--target", "exec", "--exec", f"{FAKE_VOPR} --minimal --fail-all",
               "-n", "20", "--workers", "2", "--batch-size", "5", "--json")
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    seen = iterations(done.stdout)
    assert sorted(seen) == list(range(20))
    assert all(data["invariant"] == "linearizability" for data in seen.values())
    sent = alerts(state)
    violations = [alert for alert in sent if "Invariant Violation" in alert]
    assert len(violations) == 1, sent
    assert "Invariant: linearizability" in violations[0]
    digests = [alert for alert in sent if "Digest" in alert]
    assert len(digests) == 1 and "19 repeat(s)" in digests[0]
    assert len({record.fingerprint for record in archived(state)}) == 1


def test_minimal_noisy_binary_aborting_mid_batch_every_seed_once_one_alert_per_cause(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    command = f"{FAKE_VOPR} --minimal --hostile --abort-at 13"
    done = run(state, "--target", "exec", "--exec", command, "-n", "30", "--workers", "2",
               "--batch-size", "10", "--json", timeout_s=120)
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    seen = iterations(done.stdout)
    assert sorted(seen) == list(range(30)), "every seed accounted for, once"
    failed = {seed: data for seed, data in seen.items() if data["status"] == "failed"}
    assert set(failed) == {4, 13, 14, 24}
    assert all(failed[seed]["invariant"] == "agreement" for seed in (4, 14, 24))
    assert failed[13]["kind"] == "crash" and "SIGABRT" in str(failed[13]["message"])
    assert checkpoint(state).total_iterations == 30
    violations = [alert for alert in alerts(state) if "Invariant Violation" in alert]
    assert len(violations) == 2, violations  # agreement, and the abort
    assert {record.seed for record in archived(state)} == {4, 13, 14, 24}


def test_exit_code_simulator_failures_and_signal_crashes_one_alert_per_cause(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    done = run(state, "--target", "exec", "--exec-protocol", "exit-code",
               "--exec", f"{FAKE_SIM} {{seed}}", "-n", "40", "--workers", "2", "--json",
               timeout_s=120)
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    seen = iterations(done.stdout)
    assert sorted(seen) == list(range(40))
    failed = {seed: data for seed, data in seen.items() if data["status"] == "failed"}
    assert set(failed) == {3, 7, 13, 17, 23, 27, 33, 37}
    for seed in (3, 13, 23, 33):
        assert (failed[seed]["kind"], failed[seed]["invariant"]) == ("invariant", "exit code 1")
        assert f"balance {-seed} < 0" in str(failed[seed]["message"])
    for seed in (7, 17, 27, 37):
        assert failed[seed]["kind"] == "crash"
        assert str(failed[seed]["message"]).startswith("killed by signal SIGABRT")
    violations = [alert for alert in alerts(state) if "Invariant Violation" in alert]
    assert len(violations) == 2, violations
    records = {record.seed: record for record in archived(state)}
    assert set(records) == set(failed)
    reproduce = records[13].reproduce
    assert "--exec-protocol exit-code" in reproduce and "{seed}" in reproduce
    # The reproduce line replays the seed: the binary's output verbatim, exit 1, the line again.
    replayed = replay(reproduce)
    out = replayed.stdout.decode()
    assert replayed.returncode == 1, replayed.stderr.decode()
    assert "assertion failed: balance -13 < 0 in /tmp/run-13/ledger.c:53 after 13ms\n" in out
    assert f"reproduce: {reproduce}" in out
    crashed = replay(records[17].reproduce)
    assert crashed.returncode == 1 and "journal checksum mismatch at offset 69632" in (
        crashed.stdout.decode())
    assert "kind=crash" in crashed.stdout.decode()
    passing = replay(records[13].reproduce.replace("--seed 13", "--seed 12"))
    assert passing.returncode == 0 and "seed 12: ok" in passing.stdout.decode()


def test_the_protocol_is_part_of_the_run_fingerprint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    command = f"{FAKE_SIM} {{seed}}"
    first = run(state, "--target", "exec", "--exec", command, "--exec-protocol", "exit-code",
                "-n", "2", "--workers", "1")
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    other = run(state, "--target", "exec", "--exec", command, "-n", "2", "--workers", "1")
    assert other.returncode == 2
    assert "exec_protocol: 'exit-code' -> 'json-lines'" in other.stderr.decode()
    env = run(state, "--target", "exec", "--exec", command, "--exec-protocol", "exit-code",
              "--exec-env", "HOSTNAME", "-n", "2", "--workers", "1")
    assert env.returncode == 2 and "exec_env: () -> ('HOSTNAME',)" in env.stderr.decode()


@pytest.mark.parametrize("args, says", [
    (["--exec", ""], "argument --exec: must not be empty"),
    ([], "argument --target: 'exec' needs --exec CMD"),
    (["--exec", "no-such-simulator-xyz --json"], "--exec: program 'no-such-simulator-xyz' not "
                                                  "found on PATH"),
    (["--exec", "{tmp}/not-executable"], "--exec: '{tmp}/not-executable' is not an executable "
                                          "file"),
    (["--exec", "{tmp}"], "is not an executable file"),
    (["--exec", "sh {sed}"], "--exec: unknown placeholder {sed}"),
    (["--exec", "sh {seed"], "--exec: bad braces"),
    (["--exec", "sh 'open"], "argument --exec: not a command line"),
    (["--exec", "sh", "--exec-protocol", "exit-code"], "--exec: with --exec-protocol exit-code"),
    (["--exec", "sh", "--exec-env", "A=1"], "--exec-env"),
])
@pytest.mark.parametrize("once", [False, True])
def test_commands_that_cannot_work_are_refused_at_start(tmp_path: Path, args: list[str],
                                                        says: str, once: bool) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    says = says.replace("{tmp}", str(tmp_path))
    if once:  # a replay keeps no state: --state-dir is refused there
        done = subprocess.run(voprd("--once", "--seed", "3", "--target", "exec", *args),
                              cwd=ROOT, env=env_with(), capture_output=True, timeout=60)
    else:
        done = run(tmp_path / "state", "--target", "exec", "-n", "5", *args)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert says in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "state" / "failures").exists()


def test_once_replays_a_json_lines_binary_showing_its_output_verbatim(tmp_path: Path) -> None:
    base = ["--target", "exec", "--exec"]
    failing = subprocess.run(voprd("--once", "--seed", "4", *base, FAKE_VOPR, "-v"), cwd=ROOT,
                             env=env_with(), capture_output=True, timeout=60)
    out = failing.stdout.decode()
    assert failing.returncode == 1, failing.stderr.decode()
    assert out.startswith("fake vopr starting; this line is not JSON\n")
    assert "seed 4: verbose trace line\n" in out  # -v appended to the classic arguments
    assert "garbage after seed 4\n" in out
    assert "kind=invariant invariant=agreement\nmessage: op 4 diverged\n" in out
    assert "reproduce: voprd --once --seed 4 --target exec --exec" in out
    templated = f"{FAKE_SIM} {{seed}} --verbose-word={{verbose}}"
    shown = subprocess.run(
        voprd("--once", "--seed", "2", *base, templated, "--exec-protocol", "exit-code", "-v"),
        cwd=ROOT, env=env_with(), capture_output=True, timeout=60)
    assert shown.returncode == 0 and "verbose=-v\n" in shown.stdout.decode()
    as_json = subprocess.run(voprd("--once", "--seed", "4", *base, FAKE_VOPR, "--json"),
                             cwd=ROOT, env=env_with(), capture_output=True, timeout=60)
    assert as_json.returncode == 1
    (kind, data), = events(as_json.stdout)  # stdout: voprd's own line; the binary's on stderr
    assert kind == "iteration" and data["invariant"] == "agreement" and data["events"] == 4
    assert "garbage after seed 4" in as_json.stderr.decode()


def test_the_child_environment_is_minimal_under_the_daemon(tmp_path: Path) -> None:
    state, dump = tmp_path / "state", tmp_path / "dump"
    dump.mkdir()
    env = env_with(AWS_SECRET_ACCESS_KEY="do-not-leak", AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
                   VOPRD_SNS_TOPIC_ARN="arn:aws:sns:us-east-1:123456789012:t",
                   MY_LICENSE="licensed")
    done = run(state, "--target", "exec", "--exec-protocol", "exit-code", "--exec",
               f"{FAKE_SIM} {{seed}} --env-dump {dump}", "--exec-env", "MY_LICENSE",
               "-n", "2", "--workers", "1", env=env)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for seed in (0, 1):
        child = json.loads((dump / f"env-{seed}.json").read_text())["environ"]
        assert set(child) - {"LC_CTYPE"} <= {
            "PATH", "HOME", "LANG", "TMPDIR", "VOPRD_STATE_DIR", "MY_LICENSE"}, child
        assert child["MY_LICENSE"] == "licensed"
        assert child["VOPRD_STATE_DIR"] != str(state)


# --- children do not outlive their seed ---------------------------------------------------------


def spawned(directory: Path) -> list[int]:
    return [int(path.name) for path in directory.iterdir() if path.name.isdigit()]


def test_no_grandchild_survives_batch_end_even_one_in_its_own_session(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    done = run(tmp_path / "state", "--target", "exec", "--exec-protocol", "exit-code",
               "--exec", f"{FAKE_SIM} {{seed}} --grandchild {marks} --setsid", "-n", "2",
               "--workers", "1")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    batch = tmp_path / "batch"
    batch.mkdir()
    done = run(tmp_path / "state2", "--target", "exec", "--exec",
               f"{FAKE_VOPR} --grandchild {batch}", "-n", "3", "--workers", "1")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    pids = spawned(marks) + spawned(batch)
    # 2 x (sim + a grandchild in a session of its own), 1 grandchild of the JSON-lines binary
    assert len(pids) == 5
    assert wait_gone(pids) == []


def test_a_seed_timeout_kills_the_external_run_and_its_grandchild(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    done = run(tmp_path / "state", "--target", "exec", "--exec-protocol", "exit-code",
               "--exec", f"{FAKE_SIM} {{seed}} --grandchild {marks} --hang", "-n", "1",
               "--workers", "1", "--seed-timeout", "2", "--json", timeout_s=120)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    (data,) = iterations(done.stdout).values()
    assert data["kind"] == "timeout"
    pids = spawned(marks)
    assert len(pids) == 2 and wait_gone(pids) == []


def _started_external_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = start(tmp_path / "state", "--target", "exec", "--exec-protocol", "exit-code",
                 "--exec", f"{FAKE_SIM} {{seed}} --grandchild {marks} --hang", "-n", "1",
                 "--workers", "1", "--seed-timeout", "600", *extra, capture=False)
    wait_for(lambda: len(list(marks.iterdir())) == 3, timeout_s=60)
    return proc, marks


def test_sigterm_drain_leaves_no_external_process(tmp_path: Path) -> None:
    proc, marks = _started_external_run(tmp_path, "--drain-timeout", "1")
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    pids = spawned(marks)
    assert len(pids) == 2 and wait_gone(pids) == []
    assert checkpoint(tmp_path / "state").total_iterations == 0  # abandoned, runs again later


def test_a_sigkilled_worker_leaves_no_external_process(tmp_path: Path) -> None:
    proc, marks = _started_external_run(tmp_path, "--json")
    try:
        (worker,) = [int(path.name.split("-")[1]) for path in marks.iterdir()
                     if path.name.startswith("parent-")]
        assert procs.is_running(worker)
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=60) == 1  # seed 0 recorded as a crash, the run is over
    finally:
        proc.kill()
    pids = spawned(marks)
    assert len(pids) == 2 and wait_gone(pids) == []


# --- the shipped examples -----------------------------------------------------------------------


def _direct_json_failures(first: int, count: int) -> set[int]:
    out = subprocess.run([sys.executable, TINY_VOPR, "--json", "--seed", str(first), "-n",
                          str(count)], capture_output=True, check=False, timeout=120).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    return {line["data"]["seed"] for line in lines
            if line["type"] == "iteration" and line["data"]["status"] != "ok"}


def test_example_json_lines_vopr_under_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run(state, "--target", "exec", "--exec", TINY_VOPR, "-n", "300", "--workers", "2",
               "--json", timeout_s=180)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    seen = iterations(done.stdout)
    failed = {seed for seed, data in seen.items() if data["status"] == "failed"}
    assert sorted(seen) == list(range(300))
    assert failed == _direct_json_failures(0, 300) and len(failed) >= 5
    assert all(seen[seed]["invariant"] == "durability" for seed in failed)
    violations = [alert for alert in alerts(state) if "Invariant Violation" in alert]
    assert len(violations) == 1
    record = archived(state)[0]
    replayed = replay(record.reproduce)
    assert replayed.returncode == 1 and "invariant=durability" in replayed.stdout.decode()
    assert "takes over" in replayed.stdout.decode() + replayed.stderr.decode()  # -v trace


def test_example_exit_code_simulator_under_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run(state, "--target", "exec", "--exec-protocol", "exit-code",
               "--exec", f"{TINY_SIM} {{seed}} {{verbose}}", "-n", "200", "--workers", "2",
               "--json", timeout_s=180)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    seen = iterations(done.stdout)
    assert sorted(seen) == list(range(200))
    direct = {seed: subprocess.run([TINY_SIM, str(seed)], capture_output=True,
                                   check=False).returncode for seed in range(200)}
    assert {s for s, data in seen.items() if data["status"] == "failed"} == {
        s for s, code in direct.items() if code != 0}
    aborted = {s for s, code in direct.items() if code == -signal.SIGABRT}
    assert aborted, "the example's abort path is planted on some of the first 200 seeds"
    assert all(seen[s]["kind"] == "crash" for s in aborted)
    assert all(seen[s]["invariant"] == "exit code 1" for s, code in direct.items() if code == 1)
    violations = [alert for alert in alerts(state) if "Invariant Violation" in alert]
    assert len(violations) == 2, violations
    record = next(r for r in archived(state) if r.kind == "invariant")
    replayed = replay(record.reproduce)
    assert replayed.returncode == 1 and "assertion failed: account" in replayed.stdout.decode()
    assert " pays " in replayed.stdout.decode()  # {verbose} became -v: the narration
