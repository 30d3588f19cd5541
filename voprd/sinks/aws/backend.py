"""The AWS backend: S3 checkpoints and failure archive, CloudWatch Logs and metrics, SNS alerts.

Every AWS write goes through the durable outbox (voprd.sinks.outbox), in four ordered lanes:
`s3` (checkpoints, daily checkpoints, failure records), `sns` (alerts), `metrics` (one
PutMetricData per closed minute) and `logs` (CloudWatch Logs through watchtower). The daemon's
calls only write locally (the local checkpoint and archive files, and the outbox row), so the
simulation never waits on AWS.

Checkpoints go to S3 at most once per `checkpoint_upload_interval_s` (default one minute) and at
every shutdown (`save(final=True)` then `flush`/`close`); only the newest pending one is kept
(coalesced). `checkpoints/daily/YYYY-MM-DD.json` is refreshed at most hourly and at shutdown.
Idempotency: object keys are fixed when the item is enqueued, and a retried upload first asks S3
(HEAD, ETag = MD5 of the body) whether the object is already there, so a replay stores nothing
twice. Failure records and reports are written create-only (If-None-Match: *): a 412 means the
object is there already, which is success. Alone (no run name), a failure is
`failures/seed-{seed}-{unix_ts}.json` as in the guide; in a fleet it is
`failures/{run}/seed-{seed}.json`, the same key for every daemon that runs the seed (a batch run
twice after a lost lease), so the first record stands and the fleet archives each failure once.
Alerts and metric batches carry dedup keys recorded in the outbox's sent-ledger; SNS FIFO topics
additionally get a MessageDeduplicationId.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import msgspec
from botocore.config import Config
from botocore.exceptions import ClientError

from voprd.config import ConfigError, Settings, imds_endpoint
from voprd.core.metrics import MetricBatch
from voprd.core.records import (
    Checkpoint,
    CheckpointInvalid,
    FailureRecord,
    Severity,
    read_checkpoint,
    write_checkpoint,
)
from voprd.events import BackendHealth
from voprd.fleet.core import quarantine_key
from voprd.service import spot
from voprd.sinks.aws.clients import (
    BOTOCORE_ATTEMPTS_MAX,
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    THROTTLING_CODES,
    AwsClients,
    error_code,
    region_of,
)
from voprd.sinks.aws.logs import LOGS_LANE, CloudWatchEventLog, OutboxCloudWatchHandler
from voprd.sinks.aws.metrics import metric_data
from voprd.sinks.aws.sns import fit_message, fit_subject
from voprd.sinks.aws.validate import validate_with
from voprd.sinks.base import LoadedCheckpoint
from voprd.sinks.local import OUTBOX_FILE, LocalCheckpointStore, LocalFailureArchive
from voprd.sinks.outbox import (
    Backoff,
    Lane,
    Outbox,
    OutboxDrainer,
    OutboxItem,
    OutboxStats,
    Priority,
)

S3_LANE, SNS_LANE, METRICS_LANE = "s3", "sns", "metrics"
LATEST_KEY = "checkpoints/latest.json"
DAILY_PREFIX = "checkpoints/daily/"
CHECKPOINT_BYTES_MAX = 16 * 1024 * 1024  # an S3 checkpoint is read no further (then it is invalid)
SEND_STALLED_S = 5.0
LOG_BATCH_ITEMS_MAX = 1000
LOG_BATCH_BYTES_MAX = 900 * 1024  # PutLogEvents takes 1 MiB including 26 bytes per event
# 4xx answers an operator can fix while the rows wait (a deleted log group, expired credentials).
_FIXABLE = frozenset({
    "ResourceNotFoundException", "NoSuchBucket", "NotFound", "AccessDenied",
    "AccessDeniedException", "AuthorizationError", "ExpiredToken", "ExpiredTokenException",
    "InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId",
})


class AwsTuning(msgspec.Struct, frozen=True, kw_only=True):
    """Timing knobs; production uses the defaults, tests shorten them."""

    checkpoint_upload_interval_s: float = 60.0
    daily_upload_interval_s: float = 3600.0
    flush_timeout_s: float = 5.0
    close_timeout_s: float = 10.0
    tick_s: float = 1.0
    backoff: Backoff = Backoff()
    outbox_items_max: int = 100_000
    outbox_bytes_max: int = 64 * 1024 * 1024


class AlertPayload(msgspec.Struct, frozen=True):
    subject: str
    message: str


class MetricsPayload(msgspec.Struct, frozen=True):
    namespace: str
    metric_data: list[dict[str, Any]]


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix (bad request); everything else (outage, throttling, access
    denied that an operator may still fix) is retried."""
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = error_code(exc)
    return status in (400, 413) and code not in THROTTLING_CODES and code not in _FIXABLE


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _utc_day(unix_s: float) -> str:
    return _dt.datetime.fromtimestamp(unix_s, _dt.UTC).strftime("%Y-%m-%d")


class AwsCheckpointStore:
    """The local checkpoint (durable, as in the local backend) plus an S3 copy via the outbox."""

    def __init__(self, backend: AwsBackend, local: LocalCheckpointStore) -> None:
        self._backend = backend
        self.local = local

    async def load(self) -> LoadedCheckpoint:
        local = await self.local.load()
        remote, problems = await self._backend.fetch_remote_checkpoint()
        problems = [*local.problems, *problems]
        candidates = [
            (loaded.checkpoint, loaded.source)
            for loaded in (local, remote)
            if loaded is not None and loaded.checkpoint is not None
        ]
        if not candidates:
            return LoadedCheckpoint(checkpoint=None, source="", problems=problems)
        newest, source = max(
            candidates, key=lambda pair: (pair[0].total_iterations, pair[0].last_update)
        )
        return LoadedCheckpoint(checkpoint=newest, source=source, problems=problems)

    async def save(self, checkpoint: Checkpoint, *, final: bool = False) -> None:
        await self.local.save(checkpoint, final=final)
        self._backend.offer_checkpoint(write_checkpoint(checkpoint), final=final)

    async def discard(self) -> None:
        await self.local.discard()
        self._backend.discard_remote_checkpoint()


# Content type of each S3 outbox item kind (checkpoints and failure records are JSON).
S3_CONTENT_TYPES = {"failure": "application/json", "report": "text/html; charset=utf-8"}


LOCAL_PATHS_REMEMBERED_MAX = 4096  # S3 location -> local record, to put a report beside both


class AwsFailureArchive:
    """Local archive file first (idempotent per run and seed), then the same bytes to S3."""

    def __init__(self, backend: AwsBackend, local: LocalFailureArchive) -> None:
        self._backend = backend
        self.local = local
        self._local_of: dict[str, str] = {}

    async def put(self, record: FailureRecord) -> str:
        local_path = Path(await self.local.put(record))
        body = await asyncio.to_thread(local_path.read_bytes)
        location = self._backend.enqueue_failure(local_path.name, body, seed=record.seed)
        if len(self._local_of) >= LOCAL_PATHS_REMEMBERED_MAX:
            self._local_of.clear()
        self._local_of[location] = str(local_path)
        return location

    async def put_report(self, archived_at: str, html: bytes) -> str:
        local_record = self._local_of.get(archived_at, archived_at)
        local_path = Path(await self.local.put_report(local_record, html))
        seed = int(local_path.name.split("-")[1].removesuffix(".html"))
        return self._backend.enqueue_failure(local_path.name, html, kind="report", seed=seed)


class AwsAlertSink:
    def __init__(self, backend: AwsBackend) -> None:
        self._backend = backend

    async def send(self, subject: str, message: str, *, once_key: str | None = None) -> None:
        self._backend.enqueue_alert(subject, message, once_key=once_key)

    async def hold(self, subject: str, message: str, *, once_key: str | None = None
                   ) -> int | None:
        return self._backend.enqueue_alert(subject, message, once_key=once_key, held=True)

    async def release(self, ticket: int | None) -> None:
        if ticket is not None:
            self._backend.outbox.release(ticket)

    async def drop(self, ticket: int | None) -> None:
        if ticket is not None:
            self._backend.outbox.drop(ticket)


class AwsMetricsSink:
    def __init__(self, backend: AwsBackend) -> None:
        self._backend = backend

    async def publish(self, batches: Sequence[MetricBatch]) -> None:
        for batch in batches:
            self._backend.enqueue_metrics(batch)


class AwsBackend:
    name = "aws"

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        instance: str,
        checkpoint_path: Path | None = None,
        *,
        tuning: AwsTuning | None = None,
    ) -> None:
        assert settings.bucket, "the AWS backend needs a bucket"
        self.settings = settings
        self.bucket: str = settings.bucket
        self.state_dir = state_dir
        self.instance = instance
        self.tuning = tuning or AwsTuning()
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "failures").mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(
            state_dir / OUTBOX_FILE,
            max_items=self.tuning.outbox_items_max,
            max_bytes=self.tuning.outbox_bytes_max,
        )
        self.checkpoints = AwsCheckpointStore(
            self, LocalCheckpointStore(checkpoint_path or state_dir / "checkpoint.json")
        )
        self.archive = AwsFailureArchive(self, LocalFailureArchive(state_dir / "failures"))
        self.alerts = AwsAlertSink(self)
        self.metrics = AwsMetricsSink(self)
        self._handler = OutboxCloudWatchHandler(
            self.outbox, settings.log_group, _stream_name(instance)
        )
        self.events = CloudWatchEventLog(
            self._handler, log_iterations=settings.log_iterations, instance=instance
        )
        self._clients: AwsClients | None = None
        self._drainer: OutboxDrainer | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending_checkpoint: bytes | None = None
        self._last_upload_s = float("-inf")
        self._last_daily_s = float("-inf")
        self._closed = False
        self.instance_id: str | None = None  # set by start() when IMDS knows better

    @property
    def latest_key(self) -> str:
        """A fleet daemon's checkpoint is its own tally (fleet progress lives in done/ records),
        so each instance has its own key; a lone daemon (--no-fleet) keeps latest.json."""
        if self.settings.fleet_mode:
            return f"checkpoints/instances/{_stream_name(self.instance)}.json"
        return LATEST_KEY

    @property
    def daily_prefix(self) -> str:
        if self.settings.fleet_mode:
            return f"{DAILY_PREFIX}{_stream_name(self.instance)}/"
        return DAILY_PREFIX

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        clients = await AwsClients(self.settings).__aenter__()
        try:
            await validate_with(clients, self.settings)
        except BaseException:
            await clients.__aexit__(None, None, None)
            raise
        self._clients = clients
        if "VOPRD_INSTANCE" not in os.environ and spot.watch_enabled(self.name, os.environ):
            # On EC2 the instance id names this machine (log stream, metric dimension, alerts).
            found = await spot.instance_id(imds_endpoint(os.environ))
            if found:
                self.instance_id = self.instance = found
                self._handler.log_stream_name = _stream_name(found)
                self.events.set_instance(found)
        self._handler.bind_client(await asyncio.to_thread(_logs_client, clients.region))
        lanes = [
            Lane(name=S3_LANE, send=self._send_s3),
            Lane(name=METRICS_LANE, send=self._send_metrics),
            Lane(
                name=LOGS_LANE, send=self._send_logs,
                batch_max=LOG_BATCH_ITEMS_MAX, batch_bytes_max=LOG_BATCH_BYTES_MAX,
            ),
        ]
        if self.settings.sns_topic_arn:
            lanes.append(Lane(name=SNS_LANE, send=self._send_sns))
        self._drainer = OutboxDrainer(
            self.outbox, lanes, backoff=self.tuning.backoff, is_permanent=is_permanent
        )
        self._task = asyncio.create_task(self._run(self._drainer), name="aws-backend")

    async def _run(self, drainer: OutboxDrainer) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(drainer.run(), name="aws-outbox")
            group.create_task(self._tick(), name="aws-checkpoint-ticker")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tuning.tick_s)
            self._maybe_enqueue_checkpoint(final=False)

    async def flush(self) -> None:
        if not await self._flush(self.tuning.flush_timeout_s):
            self._report_unflushed("flush")

    async def _flush(self, timeout_s: float) -> bool:
        self._maybe_enqueue_checkpoint(final=True)
        if self._drainer is None:
            return self.outbox.pending() == 0
        return await self._drainer.drain(timeout_s)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        flushed = False
        with contextlib.suppress(Exception):
            flushed = await self._flush(self.tuning.close_timeout_s)
        if not flushed:
            self._report_unflushed("close")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.events.close()
        if self._clients is not None:
            await self._clients.__aexit__(None, None, None)
        self.outbox.close()

    def _report_unflushed(self, when: str) -> None:
        """Say (locally: AWS is what is failing) what stays in the outbox for the next start."""
        health = self.health()
        self.events.local(
            "aws_outbox_not_empty", "warning", when=when, pending=health.outbox_pending,
            detail=health.detail,
            note=f"kept on disk in {self.outbox.path}; sent when AWS answers again",
        )

    # -- what the sinks enqueue ----------------------------------------------------------------

    def offer_checkpoint(self, body: bytes, *, final: bool) -> None:
        self._pending_checkpoint = body
        self._maybe_enqueue_checkpoint(final=final)

    def _maybe_enqueue_checkpoint(self, *, final: bool) -> None:
        body = self._pending_checkpoint
        if body is None:
            return
        now_s = time.monotonic()
        if not final and now_s - self._last_upload_s < self.tuning.checkpoint_upload_interval_s:
            return
        self.outbox.put(
            S3_LANE, "checkpoint", self.latest_key, body,
            priority=Priority.ESSENTIAL, coalesce_key=f"s3:{self.latest_key}",
        )
        self._pending_checkpoint = None
        self._last_upload_s = now_s
        if final or now_s - self._last_daily_s >= self.tuning.daily_upload_interval_s:
            key = f"{self.daily_prefix}{_utc_day(time.time())}.json"
            self.outbox.put(
                S3_LANE, "daily_checkpoint", key, body,
                priority=Priority.ESSENTIAL, coalesce_key=f"s3:{key}",
            )
            self._last_daily_s = now_s

    def discard_remote_checkpoint(self) -> None:
        """`--reset`: the S3 latest.json is moved aside (copied, then deleted), in lane order."""
        self._pending_checkpoint = None
        self.outbox.remove_coalesced(f"s3:{self.latest_key}")
        aside = f"checkpoints/reset-{int(time.time())}.json"
        self.outbox.put(
            S3_LANE, "reset", self.latest_key, aside.encode(), priority=Priority.ESSENTIAL
        )

    def failure_key(self, name: str, seed: int) -> str:
        """`failures/{name}` alone (the local file's name: seed-{seed}-{unix_ts}.json/.html); in a
        fleet `failures/{run}/seed-{seed}.json/.html`, the same for every daemon of the run."""
        if self.settings.fleet_mode:
            suffix = name.rsplit(".", 1)[-1]
            return f"failures/{self.settings.run_name}/seed-{seed}.{suffix}"
        return f"failures/{name}"

    def enqueue_failure(self, name: str, body: bytes, *, seed: int,
                        kind: str = "failure") -> str:
        """A failure record (kind `failure`, JSON) or its HTML report (kind `report`), keyed by
        `failure_key`: the same name gives the same key (idempotent)."""
        assert kind in S3_CONTENT_TYPES, kind
        key = self.failure_key(name, seed)
        self.outbox.put(
            S3_LANE, kind, key, body, priority=Priority.ESSENTIAL, dedup_key=f"s3:{key}"
        )
        return f"s3://{self.bucket}/{key}"

    def enqueue_alert(self, subject: str, message: str, *, once_key: str | None = None,
                      held: bool = False) -> int | None:
        """Queue an SNS alert. Deduplicated by `once_key` when given (the outbox's sent-ledger
        survives restarts), else by the payload's digest. `held`: kept back from sending until
        the outbox releases it; returns its item id (None: deduplicated, or no topic)."""
        payload = msgspec.json.encode(AlertPayload(fit_subject(subject), fit_message(message)))
        digest = hashlib.sha256(payload).hexdigest()
        if not self.settings.sns_topic_arn:
            self.events.emit(
                "alert_not_sent", "warning",
                {"reason": "no --sns-topic-arn configured", "subject": subject},
            )
            return None
        dedup_key = f"sns:once:{once_key}" if once_key else f"sns:{digest}"
        if held:
            return self.outbox.hold(SNS_LANE, "alert", digest, payload,
                                    priority=Priority.ESSENTIAL, dedup_key=dedup_key)
        self.outbox.put(SNS_LANE, "alert", digest, payload, priority=Priority.ESSENTIAL,
                        dedup_key=dedup_key)
        return None

    def enqueue_metrics(self, batch: MetricBatch) -> None:
        """One PutMetricData for the batch, once per batch key (the run and the batch's number:
        the same seeds whichever process publishes it, see voprd.core.metrics)."""
        data = metric_data(
            batch, instance=self.instance,
            instance_dimension=self.settings.metrics_instance_dimension,
        )
        payload = msgspec.json.encode(MetricsPayload(self.settings.namespace, data))
        self.outbox.put(
            METRICS_LANE, "metrics", f"{batch.key}:{batch.minute_start_unix}", payload,
            priority=Priority.METRICS, dedup_key=f"metrics:{batch.key}",
        )

    # -- senders (the only code that talks to AWS) ---------------------------------------------

    def _client(self) -> AwsClients:
        assert self._clients is not None, "start() first"
        return self._clients

    async def _s3_has(self, key: str, body: bytes) -> bool:
        try:
            head = await self._client().s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return str(head.get("ETag", "")).strip('"') == _md5_hex(body)

    async def _send_s3(self, items: list[OutboxItem]) -> None:
        assert len(items) == 1
        item, s3 = items[0], self._client().s3
        if item.kind == "reset":
            aside = item.payload.decode()
            try:
                await s3.copy_object(
                    Bucket=self.bucket, Key=aside,
                    CopySource={"Bucket": self.bucket, "Key": item.key},
                )
            except ClientError as exc:
                if error_code(exc) not in ("404", "NoSuchKey"):
                    raise
                return
            await s3.delete_object(Bucket=self.bucket, Key=item.key)
            return
        create_only = item.kind in S3_CONTENT_TYPES  # failure records and reports
        # A retry may follow a put whose answer was lost: skip it if S3 already has these bytes.
        if item.attempts > 0 and not create_only and await self._s3_has(item.key, item.payload):
            return
        extra: dict[str, str] = {"IfNoneMatch": "*"} if create_only else {}
        try:
            await s3.put_object(
                Bucket=self.bucket, Key=item.key, Body=item.payload,
                ContentType=S3_CONTENT_TYPES.get(item.kind, "application/json"),
                ContentMD5=_content_md5(item.payload), **extra,
            )
        except ClientError as exc:
            # 412: the record is there already (an earlier attempt of ours whose answer was
            # lost, or in a fleet another daemon's record of the same seed): it stands.
            if not (create_only and error_code(exc) in ("PreconditionFailed", "412",
                                                        "ConditionalRequestConflict", "409")):
                raise

    async def _send_sns(self, items: list[OutboxItem]) -> None:
        assert len(items) == 1 and self.settings.sns_topic_arn
        alert = msgspec.json.decode(items[0].payload, type=AlertPayload)
        kwargs: dict[str, Any] = {
            "TopicArn": self.settings.sns_topic_arn, "Subject": alert.subject,
            "Message": alert.message,
        }
        if self.settings.sns_topic_arn.endswith(".fifo"):
            kwargs["MessageGroupId"] = "voprd"
            kwargs["MessageDeduplicationId"] = items[0].key[:128]
        await self._client().sns.publish(**kwargs)

    async def _send_metrics(self, items: list[OutboxItem]) -> None:
        assert len(items) == 1
        batch = msgspec.json.decode(items[0].payload, type=MetricsPayload)
        await self._client().cloudwatch.put_metric_data(
            Namespace=batch.namespace, MetricData=batch.metric_data
        )

    async def _send_logs(self, items: list[OutboxItem]) -> None:
        # watchtower/boto3 are synchronous: keep them off the event loop.
        await asyncio.to_thread(self._handler.submit, items)

    async def fetch_remote_checkpoint(self) -> tuple[LoadedCheckpoint | None, list[str]]:
        """The S3 checkpoint, if any; problems (unreachable, invalid) are reported, not raised."""
        source = f"s3://{self.bucket}/{self.latest_key}"
        if self._clients is None:
            return None, [f"{source}: not read (backend not started)"]
        s3 = self._clients.s3
        try:
            answer = await s3.get_object(Bucket=self.bucket, Key=self.latest_key)
            async with answer["Body"] as stream:
                body = await stream.read(CHECKPOINT_BYTES_MAX + 1)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey"):
                return None, []
            return None, [f"{source}: not readable ({exc}); using the local checkpoint"]
        except Exception as exc:
            return None, [f"{source}: not reachable ({exc!r}); using the local checkpoint"]
        try:
            if len(body) > CHECKPOINT_BYTES_MAX:
                raise CheckpointInvalid(f"larger than {CHECKPOINT_BYTES_MAX} bytes")
            checkpoint = read_checkpoint(body)
        except CheckpointInvalid as exc:
            aside = quarantine_key(self.latest_key, int(time.time()), uuid.uuid4().hex[:6])
            with contextlib.suppress(Exception):  # the bytes judged (too large: copied in S3)
                if len(body) <= CHECKPOINT_BYTES_MAX:
                    await s3.put_object(Bucket=self.bucket, Key=aside, Body=body,
                                        IfNoneMatch="*")
                else:
                    await s3.copy_object(
                        Bucket=self.bucket, Key=aside, IfNoneMatch="*",
                        CopySource={"Bucket": self.bucket, "Key": self.latest_key},
                        CopySourceIfMatch=answer["ETag"])
            return None, [f"{source} is invalid ({exc}); kept aside as s3://{self.bucket}/{aside}"]
        return LoadedCheckpoint(checkpoint=checkpoint, source=source), []

    # -- health --------------------------------------------------------------------------------

    def outbox_stats(self) -> OutboxStats:
        if self._drainer is not None:
            return self._drainer.stats()
        return self.outbox.stats()

    def health(self) -> BackendHealth:
        stats = self.outbox_stats()
        now_s = time.monotonic()
        retrying = sorted(name for name, lane in stats.lanes.items() if lane.state == "retrying")
        stalled = sorted(
            name for name, lane in stats.lanes.items()
            if lane.in_flight_since_s is not None
            and now_s - lane.in_flight_since_s > SEND_STALLED_S
        )
        parts = [f"s3://{self.bucket}", f"outbox {stats.pending_items} pending"]
        parts += [f"{name} retrying: {stats.lanes[name].last_error}" for name in retrying]
        parts += [f"{name} stalled: a send has been waiting > {SEND_STALLED_S:g} s"
                  for name in stalled]
        if stats.dropped_by_kind:
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped_by_kind.items()))
            parts.append(f"dropped: {dropped}")
        if stats.dead_items:
            parts.append(f"{stats.dead_items} item(s) set aside as unsendable")
        if self._handler.rejected_batches:
            parts.append(f"{self._handler.rejected_batches} log batch(es) partly rejected")
        return BackendHealth(
            name=self.name,
            healthy=not retrying and not stalled and stats.refused_essential == 0
            and self._task is not None,
            detail="; ".join(parts),
            outbox_pending=stats.pending_items,
            dropped=sum(stats.dropped_by_kind.values()),
        )

    def pending_alerts(self) -> int:
        return self.outbox.pending(SNS_LANE)


def _logs_client(region: str) -> Any:
    """The boto3 (synchronous) CloudWatch Logs client watchtower uses, with short retries."""
    return boto3.session.Session().client(
        "logs",
        region_name=region,
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": BOTOCORE_ATTEMPTS_MAX, "mode": "standard"},
        ),
    )


def _content_md5(body: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _stream_name(instance: str) -> str:
    # CloudWatch stream names may not contain ':' or '*'.
    return instance.replace(":", "_").replace("*", "_") or "voprd"


def make_aws_backend(
    settings: Settings, state_dir: Path, instance: str, checkpoint_path: Path | None = None
) -> AwsBackend:
    if not settings.bucket:
        raise ConfigError("--bucket / VOPRD_BUCKET: the AWS backend needs a bucket")
    return AwsBackend(settings, state_dir, instance, checkpoint_path)


__all__ = ["AwsBackend", "AwsTuning", "Severity", "make_aws_backend", "region_of"]
