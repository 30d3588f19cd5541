"""AWS outages: the moto server is stopped mid-run and restarted on the same port.

The "simulation" side keeps calling the sinks during the outage and must never wait for AWS (no
request is sent from the calling task: `InlineRequests`, a check that holds whatever the machine's
load; the latency of a sink call is a benchmark figure, bench/bench_aws.py); afterwards
every checkpoint, failure record, alert and metric datapoint has arrived exactly once, including
when the process itself restarts while AWS is still away (the outbox is on disk).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from pathlib import Path
from typing import Any

from tests.aws_fixtures import AwsWorld, boto, sns_messages
from tests.aws_records import aggregate, alert_text, checkpoint, failure_record
from tests.test_aws_backend import get_object, metric_sum, object_versions, settings_for
from voprd.core.records import write_checkpoint
from voprd.sinks.aws import AwsBackend, AwsTuning
from voprd.sinks.outbox import Backoff

OUTAGE = AwsTuning(
    checkpoint_upload_interval_s=0.2, flush_timeout_s=15.0, close_timeout_s=1.0, tick_s=0.05,
    backoff=Backoff(base_s=0.05, cap_s=0.4),
)
# Not a speed figure: a sink call that waited for AWS through its outage would take botocore's
# retries (about a second) per call; this bound only catches a call that hangs. Generous for a
# machine at load 10.
SINK_CALL_S_MAX = 30.0


class InlineRequests:
    """Every AWS request (S3, SNS, CloudWatch, and the CloudWatch Logs client watchtower uses) sent
    from the task that calls the sinks, while `calling` is set: a sink call that waited for AWS
    would send its request right there. Only the backend's own sender task may talk to AWS."""

    def __init__(self, backend: AwsBackend) -> None:
        self.caller: asyncio.Task[Any] | None = None
        self.calling = False
        self.seen: list[str] = []
        clients = backend._client()
        logs_boto3 = backend._handler._recording._client
        for client in (clients.s3, clients.sns, clients.cloudwatch, clients.logs, logs_boto3):
            client.meta.events.register("before-send", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop in this thread: not the calling task
            return None
        if self.calling and task is not None and task is self.caller:
            self.seen.append(f"{request.method} {request.url}")
        return None  # let the request go on


async def _simulate(backend: AwsBackend, first_seed: int, seeds: int, minute0: int,
                    probe: InlineRequests | None = None) -> float:
    """Feed one failure, one alert and one metrics minute per 10 seeds; return the slowest call."""
    slowest_s = 0.0
    if probe is not None:
        probe.caller = asyncio.current_task()
    for index in range(seeds // 10):
        seed = first_seed + index * 10
        started_s = time.monotonic()
        if probe is not None:
            probe.calling = True
        await backend.checkpoints.save(checkpoint(seed + 10))
        where = await backend.archive.put(failure_record(seed, unix_ts=1_790_000_000 + seed))
        await backend.alerts.send(*alert_text(seed, where))
        await backend.metrics.publish(
            [aggregate(minute0 + 60 * (seed // 10), 10, 1, 100, [0.25] * 10)]
        )
        backend.events.emit("batch_complete", "info", {"first_seed": seed})
        if probe is not None:
            probe.calling = False
        slowest_s = max(slowest_s, time.monotonic() - started_s)
        await _sleep(0.05)
    return slowest_s


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _assert_exactly_once(aws: AwsWorld, seeds: int, minute0: int) -> None:
    batches = seeds // 10
    for index in range(batches):
        seed = index * 10
        assert len(object_versions(f"failures/seed-{seed}-{1_790_000_000 + seed}.json")) == 1
    listed = boto("s3").list_objects_v2(Bucket=aws.bucket, Prefix="failures/")
    assert listed["KeyCount"] == batches
    # The newest checkpoint is in S3, and no checkpoint content was uploaded twice in a row.
    assert get_object("checkpoints/latest.json") == write_checkpoint(checkpoint(seeds))
    versions = object_versions("checkpoints/latest.json")
    bodies = [
        boto("s3").get_object(Bucket=aws.bucket, Key="checkpoints/latest.json",
                              VersionId=v["VersionId"])["Body"].read()
        for v in versions
    ]
    assert len(bodies) == len(set(bodies)), "a checkpoint was uploaded twice"
    notifications = sns_messages(aws, expected=batches)
    assert sorted(n["Message"] for n in notifications) == sorted(
        alert_text(index * 10, f"s3://{aws.bucket}/failures/seed-{index * 10}-"
                   f"{1_790_000_000 + index * 10}.json")[1]
        for index in range(batches)
    )
    start = _dt.datetime.fromtimestamp(minute0, _dt.UTC)
    assert metric_sum("IterationsCompleted", start) == (float(seeds), float(batches))
    assert metric_sum("FailuresDetected", start) == (float(batches), float(batches))


async def test_outage_while_running(aws: AwsWorld, tmp_path: Path) -> None:
    minute0 = (int(time.time()) // 3600 - 2) * 3600
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-out", tuning=OUTAGE)
    await backend.start()
    probe = InlineRequests(backend)
    slowest_s = await _simulate(backend, 0, 20, minute0, probe)
    await backend.flush()
    aws.server.stop()
    try:
        slowest_s = max(slowest_s, await _simulate(backend, 20, 60, minute0, probe))
        for _ in range(100):  # the first failed attempts take botocore about a second
            health = backend.health()
            if not health.healthy:
                break
            await _sleep(0.1)
        assert not health.healthy and health.outbox_pending > 0
        assert "retrying" in health.detail
    finally:
        aws.server.restart()
    await backend.flush()
    health = backend.health()
    await backend.close()
    assert health.healthy and health.outbox_pending == 0, health
    assert probe.seen == [], "a sink call talked to AWS itself"
    assert slowest_s < SINK_CALL_S_MAX, f"a sink call waited {slowest_s:.3f} s"
    _assert_exactly_once(aws, 60 + 20, minute0)


async def test_outage_across_a_process_restart(aws: AwsWorld, tmp_path: Path) -> None:
    minute0 = (int(time.time()) // 3600 - 2) * 3600
    state_dir = tmp_path / "state"
    backend = AwsBackend(settings_for(aws), state_dir, "i-out", tuning=OUTAGE)
    await backend.start()
    aws.server.stop()
    try:
        await _simulate(backend, 0, 40, minute0)
        await backend.checkpoints.save(checkpoint(40), final=True)
        await backend.close()  # AWS is away: everything stays in the outbox on disk
    finally:
        aws.server.restart()
    assert boto("s3").list_objects_v2(Bucket=aws.bucket).get("KeyCount", 0) == 0
    again = AwsBackend(settings_for(aws), state_dir, "i-out", tuning=OUTAGE)
    await again.start()
    await again.flush()
    health = again.health()
    await again.close()
    assert health.outbox_pending == 0, health
    _assert_exactly_once(aws, 40, minute0)


async def test_inline_requests_sees_a_call_that_talks_to_aws(aws: AwsWorld, tmp_path: Path) -> None:
    # The check above can fail: a request from the calling task is seen, one from another is not.
    backend = AwsBackend(settings_for(aws), tmp_path / "a", "i-out", tuning=OUTAGE)
    await backend.start()
    probe = InlineRequests(backend)
    probe.caller, probe.calling = asyncio.current_task(), True
    await asyncio.create_task(backend._client().s3.list_buckets())
    assert probe.seen == []
    await backend._client().s3.list_buckets()
    await asyncio.to_thread(backend._handler._recording._client.describe_log_groups)
    assert len(probe.seen) == 1 and probe.seen[0].startswith("GET ")
    probe.calling = False
    await backend.close()
