"""The daemon with the builtin simulator: each failure's HTML report archived beside its record
and named in the alert; `--bug` validated at start; bounds reached surfaced."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from tests.aws_fixtures import ROOT, AwsWorld, boto, sns_messages
from tests.aws_fixtures import daemon_env as aws_daemon_env
from tests.test_daemon_e2e import checkpoint, env_with, events, start, wait_for
from voprd.core.coverage import BoundTally
from voprd.core.records import read_failure
from voprd.events import StatusData
from voprd.options import RunOptions
from voprd.service.status_cli import render
from voprd.sim.faults import SWARM_FAMILIES, is_focus_seed, seed_focus
from voprd.sim.run import run_seed
from voprd.systems.vsr import VSR

BUG = "ack_before_fsync"  # every seed fails at its first vote (durability): the runs use seed 0
REPORT_WINDOW_S = 120


def read_status(data: bytes) -> StatusData:
    return msgspec.json.decode(data, type=StatusData)


def run_daemon(state: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voprd", "--state-dir", str(state), "--seed", "0", "-n", "1",
         "--workers", "2", "--bug", BUG, *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_local_report_beside_the_record_and_named_in_the_alert(tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = run_daemon(state, env_with())
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    records = sorted((state / "failures").glob("seed-*.json"))
    assert [read_failure(p.read_bytes()).seed for p in records] == [0]
    record = records[0]
    report = record.with_suffix(".html")
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "durability" in html and f"--bug {BUG}" in html  # the failure and how to reproduce it
    assert len(html.encode()) <= 5 * 1024 * 1024
    alerts = (state / "alerts.log").read_text()
    assert re.search(
        rf"Seed: 0\nInvariant: durability\n.*\nReproduce: voprd --once --seed 0 .*--bug {BUG}.*\n"
        rf"---\nInstance: .+\nTimestamp: .+\nArchive: {re.escape(str(record))}\n"
        rf"Report: {re.escape(str(report))} \(being rendered\)\n", alerts,
    ), alerts


def test_aws_report_in_s3_beside_the_record_and_named_in_the_alert(
    aws: AwsWorld, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # With a bucket and no run name the daemon runs alone, in the guide's layout: the failure
    # is archived and alerted as its result arrives (the alert names the report it is
    # rendering), and a bounded run with failures exits 1.
    done = run_daemon(state, aws_daemon_env(aws, None))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    s3 = boto("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(
        Bucket=aws.bucket, Prefix="failures/")["Contents"])
    assert len(keys) == 2 and keys[0].endswith(".html") and keys[1].endswith(".json")
    assert keys[0].removesuffix(".html") == keys[1].removesuffix(".json")
    assert re.fullmatch(r"failures/seed-0-\d+\.html", keys[0])
    page = s3.get_object(Bucket=aws.bucket, Key=keys[0])
    assert page["ContentType"].startswith("text/html")
    body = page["Body"].read()
    assert body == (state / keys[0]).read_bytes()  # the local copy beside the local record
    message = sns_messages(aws, expected=1)[0]["Message"]
    assert (f"Archive: s3://{aws.bucket}/{keys[1]}\n"
            f"Report: s3://{aws.bucket}/{keys[0]} (being rendered)\n") in message


def test_a_new_run_alerts_its_failures_again(aws: AwsWorld, tmp_path: Path) -> None:
    """Alerts carry a once key so that a crash re-run does not e-mail twice; the key holds the
    run's id, so the same failure in a new run of the same state dir (a new fleet run and
    `--reset`, which forgets the known fingerprints) is alerted again, not taken for a repeat
    by the outbox's sent-ledger (which outlives runs)."""
    state = tmp_path / "state"
    env = aws_daemon_env(aws, None)
    for extra in (("--run", "first"), ("--run", "second", "--reset")):
        done = run_daemon(state, env, *extra)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    messages = [m["Message"] for m in sns_messages(aws, expected=2)]
    assert len(messages) == 2 and all("Seed: 0\nInvariant: durability" in m for m in messages)


def test_a_failing_report_loses_neither_the_record_nor_the_alert(tmp_path: Path) -> None:
    # A directory where the report file should go (for every second the failure could be
    # stamped with) makes archiving the report fail for real, after it was rendered.
    state = tmp_path / "state"
    now = int(time.time())
    for unix_ts in range(now, now + REPORT_WINDOW_S):
        (state / "failures" / f"seed-0-{unix_ts}.html").mkdir(parents=True)
    done = run_daemon(state, env_with())
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    records = sorted((state / "failures").glob("seed-*.json"))
    assert [read_failure(p.read_bytes()).seed for p in records] == [0]
    assert "report for seed 0 failed" in done.stdout and "IsADirectoryError" in done.stdout
    alerts = (state / "alerts.log").read_text()
    # The alert went out before the report was rendered: it says so, and names where the
    # report would have been; the archived record and the alert are there all the same.
    report = records[0].with_suffix(".html")
    assert f"Archive: {records[0]}\nReport: {report} (being rendered)\n" in alerts
    assert report.is_dir()  # the obstacle: no report file was written


def test_unknown_bug_is_refused_at_start_naming_the_flag(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voprd", "--state-dir", str(tmp_path / "s"), "-n", "1",
         "--bug", "bogus"], cwd=ROOT, env=env_with(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "--bug" in done.stderr and "bogus" in done.stderr
    assert not (tmp_path / "s" / "checkpoint.json").exists()


def test_bounds_reached_recurring_and_coverage_in_iterations_and_status(tmp_path: Path) -> None:
    # 3,000 events and no faults: many of seeds 0..39 use up the safety phase's share (2,250),
    # are healed and pass (a bound in the safety phase is reported, not a failure); what the
    # daemon reports must be what those seeds do, counted per configuration.
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "voprd", "--state-dir", str(state), "-n", "40", "--workers", "2",
         "--faults", "none", "--max-events", "3000", "--json"],
        cwd=ROOT, env=env_with(), capture_output=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    expected = BoundTally()
    expected_limited = []
    for seed in range(40):
        result, _ = run_seed(seed, RunOptions(faults=(), max_events=3000), VSR)
        expected.observe(seed, result.config, result.bounds_reached)
        if result.bounds_reached:
            expected_limited.append(seed)
    recurring_expected = [(row.config, row.seeds) for row in expected.recurring()]
    assert len(expected_limited) >= 6 and recurring_expected  # else this would prove nothing
    iterations = [data for kind, data in events(done.stdout) if kind == "iteration"]
    assert len(iterations) == 40 and all(data["status"] == "ok" for data in iterations)
    limited = [data for data in iterations if data.get("bounds_reached")]
    assert sorted(int(data["seed"]) for data in limited) == expected_limited  # type: ignore[call-overload]
    assert all(data["bounds_reached"] == ["safety_events_limit"] for data in limited)
    assert not any("focus" in data for data in iterations)  # a bounded run has no focus seeds
    status = read_status((state / "status.json").read_bytes())
    assert status.bounds_reached == {"safety_events_limit": len(expected_limited)}
    assert [(row.config, row.seeds) for row in status.bounds_recurring] == recurring_expected
    assert status.coverage is not None and status.coverage.seeds == 40
    assert status.coverage.focus_seeds == 0 and status.coverage.paths["repair"] > 0
    text = render(status)
    assert f"safety_events_limit {len(expected_limited)}" in text
    first = status.bounds_recurring[0]
    assert (f"recurring: safety_events_limit in {first.seeds} of {first.config_seeds} seeds of "
            f"{first.config}") in text
    assert "coverage (seeds per path, of 40):" in text


def test_an_unbounded_run_adds_focus_seeds_outside_its_exact_progress(tmp_path: Path) -> None:
    """Focus seeds (one after every 2 seeds here) run, are reported and reproduce from their
    number alone; the checkpoint holds exactly the run's own seeds."""
    state = tmp_path / "state"
    proc = start(state, "--workers", "1", "--focus-every", "2", "--json", "--drain-timeout", "30")
    try:
        wait_for(lambda: (state / "checkpoint.json").exists()
                 and checkpoint(state).total_iterations >= 12, timeout_s=300)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    iterations = [data for kind, data in events(out) if kind == "iteration"]
    focus = [data for data in iterations if "focus" in data]
    own = {int(data["seed"]) for data in iterations if "focus" not in data}  # type: ignore[call-overload]
    assert len(focus) >= 5
    for data in focus:
        seed = int(data["seed"])  # type: ignore[call-overload]
        assert is_focus_seed(seed) and seed_focus(seed) == data["focus"]
    cp = checkpoint(state)
    assert set(range(cp.watermark)) | set(cp.done_above) == own
    status = read_status((state / "status.json").read_bytes())
    assert status.coverage is not None and status.coverage.focus_seeds == len(focus)
    assert status.coverage.seeds == len(iterations)
    assert {arm.family for arm in status.coverage.focus_arms} == set(SWARM_FAMILIES)
    assert "focus seeds:" in render(status)
    replay = subprocess.run(
        [sys.executable, "-m", "voprd", "--once", "--seed", str(focus[0]["seed"]), "--json"],
        cwd=ROOT, env=env_with(), capture_output=True, timeout=120,
    )
    replayed = next(data for kind, data in events(replay.stdout) if kind == "iteration")
    assert (replayed["trace_hash"], replayed["events"]) == (
        focus[0]["trace_hash"], focus[0]["events"])
