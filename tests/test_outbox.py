"""The durable outbox: order, dedup ledger, coalescing, bounds, persistence, retry with backoff."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from voprd.sinks.outbox import (
    Backoff,
    Lane,
    Outbox,
    OutboxDrainer,
    OutboxFull,
    OutboxItem,
    PermanentError,
    Priority,
)


def test_fifo_per_lane_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    for index in range(5):
        outbox.put("s3", "failure", f"k{index}", b"x", priority=Priority.ESSENTIAL)
        outbox.put("sns", "alert", f"a{index}", b"y", priority=Priority.ESSENTIAL)
    outbox.close()
    reopened = Outbox(path)
    assert [item.key for item in reopened.head("s3", 10)] == [f"k{i}" for i in range(5)]
    assert [item.key for item in reopened.head("sns", 2)] == ["a0", "a1"]
    assert reopened.pending() == 10


def test_dedup_ledger_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    assert outbox.put("sns", "alert", "a", b"1", priority=Priority.ESSENTIAL, dedup_key="d1")
    assert not outbox.put("sns", "alert", "a", b"1", priority=Priority.ESSENTIAL, dedup_key="d1")
    outbox.done(outbox.head("sns", 1))
    outbox.close()
    reopened = Outbox(path)
    # Sent before the restart: a replayed enqueue creates nothing.
    assert not reopened.put("sns", "alert", "a", b"1", priority=Priority.ESSENTIAL, dedup_key="d1")
    assert reopened.pending() == 0


def test_coalesce_keeps_newest_and_inflight_send_does_not_lose_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    outbox.put("s3", "checkpoint", "latest", b"v1", priority=Priority.ESSENTIAL, coalesce_key="c")
    in_flight = outbox.head("s3", 1)
    outbox.put("s3", "checkpoint", "latest", b"v2", priority=Priority.ESSENTIAL, coalesce_key="c")
    assert outbox.pending() == 1
    outbox.done(in_flight)  # v1 was sent; v2 replaced it meanwhile and must still be pending
    [item] = outbox.head("s3", 1)
    assert item.payload == b"v2"
    outbox.done([item])
    assert outbox.pending() == 0


def test_full_outbox_drops_seed_logs_first_never_essentials(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_items=4, max_bytes=10_000,
                    essential_bytes_max=10_000)
    outbox.put("logs", "seed_log", "s", b"i1", priority=Priority.SEED_LOG)
    outbox.put("logs", "log", "s", b"l1", priority=Priority.LOG)
    outbox.put("metrics", "metrics", "m", b"m1", priority=Priority.METRICS)
    outbox.put("s3", "failure", "f1", b"f1", priority=Priority.ESSENTIAL)
    assert outbox.put("s3", "failure", "f2", b"f2", priority=Priority.ESSENTIAL)
    assert outbox.stats().dropped_by_kind == {"seed_log": 1}
    assert outbox.put("sns", "alert", "a1", b"a1", priority=Priority.ESSENTIAL)
    assert outbox.put("sns", "alert", "a2", b"a2", priority=Priority.ESSENTIAL)
    assert outbox.stats().dropped_by_kind == {"seed_log": 1, "log": 1, "metrics": 1}
    # Full of essentials: a new per-seed log is dropped (counted), an alert still gets in.
    assert not outbox.put("logs", "seed_log", "s", b"i2", priority=Priority.SEED_LOG)
    assert outbox.put("sns", "alert", "a3", b"a3", priority=Priority.ESSENTIAL)
    stats = outbox.stats()
    assert stats.pending_items == 5
    assert stats.dropped_by_kind == {"seed_log": 1, "log": 2, "metrics": 1}
    assert sorted(item.key for item in outbox.head("s3", 10) + outbox.head("sns", 10)) == [
        "a1", "a2", "a3", "f1", "f2",
    ]


def test_essentials_past_the_hard_cap_are_refused_loudly(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", max_items=10, max_bytes=100, essential_bytes_max=150)
    outbox.put("s3", "failure", "f1", b"x" * 100, priority=Priority.ESSENTIAL)
    with pytest.raises(OutboxFull):
        outbox.put("s3", "failure", "f2", b"x" * 100, priority=Priority.ESSENTIAL)
    assert outbox.stats().refused_essential == 1
    assert outbox.pending() == 1


def test_backoff_is_bounded_and_jittered() -> None:
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    rng = random.Random(7)
    delays = [backoff.delay_s(n, rng) for n in range(1, 40)]
    assert all(0.01 <= d <= 2.0 for d in delays)
    assert max(delays[10:]) > 1.0  # grows to the cap
    assert len(set(delays)) == len(delays)  # jittered


async def test_drainer_retries_in_order_then_delivers_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    delivered: list[str] = []
    failures_left = [3]

    async def flaky_send(items: list[OutboxItem]) -> None:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise ConnectionError("down")
        delivered.extend(item.key for item in items)

    drainer = OutboxDrainer(
        outbox, [Lane(name="s3", send=flaky_send)],
        backoff=Backoff(base_s=0.01, cap_s=0.05), rng=random.Random(1),
    )
    task = asyncio.create_task(drainer.run())
    for index in range(5):
        outbox.put("s3", "failure", f"k{index}", b"x", priority=Priority.ESSENTIAL)
    assert await drainer.drain(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delivered == [f"k{i}" for i in range(5)]
    assert drainer.health["s3"].failures == 3
    assert drainer.health["s3"].state != "retrying"
    assert drainer.health["s3"].consecutive_failures == 0


async def test_permanent_error_sets_item_aside_and_continues(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    delivered: list[str] = []

    async def send(items: list[OutboxItem]) -> None:
        if items[0].key == "bad":
            raise PermanentError("validation")
        delivered.append(items[0].key)

    drainer = OutboxDrainer(outbox, [Lane(name="s3", send=send)])
    task = asyncio.create_task(drainer.run())
    for key in ("a", "bad", "b"):
        outbox.put("s3", "failure", key, b"x", priority=Priority.ESSENTIAL)
    assert await drainer.drain(5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delivered == ["a", "b"]
    assert outbox.stats().dead_items == 1


async def test_held_items_wait_for_release_drop_forgets_and_a_restart_sends(
    tmp_path: Path
) -> None:
    """An alert held while the fleet claims its fingerprint: not sent until released; dropped,
    it is never sent (and its dedup key stays free); held by a process that died, it is sent by
    the next one."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    delivered: list[str] = []

    async def send(items: list[OutboxItem]) -> None:
        delivered.extend(item.key for item in items)

    drainer = OutboxDrainer(outbox, [Lane(name="sns", send=send)])
    task = asyncio.create_task(drainer.run())
    kept = outbox.hold("sns", "alert", "kept", b"1", priority=Priority.ESSENTIAL, dedup_key="k")
    dropped = outbox.hold("sns", "alert", "dropped", b"2", priority=Priority.ESSENTIAL,
                          dedup_key="d")
    assert kept is not None and dropped is not None
    assert outbox.hold("sns", "alert", "kept", b"1", priority=Priority.ESSENTIAL,
                       dedup_key="k") is None  # already queued
    outbox.put("sns", "alert", "plain", b"3", priority=Priority.ESSENTIAL)
    assert not await drainer.drain(0.3)  # the held two are pending, not sent
    assert delivered == ["plain"] and outbox.pending() == 2
    outbox.release(kept)
    outbox.drop(dropped)
    assert await drainer.drain(5.0)
    assert delivered == ["plain", "kept"]
    # The dropped item's dedup key was never recorded as sent: it can be queued again.
    assert outbox.put("sns", "alert", "dropped", b"2", priority=Priority.ESSENTIAL,
                      dedup_key="d")
    assert await drainer.drain(5.0)
    held = outbox.hold("sns", "alert", "orphan", b"4", priority=Priority.ESSENTIAL)
    assert held is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    outbox.close()  # the process dies holding "orphan"
    reopened = Outbox(path)
    assert reopened.released_at_open == 1
    assert [item.key for item in reopened.head("sns", 10)] == ["orphan"]


def test_an_outbox_from_before_held_items_opens(tmp_path: Path) -> None:
    """An outbox file written by an earlier version (no `held` column) gains it at open."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE items (item_id INTEGER PRIMARY KEY AUTOINCREMENT, lane TEXT NOT NULL,"
            " kind TEXT NOT NULL, key TEXT NOT NULL, payload BLOB NOT NULL, size_bytes INTEGER"
            " NOT NULL, priority INTEGER NOT NULL, revision INTEGER NOT NULL DEFAULT 0, attempts"
            " INTEGER NOT NULL DEFAULT 0, coalesce_key TEXT UNIQUE, dedup_key TEXT UNIQUE);"
            "INSERT INTO items (lane, kind, key, payload, size_bytes, priority)"
            " VALUES ('sns', 'alert', 'old', x'00', 1, 3);")
    outbox = Outbox(path)
    assert [item.key for item in outbox.head("sns", 10)] == ["old"]
