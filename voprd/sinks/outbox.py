"""Durable outbox: every AWS write is first a row in a local SQLite file, then sent by a drainer.

Why SQLite: one file, atomic transactions, ordered ids, survives SIGKILL (WAL; essential rows are
fsynced at commit, log rows are not), and it is in the standard library. The simulation only ever
pays for a local insert; sending, retrying and backing off happen in `OutboxDrainer`, one
ordered lane per AWS service, so an SNS outage does not hold back S3 and a replay keeps each
service's writes in their original order.

Deduplication: items may carry a `dedup_key`; once an item with that key was sent it is recorded in
a durable ledger (`sent`) in the same transaction that removes it, so a re-enqueue (for example
after a restart that replays the same failure) or a replay creates no second message. Items may
instead carry a `coalesce_key`: a newer write replaces a pending older one (checkpoints: only the
newest `latest.json` matters). Each row has a revision so an in-flight send of an old revision
never removes the newer content that replaced it meanwhile.

Held items: `hold` enqueues an item durably but keeps the drainer off it until `release` (or
`drop`, which forgets it). A fleet alert is held while the daemon claims its fingerprint in the
bucket, then released (ours) or dropped (another daemon's): the alert is safely on disk before the
claim, so a crash in between may repeat it but never lose it. Opening the outbox releases
whatever a previous process held.

Bounds: `max_items` and `max_bytes` bound the queue. When full, the lowest priority rows go first
(per-seed logs, then other logs, then metric batches), counted per kind and reported in `stats()`.
Essential rows (checkpoints, failure records, alerts) are never dropped; they may exceed the soft
bound up to `essential_bytes_max`, past which `put` raises `OutboxFull` (the local archive still
has the record; the caller reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import IntEnum
from pathlib import Path

import msgspec


class Priority(IntEnum):
    """Lower values are dropped first when the outbox is full."""

    SEED_LOG = 0
    LOG = 1
    METRICS = 2
    ESSENTIAL = 3


class OutboxFull(Exception):
    """An essential item does not fit even past the soft bound."""


class PermanentError(Exception):
    """A send that will never succeed as is (e.g. a validation error): the item is set aside."""


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    item_id: int
    lane: str
    kind: str
    key: str
    payload: bytes
    priority: int
    revision: int
    attempts: int
    dedup_key: str | None


class LaneHealth(msgspec.Struct, kw_only=True):
    state: str = "idle"  # idle | ok | retrying
    sent: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_unix_s: float | None = None
    # When the current send started (monotonic seconds), None when no send is in flight.
    in_flight_since_s: float | None = None


class OutboxStats(msgspec.Struct, kw_only=True):
    pending_items: int
    pending_bytes: int
    pending_by_lane: dict[str, int]
    dropped_by_kind: dict[str, int]
    dead_items: int
    refused_essential: int
    lanes: dict[str, LaneHealth]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id INTEGER PRIMARY KEY AUTOINCREMENT,
    lane TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    size_bytes INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    coalesce_key TEXT UNIQUE,
    dedup_key TEXT UNIQUE,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_lane ON items (lane, item_id);
CREATE INDEX IF NOT EXISTS items_priority ON items (priority, item_id);
CREATE TABLE IF NOT EXISTS sent (
    dedup_key TEXT PRIMARY KEY,
    sent_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_seq ON sent (sent_seq);
CREATE TABLE IF NOT EXISTS dead (
    item_id INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLUMNS = "item_id, lane, kind, key, payload, priority, revision, attempts, dedup_key"


def _item(row: tuple[object, ...]) -> OutboxItem:
    item_id, lane, kind, key, payload, priority, revision, attempts, dedup_key = row
    assert isinstance(payload, bytes)
    return OutboxItem(
        item_id=int(str(item_id)), lane=str(lane), kind=str(kind), key=str(key), payload=payload,
        priority=int(str(priority)), revision=int(str(revision)), attempts=int(str(attempts)),
        dedup_key=None if dedup_key is None else str(dedup_key),
    )


class Outbox:
    """The durable queue. Thread-safe (logging handlers may call `put` from any thread)."""

    def __init__(
        self,
        path: Path,
        *,
        max_items: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        essential_bytes_max: int = 512 * 1024 * 1024,
        sent_ledger_max: int = 100_000,
    ) -> None:
        assert max_items > 0 and max_bytes > 0 and essential_bytes_max >= max_bytes
        self.path = path
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.essential_bytes_max = essential_bytes_max
        self.sent_ledger_max = sent_ledger_max
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Nothing is written where a symlink points: the database path is refused here, and
        # SQLite opens its -wal, -shm and -journal companions with O_NOFOLLOW itself.
        if path.is_symlink():
            raise OSError(errno.ELOOP, "the outbox database is a symbolic link", str(path))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._synchronous_full = True
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)").fetchall()}
        if "held" not in columns:  # an outbox written before held items existed
            self._db.execute("ALTER TABLE items ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
        # Items a previous process held and never settled (it crashed, or was killed while
        # claiming): send them. An alert may repeat; none is lost.
        self.released_at_open = self._db.execute(
            "UPDATE items SET held = 0 WHERE held != 0").rowcount
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM items"
        ).fetchone()
        self._items, self._bytes = int(row[0]), int(row[1])
        self._sent_seq = int(
            self._db.execute("SELECT COALESCE(MAX(sent_seq), 0) FROM sent").fetchone()[0]
        )
        self._listeners: list[Callable[[str], None]] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """`listener(lane)` is called after each successful put (the drainer's wake-up)."""
        self._listeners.append(listener)

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        lane: str,
        kind: str,
        key: str,
        payload: bytes,
        *,
        priority: Priority,
        dedup_key: str | None = None,
        coalesce_key: str | None = None,
    ) -> bool:
        """Enqueue durably. False if deduplicated away or dropped for space (counted)."""
        return self._put(lane, kind, key, payload, priority=priority, dedup_key=dedup_key,
                         coalesce_key=coalesce_key) is not None

    def hold(
        self, lane: str, kind: str, key: str, payload: bytes, *, priority: Priority,
        dedup_key: str | None = None,
    ) -> int | None:
        """Enqueue durably but held back from the drainer until `release(item_id)`; `drop`
        forgets it. Returns the item id, or None if deduplicated away (already sent or queued)."""
        return self._put(lane, kind, key, payload, priority=priority, dedup_key=dedup_key,
                         held=True)

    def release(self, item_id: int) -> None:
        """Let the drainer send a held item."""
        with self._lock:
            row = self._db.execute(
                "UPDATE items SET held = 0 WHERE item_id = ? RETURNING lane", (item_id,)
            ).fetchone()
        if row is not None:
            self._notify(str(row[0]))

    def drop(self, item_id: int) -> None:
        """Forget a held item (its dedup key is not recorded as sent)."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM items WHERE item_id = ? AND held != 0 RETURNING size_bytes",
                (item_id,),
            ).fetchone()
            if row is not None:
                self._items -= 1
                self._bytes -= int(row[0])

    def _put(
        self,
        lane: str,
        kind: str,
        key: str,
        payload: bytes,
        *,
        priority: Priority,
        dedup_key: str | None = None,
        coalesce_key: str | None = None,
        held: bool = False,
    ) -> int | None:
        assert not (dedup_key and coalesce_key), "an item is deduplicated or coalesced, not both"
        assert not (held and coalesce_key), "a held item is not coalesced"
        size_bytes = len(payload)
        with self._lock:
            if dedup_key is not None and self._known(dedup_key):
                return None
            self._set_synchronous(full=priority >= Priority.METRICS)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if coalesce_key is not None:
                    row = self._db.execute(
                        "SELECT item_id, size_bytes FROM items WHERE coalesce_key = ?",
                        (coalesce_key,),
                    ).fetchone()
                    if row is not None:
                        # Replace the pending older write in place: it keeps its position.
                        self._db.execute(
                            "UPDATE items SET payload = ?, size_bytes = ?, revision = revision + 1,"
                            " key = ? WHERE item_id = ?",
                            (payload, size_bytes, key, row[0]),
                        )
                        self._db.execute("COMMIT")
                        self._bytes += size_bytes - int(row[1])
                        self._notify(lane)
                        return int(row[0])
                if not self._make_room(size_bytes, priority):
                    self._db.execute("COMMIT")
                    return None
                cursor = self._db.execute(
                    "INSERT INTO items (lane, kind, key, payload, size_bytes, priority,"
                    " coalesce_key, dedup_key, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (lane, kind, key, payload, size_bytes, int(priority), coalesce_key, dedup_key,
                     int(held)),
                )
                item_id = cursor.lastrowid
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._items += 1
            self._bytes += size_bytes
        assert item_id is not None
        if not held:
            self._notify(lane)
        return int(item_id)

    def _set_synchronous(self, *, full: bool) -> None:
        """Essential rows (and metric batches) are fsynced at commit; log rows only reach the
        OS (WAL, synchronous=NORMAL): they survive a process crash, not a power cut, and cost the
        event loop no fsync even with one row per seed (--log-iterations)."""
        if full != self._synchronous_full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._synchronous_full = full

    def _notify(self, lane: str) -> None:
        for listener in self._listeners:
            listener(lane)

    def _known(self, dedup_key: str) -> bool:
        sent = self._db.execute("SELECT 1 FROM sent WHERE dedup_key = ?", (dedup_key,)).fetchone()
        if sent is not None:
            return True
        pending = self._db.execute(
            "SELECT 1 FROM items WHERE dedup_key = ?", (dedup_key,)
        ).fetchone()
        return pending is not None

    def _make_room(self, size_bytes: int, priority: Priority) -> bool:
        """Drop lower-priority rows until the new one fits. Called inside a transaction."""
        evictions_max = self.max_items  # bound: never more evictions than rows
        for _ in range(evictions_max):
            if self._items + 1 <= self.max_items and self._bytes + size_bytes <= self.max_bytes:
                return True
            victim = self._db.execute(
                "SELECT item_id, kind, size_bytes FROM items WHERE priority < ?"
                " ORDER BY priority, item_id LIMIT 1",
                (min(int(priority), int(Priority.ESSENTIAL)),),
            ).fetchone()
            if victim is None:
                break
            self._db.execute("DELETE FROM items WHERE item_id = ?", (victim[0],))
            self._count(f"dropped:{victim[1]}")
            self._items -= 1
            self._bytes -= int(victim[2])
        if priority < Priority.ESSENTIAL:
            self._count(f"dropped:{'log' if priority <= Priority.LOG else 'metrics'}")
            return False
        if self._bytes + size_bytes > self.essential_bytes_max:
            self._count("refused_essential")
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            raise OutboxFull(
                f"outbox {self.path} holds {self._bytes} bytes; an essential item of "
                f"{size_bytes} bytes exceeds essential_bytes_max={self.essential_bytes_max}"
            )
        return True

    def _count(self, name: str, delta: int = 1) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )

    # -- reading and completing ----------------------------------------------------------------

    def head(self, lane: str, limit: int, bytes_max: int | None = None) -> list[OutboxItem]:
        """The oldest pending items of a lane, in enqueue order: at most `limit` items and (past
        the first) at most `bytes_max` payload bytes."""
        assert limit > 0
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, size_bytes FROM items WHERE lane = ? AND held = 0"
                " ORDER BY item_id LIMIT ?",
                (lane, limit),
            ).fetchall()
        items: list[OutboxItem] = []
        total_bytes = 0
        for row in rows:
            total_bytes += int(row[-1])
            if items and bytes_max is not None and total_bytes > bytes_max:
                break
            items.append(_item(row[:-1]))
        return items

    def remove_coalesced(self, coalesce_key: str) -> bool:
        """Forget a pending coalesced write (e.g. the old run's checkpoint on --reset)."""
        with self._lock:
            row = self._db.execute(
                "DELETE FROM items WHERE coalesce_key = ? RETURNING size_bytes", (coalesce_key,)
            ).fetchone()
            if row is None:
                return False
            self._items -= 1
            self._bytes -= int(row[0])
            return True

    def done(self, items: Sequence[OutboxItem]) -> None:
        """Remove sent items (only the revision that was sent) and record their dedup keys."""
        with self._lock:
            self._set_synchronous(full=any(item.priority >= Priority.METRICS for item in items))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    row = self._db.execute(
                        "DELETE FROM items WHERE item_id = ? AND revision = ? RETURNING size_bytes",
                        (item.item_id, item.revision),
                    ).fetchone()
                    if row is not None:
                        self._items -= 1
                        self._bytes -= int(row[0])
                    if item.dedup_key is not None:
                        self._sent_seq += 1
                        self._db.execute(
                            "INSERT OR IGNORE INTO sent (dedup_key, sent_seq) VALUES (?, ?)",
                            (item.dedup_key, self._sent_seq),
                        )
                self._db.execute(
                    "DELETE FROM sent WHERE sent_seq <= ?", (self._sent_seq - self.sent_ledger_max,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def failed(self, items: Sequence[OutboxItem]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE items SET attempts = attempts + 1 WHERE item_id = ?",
                [(item.item_id,) for item in items],
            )

    def set_aside(self, item: OutboxItem, reason: str) -> None:
        """Move an item that can never be sent to the `dead` table (kept, counted, reported)."""
        with self._lock:
            self._set_synchronous(full=True)
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "DELETE FROM items WHERE item_id = ? RETURNING size_bytes", (item.item_id,)
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO dead (item_id, lane, kind, key, payload, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item.item_id, item.lane, item.kind, item.key, item.payload, reason[:2000]),
            )
            self._db.execute("COMMIT")
            if row is not None:
                self._items -= 1
                self._bytes -= int(row[0])

    def pending(self, lane: str | None = None) -> int:
        with self._lock:
            if lane is None:
                return self._items
            row = self._db.execute("SELECT COUNT(*) FROM items WHERE lane = ?", (lane,)).fetchone()
            return int(row[0])

    def stats(self, lanes: dict[str, LaneHealth] | None = None) -> OutboxStats:
        with self._lock:
            by_lane = dict(
                self._db.execute(
                    "SELECT lane, COUNT(*) FROM items GROUP BY lane ORDER BY lane"
                ).fetchall()
            )
            counters = dict(
                self._db.execute("SELECT name, value FROM counters ORDER BY name").fetchall()
            )
            dead = int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
            items, size_bytes = self._items, self._bytes
        return OutboxStats(
            pending_items=items,
            pending_bytes=size_bytes,
            pending_by_lane={str(k): int(v) for k, v in by_lane.items()},
            dropped_by_kind={
                str(k).removeprefix("dropped:"): int(v)
                for k, v in counters.items()
                if str(k).startswith("dropped:")
            },
            dead_items=dead,
            refused_essential=int(counters.get("refused_essential", 0)),
            lanes=dict(lanes or {}),
        )


# -- the drainer (the I/O side) --------------------------------------------------------------------

Sender = Callable[[list[OutboxItem]], Awaitable[None]]


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with full jitter, capped."""

    base_s: float = 0.25
    cap_s: float = 30.0
    factor: float = 2.0

    def delay_s(self, consecutive_failures: int, rng: random.Random) -> float:
        assert consecutive_failures >= 1
        ceiling_s = min(self.cap_s, self.base_s * self.factor ** min(consecutive_failures - 1, 32))
        # Full jitter, but never below a tenth of the ceiling so a dead endpoint is not hammered.
        return ceiling_s * (0.1 + 0.9 * rng.random())


class Lane(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    send: Sender
    batch_max: int = 1
    batch_bytes_max: int | None = None


class OutboxDrainer:
    """Sends each lane's items in order; on error backs off and retries the same head item."""

    def __init__(
        self,
        outbox: Outbox,
        lanes: Sequence[Lane],
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        is_permanent: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.outbox = outbox
        self.lanes = {lane.name: lane for lane in lanes}
        self.backoff = backoff or Backoff()
        # Jitter only: seeded per process, never used by the simulation.
        self._rng = rng or random.Random(time.time_ns())
        self._is_permanent = is_permanent or (lambda exc: isinstance(exc, PermanentError))
        self.health: dict[str, LaneHealth] = {name: LaneHealth() for name in self.lanes}
        self._wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.lanes}
        self._idle: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.lanes}
        self._loop = asyncio.get_running_loop()
        outbox.add_listener(self._on_put)

    def _on_put(self, lane: str) -> None:
        event = self._wake.get(lane)
        if event is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(event.set)

    def kick(self) -> None:
        """Retry every lane now instead of waiting out its backoff (e.g. when draining)."""
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name in self.lanes:
                group.create_task(self._run_lane(name), name=f"outbox-{name}")

    async def _run_lane(self, name: str) -> None:
        lane, health, wake = self.lanes[name], self.health[name], self._wake[name]
        while True:
            items = self.outbox.head(name, lane.batch_max, lane.batch_bytes_max)
            if not items:
                self._idle[name].set()
                health.state = "idle" if health.consecutive_failures == 0 else health.state
                wake.clear()
                await wake.wait()
                continue
            self._idle[name].clear()
            health.in_flight_since_s = time.monotonic()
            try:
                await lane.send(items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.in_flight_since_s = None
                if self._is_permanent(exc):
                    # Only the head item is set aside; the rest are retried in order.
                    self.outbox.set_aside(items[0], f"{type(exc).__name__}: {exc}")
                    health.last_error = f"set aside {items[0].key}: {exc}"
                    continue
                self.outbox.failed(items)
                health.failures += 1
                health.consecutive_failures += 1
                health.state = "retrying"
                health.last_error = f"{type(exc).__name__}: {exc}"[:500]
                delay_s = self.backoff.delay_s(health.consecutive_failures, self._rng)
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay_s)
                continue
            health.in_flight_since_s = None
            self.outbox.done(items)
            health.sent += len(items)
            health.consecutive_failures = 0
            health.state = "ok"
            health.last_success_unix_s = time.time()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every lane is empty (retrying promptly) or the timeout; True if empty."""
        deadline_s = time.monotonic() + timeout_s
        polls_max = int(timeout_s / 0.05) + 2  # bound: one poll per 50 ms
        for poll in range(polls_max):
            if self.outbox.pending() == 0:
                return True
            if time.monotonic() >= deadline_s:
                break
            if poll % 10 == 0:  # retry promptly, but at most twice a second per lane
                self.kick()
            await asyncio.sleep(min(0.05, max(0.0, deadline_s - time.monotonic())))
        return self.outbox.pending() == 0

    def stats(self) -> OutboxStats:
        return self.outbox.stats(self.health)
