"""One daemon with a bucket and no run name runs alone, in the guide's layout.

The guide voprd descends from reads `s3://BUCKET/checkpoints/latest.json` (`aws s3 cp ... -`) and
lists `failures/seed-N-TS.json`: a real daemon keeps exactly those, and no fleet records (no
lease traffic). A run name (--run, VOPRD_RUN, run_name) asks for fleet mode; `--no-fleet` is
the lone mode's old spelling, refused together with a run name.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws_fixtures import ROOT, AwsWorld, boto, daemon_env, sns_messages
from tests.aws_records import failure_record
from voprd.cli import parse
from voprd.sinks.aws import AwsBackend
from voprd.sinks.aws.backend import AwsTuning
from voprd.sinks.outbox import Backoff

TARGET = "tests.targets_for_tests:Flaky"
SEEDS = 40
FAILED = [s for s in range(SEEDS) if s % 7 == 6]


def _voprd(args: list[str], env: dict[str, str], timeout_s: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voprd", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_a_lone_daemon_keeps_the_guides_layout(aws: AwsWorld, tmp_path: Path) -> None:
    env = daemon_env(aws, None, VOPRD_TEST_WORK_MS="2", VOPRD_INSTANCE="i-lone")
    state = tmp_path / "state"
    done = _voprd(["--target", TARGET, "--workers", "2", "--seed", "0", "-n", str(SEEDS),
                   "--state-dir", str(state)], env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # failures found

    keys = sorted(o["Key"] for o in boto("s3").list_objects_v2(Bucket=aws.bucket)["Contents"])
    failures = [k for k in keys if k.startswith("failures/")]
    assert sorted(int(re.fullmatch(r"failures/seed-(\d+)-\d+\.json", k).group(1))  # type: ignore[union-attr]
                  for k in failures) == FAILED
    assert "checkpoints/latest.json" in keys
    assert not [k for k in keys if k.startswith(("leases/", "done/", "alerts/",
                                                 "checkpoints/fleet/", "checkpoints/instances/"))]
    assert '"fleet_' not in done.stdout  # no lease traffic at all

    # The guide's own command reads the checkpoint, in the guide's format.
    aws_cli = Path(sys.executable).with_name("aws")
    shown = subprocess.run(
        [str(aws_cli), "s3", "cp", f"s3://{aws.bucket}/checkpoints/latest.json", "-"],
        env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    checkpoint = json.loads(shown.stdout)
    assert checkpoint["last_seed"] == SEEDS - 1 and checkpoint["total_iterations"] == SEEDS
    assert checkpoint["total_failures"] == len(FAILED)
    assert sorted(checkpoint["failed_seeds"]) == FAILED  # in the order they finished
    assert checkpoint["last_update"].endswith("Z")

    # One alert for the one cause, at its first seed; its repeats in the digest at exit.
    notes = sns_messages(aws, expected=2)
    [alert] = [n for n in notes if "Digest" not in n["Subject"]]
    assert f"Seed: {FAILED[0]}\n" in alert["Message"]
    [digest] = [n for n in notes if "Digest" in n["Subject"]]
    assert digest["Message"].startswith(f"VOPR saw {len(FAILED) - 1} repeat(s)")

    status = json.loads((state / "status.json").read_text())
    assert (status["mode"], status["health"], status["fleet"]) == ("lone", "ok", None)
    text = _voprd(["status", "--fleet"], env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith("mode: lone") and f"{SEEDS} seeds done" in text.stdout
    as_json = json.loads(_voprd(["status", "--fleet", "--json"], env).stdout)
    assert as_json["mode"] == "lone" and as_json["checkpoint"]["total_iterations"] == SEEDS
    assert as_json["fleet_runs"] == []


def test_a_run_name_asks_for_fleet_mode(aws: AwsWorld, tmp_path: Path) -> None:
    env = daemon_env(aws, None, VOPRD_TEST_WORK_MS="2", VOPRD_INSTANCE="i-fleet")
    done = _voprd(["--target", TARGET, "--workers", "1", "--seed", "0", "-n", "20",
                   "--run", "nightly", "--batch-size", "10", "--state-dir",
                   str(tmp_path / "s")], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    keys = [o["Key"] for o in boto("s3").list_objects_v2(Bucket=aws.bucket)["Contents"]]
    assert "checkpoints/latest.json" not in keys
    assert {"done/nightly/batch-000000000000.json", "done/nightly/batch-000000000001.json",
            "checkpoints/fleet/nightly/spec.json"} <= set(keys)
    assert sorted(k for k in keys if k.startswith("failures/")) == [
        "failures/nightly/seed-13.json", "failures/nightly/seed-6.json"]
    status = _voprd(["status", "--fleet", "--run", "nightly"], env)
    assert status.stdout.startswith("mode: fleet (run nightly")
    lone = _voprd(["status", "--fleet"], env)  # no run name: what a lone daemon would keep
    assert lone.stdout.startswith("mode: lone") and "fleet runs in this bucket: nightly" \
        in lone.stdout


def test_no_fleet_is_the_lone_mode_and_contradicts_a_run_name(
    aws: AwsWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOPRD_RUN", raising=False)
    assert parse(["--bucket", "b"])[0].mode == "lone"
    assert parse(["--bucket", "b", "--no-fleet"])[0].mode == "lone"
    assert parse(["--bucket", "b", "--run", "r"])[0].mode == "fleet"
    assert parse(["--run", "r"])[0].mode == "local"  # no bucket: nothing to share
    env = daemon_env(aws, None)
    for args, extra in ((["--run", "r", "--no-fleet"], {}),
                        (["--no-fleet"], {"VOPRD_RUN": "r"})):
        refused = _voprd([*args, "-n", "1", "--state-dir", str(tmp_path / "x")],
                         {**env, **extra}, timeout_s=60)
        assert refused.returncode == 2
        assert "--no-fleet" in refused.stderr and "Traceback" not in refused.stderr
        assert not (tmp_path / "x").exists()


async def test_failure_records_are_written_create_only(aws: AwsWorld, tmp_path: Path) -> None:
    """A failure record whose key already holds an object (a record written before whose answer
    was lost, or another daemon's record of the same seed) is left as it is: If-None-Match."""
    from voprd.config import Settings

    settings = Settings(bucket=aws.bucket, sns_topic_arn=aws.topic_arn, log_group=aws.log_group,
                        region="us-east-1")
    record = failure_record(5, unix_ts=1_790_000_005)
    key = "failures/seed-5-1790000005.json"
    boto("s3").put_object(Bucket=aws.bucket, Key=key, Body=b"first")
    backend = AwsBackend(settings, tmp_path / "a", "i-aaa", tuning=AwsTuning(
        flush_timeout_s=10.0, backoff=Backoff(base_s=0.05, cap_s=0.2)))
    await backend.start()
    assert await backend.archive.put(record) == f"s3://{aws.bucket}/{key}"
    await backend.flush()
    health = backend.health()
    await backend.close()
    assert health.healthy and health.outbox_pending == 0, health
    assert boto("s3").get_object(Bucket=aws.bucket, Key=key)["Body"].read() == b"first"
