"""The S3 shell against moto over real HTTP: conditional writes give 412 where S3 does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from tests.fleet_moto import moto_bucket
from voprd.fleet.core import (
    BatchSpace,
    DeleteOp,
    FleetError,
    GetOp,
    GetReply,
    PutOp,
    RunSpec,
    Timing,
    WriteReply,
    alert_key,
    decode_done,
    decode_progress,
    decode_spec,
    done_key,
    lease_key,
    progress_key,
    spec_key,
    spec_procedure,
)
from voprd.fleet.runner import (
    BatchResults,
    FleetCoordinator,
    FleetDispatchSource,
    FleetSeedSource,
    FleetStatus,
    RecordedBatch,
    fleet_status,
    format_fleet_status,
    show_fleet_status,
)
from voprd.fleet.s3 import S3Store, create_client

BUCKET = "voprd-fleet"


@pytest.fixture
async def store() -> AsyncIterator[S3Store]:
    with moto_bucket(BUCKET):
        async with create_client() as client:
            yield S3Store(client, BUCKET)


async def test_conditional_writes_return_412(store: S3Store) -> None:
    key = lease_key("r", 3)
    first = await store.execute(PutOp(key=key, body=b"a", if_none_match=True))
    assert isinstance(first, WriteReply) and first.ok and first.etag
    again = await store.execute(PutOp(key=key, body=b"b", if_none_match=True))
    assert again == WriteReply(ok=False)  # 412: someone else created it first
    stale = await store.execute(PutOp(key=key, body=b"c", if_match='"0123"'))
    assert stale == WriteReply(ok=False)  # 412: not the version we hold
    renewed = await store.execute(PutOp(key=key, body=b"d", if_match=first.etag))
    assert isinstance(renewed, WriteReply) and renewed.ok and renewed.etag != first.etag
    got = await store.execute(GetOp(key=key))
    assert isinstance(got, GetReply) and got.body == b"d" and got.etag == renewed.etag
    assert abs(got.server_now_s - time.time()) < 5  # the Date header: S3's clock
    assert await store.execute(DeleteOp(key=key, if_match=first.etag)) == WriteReply(ok=False)
    assert (await store.execute(DeleteOp(key=key, if_match=renewed.etag))).ok  # type: ignore[union-attr]
    gone = await store.execute(GetOp(key=key))
    assert isinstance(gone, GetReply) and gone.body is None
    missing = await store.execute(PutOp(key=key, body=b"e", if_match=renewed.etag))
    assert missing == WriteReply(ok=False)  # 404 on If-Match: the lease is gone


async def test_spec_mismatch_is_refused(store: S3Store) -> None:
    spec = RunSpec(run="r", seed_start=0, batch_size=10, seed_count=100, fingerprint="f")
    assert await store.run(spec_procedure(spec)) == spec
    assert await store.run(spec_procedure(spec)) == spec  # same flags: joins the run
    other = RunSpec(run="r", seed_start=0, batch_size=20, seed_count=100, fingerprint="f")
    with pytest.raises(FleetError, match="batch_size"):
        await store.run(spec_procedure(other))
    assert await store.run(spec_procedure(other, adopt_batch_size=True)) == spec
    moved = RunSpec(run="r", seed_start=5, batch_size=20, seed_count=100, fingerprint="f")
    with pytest.raises(FleetError, match="seed_start"):
        await store.run(spec_procedure(moved, adopt_batch_size=True))


async def test_claim_complete_and_status(store: S3Store) -> None:
    space = BatchSpace(seed_start=100, batch_size=5, seed_count=12)
    timing = Timing(lease_seconds=30.0, poll_s=0.05)
    a = FleetCoordinator(store, run="r", holder="a", space=space, timing=timing)
    b = FleetCoordinator(store, run="r", holder="b", space=space, timing=timing)
    await a.start()
    await b.start()
    held = [await a.claim(), await b.claim(), await a.claim()]
    assert sorted(lease.batch for lease in held if lease) == [0, 1, 2]
    assert await b.claim(wait=False) is None  # every batch leased by a live holder
    status = await fleet_status(store, "r")
    assert sorted(b for i in status.instances for b in i.current_batches) == [0, 1, 2]
    for lease in held:
        assert lease is not None
        failed = [lease.seeds.start]
        ok = await (a if lease.record.holder == "a" else b).complete(
            lease, BatchResults(successes=len(lease.seeds) - 1, failed_seeds=failed,
                                started_at_s=time.time() - 1))
        assert ok
    assert await a.finished() and await b.claim() is None
    status = await fleet_status(store, "r")
    assert status.watermark == 3 and status.leases == 0
    assert sum(i.seeds_done for i in status.instances) == 12
    assert sorted(s for i in status.instances for s in i.failed_seeds) == [100, 105, 110]
    text = format_fleet_status(status)
    assert "watermark batch 3" in text and "\na " in text and "\nb " in text
    shown = await show_fleet_status(BUCKET, "r", None, as_json=True)
    assert msgspec.json.decode(shown, type=FleetStatus) == status


async def test_status_lists_unreadable_records_and_counts_the_rest(store: S3Store) -> None:
    """`status --fleet` only reads: a lease or done record that does not decode is listed, the
    sound ones are counted as before."""
    space = BatchSpace(seed_start=0, batch_size=5, seed_count=15)
    fleet = FleetCoordinator(store, run="u", holder="a", space=space,
                             timing=Timing(lease_seconds=30.0, poll_s=0.05))
    await fleet.start()
    lease = await fleet.claim()
    assert lease is not None and lease.batch == 0
    assert await fleet.complete(lease, BatchResults(successes=5, failed_seeds=[],
                                                    started_at_s=time.time() - 1))
    await _raw_put(store, lease_key("u", 1), b"not a lease")
    await _raw_put(store, done_key("u", 2), b"{}")
    status = await fleet_status(store, "u")
    assert sorted(status.unreadable) == [done_key("u", 2), lease_key("u", 1)]
    assert status.leases == 0 and sum(i.seeds_done for i in status.instances) == 5
    assert "unreadable records" in format_fleet_status(status)


async def test_seed_source_out_of_order_results(store: S3Store) -> None:
    space = BatchSpace(seed_start=0, batch_size=4, seed_count=22)
    timing = Timing(lease_seconds=30.0, poll_s=0.05)
    fleets = [FleetCoordinator(store, run="src", holder=h, space=space, timing=timing)
              for h in ("a", "b")]
    recorded: list[RecordedBatch] = []

    async def daemon(fleet: FleetCoordinator) -> list[int]:
        await fleet.start()
        ran: list[int] = []

        async def worker(source: FleetSeedSource) -> None:
            while (seed := await source.next_seed()) is not None:
                ran.append(seed)
                await asyncio.sleep((seed * 7 % 3) * 0.003)  # results come out of order
                await source.seed_done(seed, seed % 5 == 0)

        async with FleetSeedSource(fleet, on_recorded=recorded.append) as source, \
                asyncio.TaskGroup() as workers:
            for _ in range(3):
                workers.create_task(worker(source))
        return ran

    ran_a, ran_b = await asyncio.gather(daemon(fleets[0]), daemon(fleets[1]))
    assert sorted(ran_a + ran_b) == list(range(22))  # every seed once across the two daemons
    assert sorted(r.batch for r in recorded) == list(range(6))
    assert sorted(s for r in recorded for s in r.failed_seeds) == [0, 5, 10, 15, 20]
    status = await fleet_status(store, "src")
    assert status.watermark == 6 and status.leases == 0


async def test_seed_source_reports_a_lost_lease_and_releases_on_drain(store: S3Store) -> None:
    space = BatchSpace(seed_start=0, batch_size=4, seed_count=None)
    timing = Timing(lease_seconds=3.0, takeover_margin_s=1.5, poll_s=0.05)
    fleet = FleetCoordinator(store, run="lost", holder="a", space=space, timing=timing)
    await fleet.start()
    lost: list[tuple[int, range]] = []
    async with FleetSeedSource(fleet, on_lost=lambda b, s: lost.append((b, s))) as source:
        first = await source.next_seed()
        assert first is not None
        batch = space.batch_of(first)
        # Another daemon overwrites the lease (as a takeover would): the next renewal fails.
        await store.execute(PutOp(key=lease_key("lost", batch), body=b"{}"))
        for _ in range(40):
            if lost:
                break
            await asyncio.sleep(0.1)
        assert lost == [(batch, space.seeds(batch))]
        await source.seed_done(first, False)  # ignored: not ours any more
        assert not source.completing and batch not in source.running
        second = await source.next_seed()  # a new batch
        assert second is not None and space.batch_of(second) != batch
        held = space.batch_of(second)
    # Drain released the unfinished batch: its lease is gone, so another daemon can claim it.
    got = await store.execute(GetOp(key=lease_key("lost", held)))
    assert isinstance(got, GetReply) and got.body is None


async def test_dispatch_source_fits_the_supervisor_protocol(store: S3Store) -> None:
    space = BatchSpace(seed_start=50, batch_size=5, seed_count=31)
    timing = Timing(lease_seconds=30.0, poll_s=0.05)
    recorded: list[RecordedBatch] = []
    completed: list[int] = []

    async def daemon(holder: str) -> None:
        fleet = FleetCoordinator(store, run="disp", holder=holder, space=space, timing=timing)
        await fleet.start()
        source = FleetDispatchSource(fleet, on_recorded=recorded.append)
        requeued_once: set[int] = set()
        async with source, asyncio.TaskGroup() as group:
            prefetch = group.create_task(source.prefetch_loop())
            for _ in range(10_000):  # a supervisor: three seeds at a time
                seeds = source.dispatch(3)
                if not seeds:
                    if source.dispatch_exhausted:
                        break
                    await asyncio.sleep(0.01)
                    continue
                if seeds[0] % 4 == 0 and seeds[0] not in requeued_once:
                    requeued_once.add(seeds[0])  # its worker died: run it again later
                    source.requeue(seeds[:1])
                    seeds = seeds[1:]
                for seed in reversed(seeds):
                    completed.append(seed)
                    await source.seed_done(seed, seed % 10 == 0)
            await prefetch

    await asyncio.gather(daemon("a"), daemon("b"))
    assert sorted(completed) == list(range(50, 81))
    assert sorted(r.batch for r in recorded) == list(range(7))
    assert sorted(s for r in recorded for s in r.failed_seeds) == [50, 60, 70, 80]


# --- shared records are untrusted input ----------------------------------------------------------

SMALL = BatchSpace(seed_start=0, batch_size=2, seed_count=10)  # 5 batches
QUICK = Timing(lease_seconds=30.0, poll_s=0.05)


async def _raw_put(store: S3Store, key: str, body: bytes) -> None:
    await store.client.put_object(Bucket=BUCKET, Key=key, Body=body)


async def _raw_get(store: S3Store, key: str) -> bytes | None:
    got = await store.get(key, 1 << 20)
    return got.body


async def _quarantined(store: S3Store) -> dict[str, bytes]:
    """corrupt/{unix time}-{suffix}/{key} -> body, by original key."""
    listing = await store.client.list_objects_v2(Bucket=BUCKET, Prefix="corrupt/")
    found = {}
    for item in listing.get("Contents", []):
        body = await _raw_get(store, item["Key"])
        assert body is not None
        found[item["Key"].split("/", 2)[2]] = body
    return found


async def _run_all(store: S3Store, run: str, timing: Timing = QUICK) -> tuple[int, list[int]]:
    """One coordinator runs the run to its end; returns (batches it recorded, seeds it ran)."""
    fleet = FleetCoordinator(store, run=run, holder="solo", space=SMALL, timing=timing)
    await fleet.start()
    ran: list[int] = []

    async def execute(lease: Any) -> BatchResults:
        ran.extend(lease.seeds)
        return BatchResults(successes=len(lease.seeds), failed_seeds=[],
                            started_at_s=time.time())

    recorded = await fleet.run_batches(execute)
    return recorded, ran


async def _check_done_records(store: S3Store, run: str) -> None:
    for batch in range(5):
        body = await _raw_get(store, done_key(run, batch))
        assert body is not None
        assert decode_done(body).seed_first == 2 * batch  # sound, and where it belongs


@pytest.mark.parametrize("body", [
    b'{"watermark": "x"}',
    b'{"schema":1,"run":"p","watermark":-3,"batch_count":5,"updated_at_s":1.0}',
    b'{"schema":1,"run":"p","watermark":5,"batch_count":5,"updated_at_s":1.0}',  # "finished"
    b'{"schema":1,"run":"p","watermark":3,"batch_count":5,"updated_at_s":1.0}',  # skips 0..2
    b'{"schema":1,"run":"p","watermark":1000,"batch_count":5,"updated_at_s":1.0}',
    b"\x00\xffgarbage",
    b"{" + b" " * 10_000 + b"}",  # past the size cap
], ids=["string", "negative", "forged-finished", "forged-skip", "beyond", "binary", "huge"])
async def test_a_poisoned_progress_record_neither_skips_seeds_nor_ends_the_run(
    store: S3Store, body: bytes
) -> None:
    await _raw_put(store, progress_key("p"), body)
    recorded, ran = await _run_all(store, "p")
    assert recorded == 5 and sorted(ran) == list(range(10))  # every batch ran, here
    await _check_done_records(store, "p")
    assert (await _quarantined(store))[progress_key("p")] == body
    progress = await _raw_get(store, progress_key("p"))
    assert progress is not None and decode_progress(progress).watermark == 5  # rewritten


@pytest.mark.parametrize("body", [
    b"not json",
    b'{"schema":1,"run":"d","batch":2,"holder":"h","token":"t","seed_first":0,"seed_end":2,'
    b'"successes":2,"failures":0,"failed_seeds":[],"started_at_s":0,"completed_at_s":1}',
    b'{"schema":1,"run":"d","batch":2,"holder":"h","token":"t","seed_first":4,"seed_end":6,'
    b'"successes":2,"failures":1,"failed_seeds":[5],"started_at_s":0,"completed_at_s":1}',
    b'{"schema":1,"run":"d","batch":2,"holder":"h","token":"t","seed_first":4,"seed_end":6,'
    b'"successes":2,"failures":0,"failed_seeds":[],"started_at_s":0,"completed_at_s":1,'
    b'"extra":' + b"1" * 5000 + b"}",
], ids=["garbage", "other-seeds", "inconsistent", "oversized"])
async def test_a_poisoned_done_record_is_quarantined_and_its_batch_runs(
    store: S3Store, body: bytes
) -> None:
    await _raw_put(store, done_key("d", 2), body)
    recorded, ran = await _run_all(store, "d")
    assert recorded == 5 and sorted(ran) == list(range(10))  # batch 2 too
    await _check_done_records(store, "d")
    assert (await _quarantined(store))[done_key("d", 2)] == body


async def test_a_garbage_lease_is_quarantined_and_taken_over_once_expired(
    store: S3Store
) -> None:
    await _raw_put(store, lease_key("l", 1), b"\x00garbage lease")
    timing = Timing(lease_seconds=2.0, takeover_margin_s=1.5, poll_s=0.2)
    recorded, ran = await _run_all(store, "l", timing)
    assert recorded == 5 and sorted(ran) == list(range(10))
    await _check_done_records(store, "l")
    assert (await _quarantined(store))[lease_key("l", 1)] == b"\x00garbage lease"
    assert await _raw_get(store, lease_key("l", 1)) is None  # taken over, then released


async def test_a_garbage_spec_is_replaced_and_a_garbage_alert_claim_is_claimed(
    store: S3Store
) -> None:
    await _raw_put(store, spec_key("s"), b"[1, 2")
    fleet = FleetCoordinator(store, run="s", holder="a", space=SMALL, timing=QUICK)
    spec = await fleet.start()
    assert spec.batch_size == 2 and decode_spec(await _raw_get(store, spec_key("s")) or b"")
    await _raw_put(store, alert_key("s", "00ff"), b'{"fingerprint": 7}')
    assert await fleet.claim_alert("00ff", 3) is True  # the garbage claim counts for nothing
    other = FleetCoordinator(store, run="s", holder="b", space=SMALL, timing=QUICK)
    assert await other.claim_alert("00ff", 4) is False  # a sound claim does
    assert await fleet.claim_alert("00ff", 3) is False  # a new claim of ours is not the first
    quarantined = await _quarantined(store)
    assert quarantined[spec_key("s")] == b"[1, 2"
    assert quarantined[alert_key("s", "00ff")] == b'{"fingerprint": 7}'


async def test_a_retried_done_write_knows_its_own_record(store: S3Store) -> None:
    """complete() run twice for one lease (a retry after an error) is "recorded" both times: the
    done record's token says it is ours, not another holder's."""
    fleet = FleetCoordinator(store, run="own", holder="a", space=SMALL, timing=QUICK)
    await fleet.start()
    lease = await fleet.claim()
    assert lease is not None
    results = BatchResults(successes=1, failed_seeds=[lease.seeds.start], started_at_s=0.0)
    assert await fleet.complete(lease, results)
    assert await fleet.complete(lease, results)
