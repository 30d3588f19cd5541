"""The fleet core without I/O: batches, keys, watermark, claim choice, lease timing safety, and
the claim/complete procedures against the in-memory S3 model."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voprd.fleet.core import (
    BATCH_DIGITS,
    CLAIM_TRIES_MAX,
    BatchSpace,
    Busy,
    Claimed,
    ClaimState,
    DoneRecord,
    Finished,
    GetOp,
    GetReply,
    HolderClock,
    LeaseView,
    PutOp,
    Timing,
    WriteReply,
    advance_watermark,
    batch_from_key,
    choose_candidates,
    claim_procedure,
    complete_procedure,
    decode_lease,
    default_batch_size,
    done_key,
    encode,
    lease_expired,
    lease_key,
    release_procedure,
    renew_record,
    run_finished,
    stable_u64,
    static_partition_index,
    static_partition_seed,
)
from voprd.fleet.sim import S3Model, SimParams, simulate


@given(st.integers(0, 10**9), st.integers(1, 1000), st.integers(1, 5000))
def test_batches_partition_the_bounded_run(seed_start: int, batch_size: int, count: int) -> None:
    space = BatchSpace(seed_start=seed_start, batch_size=batch_size, seed_count=count)
    assert space.batch_count is not None
    seeds = [s for b in range(space.batch_count) for s in space.seeds(b)]
    assert seeds == list(range(seed_start, seed_start + count))
    assert all(space.batch_of(s) == b for b in range(space.batch_count) for s in space.seeds(b))
    assert not space.contains(space.batch_count)


@given(st.integers(0, 10**6), st.integers(1, 16), st.integers(1, 200))
def test_static_partition_covers_each_seed_once(start: int, stride: int, per_instance: int) -> None:
    seen = [
        static_partition_seed(start + i, stride, k)
        for i in range(stride)
        for k in range(per_instance)
    ]
    assert sorted(seen) == list(range(start, start + stride * per_instance))
    for i in range(stride):
        for k in range(per_instance):
            seed = static_partition_seed(start + i, stride, k)
            assert static_partition_index(start + i, stride, seed) == k
            other = (i + 1) % stride
            if other != i:
                assert static_partition_index(start + other, stride, seed) is None


@given(st.lists(st.integers(0, 10**BATCH_DIGITS - 1), min_size=2, max_size=50))
def test_keys_sort_in_batch_order(batches: list[int]) -> None:
    keys = [done_key("run", b) for b in batches]
    assert [batch_from_key(k) for k in sorted(keys)] == sorted(batches)
    assert all(batch_from_key(lease_key("run", b)) == b for b in batches)



@given(st.integers(0, 50), st.sets(st.integers(0, 120)))
def test_watermark_is_the_contiguous_prefix(watermark: int, done: set[int]) -> None:
    new, above = advance_watermark(watermark, done)
    expected = watermark
    while expected in done:
        expected += 1
    assert new == expected
    assert above == sorted(b for b in done if b > new)


def test_stable_hash_is_fixed_across_processes() -> None:
    # hash() of a str differs per PYTHONHASHSEED; the claim offsets must not.
    code = "from voprd.fleet.core import stable_u64; print(stable_u64('i-0001/1'))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=seed),
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{stable_u64('i-0001/1')}\n"}
    assert stable_u64("a") != stable_u64("b")


TIMING = Timing(lease_seconds=180.0)


@settings(max_examples=500)
@given(
    send_s=st.floats(0, 10**6), up_s=st.floats(0, 2), observe_after_s=st.floats(0, 400),
    drift_ppm=st.floats(-200, 200),
)
def test_holder_stops_before_any_observer_may_take_over(
    send_s: float, up_s: float, observe_after_s: float, drift_ppm: float
) -> None:
    """Observers judge on S3's clock (whole seconds); the holder on its own drifting clock from
    the moment it sent the write. Whenever an observer may take over, the holder has stopped."""
    last_modified_s = math.floor(send_s + up_s)  # S3 stamps on arrival, truncated
    observe_s = send_s + observe_after_s
    if lease_expired(last_modified_s, math.floor(observe_s), TIMING.lease_seconds, TIMING):
        rate = 1 + drift_ppm * 1e-6
        clock = HolderClock(lease_seconds=TIMING.lease_seconds, last_write_sent_mono=send_s * rate)
        assert not clock.valid(observe_s * rate, TIMING)


def test_lease_not_expired_within_lease_seconds() -> None:
    assert not lease_expired(1000.0, 1180.0, 180.0, TIMING)
    assert not lease_expired(1000.0, 1182.0, 180.0, TIMING)
    assert lease_expired(1000.0, 1183.0, 180.0, TIMING)


def test_timing_rejects_an_unsafe_margin() -> None:
    with pytest.raises(AssertionError):
        Timing(lease_seconds=10, takeover_margin_s=0.5, holder_guard_s=0.25)


@given(
    watermark=st.integers(0, 20), done=st.sets(st.integers(0, 80), max_size=20),
    leased=st.dictionaries(st.integers(0, 80), st.floats(0, 1000), max_size=30),
    holder=st.text(min_size=1, max_size=8), claim=st.integers(0, 100),
)
def test_candidates_are_claimable(
    watermark: int, done: set[int], leased: dict[int, float], holder: str, claim: int
) -> None:
    space = BatchSpace(seed_start=0, batch_size=10, seed_count=600)
    done_above = sorted(b for b in done if b >= watermark)
    leases = {b: LeaseView(batch=b, etag=f"e{b}", last_modified_s=t) for b, t in leased.items()
              if b >= watermark and b not in done}
    now_s = 1000.0
    candidates = choose_candidates(space, watermark, done_above, leases, now_s, TIMING, holder,
                                   claim)
    batches = [c.batch for c in candidates]
    assert len(set(batches)) == len(batches) <= CLAIM_TRIES_MAX
    for c in candidates:
        assert space.contains(c.batch) and c.batch >= watermark and c.batch not in done
        if c.batch in leases:  # only expired leases, taken over on their exact version
            assert c.takeover_etag == leases[c.batch].etag
            assert lease_expired(leases[c.batch].last_modified_s, now_s, 180.0, TIMING)
        else:
            assert c.takeover_etag is None
    takeovers = [c for c in candidates if c.takeover_etag]
    assert candidates[: len(takeovers)] == takeovers  # expired leases first
    assert candidates == choose_candidates(space, watermark, done_above, leases, now_s, TIMING,
                                           holder, claim)  # deterministic


def test_claimers_spread_over_the_window() -> None:
    space = BatchSpace(seed_start=0, batch_size=10, seed_count=None)
    leases = {b: LeaseView(batch=b, etag="e", last_modified_s=999.0) for b in range(100)}
    firsts = {
        choose_candidates(space, 0, [], leases, 1000.0, TIMING, f"i-{i}", 1)[0].batch
        for i in range(100)
    }
    # 100 simultaneous claimers over a window of 101 free batches: most pick distinct ones.
    assert len(firsts) > 50 and min(firsts) >= 100
    herd = {
        choose_candidates(space, 0, [], leases, 1000.0, TIMING, f"i-{i}", 1, spread=False)[0]
        .batch for i in range(100)
    }
    assert herd == {100}


def _drive(s3: S3Model, procedure: object, now_s: float) -> object:
    reply = None
    gen = procedure
    while True:
        try:
            op = gen.send(reply) if reply is not None else next(gen)  # type: ignore[attr-defined]
        except StopIteration as stop:
            return stop.value
        reply = s3.apply(op, now_s)


def test_claim_procedure_lifecycle() -> None:
    s3 = S3Model()
    timing = Timing(lease_seconds=10.0, poll_s=1.0)
    space = BatchSpace(seed_start=0, batch_size=5, seed_count=10)
    a = ClaimState(run="r", holder="a", space=space, timing=timing)
    b = ClaimState(run="r", holder="b", space=space, timing=timing)
    first = _drive(s3, claim_procedure(a, 100.0, "t1"), 100.0)
    second = _drive(s3, claim_procedure(b, 100.0, "t2"), 100.0)
    assert isinstance(first, Claimed) and isinstance(second, Claimed)
    assert {first.record.batch, second.record.batch} == {0, 1}
    assert isinstance(_drive(s3, claim_procedure(b, 105.0, "t3"), 105.0), Busy)
    # a dies; after lease_seconds + margin on S3's clock, b takes a's batch over.
    assert isinstance(_drive(s3, claim_procedure(b, 112.0, "t4"), 112.0), Busy)
    taken = _drive(s3, claim_procedure(b, 113.0, "t5"), 113.0)
    assert isinstance(taken, Claimed) and taken.record.batch == first.record.batch
    assert taken.record.takeover_of == "a"
    stored = s3.apply(GetOp(key=lease_key("r", first.record.batch)), 113.0)
    assert isinstance(stored, GetReply) and stored.body is not None
    assert decode_lease(stored.body).holder == "b"
    for claim in (second, taken):
        seeds = claim.seeds
        done = DoneRecord(run="r", batch=claim.record.batch, holder="b", token=claim.record.token,
                          seed_first=seeds.start, seed_end=seeds.stop, successes=len(seeds),
                          failures=0, failed_seeds=[], started_at_s=0.0, completed_at_s=1.0)
        assert _drive(s3, complete_procedure(claim.record, done), 114.0) == "recorded"
        # A retry that finds its own record (same token) knows it as its own...
        assert _drive(s3, complete_procedure(claim.record, done), 114.0) == "recorded"
        # ...and another holder's done record for the batch is refused.
        other = msgspec.structs.replace(claim.record, token="other")
        assert _drive(s3, complete_procedure(other, msgspec.structs.replace(
            done, token="other")), 114.0) == "already_done"
        assert _drive(s3, release_procedure(claim.record, claim.etag), 114.0)
    finished = _drive(s3, claim_procedure(a, 115.0, "t6"), 115.0)
    assert isinstance(finished, Finished) and run_finished(space, finished.watermark)


def test_small_fleet_simulation_is_safe_and_cheap() -> None:
    """A fast version of bench/bench_fleet.py: 30 daemons, skewed clocks, drift, S3 errors and
    crashes; a bounded run finishes with every batch done once and no overlapping holders."""
    report = simulate(SimParams(
        daemons=30, batches=300, seed=7, batch_s_mean=30.0, lease_seconds=60.0,
        crashes_per_daemon_hour=3.0, error_rate=0.01, sim_s_max=10**6,
    ))
    assert report.batches_done == 300
    assert report.crashes > 0 and report.takeovers > 0
    assert report.overlap_violations == 0 and report.duplicate_done == 0
    assert report.conflicts_per_batch < 0.5
    assert report.requests_per_batch < 20
    herd = simulate(SimParams(daemons=30, batches=300, seed=7, batch_s_mean=30.0,
                              lease_seconds=60.0, sim_s_max=10**6, spread=False))
    spread = simulate(SimParams(daemons=30, batches=300, seed=7, batch_s_mean=30.0,
                                lease_seconds=60.0, sim_s_max=10**6))
    assert herd.conflicts > 2 * max(1, spread.conflicts)


def test_default_batch_size_targets_a_minute() -> None:
    assert default_batch_size(workers=2, seed_s_estimate=0.5) == 240
    assert default_batch_size(workers=1, seed_s_estimate=600.0) == 1


def test_release_with_a_stale_etag_still_deletes_our_lease() -> None:
    """A renewal applied whose answer was lost (cancelled in flight) leaves the holder with an
    old ETag: the release reads the lease, sees its own token and deletes it anyway; a lease
    that another holder took over is left alone."""
    s3 = S3Model()
    space = BatchSpace(seed_start=0, batch_size=5, seed_count=10)
    a = ClaimState(run="r", holder="a", space=space, timing=Timing(lease_seconds=10.0))
    claimed = _drive(s3, claim_procedure(a, 100.0, "t1"), 100.0)
    assert isinstance(claimed, Claimed)
    key = lease_key("r", claimed.record.batch)
    renewed = s3.apply(PutOp(key=key, body=encode(renew_record(claimed.record, 101.0)),
                             if_match=claimed.etag), 101.0)
    assert isinstance(renewed, WriteReply) and renewed.ok and renewed.etag != claimed.etag
    assert _drive(s3, release_procedure(claimed.record, claimed.etag), 102.0)
    gone = s3.apply(GetOp(key=key), 102.0)
    assert isinstance(gone, GetReply) and gone.body is None
    # Someone else's lease at that key (a takeover) is not ours to delete.
    theirs = msgspec.structs.replace(claimed.record, holder="b", token="t2")
    s3.apply(PutOp(key=key, body=encode(theirs)), 103.0)
    assert not _drive(s3, release_procedure(claimed.record, claimed.etag), 104.0)
    still = s3.apply(GetOp(key=key), 104.0)
    assert isinstance(still, GetReply) and still.body == encode(theirs)
