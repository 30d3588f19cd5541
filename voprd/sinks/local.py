"""The local embedded backend: everything in one state directory on disk.

Layout (see docs/daemon.md): checkpoint.json (+ checkpoint.json.prev, the previous good
copy), checkpoint.json.journal (progress journal), failures/seed-{seed}-{unix_ts}.json, alerts.log,
metrics.jsonl, status.json, voprd.pid. Every write that must survive a crash is made durable:
temporary file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import structlog

from voprd.core.failures import report_location
from voprd.core.metrics import MetricBatch
from voprd.core.records import (
    Checkpoint,
    CheckpointInvalid,
    FailureRecord,
    JournalContents,
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
ALERTS_FILE = "alerts.log"
METRICS_FILE = "metrics.jsonl"
FAILURES_DIR = "failures"
OUTBOX_FILE = "aws-outbox.sqlite3"  # the AWS backend's durable outbox (voprd.sinks.outbox)
# Every name the daemon writes at a fixed path in the state directory (SQLite adds its -wal,
# -shm and -journal files beside the outbox).
STATE_NAMES = (PID_FILE, STATUS_FILE, ALERTS_FILE, METRICS_FILE, FAILURES_DIR, OUTBOX_FILE,
               *(OUTBOX_FILE + suffix for suffix in ("-wal", "-shm", "-journal")))


def default_state_dir(env: dict[str, str]) -> Path:
    """`$STATE_DIRECTORY` under systemd (first entry), else `$XDG_STATE_HOME/voprd`."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local"
                                             / "state")
    return Path(base) / "voprd"


STATE_DIR_MODE = 0o700
FILE_MODE = 0o600
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class StateDirError(Exception):
    """The state directory cannot be used safely (not a directory, another owner, writable by
    others, not writable); the message names it and says what to do."""


def prepare_state_dir(directory: Path) -> None:
    """Create `directory` (mode 0700) or check the existing one: a directory (a symlink to one is
    followed, as systemd's DynamicUser state directories are symlinks), owned by this user, not
    writable by group or others (anyone who can write in it could plant symlinks or forge state).
    Raises StateDirError."""
    try:
        directory.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise StateDirError(f"state directory {directory} exists and is not a directory") from None
    except NotADirectoryError:
        raise StateDirError(f"state directory {directory}: a parent is not a directory") from None
    except OSError as exc:
        raise StateDirError(f"state directory {directory}: cannot create it: "
                            f"{exc.strerror or exc}") from None
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"state directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"state directory {directory} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}); use a directory of your own (--state-dir)"
        )
    if info.st_mode & 0o022:
        raise StateDirError(
            f"state directory {directory} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod go-w {directory}` or use another"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateDirError(f"state directory {directory} is not writable")


def checkpoint_paths(checkpoint: Path) -> tuple[Path, Path, Path]:
    """The checkpoint, its previous good copy and its journal."""
    return (checkpoint, checkpoint.with_name(checkpoint.name + PREV_SUFFIX),
            checkpoint.with_name(checkpoint.name + JOURNAL_SUFFIX))


def refuse_symlinks(paths: Iterable[Path]) -> None:
    """None of the daemon's fixed paths may be a symbolic link: writing through one would write
    wherever it points (nothing the daemon makes is ever a symlink). Raises StateDirError."""
    for path in paths:
        if path.is_symlink():
            raise StateDirError(f"{path} is a symbolic link (to {os.readlink(path)}); voprd "
                                "never writes through one: remove it")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically: a fresh temporary file from mkstemp in the same
    directory (never a fixed name: a symlink planted there is not followed), mode 0600, renamed
    over `path` (a symlink at `path` is replaced, not followed). `durable`: fsync the file and
    the directory too."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_durably(path: Path, data: bytes) -> None:
    """Atomic, durable replace of `path` with `data`."""
    write_atomically(path, data, durable=True)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError from writing through an open file names the file (a bare "[Errno 28] No space
    left on device" does not say where)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def read_nofollow(path: Path) -> bytes:
    """The bytes of the regular file `path`; a symlink there raises OSError (ELOOP), a missing
    file FileNotFoundError."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def open_append_nofollow(path: Path, *, create: bool = True) -> Any:
    """`path` opened for appending (binary, mode 0600 if created), never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | _NOFOLLOW | (os.O_CREAT if create else 0)
    return os.fdopen(os.open(path, flags, FILE_MODE), "ab")


def keep_aside(path: Path, why: str, now_unix: int) -> Path:
    """Rename (never delete) a file that must not be used any more."""
    aside = path.with_name(f"{path.name}.{why}-{now_unix}")
    for attempt in range(100):
        if not os.path.lexists(aside):
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
                checkpoint = read_checkpoint(read_nofollow(candidate))
            except FileNotFoundError:
                continue
            except (CheckpointInvalid, OSError) as exc:
                if isinstance(exc, OSError):  # a symlink where it belongs is set aside, not read
                    if exc.errno != errno.ELOOP:
                        raise
                    exc = CheckpointInvalid(f"not a regular file: {exc.strerror}")
                aside = keep_aside(candidate, "corrupt", int(time.time()))
                problems.append(f"{candidate} is invalid ({exc}); kept aside as {aside}")
                continue
            return LoadedCheckpoint(checkpoint=checkpoint, source=str(candidate), problems=problems)
        return LoadedCheckpoint(checkpoint=None, source="", problems=problems)

    def _save(self, checkpoint: Checkpoint) -> None:
        data = write_checkpoint(checkpoint)
        assert read_checkpoint(data).total_iterations == checkpoint.total_iterations
        if os.path.lexists(self.path):
            # Keep the current good copy as .prev without a moment where neither exists (a
            # fresh random link name: nothing planted at a fixed name is ever written through).
            link_tmp = self.prev_path.with_name(
                f".{self.prev_path.name}.{secrets.token_hex(8)}.tmp")
            os.link(self.path, link_tmp, follow_symlinks=False)
            os.replace(link_tmp, self.prev_path)
        write_durably(self.path, data)

    def _discard(self) -> None:
        now_unix = int(time.time())
        for path in (self.path, self.prev_path):
            if os.path.lexists(path):
                keep_aside(path, "reset", now_unix)

    async def load(self) -> LoadedCheckpoint:
        return await asyncio.to_thread(self._load)

    async def save(self, checkpoint: Checkpoint, *, final: bool = False) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    async def discard(self) -> None:
        await asyncio.to_thread(self._discard)


class ProgressJournal:
    """Append-only record of completed seeds since the last checkpoint, made durable in groups.

    `append` only buffers; `write_durably` writes and fsyncs everything buffered in one go (group
    commit). `restart` truncates it after a checkpoint has made its records redundant. Each record
    line carries a checksum keyed by the run (voprd.core.records.write_journal_record).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[bytes] = []
        self._handle: Any = None
        self._run_id: str | None = None

    @staticmethod
    def read(path: Path) -> JournalContents:
        try:
            return read_journal(read_nofollow(path))
        except FileNotFoundError:
            return JournalContents(header=None, records=[])

    def restart(self, header: JournalHeader) -> None:
        """Start an empty journal for `header`'s run (synchronous: call via a thread)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        write_durably(self.path, write_journal_header(header))
        self._handle = open_append_nofollow(self.path, create=False)
        self._run_id = header.run_id

    def append(self, record: JournalRecord) -> None:
        assert self._run_id is not None, "restart() first"
        self._pending.append(write_journal_record(record, self._run_id))

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
        with naming(self.path):
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
                if read_failure(read_nofollow(existing)).run_id == record.run_id:
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
    with naming(path), open_append_nofollow(path) as handle:
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
    """metrics.jsonl: one line per published batch (a minute's aggregate, its run and number).

    Idempotent per (run_id, batch): a batch a restart publishes again (voprd.core.metrics) is
    not appended twice. Batches of a run are published in order, so the file's tail says where
    each run stands."""

    TAIL_BYTES = 64 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self._encoder = msgspec.json.Encoder()
        self._last_batch: dict[str, int] | None = None

    def _read_last_batches(self) -> dict[str, int]:
        last: dict[str, int] = {}
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - self.TAIL_BYTES))
                tail = handle.read()
        except FileNotFoundError:
            return last
        for line in tail.split(b"\n"):
            try:
                batch = msgspec.json.decode(line, type=MetricBatch)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a cut first line, an older line without run and batch
            last[batch.run_id] = max(last.get(batch.run_id, -1), batch.batch)
        return last

    def _append(self, batches: Sequence[MetricBatch]) -> None:
        if self._last_batch is None:
            self._last_batch = self._read_last_batches()
        last = self._last_batch
        fresh = [b for b in batches if b.batch > last.get(b.run_id, -1)]
        if fresh:
            _append_durably(self.path, b"".join(self._encoder.encode(b) + b"\n" for b in fresh))
            for batch in fresh:
                last[batch.run_id] = max(last.get(batch.run_id, -1), batch.batch)

    async def publish(self, batches: Sequence[MetricBatch]) -> None:
        if batches:
            await asyncio.to_thread(self._append, batches)


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
        self.archive = LocalFailureArchive(state_dir / FAILURES_DIR)
        self.alerts = LocalAlertSink(state_dir / ALERTS_FILE)
        self.metrics = LocalMetricsSink(state_dir / METRICS_FILE)
        self.events = StructlogEventLog()

    async def start(self) -> None:
        (self.state_dir / FAILURES_DIR).mkdir(mode=STATE_DIR_MODE, exist_ok=True)
        self.checkpoint_path.parent.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def health(self) -> BackendHealth:
        return BackendHealth(name=self.name, healthy=True, detail=str(self.state_dir))

    def pending_alerts(self) -> int:
        return 0
