"""The S3 shell against moto over real HTTP: conditional writes give 412 where S3 does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

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
    lease_key,
    spec_procedure,
)
from voprd.fleet.runner import BatchResults, FleetCoordinator, fleet_status
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
