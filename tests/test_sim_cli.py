"""`voprd --once`: output, -v trace, trace/history files, determinism check, bad arguments."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from voprd.check.history import HistoryOp
from voprd.options import RunOptions, reproduce_command
from voprd.sim.run import run_seed, simulate
from voprd.systems.vsr import VSR
from voprd.systems.vsr.bugs import BUGS

ROOT = Path(__file__).resolve().parent.parent


def voprd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voprd", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["-n", "-3"], "-n"),
        (["--seed", "abc"], "--seed"),
        (["--faults", "bogus"], "--faults"),
        (["--max-events", "0"], "--max-events"),
        (["--once", "--seed", "1", "--bug", "bogus"], "--bug"),
        # Replay-only flags are refused by the daemon rather than silently ignored.
        (["-n", "1", "--report", "r.html"], "--report"),
        (["-n", "1", "--trace-file", "t.txt"], "--trace-file"),
        (["-n", "1", "-v"], "-v"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    proc = voprd(*args)
    assert proc.returncode == 2
    assert flag in proc.stderr


def test_once_prints_the_outcome() -> None:
    proc = voprd("--once", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    expected, _ = run_seed(3, RunOptions(), VSR)
    assert proc.stdout.strip() == (
        f"seed 3: ok events={expected.events} simulated_time_ms={expected.simulated_time_ms} "
        f"trace_hash={expected.trace_hash}"
    )


def test_verbose_trace_and_trace_file_agree(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.txt"
    proc = voprd("--once", "--seed", "3", "-v", "--trace-file", str(trace_file))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("environment: replicas=")
    # The injected faults by kind, as the run counted them.
    counts = simulate(3, RunOptions(), VSR).fault_counts
    assert counts and lines[1] == "faults: " + " ".join(f"{k}={v}" for k, v in counts.items())
    assert lines[-2].startswith("coverage: ")  # the protocol paths the seed exercised
    trace_lines = trace_file.read_text().splitlines()
    assert lines[2:-2] == trace_lines
    text = "\n".join(trace_lines)
    for kind in ("deliver", "commit", "call", "return", "phase"):
        assert f" {kind}" in text, kind
    assert "<- c" in text and "prepare_ok" in text


def test_history_file_is_voprd_history_format(tmp_path: Path) -> None:
    history_file = tmp_path / "history.jsonl"
    proc = voprd("--once", "--seed", "4", "--history-file", str(history_file))
    assert proc.returncode == 0, proc.stderr
    decoder = msgspec.json.Decoder(HistoryOp)
    ops = [decoder.decode(line) for line in history_file.read_bytes().splitlines()]
    assert ops and all(op.op in ("get", "put", "append", "cas") for op in ops)
    assert all(op.return_us is None or op.return_us >= op.call_us for op in ops)


def test_json_output_and_check_determinism() -> None:
    proc = voprd("--once", "--seed", "6", "--json", "--check-determinism")
    assert proc.returncode == 0, proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["type"] == "iteration" and envelope["timestamp"].endswith("Z")
    data = envelope["data"]
    assert data["seed"] == 6 and data["status"] == "ok" and data["events"] > 0
    assert set(data) == {"seed", "status", "events", "simulated_time_ms", "trace_hash"}


def test_failing_seed_exits_1_with_a_reproduce_command_that_replays_it() -> None:
    bug = "view_change_own_log"
    failing = next(
        seed for seed in range(60)
        if run_seed(seed, RunOptions(bugs=(bug,)), VSR)[0].status == "failed"
    )
    proc = voprd("--once", "--seed", str(failing), "--bug", bug, "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)["data"]
    assert data["status"] == "failed" and data["kind"] == "invariant" and data["invariant"]
    words = shlex.split(data["reproduce"])
    assert words[:4] == ["voprd", "--once", "--seed", str(failing)]
    assert ["--bug", bug] == words[4:6]
    replay = voprd(*words[1:], "--json")
    assert replay.returncode == 1
    assert json.loads(replay.stdout)["data"]["trace_hash"] == data["trace_hash"]


def test_list_bugs() -> None:
    proc = voprd("--list-bugs")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == len(BUGS) >= 6
    assert [line.split()[0] for line in lines] == list(BUGS)


def test_json_reports_the_bounds_a_seed_reached() -> None:
    # 100 events: the safety phase uses its share (75) and the liveness phase cannot converge in
    # the other 25: both bounds are reported, and the second one is the verdict.
    proc = voprd("--once", "--seed", "5", "--max-events", "100", "--json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert data["bounds_reached"] == ["safety_events_limit", "max_events"], data
    assert (data["status"], data["kind"], data["invariant"]) == ("failed", "liveness", "liveness")
    assert "bound max_events reached" in data["message"], data


def test_reproduce_names_check_determinism() -> None:
    command = reproduce_command(9, RunOptions(check_determinism=True))
    assert "--check-determinism" in shlex.split(command)
