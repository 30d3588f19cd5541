"""The local embedded backend: everything in one state directory on disk.

Layout (see docs/daemon.md): checkpoint.json (+ checkpoint.json.prev, the previous good
copy), checkpoint.json.journal (progress journal), failures/seed-{seed}-{unix_ts}.json, alerts.log,
metrics.jsonl, status.json, voprd.pid. Every write that must survive a crash is made durable:
temporary file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import structlog

from voprd.core.failures import report_location
from voprd.core.metrics import MinuteAggregate
from voprd.core.records import (
    Checkpoint,
    CheckpointInvalid,
    FailureRecord,
    JournalHeader,
    JournalRecord,
    Severity,
    failure_name,
    read_checkpoint,
    read_failure,
    read_journal,
    write_checkpoint,
    write_failure,
    write_journal_header,
    write_journal_record,
)
from voprd.events import BackendHealth
from voprd.sinks.base import LoadedCheckpoint

JOURNAL_SUFFIX = ".journal"
PID_FILE = "voprd.pid"
STATUS_FILE = "status.json"
PREV_SUFFIX = ".prev"


def default_state_dir(env: dict[str, str]) -> Path:
    """`$STATE_DIRECTORY` under systemd (first entry), else `$XDG_STATE_HOME/voprd`."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local"
                                             / "state")
    return Path(base) / "voprd"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Atomic, durable replace of `path` with `data`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def keep_aside(path: Path, why: str, now_unix: int) -> Path:
    """Rename (never delete) a file that must not be used any more."""
    aside = path.with_name(f"{path.name}.{why}-{now_unix}")
    for attempt in range(100):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.{why}-{now_unix}-{attempt}")
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


class LocalCheckpointStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.prev_path = path.with_name(path.name + PREV_SUFFIX)

    def _load(self) -> LoadedCheckpoint:
        problems: list[str] = []
        for candidate in (self.path, self.prev_path):
            try:
                data = candidate.read_bytes()
            except FileNotFoundError:
                continue
            try:
                checkpoint = read_checkpoint(data)
            except CheckpointInvalid as exc:
                aside = keep_aside(candidate, "corrupt", int(time.time()))
                problems.append(f"{candidate} is invalid ({exc}); kept aside as {aside}")
                continue
            return LoadedCheckpoint(checkpoint=checkpoint, source=str(candidate), problems=problems)
        return LoadedCheckpoint(checkpoint=None, source="", problems=problems)

    def _save(self, checkpoint: Checkpoint) -> None:
        data = write_checkpoint(checkpoint)
        assert read_checkpoint(data).total_iterations == checkpoint.total_iterations
        if self.path.exists():
            # Keep the current good copy as .prev without a moment where neither exists.
            link_tmp = self.prev_path.with_name(self.prev_path.name + ".tmp")
            link_tmp.unlink(missing_ok=True)
            os.link(self.path, link_tmp)
            os.replace(link_tmp, self.prev_path)
        write_durably(self.path, data)

    def _discard(self) -> None:
        now_unix = int(time.time())
        for path in (self.path, self.prev_path):
            if path.exists():
                keep_aside(path, "reset", now_unix)

    async def load(self) -> LoadedCheckpoint:
        return await asyncio.to_thread(self._load)

    async def save(self, checkpoint: Checkpoint, *, final: bool = False) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    async def discard(self) -> None:
        await asyncio.to_thread(self._discard)


class ProgressJournal:
    """Append-only record of completed seeds since the last checkpoint, made durable in groups.

    `append` only buffers; `commit` writes and fsyncs everything buffered in one go (group commit).
    `restart` truncates it after a checkpoint has made its records redundant.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[bytes] = []
        self._handle: Any = None

    @staticmethod
    def read(path: Path) -> tuple[JournalHeader | None, list[JournalRecord]]:
        try:
            return read_journal(path.read_bytes())
        except FileNotFoundError:
            return None, []

    def restart(self, header: JournalHeader) -> None:
        """Start an empty journal for `header`'s run (synchronous: call via a thread)."""
        if self._handle is not None:
            self._handle.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(write_journal_header(header))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self._handle = open(self.path, "ab")  # noqa: SIM115 (kept open for appends)

    def append(self, record: JournalRecord) -> None:
        self._pending.append(write_journal_record(record))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take_pending(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def write_durably(self, data: bytes) -> None:
        """Synchronous group commit of `data` (from take_pending)."""
        assert self._handle is not None, "restart() first"
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class LocalFailureArchive:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_seed: dict[int, list[Path]] | None = None
        # Puts run in worker threads: one at a time, or two could both miss each other's record.
        self._lock = threading.Lock()

    def _index(self) -> dict[int, list[Path]]:
        if self._by_seed is None:
            by_seed: dict[int, list[Path]] = {}
            for path in sorted(self.directory.glob("seed-*-*.json")):
                parts = path.stem.split("-")
                if len(parts) == 3 and parts[1].isdigit():
                    by_seed.setdefault(int(parts[1]), []).append(path)
            self._by_seed = by_seed
        return self._by_seed

    def _put(self, record: FailureRecord) -> str:
        with self._lock:
            return self._put_locked(record)

    def _put_locked(self, record: FailureRecord) -> str:
        index = self._index()
        for existing in index.get(record.seed, []):
            try:
                if read_failure(existing.read_bytes()).run_id == record.run_id:
                    return str(existing)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                continue
        path = self.directory / failure_name(record)
        write_durably(path, write_failure(record))
        index.setdefault(record.seed, []).append(path)
        return str(path)

    async def put(self, record: FailureRecord) -> str:
        return await asyncio.to_thread(self._put, record)

    def report_path(self, archived_at: str) -> Path:
        """The report's path beside the record `archived_at` (a path or URL ending in the
        record's file name)."""
        name = PurePosixPath(report_location(archived_at)).name
        assert name.startswith("seed-"), archived_at
        return self.directory / name

    async def put_report(self, archived_at: str, html: bytes) -> str:
        path = self.report_path(archived_at)
        await asyncio.to_thread(write_durably, path, html)
        return str(path)


def _append_durably(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class LocalAlertSink:
    """alerts.log: each alert as `Subject: ...` followed by its message and a blank line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent = 0

    async def send(self, subject: str, message: str, *, once_key: str | None = None) -> None:
        # alerts.log is a log, not a notification: a repeat after a crash is one more entry.
        del once_key
        text = f"Subject: {subject}\n{message.rstrip()}\n\n"
        await asyncio.to_thread(_append_durably, self.path, text.encode())
        self.sent += 1

    async def hold(self, subject: str, message: str, *, once_key: str | None = None
                   ) -> int | None:
        # No queue to hold it in (and no fleet without a bucket): written at once.
        await self.send(subject, message, once_key=once_key)
        return None

    async def release(self, ticket: int | None) -> None:
        assert ticket is None

    async def drop(self, ticket: int | None) -> None:
        assert ticket is None


class LocalMetricsSink:
    """metrics.jsonl: one line per closed minute."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._encoder = msgspec.json.Encoder()

    async def publish(self, aggregates: Sequence[MinuteAggregate]) -> None:
        if aggregates:
            data = b"".join(self._encoder.encode(a) + b"\n" for a in aggregates)
            await asyncio.to_thread(_append_durably, self.path, data)


class StructlogEventLog:
    """Structured events as structlog log lines (the app configures the renderer and stream)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("voprd")

    def emit(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        getattr(self._log, severity)(event, **fields)


class LocalBackend:
    name = "local"

    def __init__(self, state_dir: Path, checkpoint_path: Path | None = None) -> None:
        self.state_dir = state_dir
        self.checkpoint_path = checkpoint_path or state_dir / "checkpoint.json"
        self.checkpoints = LocalCheckpointStore(self.checkpoint_path)
        self.archive = LocalFailureArchive(state_dir / "failures")
        self.alerts = LocalAlertSink(state_dir / "alerts.log")
        self.metrics = LocalMetricsSink(state_dir / "metrics.jsonl")
        self.events = StructlogEventLog()

    async def start(self) -> None:
        (self.state_dir / "failures").mkdir(parents=True, exist_ok=True)
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def health(self) -> BackendHealth:
        return BackendHealth(name=self.name, healthy=True, detail=str(self.state_dir))

    def pending_alerts(self) -> int:
        return 0
