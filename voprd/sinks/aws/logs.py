"""CloudWatch Logs: structlog -> stdlib logging -> watchtower.CloudWatchLogHandler, via the outbox.

Every logger of the daemon reaches CloudWatch, not only `EventLog.emit`: `CloudWatchEventLog`
puts a processor at the head of structlog's configured chain (`install`) that hands every event
any module logs (the fleet's lease warnings, the spot watcher, the daemon's own events) to the
CloudWatch side as well, and takes it out again at `close`. The CloudWatch side is a structlog
logger whose processors decide what CloudWatch should see (start, batch_complete, failures,
status, warnings and errors; per-seed `iteration` events only with --log-iterations) and render
JSON; its stdlib logger's one handler is
`OutboxCloudWatchHandler`, a watchtower.CloudWatchLogHandler whose `emit` formats the record the
watchtower way and stores it in the durable outbox instead of an in-memory queue. The outbox's
`logs` lane later hands batches back to watchtower's own `_submit_batch` (stream creation, sequence
tokens, PutLogEvents) in a worker thread, because watchtower uses boto3, which is synchronous: the
event loop never waits on it. A client proxy records the PutLogEvents outcome, so a failed batch
stays in the outbox and is retried instead of being dropped with a warning as watchtower would.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog
import watchtower
from botocore.exceptions import ClientError

from voprd.core.records import Severity
from voprd.sinks.outbox import Outbox, OutboxItem, Priority

LOGS_LANE = "logs"
# Events CloudWatch always gets (besides every warning and error); matched by prefix.
FORWARDED_EVENT_PREFIXES: tuple[str, ...] = (
    "start", "batch_complete", "failure", "status", "stop", "shutdown", "drain", "spot",
    "checkpoint", "alert", "progress", "run_", "finished", "stopped", "aws_",
)
ITERATION_EVENT = "iteration"
WATCHTOWER_ATTEMPTS_MAX = 3  # inside one outbox attempt: covers creating the stream, then putting

# watchtower warns on every failed delivery; the outbox retries and reports health instead.
warnings.filterwarnings("ignore", category=watchtower.WatchtowerWarning)


class LogDeliveryError(Exception):
    """PutLogEvents did not accept the batch."""


class _RecordingClient:
    """Delegates to a boto3 logs client and remembers the last PutLogEvents outcome."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.last_response: dict[str, Any] | None = None
        self.last_error: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_log_events(self, **kwargs: Any) -> Any:
        try:
            response = self._client.put_log_events(**kwargs)
        except BaseException as exc:
            self.last_error = exc
            raise
        self.last_response = response
        return response


class OutboxCloudWatchHandler(watchtower.CloudWatchLogHandler):
    """watchtower's handler with the outbox as its queue (see the module docstring)."""

    def __init__(self, outbox: Outbox, log_group_name: str, log_stream_name: str) -> None:
        self.outbox = outbox
        # The boto3 client is bound at start-up (`bind_client`); emitting only needs the outbox.
        self._recording = _RecordingClient(None)
        self._submit_lock = threading.Lock()
        self.rejected_batches = 0
        super().__init__(
            log_group_name=log_group_name,
            log_stream_name=log_stream_name,
            use_queues=False,
            boto3_client=self._recording,
            create_log_group=False,  # validated at start-up; created by the deployment
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = {"timestamp": int(record.created * 1000), "message": self.format(record)}
            body_bytes_max = self.max_message_size - self.EXTRA_MSG_PAYLOAD_SIZE
            if self._size(message) > body_bytes_max:  # type: ignore[no-untyped-call]
                message = self._truncate(message, body_bytes_max)  # type: ignore[no-untyped-call]
            per_seed = getattr(record, "voprd_per_seed", False)
            self.outbox.put(
                LOGS_LANE, "seed_log" if per_seed else "log", self.log_stream_name,
                msgspec.json.encode(message),
                priority=Priority.SEED_LOG if per_seed else Priority.LOG,
            )
        except Exception:
            self.handleError(record)

    def bind_client(self, boto3_client: Any) -> None:
        self._recording = _RecordingClient(boto3_client)
        self.cwl_client = self._recording

    def submit(self, items: list[OutboxItem]) -> None:
        """Blocking: send one batch through watchtower (call from a worker thread)."""
        batch = [msgspec.json.decode(item.payload) for item in items]
        with self._submit_lock:
            self.sequence_tokens.setdefault(self.log_stream_name, None)
            self._recording.last_response = None
            self._recording.last_error = None
            self._submit_batch(  # type: ignore[no-untyped-call]
                batch, self.log_stream_name, max_retries=WATCHTOWER_ATTEMPTS_MAX
            )
            response, error = self._recording.last_response, self._recording.last_error
        if response is None:
            if isinstance(error, ClientError):
                raise error  # classified by the drainer: retried, or set aside if invalid
            raise LogDeliveryError(f"PutLogEvents failed: {error!r}")
        if response.get("rejectedLogEventsInfo"):
            # The other events of the batch were stored: resending would duplicate them, and
            # the rejected ones (too old or too new) can never be accepted. Counted in health.
            self.rejected_batches += 1


_LOCAL_ONLY = "_voprd_local_only"  # bound by `local()`: the tee leaves the event alone
_SEVERITY_OF_METHOD: dict[str, Severity] = {
    "debug": "debug", "warning": "warning", "warn": "warning", "error": "error",
    "exception": "error", "critical": "error", "fatal": "error",
}


class CloudWatchEventLog:
    """The AWS EventLog: every structlog event (from any logger) to the local log as configured,
    and the chosen ones to CloudWatch too."""

    def __init__(self, handler: logging.Handler, *, log_iterations: bool, instance: str) -> None:
        self.log_iterations = log_iterations
        self._local = structlog.get_logger("voprd")
        stdlib_logger = logging.getLogger(f"voprd.cloudwatch.{id(self)}")
        stdlib_logger.handlers = [handler]
        stdlib_logger.propagate = False
        stdlib_logger.setLevel(logging.DEBUG)
        self._stdlib_logger = stdlib_logger
        self.forwarded = 0
        self._cloudwatch = structlog.wrap_logger(
            stdlib_logger,
            processors=[
                self._choose,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.dict_tracebacks,
                _render_for_stdlib,
            ],
            context_class=dict,
        ).bind(instance=instance)
        self._tee_processor = self._tee  # one bound method object: removed by identity
        self.install()

    def install(self) -> None:
        """Tee every event of structlog's configured chain to CloudWatch (see the module doc)."""
        processors = list(structlog.get_config()["processors"])
        if not any(p is self._tee_processor for p in processors):
            structlog.configure(processors=[self._tee_processor, *processors])

    def _tee(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.pop(_LOCAL_ONLY, False):
            return event
        fields = dict(event)
        name = str(fields.pop("event", ""))
        with contextlib.suppress(Exception):  # CloudWatch must never break the local log
            self.cloudwatch(name, _SEVERITY_OF_METHOD.get(method, "info"), fields)
        return event

    def _choose(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = str(event.get("event", ""))
        if name == ITERATION_EVENT:
            if not self.log_iterations:
                raise structlog.DropEvent
            return event
        if method in ("warning", "error", "critical", "exception"):
            return event
        if name.startswith(FORWARDED_EVENT_PREFIXES):
            return event
        raise structlog.DropEvent

    def set_instance(self, instance: str) -> None:
        self._cloudwatch = self._cloudwatch.bind(instance=instance)

    def emit(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        """The local log; the tee takes it to CloudWatch (if CloudWatch should see it)."""
        getattr(self._local, severity)(event, **fields)

    def local(self, event: str, severity: Severity, **fields: Any) -> None:
        """Only the local log (e.g. about CloudWatch itself being unreachable)."""
        getattr(self._local, severity)(event, **{_LOCAL_ONLY: True, **fields})

    def cloudwatch(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        """Only the CloudWatch side (the tee calls it for every event logged locally)."""
        self.forwarded += 1
        getattr(self._cloudwatch, severity)(event, **fields)

    def close(self) -> None:
        processors = [p for p in structlog.get_config()["processors"]
                      if p is not self._tee_processor]
        structlog.configure(processors=processors)
        self._stdlib_logger.handlers = []


def _render_for_stdlib(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> tuple[tuple[str], dict[str, Any]]:
    """Last processor: JSON text for the handler, plus whether it is a per-seed (droppable) line."""
    per_seed = event.get("event") == ITERATION_EVENT
    rendered = msgspec.json.encode(event, enc_hook=str).decode()
    return (rendered,), {"extra": {"voprd_per_seed": per_seed}}
