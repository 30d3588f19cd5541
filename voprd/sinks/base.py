"""The small interfaces every backend implements: where checkpoints, failures, alerts, metrics and
structured events go. The local backend (voprd.sinks.local) and the AWS backend (voprd.sinks.aws)
implement the same Protocols; the daemon picks one through voprd.sinks.factory.make_backend.

Contracts (the daemon relies on them):
- No method may block the event loop for long: do file I/O in a thread, network I/O behind an
  outbox. `send`/`publish`/`emit` must not raise for a transient outage (queue and retry instead).
- `CheckpointStore.load` returns the newest valid checkpoint it has (the AWS store: the newer of the
  local and the S3 copy, compared by `total_iterations`, then `last_update`), and reports every
  unreadable copy it kept aside in `problems`.
- `FailureArchive.put` is idempotent per (record.run_id, record.seed): a seed re-run after a
  crash (its result was archived but not yet journalled) must not create a second record; return the
  existing location instead. `put` may be called concurrently (for different or equal seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from voprd.core.metrics import MetricBatch
from voprd.core.records import Checkpoint, FailureRecord, Severity
from voprd.events import BackendHealth


class LoadedCheckpoint(msgspec.Struct, kw_only=True):
    checkpoint: Checkpoint | None
    source: str  # where it came from (path or s3:// URL); "" when none
    problems: list[str] = msgspec.field(default_factory=list)  # copies kept aside, and why


class CheckpointStore(Protocol):
    async def load(self) -> LoadedCheckpoint: ...

    async def save(self, checkpoint: Checkpoint, *, final: bool = False) -> None:
        """Store durably. `final` marks the shutdown checkpoint (the AWS store uploads it now)."""
        ...

    async def discard(self) -> None:
        """Forget the stored run (`--reset`): keep old copies aside, never delete them."""
        ...


class FailureArchive(Protocol):
    async def put(self, record: FailureRecord) -> str:
        """Archive durably (or enqueue durably); return where the record is (path or URL)."""
        ...

    async def put_report(self, archived_at: str, html: bytes) -> str:
        """Archive a failure's HTML report beside its record (`archived_at`, what `put` returned:
        `seed-{seed}-{unix_ts}.json` -> `.html`). Idempotent (same key, replaced). Returns where
        the report is."""
        ...


class AlertSink(Protocol):
    async def send(self, subject: str, message: str, *, once_key: str | None = None) -> None:
        """Send an alert. `once_key` names what the alert is about (a failure's fingerprint and
        seed): a sink with a durable sent-ledger sends one alert per key, so a seed re-run after
        a crash (same failure, new timestamp) does not alert twice."""
        ...

    async def hold(self, subject: str, message: str, *, once_key: str | None = None
                   ) -> int | None:
        """Store an alert durably but do not send it until `release(ticket)`; `drop(ticket)`
        forgets it. A sink without a durable queue sends at once (and returns None). An alert
        held when the process dies is sent at the next start (it may repeat; it is not lost)."""
        ...

    async def release(self, ticket: int | None) -> None: ...

    async def drop(self, ticket: int | None) -> None: ...


class MetricsSink(Protocol):
    async def publish(self, batches: Sequence[MetricBatch]) -> None:
        """Publish (or enqueue durably) each batch once per `batch.key`: a batch published again
        with the same key (a restart re-publishing what a killed process had) is dropped."""
        ...


class EventLog(Protocol):
    def emit(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        """One structured event (start, batch_complete, failure, status, warnings, errors)."""
        ...


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def checkpoints(self) -> CheckpointStore: ...

    @property
    def archive(self) -> FailureArchive: ...

    @property
    def alerts(self) -> AlertSink: ...

    @property
    def metrics(self) -> MetricsSink: ...

    @property
    def events(self) -> EventLog: ...

    async def start(self) -> None:
        """Check settings and connectivity; raise voprd.config.ConfigError naming the setting."""
        ...

    async def flush(self) -> None:
        """Push everything queued as far as it can go within a short time."""
        ...

    async def close(self) -> None: ...

    def health(self) -> BackendHealth: ...

    def pending_alerts(self) -> int: ...
