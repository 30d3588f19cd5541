"""Fleet coordination core: batches, lease/done records and every claim decision, with no I/O.

Many daemons share one seed space through an S3 bucket. The seed space of a run is cut into
numbered batches; a daemon owns a batch while it holds `leases/{run}/batch-{n}.json` (created with
If-None-Match: *, renewed and taken over with If-Match on the ETag), and a finished batch is
recorded once in `done/{run}/batch-{n}.json` (If-None-Match: *, so two writers cannot both win).

Time. Expiry is judged on S3's own clock: an observer compares the lease object's LastModified with
the Date header of the same listing, both stamped by S3, so skew between instances' clocks does not
enter. Both are truncated to whole seconds, which `takeover_margin_s` absorbs. The holder judges its
own lease on its monotonic clock from the moment it *sent* the last successful write (S3 stamped it
later), and stops `holder_guard_s` before `lease_seconds` have passed, so it has stopped before any
observer may take over. The record also carries `expires_at_s` on the holder's wall clock, for
people and for `voprd status --fleet`; it is never trusted for takeover.

The S3 procedures (claim, complete) are written here as generators that yield `S3Op`s and receive
`S3Reply`s ("bring your own I/O", as in h11): the asyncio shell (voprd.fleet.s3/runner) carries them
out over HTTP, the fleet simulation (bench/bench_fleet.py) against a modelled S3 with latencies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Literal

import msgspec

SCHEMA_VERSION = 1
BATCH_DIGITS = 12  # zero-padded so S3's lexicographic listing order is batch order (StartAfter)
BATCH_COUNT_MAX = 10**BATCH_DIGITS
LIST_PAGES_MAX = 64  # bound on pages per listing (64k keys); a claim never scans the whole history
CLAIM_TRIES_MAX = 8  # bound on conditional creates per claim before re-listing
CLAIM_WINDOW_MIN = 4
CLAIM_WINDOW_MAX = 4096


class FleetError(Exception):
    """The run cannot be coordinated (for example another daemon uses a different seed space)."""


# ---------------------------------------------------------------------------------------------
# Seed space


class BatchSpace(msgspec.Struct, frozen=True, kw_only=True):
    """The seed space of a run: batch n is seeds seed_start + n*batch_size ... (+batch_size-1),
    cut at the run's bound seed_start + seed_count when the run is bounded (`-n`)."""

    seed_start: int
    batch_size: int
    seed_count: int | None = None  # None: unbounded run

    def __post_init__(self) -> None:
        assert self.seed_start >= 0
        assert self.batch_size >= 1
        assert self.seed_count is None or self.seed_count >= 1

    @property
    def batch_count(self) -> int | None:
        if self.seed_count is None:
            return None
        return -(-self.seed_count // self.batch_size)

    def contains(self, batch: int) -> bool:
        count = self.batch_count
        return 0 <= batch < (BATCH_COUNT_MAX if count is None else count)

    def seeds(self, batch: int) -> range:
        assert self.contains(batch), batch
        first = self.seed_start + batch * self.batch_size
        end = first + self.batch_size
        if self.seed_count is not None:
            end = min(end, self.seed_start + self.seed_count)
        assert end > first
        return range(first, end)

    def batch_of(self, seed: int) -> int:
        assert seed >= self.seed_start
        return (seed - self.seed_start) // self.batch_size


def default_batch_size(workers: int, seed_s_estimate: float, target_batch_s: float = 60.0) -> int:
    """`--batch-size` when not given: about `target_batch_s` of work for this daemon's workers.
    Only the first daemon of a run uses it; the rest adopt the run's spec (batches must mean
    the same seeds fleet-wide)."""
    assert workers >= 1 and seed_s_estimate > 0 and target_batch_s > 0
    return max(1, round(workers * target_batch_s / seed_s_estimate))


def static_partition_seed(seed_start: int, seed_stride: int, local_index: int) -> int:
    """Static partitioning without a bucket: the k-th seed this daemon runs (k = 0, 1, ...) is
    seed_start + k * seed_stride. Instance i of K uses `--seed-start S+i --seed-stride K`; the
    instances then cover S, S+1, S+2, ... exactly once between them, with no coordination."""
    assert seed_start >= 0 and seed_stride >= 1 and local_index >= 0
    return seed_start + local_index * seed_stride


def static_partition_index(seed_start: int, seed_stride: int, seed: int) -> int | None:
    """Inverse of `static_partition_seed`: the local index of `seed`, or None if not ours."""
    assert seed_start >= 0 and seed_stride >= 1
    if seed < seed_start or (seed - seed_start) % seed_stride:
        return None
    return (seed - seed_start) // seed_stride


# ---------------------------------------------------------------------------------------------
# Keys


def _batch_name(batch: int) -> str:
    assert 0 <= batch < BATCH_COUNT_MAX, batch
    return f"batch-{batch:0{BATCH_DIGITS}d}.json"


def start_after(prefix: str, batch: int) -> str:
    """StartAfter for a listing of `prefix` that begins at `batch`."""
    return prefix + _batch_name(batch - 1) if batch > 0 else ""


_BATCH_NAME_LEN = len(_batch_name(0))


def leases_prefix(run: str) -> str:
    return f"leases/{run}/"


def done_prefix(run: str) -> str:
    return f"done/{run}/"


def lease_key(run: str, batch: int) -> str:
    return leases_prefix(run) + _batch_name(batch)


def done_key(run: str, batch: int) -> str:
    return done_prefix(run) + _batch_name(batch)


def progress_key(run: str) -> str:
    # Under checkpoints/ (the daemon's instance role may already write there) but not
    # checkpoints/latest.json itself: that object is one daemon's exact checkpoint (AWS backend),
    # whereas this is the fleet's watermark cache; see docs/fleet.md.
    return f"checkpoints/fleet/{run}/progress.json"


def spec_key(run: str) -> str:
    return f"checkpoints/fleet/{run}/spec.json"


def batch_from_key(key: str) -> int | None:
    """The batch number in a lease or done key, or None for a key that is not ours."""
    tail = key[-_BATCH_NAME_LEN:]
    digits = tail[6:-5]
    if len(tail) != _BATCH_NAME_LEN or not tail.startswith("batch-") or not tail.endswith(
        ".json"
    ) or not digits.isdigit() or not key[: -_BATCH_NAME_LEN].endswith("/"):
        return None
    return int(digits)


def validate_run_name(run: str) -> str:
    if not run or len(run) > 128 or not all(c.isalnum() or c in "-_." for c in run):
        raise FleetError(f"--run: {run!r} must be 1-128 characters of letters, digits, - _ .")
    return run


# ---------------------------------------------------------------------------------------------
# Records (one schema, reader and writer each)


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What every daemon of a run must agree on; the first daemon creates it, the rest compare."""

    schema: int = SCHEMA_VERSION
    run: str
    seed_start: int
    batch_size: int
    seed_count: int | None
    fingerprint: str = ""  # the daemon's seed-space fingerprint (target, faults, version, ...)

    def space(self) -> BatchSpace:
        return BatchSpace(
            seed_start=self.seed_start, batch_size=self.batch_size, seed_count=self.seed_count
        )

    def differences(self, other: RunSpec) -> list[str]:
        names = ("seed_start", "batch_size", "seed_count", "fingerprint")
        return [
            f"{name}: bucket has {getattr(self, name)!r}, this daemon {getattr(other, name)!r}"
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    schema: int = SCHEMA_VERSION
    run: str
    batch: int
    holder: str
    token: str  # unique per claim: tells a retried write that succeeded from a lost race
    lease_seconds: float
    acquired_at_s: float  # holder's wall clock (informational)
    expires_at_s: float  # holder's wall clock + lease_seconds at the last write (informational)
    renew_count: int = 0
    takeover_of: str | None = None  # holder whose expired lease this one replaced


class DoneRecord(msgspec.Struct, frozen=True, kw_only=True):
    schema: int = SCHEMA_VERSION
    run: str
    batch: int
    holder: str
    token: str
    seed_first: int
    seed_end: int  # exclusive
    successes: int
    failures: int
    failed_seeds: list[int]
    started_at_s: float
    completed_at_s: float

    def __post_init__(self) -> None:
        assert self.seed_end > self.seed_first
        assert self.successes + self.failures == self.seed_end - self.seed_first
        assert len(self.failed_seeds) == self.failures


class ProgressRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Cache of the fleet's watermark: every batch below `watermark` is done. Never ahead of the
    truth (written only from a listing of done/), possibly behind it."""

    schema: int = SCHEMA_VERSION
    run: str
    watermark: int
    batch_count: int | None
    updated_at_s: float


_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode_lease(body: bytes) -> LeaseRecord:
    return msgspec.json.decode(body, type=LeaseRecord)


def decode_done(body: bytes) -> DoneRecord:
    return msgspec.json.decode(body, type=DoneRecord)


def decode_progress(body: bytes) -> ProgressRecord:
    return msgspec.json.decode(body, type=ProgressRecord)


def decode_spec(body: bytes) -> RunSpec:
    return msgspec.json.decode(body, type=RunSpec)


# ---------------------------------------------------------------------------------------------
# Decisions


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    lease_seconds: float = 180.0
    # Observers wait this long past lease_seconds (S3 clock) before taking over: covers the
    # whole-second truncation of LastModified and Date (<= 1 s) and the holder's drift.
    takeover_margin_s: float = 2.0
    # The holder stops using its lease this long before lease_seconds have passed on its clock.
    holder_guard_s: float = 0.25
    renew_fraction: float = 1 / 3  # renew after this fraction of the lease; 2 renewals may fail
    poll_s: float = 5.0  # wait between claims when every remaining batch is leased by others

    def __post_init__(self) -> None:
        assert self.lease_seconds > 0 and self.takeover_margin_s >= 0
        assert 0 <= self.holder_guard_s < self.lease_seconds
        assert 0 < self.renew_fraction < 1
        # Safety: the holder must stop before an observer may take over, given the 1 s truncation.
        assert self.takeover_margin_s + self.holder_guard_s > 1.0, "margin too small for 1 s clock"


def stable_u64(text: str) -> int:
    """A hash that is the same in every process (unlike hash(), which PYTHONHASHSEED salts)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def advance_watermark(watermark: int, done_batches: Iterable[int]) -> tuple[int, list[int]]:
    """Move the watermark over the contiguous done batches; return it and the done batches above."""
    assert watermark >= 0
    above = sorted({b for b in done_batches if b >= watermark})
    new = watermark
    for batch in above:
        if batch != new:
            break
        new += 1
    rest = [b for b in above if b >= new]
    assert new >= watermark and all(b > new for b in rest)
    return new, rest


def run_finished(space: BatchSpace, watermark: int) -> bool:
    count = space.batch_count
    return count is not None and watermark >= count


def lease_expired(
    last_modified_s: float, server_now_s: float, lease_seconds: float, timing: Timing
) -> bool:
    """An observer's view, on S3's clock: has the lease been left unrenewed for too long?"""
    return server_now_s - last_modified_s > lease_seconds + timing.takeover_margin_s


class LeaseView(msgspec.Struct, frozen=True, kw_only=True):
    """A lease as a listing shows it (no body): S3-clock LastModified and ETag."""

    batch: int
    etag: str
    last_modified_s: float


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    batch: int
    takeover_etag: str | None = None  # None: create with If-None-Match; else take over If-Match


def claim_window(live_leases: int) -> int:
    """How many free batches a claimer chooses among: about as many as there are claimers (the
    live leases estimate the fleet size), so simultaneous claimers rarely pick the same batch,
    while batches are still taken close to the watermark."""
    return max(CLAIM_WINDOW_MIN, min(CLAIM_WINDOW_MAX, live_leases + 1))


def choose_candidates(
    space: BatchSpace,
    watermark: int,
    done_above: Sequence[int],
    leases: Mapping[int, LeaseView],
    server_now_s: float,
    timing: Timing,
    holder: str,
    claim_number: int,
    spread: bool = True,
) -> list[Candidate]:
    """Batches to try, in order: expired leases first (oldest batch first: they hold the
    watermark back), then free batches from a window above the watermark, starting at an offset
    hashed from the holder and its claim number so a herd of claimers spreads out."""
    done = set(done_above)
    expired = [
        Candidate(batch=b, takeover_etag=view.etag)
        for b, view in sorted(leases.items())
        if b not in done
        and space.contains(b)
        and lease_expired(view.last_modified_s, server_now_s, timing.lease_seconds, timing)
    ]
    live = len(leases) - len(expired)
    window = claim_window(live)
    free: list[int] = []
    batch = watermark
    count = space.batch_count
    end = BATCH_COUNT_MAX if count is None else count
    # Bounded: at most window + len(done) + len(leases) steps.
    while len(free) < window and batch < end:
        if batch not in done and batch not in leases:
            free.append(batch)
        batch += 1
    candidates = expired[: CLAIM_TRIES_MAX // 2]
    if free:
        # spread=False (always the lowest free batch first) exists to measure the herd it causes.
        offset = stable_u64(f"{holder}/{claim_number}") % len(free) if spread else 0
        rotated = free[offset:] + free[:offset]
        candidates += [Candidate(batch=b) for b in rotated]
    return candidates[:CLAIM_TRIES_MAX]


class HolderClock(msgspec.Struct, kw_only=True):
    """The holder's view of its own lease, on its monotonic clock."""

    lease_seconds: float
    last_write_sent_mono: float  # when the last successful create/renew was sent

    def valid(self, now_mono: float, timing: Timing) -> bool:
        return now_mono < self.last_write_sent_mono + self.lease_seconds - timing.holder_guard_s

    def valid_until_mono(self, timing: Timing) -> float:
        return self.last_write_sent_mono + self.lease_seconds - timing.holder_guard_s

    def renew_due_mono(self, timing: Timing) -> float:
        return self.last_write_sent_mono + self.lease_seconds * timing.renew_fraction


# ---------------------------------------------------------------------------------------------
# Sans-I/O S3 procedures


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    etag: str
    last_modified_s: float


class ListOp(msgspec.Struct, frozen=True, kw_only=True):
    prefix: str
    start_after: str = ""
    continuation: str | None = None


class GetOp(msgspec.Struct, frozen=True, kw_only=True):
    key: str


class PutOp(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    body: bytes
    if_none_match: bool = False  # If-None-Match: * (create only)
    if_match: str | None = None  # If-Match: etag (replace only that version)


class DeleteOp(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    if_match: str | None = None


S3Op = ListOp | GetOp | PutOp | DeleteOp


class ListReply(msgspec.Struct, frozen=True, kw_only=True):
    objects: list[ObjectInfo]
    next_continuation: str | None
    server_now_s: float


class GetReply(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes | None  # None: 404
    etag: str = ""
    last_modified_s: float = 0.0
    server_now_s: float = 0.0


class WriteReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool  # False: 412 (precondition failed: lost the race) or 404 for If-Match
    etag: str = ""


S3Reply = ListReply | GetReply | WriteReply
Procedure = Generator[S3Op, S3Reply, "ClaimOutcome"]


class ClaimState(msgspec.Struct, kw_only=True):
    """What a daemon remembers between claims (so listings start where the last one ended)."""

    run: str
    holder: str
    space: BatchSpace
    timing: Timing
    watermark: int | None = None  # None: not read yet (read the cached progress first)
    cached_watermark: int = 0  # what the progress record says, as far as we know
    progress_every_batches: int = 16
    spread: bool = True
    claims: int = 0
    conflicts: int = 0  # conditional writes lost to another daemon
    takeovers: int = 0


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    record: LeaseRecord
    etag: str
    seeds: range


class Finished(msgspec.Struct, frozen=True, kw_only=True):
    watermark: int


class Busy(msgspec.Struct, frozen=True, kw_only=True):
    """Every remaining batch is leased by a live holder (or lost to a race): try again later."""

    retry_after_s: float


ClaimOutcome = Claimed | Finished | Busy


def list_all(prefix: str, start_after: str) -> Generator[S3Op, S3Reply, ListReply]:
    objects: list[ObjectInfo] = []
    continuation: str | None = None
    server_now_s = 0.0
    for _page in range(LIST_PAGES_MAX):
        reply = yield ListOp(prefix=prefix, start_after=start_after, continuation=continuation)
        assert isinstance(reply, ListReply)
        objects += reply.objects
        server_now_s = reply.server_now_s
        continuation = reply.next_continuation
        if continuation is None:
            break
    return ListReply(objects=objects, next_continuation=continuation, server_now_s=server_now_s)


def refresh_watermark(state: ClaimState) -> Generator[S3Op, S3Reply, list[int]]:
    """Bring state.watermark up to date from the cached progress and a listing of done/ that
    starts at the watermark (so its cost does not grow with the run's history)."""
    if state.watermark is None:
        reply = yield GetOp(key=progress_key(state.run))
        assert isinstance(reply, GetReply)
        cached = decode_progress(reply.body).watermark if reply.body is not None else 0
        state.watermark = cached
        state.cached_watermark = cached
    prefix = done_prefix(state.run)
    listing = yield from list_all(prefix, start_after(prefix, state.watermark))
    done = [b for b in (batch_from_key(o.key) for o in listing.objects) if b is not None]
    state.watermark, above = advance_watermark(state.watermark, done)
    return above


def claim_procedure(state: ClaimState, now_wall_s: float, token: str) -> Procedure:
    """One attempt to claim a batch. `now_wall_s` is the holder's wall clock (informational
    fields only); `token` must be unique per call."""
    done_above = yield from refresh_watermark(state)
    assert state.watermark is not None
    if state.watermark - state.cached_watermark >= state.progress_every_batches or (
        run_finished(state.space, state.watermark) and state.watermark > state.cached_watermark
    ):
        progress = ProgressRecord(
            run=state.run, watermark=state.watermark, batch_count=state.space.batch_count,
            updated_at_s=now_wall_s,
        )
        yield PutOp(key=progress_key(state.run), body=encode(progress))
        state.cached_watermark = state.watermark
    if run_finished(state.space, state.watermark):
        return Finished(watermark=state.watermark)
    listing = yield from list_all(leases_prefix(state.run), "")
    leases: dict[int, LeaseView] = {}
    done_set = set(done_above)
    for obj in listing.objects:
        batch = batch_from_key(obj.key)
        if batch is not None and batch >= state.watermark and batch not in done_set:
            leases[batch] = LeaseView(batch=batch, etag=obj.etag,
                                      last_modified_s=obj.last_modified_s)
    state.claims += 1
    candidates = choose_candidates(
        state.space, state.watermark, done_above, leases, listing.server_now_s, state.timing,
        state.holder, state.claims, state.spread,
    )
    for candidate in candidates:
        takeover_of: str | None = None
        if candidate.takeover_etag is not None:
            # Read the expired lease to name its holder and to learn its own lease_seconds.
            got = yield GetOp(key=lease_key(state.run, candidate.batch))
            assert isinstance(got, GetReply)
            if got.body is None or got.etag != candidate.takeover_etag:
                state.conflicts += 1
                continue
            old = decode_lease(got.body)
            if not lease_expired(got.last_modified_s, got.server_now_s, old.lease_seconds,
                                 state.timing):
                continue
            takeover_of = old.holder
        record = LeaseRecord(
            run=state.run, batch=candidate.batch, holder=state.holder, token=token,
            lease_seconds=state.timing.lease_seconds, acquired_at_s=now_wall_s,
            expires_at_s=now_wall_s + state.timing.lease_seconds, takeover_of=takeover_of,
        )
        key = lease_key(state.run, candidate.batch)
        body = encode(record)
        written = yield (
            PutOp(key=key, body=body, if_none_match=True)
            if candidate.takeover_etag is None
            else PutOp(key=key, body=body, if_match=candidate.takeover_etag)
        )
        assert isinstance(written, WriteReply)
        if not written.ok:
            state.conflicts += 1
            continue
        # A batch finished between our listings (done written, then its lease deleted) must
        # not run again: done/ is written before the lease is released, so this read sees it.
        done_now = yield GetOp(key=done_key(state.run, candidate.batch))
        assert isinstance(done_now, GetReply)
        if done_now.body is not None:
            yield DeleteOp(key=key, if_match=written.etag)
            continue
        if takeover_of is not None:
            state.takeovers += 1
        return Claimed(record=record, etag=written.etag, seeds=state.space.seeds(candidate.batch))
    return Busy(retry_after_s=state.timing.poll_s)


def renew_record(record: LeaseRecord, now_wall_s: float) -> LeaseRecord:
    return msgspec.structs.replace(
        record, renew_count=record.renew_count + 1,
        expires_at_s=now_wall_s + record.lease_seconds,
    )


CompleteOutcome = Literal["recorded", "already_done"]


def complete_procedure(
    lease: LeaseRecord, etag: str, done: DoneRecord
) -> Generator[S3Op, S3Reply, CompleteOutcome]:
    """Record the batch as done (once: If-None-Match), then release the lease (If-Match)."""
    assert done.batch == lease.batch and done.run == lease.run and done.token == lease.token
    written = yield PutOp(key=done_key(lease.run, lease.batch), body=encode(done),
                          if_none_match=True)
    assert isinstance(written, WriteReply)
    yield DeleteOp(key=lease_key(lease.run, lease.batch), if_match=etag)
    return "recorded" if written.ok else "already_done"


def release_procedure(lease: LeaseRecord, etag: str) -> Generator[S3Op, S3Reply, None]:
    """Give a batch back unfinished (drain): delete the lease if it is still ours."""
    yield DeleteOp(key=lease_key(lease.run, lease.batch), if_match=etag)


def spec_procedure(
    spec: RunSpec, adopt_batch_size: bool = False
) -> Generator[S3Op, S3Reply, RunSpec]:
    """Create the run's spec, or check ours against the one in the bucket (FleetError if they
    differ: the batches would mean different seeds). With `adopt_batch_size` (no --batch-size
    given), a joining daemon takes the run's batch size."""
    key = spec_key(spec.run)
    written = yield PutOp(key=key, body=encode(spec), if_none_match=True)
    assert isinstance(written, WriteReply)
    if written.ok:
        return spec
    got = yield GetOp(key=key)
    assert isinstance(got, GetReply)
    if got.body is None:
        raise FleetError(f"{key}: exists and then vanished; retry")
    stored = decode_spec(got.body)
    if adopt_batch_size:
        spec = msgspec.structs.replace(spec, batch_size=stored.batch_size)
    differences = stored.differences(spec)
    if differences:
        raise FleetError(
            f"run {spec.run!r} in the bucket was started with a different seed space ("
            + "; ".join(differences) + "); use the same flags or another --run NAME"
        )
    return stored
