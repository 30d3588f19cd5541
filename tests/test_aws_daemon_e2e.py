"""The AWS backend end to end: a real `python -m voprd` daemon process against moto and a fake IMDS.

The daemon runs the deterministic test target tests.targets_for_tests:Flaky (seed % 7 == 6 fails
the `agreement` invariant) in 2 worker processes; everything it sends to AWS is read back with
boto3 from the moto server.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.aws_fixtures import (
    ROOT,
    AwsWorld,
    boto,
    latest_checkpoint_versions,
    log_messages,
    sns_messages,
    wait_for_new_checkpoint,
)
from tests.aws_fixtures import daemon_env as shared_daemon_env
from tests.fake_imds import FakeImds
from voprd.core.records import read_checkpoint

TARGET = "tests.targets_for_tests:Flaky"


def daemon_env(
    aws: AwsWorld, tmp_path: Path, imds: FakeImds | None, **extra: str
) -> dict[str, str]:
    knobs = {"VOPRD_TEST_RUN_LOG": str(tmp_path / "runs.log"), "VOPRD_TEST_WORK_MS": "2"}
    return shared_daemon_env(aws, imds.url if imds else None, **{**knobs, **extra})


def voprd(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    # stdout (a log line per event, one per failed seed) is not read: a pipe nobody drains would
    # fill and block the daemon's loop. The tests read CloudWatch and S3; stderr is kept.
    return subprocess.Popen(
        [sys.executable, "-m", "voprd", "--workers", "2", "--target", TARGET, "--no-fleet",
         *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs,
    )


def s3_checkpoint() -> Any:
    body = boto("s3").get_object(Bucket="vopr-test-bucket", Key="checkpoints/latest.json")
    return read_checkpoint(body["Body"].read())


def metric_total(name: str) -> float:
    now = _dt.datetime.now(_dt.UTC)
    answer = boto("cloudwatch").get_metric_statistics(
        Namespace="VOPR", MetricName=name, StartTime=now - _dt.timedelta(hours=1),
        EndTime=now + _dt.timedelta(hours=1), Period=60, Statistics=["Sum"],
    )
    return float(sum(point["Sum"] for point in answer["Datapoints"]))


def test_bounded_run_then_fresh_instance_resumes_from_s3(aws: AwsWorld, tmp_path: Path) -> None:
    env = daemon_env(aws, tmp_path, None, VOPRD_INSTANCE="i-first")
    first = voprd(["--seed", "0", "-n", "60", "--state-dir", str(tmp_path / "a")], env)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err.decode()[-3000:]  # a bounded run with failures exits 1

    checkpoint = s3_checkpoint()
    failed = [seed for seed in range(60) if seed % 7 == 6]
    assert (checkpoint.total_iterations, checkpoint.watermark) == (60, 60)
    assert checkpoint.total_failures == len(failed) and sorted(checkpoint.failed_seeds) == failed
    keys = [o["Key"] for o in boto("s3").list_objects_v2(
        Bucket=aws.bucket, Prefix="failures/")["Contents"]]
    assert sorted(int(key.split("-")[1]) for key in keys) == failed
    record = json.loads(boto("s3").get_object(Bucket=aws.bucket, Key=keys[0])["Body"].read())
    assert record["reproduce"].startswith("voprd --once --seed ")
    today = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    daily = boto("s3").get_object(Bucket=aws.bucket, Key=f"checkpoints/daily/{today}.json")
    assert read_checkpoint(daily["Body"].read()).total_iterations == 60

    # One fingerprint: one alert for the first failure, then a digest of the repeats.
    notifications = sns_messages(aws, expected=1)
    first_alert = notifications[0]
    lines = first_alert["Message"].splitlines()
    assert first_alert["Subject"] == "VOPR: 1 Invariant Violation(s) Detected"
    assert lines[0] == "VOPR detected 1 invariant violation(s) in batch starting at seed 6." or (
        lines[0].startswith("VOPR detected 1 invariant violation(s) in batch starting at seed ")
    )
    assert "Seed: 6" in lines and "Invariant: agreement" in lines
    reproduce = [line for line in lines if line.startswith("Reproduce: ")]
    assert reproduce and "--seed 6" in reproduce[0]
    assert f"Archive: s3://{aws.bucket}/failures/seed-6-" in first_alert["Message"]

    assert metric_total("IterationsCompleted") == 60.0
    assert metric_total("FailuresDetected") == float(len(failed))

    events = [json.loads(line) for line in log_messages(aws)]
    names = [str(event["event"]) for event in events]
    assert "start" in names
    failed_events = [event for event in events if event["event"] == "seed_failed"]
    assert [event["seed"] for event in failed_events][:1] == [6]
    assert str(failed_events[0]["msg"]).startswith("seed 6 failed")
    assert "iteration" not in names  # per-seed lines stay local without --log-iterations
    streams = boto("logs").describe_log_streams(logGroupName=aws.log_group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["i-first"]

    # A fresh instance (new, empty state directory) continues the run from S3 alone.
    (tmp_path / "runs.log").unlink()
    env = daemon_env(aws, tmp_path, None, VOPRD_INSTANCE="i-second")
    second = voprd(["--seed", "0", "-n", "80", "--state-dir", str(tmp_path / "fresh")], env)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 1, err.decode()[-3000:]
    runs = sorted(int(line) for line in (tmp_path / "runs.log").read_text().split())
    assert runs == list(range(60, 80)), "the fresh instance re-ran or skipped seeds"
    assert s3_checkpoint().total_iterations == 80


def test_spot_notice_checkpoints_to_s3_and_exits_cleanly(
    aws: AwsWorld, tmp_path: Path, imds: FakeImds
) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.05)
    env = daemon_env(aws, tmp_path, imds, VOPRD_TEST_WORK_MS="20",
                     NOTIFY_SOCKET=str(notify_path))
    daemon = voprd(["--seed", "1000", "--state-dir", str(tmp_path / "a")], env)
    messages: list[str] = []
    try:
        for _ in range(600):  # wait (<= 30 s) until it runs and has uploaded a first checkpoint
            with contextlib.suppress(TimeoutError):
                messages.append(notify.recv(4096).decode())
            if any("READY=1" in m for m in messages) and _has_checkpoint(aws):
                break
            assert daemon.poll() is None, daemon.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        time.sleep(1.0)  # let it run some seeds past the first checkpoint
        versions_before = len(latest_checkpoint_versions(aws))
        imds.set_notice()
        # The watcher polls every second; allow it (generously) 20 s.
        stored_s = wait_for_new_checkpoint(aws, versions_before, timeout_s=20.0, poll_s=0.05)
        assert stored_s is not None, "no checkpoint reached S3 after the spot notice"
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    while True:
        try:
            messages.append(notify.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            break
    notify.close()
    assert daemon.returncode == 0, err.decode()[-3000:]
    assert any("STOPPING=1" in m for m in messages)
    assert imds.notice_set_monotonic_s is not None
    assert stored_s - imds.notice_set_monotonic_s < 20.0
    # The last checkpoint in S3 is the final one: exactly the local one, every seed counted once.
    local = read_checkpoint((tmp_path / "a" / "checkpoint.json").read_bytes())
    remote = s3_checkpoint()
    assert remote == local
    runs = sorted(int(line) for line in (tmp_path / "runs.log").read_text().split())
    done = set(range(1000, remote.watermark)) | set(remote.done_above)
    assert done <= set(runs) and remote.total_iterations == len(done)
    events = [json.loads(line) for line in log_messages(aws)]
    assert any(e["event"] == "drain" and e.get("reason") == "spot instance-action"
               for e in events)
    # No VOPRD_INSTANCE: the instance id came from IMDS and names the log stream.
    streams = boto("logs").describe_log_streams(logGroupName=aws.log_group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [imds.instance_id]
    assert {e["instance"] for e in events} == {imds.instance_id}


def _has_checkpoint(aws: AwsWorld) -> bool:
    return bool(latest_checkpoint_versions(aws))


def test_start_up_names_a_missing_bucket(aws: AwsWorld, tmp_path: Path) -> None:
    env = daemon_env(aws, tmp_path, None, VOPRD_BUCKET="no-such-bucket")
    daemon = voprd(["--seed", "0", "-n", "5", "--state-dir", str(tmp_path / "a")], env)
    _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 2
    assert "--bucket / VOPRD_BUCKET: bucket 'no-such-bucket' does not exist" in err.decode()
    assert "Traceback" not in err.decode()



def test_outage_mid_run_everything_arrives_exactly_once(aws: AwsWorld, tmp_path: Path) -> None:
    import sqlite3

    env = daemon_env(aws, tmp_path, None, VOPRD_INSTANCE="i-outage", VOPRD_TEST_WORK_MS="10",
                     VOPRD_TEST_FAIL_EVERY="5")
    state_dir = tmp_path / "a"
    daemon = voprd(["--seed", "0", "--state-dir", str(state_dir)], env)
    runs_log = tmp_path / "runs.log"

    def seeds_run() -> int:
        return len(runs_log.read_text().split()) if runs_log.exists() else 0

    try:
        for _ in range(400):  # wait until it runs and S3 has a first checkpoint
            if _has_checkpoint(aws) and seeds_run() > 20:
                break
            time.sleep(0.05)
        aws.server.stop()
        try:
            before = seeds_run()
            # AWS is away; the simulation must keep going: 50 seeds run during the outage (a
            # condition with a generous deadline, not a speed: a loaded machine is slower).
            outage_deadline = time.monotonic() + 60
            while seeds_run() - before <= 50 and time.monotonic() < outage_deadline:
                time.sleep(0.05)
            during = seeds_run() - before
            # The status dump shows the backend's health. A send already in flight when AWS went
            # away is not a failure until it times out (connect 3 s, read 10 s): ask again until
            # the dump says unhealthy, for up to 20 s.
            status_path = state_dir / "status.json"
            deadline = time.monotonic() + 20
            while True:
                status_path.unlink(missing_ok=True)
                daemon.send_signal(signal.SIGUSR1)
                for _ in range(400):  # up to 20 s: a loaded machine answers late
                    if status_path.exists():
                        break
                    time.sleep(0.05)
                status = json.loads(status_path.read_text())
                if not status["backend"]["healthy"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert daemon.poll() is None
        finally:
            aws.server.restart()
        time.sleep(1.0)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, err.decode()[-3000:]
    assert during > 50, f"only {during} seeds ran during the outage"
    backend = status["backend"]
    assert backend["name"] == "aws" and backend["healthy"] is False
    assert "retrying" in backend["detail"] and backend["outbox_pending"] > 0

    local = read_checkpoint((state_dir / "checkpoint.json").read_bytes())
    assert s3_checkpoint() == local
    local_failures = sorted(p.name for p in (state_dir / "failures").glob("seed-*.json"))
    s3_failures = sorted(
        o["Key"].removeprefix("failures/")
        for o in boto("s3").list_objects_v2(Bucket=aws.bucket, Prefix="failures/")["Contents"]
    )
    assert s3_failures == local_failures and len(local_failures) == local.total_failures
    versions = boto("s3").list_object_versions(Bucket=aws.bucket, Prefix="failures/")
    assert sorted(v["Key"].removeprefix("failures/") for v in versions["Versions"]) == s3_failures
    assert metric_total("IterationsCompleted") == float(local.total_iterations)
    assert metric_total("FailuresDetected") == float(local.total_failures)
    with sqlite3.connect(state_dir / "aws-outbox.sqlite3") as outbox:
        alerts_sent = outbox.execute(
            "SELECT COUNT(*) FROM sent WHERE dedup_key LIKE 'sns:%'"
        ).fetchone()[0]
        pending = outbox.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert pending == 0
    notifications = sns_messages(aws, expected=alerts_sent)
    assert len(notifications) == alerts_sent >= 1
    assert len({n["Message"] for n in notifications}) == alerts_sent
