"""The AWS backend through its sink interfaces, on a real event loop, against moto over HTTP.

Everything goes through the production aiobotocore/watchtower code and the durable outbox; the
results are read back with plain boto3 clients from the same moto server.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws_fixtures import AwsWorld, boto, log_messages, sns_messages
from tests.aws_records import aggregate, alert_text, checkpoint, failure_record
from voprd.config import Settings
from voprd.core.records import read_checkpoint, write_checkpoint, write_failure
from voprd.sinks.aws import AwsBackend, AwsTuning
from voprd.sinks.aws.sns import fit_message
from voprd.sinks.outbox import Backoff

FAST = AwsTuning(
    checkpoint_upload_interval_s=60.0, flush_timeout_s=10.0, close_timeout_s=10.0, tick_s=0.1,
    backoff=Backoff(base_s=0.05, cap_s=0.3),
)


def settings_for(aws: AwsWorld, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "bucket": aws.bucket, "sns_topic_arn": aws.topic_arn, "log_group": aws.log_group,
        "region": "us-east-1", "fleet": False, **overrides,
    }
    return Settings(**fields)


def object_versions(key: str) -> list[dict[str, Any]]:
    answer = boto("s3").list_object_versions(Bucket="vopr-test-bucket", Prefix=key)
    return [v for v in answer.get("Versions", []) if v["Key"] == key]


def get_object(key: str) -> bytes:
    body: bytes = boto("s3").get_object(Bucket="vopr-test-bucket", Key=key)["Body"].read()
    return body


def metric_sum(name: str, start: _dt.datetime, dimensions: list[dict[str, str]] | None = None
               ) -> tuple[float, float]:
    """(Sum, SampleCount) of a metric over [start, start + 1 h)."""
    answer = boto("cloudwatch").get_metric_statistics(
        Namespace="VOPR", MetricName=name, StartTime=start,
        EndTime=start + _dt.timedelta(hours=1), Period=3600,
        Statistics=["Sum", "SampleCount"], Dimensions=dimensions or [],
    )
    points = answer["Datapoints"]
    return sum(p["Sum"] for p in points), sum(p["SampleCount"] for p in points)


async def test_checkpoints_to_s3_and_resume_on_fresh_instance(
    aws: AwsWorld, tmp_path: Path
) -> None:
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await backend.start()
    first, final = checkpoint(10), checkpoint(25, failures=2)
    await backend.checkpoints.save(first)  # first save of the process: uploaded at once
    await backend.checkpoints.save(checkpoint(20))  # within the minute: held back
    await backend.flush()
    assert get_object("checkpoints/latest.json") == write_checkpoint(checkpoint(20))
    await backend.checkpoints.save(final, final=True)
    await backend.close()
    assert get_object("checkpoints/latest.json") == write_checkpoint(final)
    today = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    assert get_object(f"checkpoints/daily/{today}.json") == write_checkpoint(final)
    assert [read_checkpoint(get_object("checkpoints/latest.json")).total_iterations] == [25]

    # A fresh instance: a new, empty state directory; only S3 has the run.
    fresh = AwsBackend(settings_for(aws), tmp_path / "fresh", "i-bbb", tuning=FAST)
    await fresh.start()
    loaded = await fresh.checkpoints.load()
    await fresh.close()
    assert loaded.checkpoint == final
    assert loaded.source == "s3://vopr-test-bucket/checkpoints/latest.json"


async def test_load_prefers_the_newer_of_local_and_s3(aws: AwsWorld, tmp_path: Path) -> None:
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await backend.start()
    await backend.checkpoints.save(checkpoint(30), final=True)
    await backend.flush()
    # Local moves ahead of S3 (the next upload is a minute away).
    await backend.checkpoints.local.save(checkpoint(40))
    loaded = await backend.checkpoints.load()
    assert loaded.checkpoint is not None and loaded.checkpoint.total_iterations == 40
    assert loaded.source.endswith("checkpoint.json")
    # S3 ahead of local (e.g. a stale local disk): S3 wins.
    boto("s3").put_object(
        Bucket=aws.bucket, Key="checkpoints/latest.json", Body=write_checkpoint(checkpoint(50))
    )
    loaded = await backend.checkpoints.load()
    assert loaded.checkpoint is not None and loaded.checkpoint.total_iterations == 50
    # A corrupt S3 copy is kept aside and reported; the local one is used.
    boto("s3").put_object(Bucket=aws.bucket, Key="checkpoints/latest.json", Body=b"{not json")
    loaded = await backend.checkpoints.load()
    await backend.close()
    assert loaded.checkpoint is not None and loaded.checkpoint.total_iterations == 40
    assert any("invalid" in problem and "kept aside" in problem for problem in loaded.problems)
    listed = boto("s3").list_objects_v2(Bucket=aws.bucket, Prefix="corrupt/")
    assert [o["Key"].split("/", 2)[2] for o in listed["Contents"]] == ["checkpoints/latest.json"]
    aside = listed["Contents"][0]["Key"]
    assert boto("s3").get_object(Bucket=aws.bucket, Key=aside)["Body"].read() == b"{not json"


async def test_failures_alerts_metrics_and_logs(aws: AwsWorld, tmp_path: Path) -> None:
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await backend.start()
    record = failure_record(42042, unix_ts=1_790_000_000)
    where = await backend.archive.put(record)
    assert where == "s3://vopr-test-bucket/failures/seed-42042-1790000000.json"
    # Idempotent per (run, seed): a re-run of the same seed archives nothing new.
    assert await backend.archive.put(failure_record(42042, unix_ts=1_790_000_099)) == where
    subject, message = alert_text(42042, where)
    await backend.alerts.send(subject, message)

    minute = (int(time.time()) // 60 - 5) * 60
    await backend.metrics.publish([
        aggregate(minute, 7, 1, 7000, [0.5, 1.0, 1.5, 0.5, 0.5, 0.5, 0.5]),
        aggregate(minute + 60, 3, 0, 900, [0.2, 0.3, 0.4]),
    ])
    backend.events.emit("start", "info", {"first_seed": 0})
    backend.events.emit("iteration", "info", {"seed": 1})
    backend.events.emit("batch_complete", "info", {"successes": 9, "failures": 1})
    backend.events.emit("worker_restarted", "info", {"index": 0})  # local only
    backend.events.emit("slow_disk", "warning", {"fsync_ms": 900})
    await backend.flush()
    health = backend.health()
    await backend.close()

    assert health.healthy and health.outbox_pending == 0, health
    key = "failures/seed-42042-1790000000.json"
    assert get_object(key) == write_failure(record)
    assert len(object_versions(key)) == 1

    [notification] = sns_messages(aws, expected=1)
    assert notification["Subject"] == subject
    assert notification["Message"] == message

    start = _dt.datetime.fromtimestamp(minute, _dt.UTC)
    assert metric_sum("IterationsCompleted", start) == (10.0, 2.0)
    assert metric_sum("FailuresDetected", start) == (1.0, 2.0)
    assert metric_sum("EventsSimulated", start) == (7900.0, 2.0)
    duration_sum, duration_count = metric_sum("SeedDuration", start)
    assert duration_sum == pytest.approx(5.9) and duration_count == 10.0
    names = {m["MetricName"] for m in boto("cloudwatch").list_metrics(Namespace="VOPR")["Metrics"]}
    assert names == {"IterationsCompleted", "FailuresDetected", "EventsSimulated", "SeedDuration"}
    listed = boto("cloudwatch").list_metrics(Namespace="VOPR")["Metrics"]
    assert all(not m.get("Dimensions") for m in listed)

    events = [json.loads(line) for line in log_messages(aws)]
    assert [e["event"] for e in events] == ["start", "batch_complete", "slow_disk"]
    assert events[0]["instance"] == "i-aaa" and events[2]["level"] == "warning"
    streams = boto("logs").describe_log_streams(logGroupName=aws.log_group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["i-aaa"]


async def test_log_iterations_and_instance_dimension(aws: AwsWorld, tmp_path: Path) -> None:
    settings = settings_for(aws, log_iterations=True, metrics_instance_dimension=True)
    backend = AwsBackend(settings, tmp_path / "a", "i-ccc", tuning=FAST)
    await backend.start()
    for seed in range(3):
        backend.events.emit("iteration", "info", {"seed": seed, "status": "ok"})
    minute = (int(time.time()) // 60 - 3) * 60
    await backend.metrics.publish([aggregate(minute, 4, 0, 40, [1.0] * 4)])
    await backend.flush()
    await backend.close()
    events = [json.loads(line) for line in log_messages(aws)]
    assert [e["seed"] for e in events if e["event"] == "iteration"] == [0, 1, 2]
    start = _dt.datetime.fromtimestamp(minute, _dt.UTC)
    dimension = [{"Name": "InstanceId", "Value": "i-ccc"}]
    assert metric_sum("IterationsCompleted", start, dimension) == (4.0, 1.0)
    listed = boto("cloudwatch").list_metrics(Namespace="VOPR", MetricName="IterationsCompleted")
    assert sorted(len(m.get("Dimensions", [])) for m in listed["Metrics"]) == [0, 1]


async def test_alert_too_big_for_sns_keeps_seed_and_reproduce(
    aws: AwsWorld, tmp_path: Path
) -> None:
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await backend.start()
    subject, message = alert_text(7, "s3://vopr-test-bucket/failures/seed-7-1.json")
    head, footer = message.split("---\n")
    history = "".join(f"History: op {i} put k{i} -> {'v' * 200}\n" for i in range(3000))
    await backend.alerts.send(subject + " " + "x" * 200, head + history + "---\n" + footer)
    await backend.flush()
    await backend.close()
    [notification] = sns_messages(aws, expected=1)
    sent = notification["Message"]
    assert len(sent.encode()) <= 256 * 1024
    assert len(notification["Subject"]) == 100
    for line in ("Seed: 7", "Reproduce: voprd --once --seed 7 -v", "Invariant: linearizability",
                 "Archive: s3://vopr-test-bucket/failures/seed-7-1.json"):
        assert line in sent.splitlines()
    assert "line(s) cut to fit SNS" in sent
    assert sent == fit_message(head + history + "---\n" + footer)


async def test_alert_with_a_once_key_is_sent_once_across_a_restart(
    aws: AwsWorld, tmp_path: Path
) -> None:
    """A daemon killed after alerting but before journalling the failure re-runs the seed: the
    same failure alerts again with a new timestamp. The once key (fingerprint and seed) makes
    the outbox's sent-ledger, which survives the restart, drop the repeat."""
    where = "s3://vopr-test-bucket/failures/seed-42042-1790000000.json"
    subject, message = alert_text(42042, where)
    first = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)
    await first.start()
    await first.alerts.send(subject, message, once_key="failure:abc123:42042")
    await first.flush()
    await first.close()
    again = AwsBackend(settings_for(aws), tmp_path / "a", "i-aaa", tuning=FAST)  # same state
    await again.start()
    rerun = message.replace("Timestamp:", "Timestamp: 2030-01-01T00:00:00Z was")
    await again.alerts.send(subject, rerun, once_key="failure:abc123:42042")
    other_subject, other = alert_text(42043, where.replace("42042", "42043"))
    await again.alerts.send(other_subject, other, once_key="failure:abc123:42043")
    await again.flush()
    await again.close()
    bodies = [m["Message"] for m in sns_messages(aws, expected=2)]  # drains the queue
    assert sorted(bodies) == sorted([message, other])  # seed 42042's repeat was not sent
