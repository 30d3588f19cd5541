"""The linearizability checker wired into the simulator, `--history-file` through `voprd lincheck`,
and `voprd selftest`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voprd.options import RunOptions
from voprd.sim import linearizability
from voprd.sim.run import simulate
from voprd.systems.vsr import VSR

ROOT = Path(__file__).resolve().parent.parent
SEED_BUDGET = 40
# Bugs only the history shows: no replica invariant can see them.
CHECKER_ONLY_BUGS = ("backup_serves_reads", "no_client_table")


def voprd(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voprd", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout_s,
    )


def first_failing_seed(bug: str) -> int:
    for seed in range(SEED_BUDGET):
        if simulate(seed, RunOptions(bugs=(bug,)), VSR).result.status == "failed":
            return seed
    raise AssertionError(f"{bug} survived {SEED_BUDGET} seeds")


def test_every_passing_seed_history_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[int] = []
    real = linearizability.check_linearizability

    def counting(history: list[object], model: object) -> tuple[str, str] | None:
        checked.append(len(history))
        return real(history, model)  # type: ignore[arg-type]

    from voprd.sim import run
    monkeypatch.setattr(run, "HISTORY_CHECKS", [counting])
    for seed in range(3):
        assert simulate(seed, RunOptions(), VSR).result.status == "ok"
    assert len(checked) == 3 and all(n > 0 for n in checked)


def test_unknown_verdict_is_reported_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a budget of one step no real history can be decided: it must not count as a pass.
    monkeypatch.setattr(linearizability, "LINEARIZABILITY_STEPS_MAX", 1)
    result = simulate(0, RunOptions(), VSR).result
    assert result.status == "failed" and result.kind == "invariant"
    assert result.invariant == "linearizability_unknown"
    assert result.message is not None and "budget of 1 steps" in result.message
    assert result.history, "the undecided history is kept with the failure"


@pytest.mark.parametrize("bug", CHECKER_ONLY_BUGS)
def test_checker_only_bugs_are_caught_by_linearizability(bug: str) -> None:
    seed = first_failing_seed(bug)
    result = simulate(seed, RunOptions(bugs=(bug,)), VSR).result
    assert result.invariant == "linearizability", result.message
    assert result.message and "not linearizable" in result.message
    # The verdict is a function of the seed: the same seed, run again, fails the same way.
    again = simulate(seed, RunOptions(bugs=(bug,)), VSR).result
    assert (again.trace_hash, again.message) == (result.trace_hash, result.message)
    assert simulate(seed, RunOptions(), VSR).result.status == "ok"


def test_history_file_round_trips_through_lincheck(tmp_path: Path) -> None:
    bug = "backup_serves_reads"
    seed = first_failing_seed(bug)
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    once = voprd("--once", "--seed", str(seed), "--bug", bug, "--history-file", str(bad))
    assert once.returncode == 1, once.stdout + once.stderr
    assert "linearizability" in once.stdout
    once = voprd("--once", "--seed", str(seed), "--history-file", str(good))
    assert once.returncode == 0, once.stdout + once.stderr

    check = voprd("lincheck", "--json", str(bad), str(good))
    assert check.returncode == 1, check.stdout + check.stderr
    verdicts = {Path(v["file"]).name: v for v in map(json.loads, check.stdout.splitlines())}
    assert verdicts["bad.jsonl"]["verdict"] == "not_linearizable"
    assert verdicts["good.jsonl"]["verdict"] == "linearizable"
    assert verdicts["good.jsonl"]["ops"] == len(good.read_text().splitlines())
    assert voprd("lincheck", str(good)).returncode == 0


def test_selftest_catches_a_subset_of_bugs() -> None:
    proc = voprd("selftest", "--seeds", "30", "--json", "--bug", "ack_before_fsync",
                 "--bug", "start_view_commit_regress", *(f"--bug={b}" for b in CHECKER_ONLY_BUGS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    by_bug = {b["bug"]: b for b in report["bugs"]}
    assert list(by_bug) == ["ack_before_fsync", "start_view_commit_regress", *CHECKER_ONLY_BUGS]
    for bug in CHECKER_ONLY_BUGS:
        assert by_bug[bug]["invariant"] == "linearizability"
    assert by_bug["start_view_commit_regress"]["invariant"] == "commit_monotonic"
    for entry in report["bugs"]:
        assert entry["caught"] and entry["clean_passes"]
        assert entry["seeds_run"] == entry["seed"] + 1
        assert f"--seed {entry['seed']}" in entry["reproduce"]
    assert report["all_caught"] is True
    assert {"linearizability", "commit_monotonic"} <= set(report["invariants"])


def test_selftest_trials_hunt_from_fresh_seeds_and_give_median_and_worst() -> None:
    proc = voprd("selftest", "--seeds", "40", "--trials", "3", "--json",
                 "--bug", "ack_before_fsync")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["bugs"]
    trials = entry["trials"]
    assert len(trials) == 3 and all(t is None or 1 <= t <= 40 for t in trials)
    assert trials[0] == entry["seeds_run"] == 1  # the first trial (from seed 0) is reported
    counted = sorted(40 if t is None else t for t in trials)  # a survived trial counts 40
    assert entry["median_seeds_to_detection"] == counted[1]
    assert entry["worst_seeds_to_detection"] == counted[2]
    text = voprd("selftest", "--seeds", "40", "--trials", "2", "--bug", "ack_before_fsync").stdout
    assert "trials: median" in text and "worst" in text


def test_selftest_fails_when_a_bug_survives_its_budget() -> None:
    # recovery_any_response needs a damaged restart: seed 0 alone does not catch it.
    proc = voprd("selftest", "--seeds", "1", "--bug", "recovery_any_response")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "recovery_any_response" in proc.stdout and "SURVIVED" in proc.stdout
    assert "seeds run 1" in proc.stdout


def test_selftest_rejects_an_unknown_bug() -> None:
    proc = voprd("selftest", "--bug", "bogus")
    assert proc.returncode == 2
    assert "--bug" in proc.stderr and "bogus" in proc.stderr
