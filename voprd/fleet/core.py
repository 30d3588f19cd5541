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
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1
BATCH_DIGITS = 12  # zero-padded so S3's lexicographic listing order is batch order (StartAfter)
BATCH_COUNT_MAX = 10**BATCH_DIGITS
LIST_PAGES_MAX = 64  # bound on pages per listing (64k keys); a claim never scans the whole history
CLAIM_TRIES_MAX = 8  # bound on conditional creates per claim before re-listing
CLAIM_WINDOW_MIN = 4
CLAIM_WINDOW_MAX = 4096
# The first listing of done/ (at a daemon's start) reads the run's whole history, so that a
# progress record can never claim more than the listing proves; 16k pages = 16M batches.
STARTUP_LIST_PAGES_MAX = 16_384
VERIFY_GETS_MAX = 1024  # done records read (and checked) per progress update
VERIFY_SKIPS_MAX = 8  # times a due daemon leaves the checking to others while nobody does it
WRITE_TRIES_MAX = 3  # create-only writes retried after their key turned out absent or corrupt

R = TypeVar("R", bound=msgspec.Struct)


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


def alert_key(run: str, fingerprint: str) -> str:
    return f"alerts/{run}/{fingerprint}.json"


QUARANTINE_PREFIX = "corrupt/"


def quarantine_key(key: str, now_unix_s: int, suffix: str) -> str:
    """Where an unreadable record is copied aside: corrupt/{unix time}-{suffix}/{its key}."""
    return f"{QUARANTINE_PREFIX}{now_unix_s}-{suffix}/{key}"


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
#
# Every record is read back from a bucket other daemons (and people) write to: untrusted input.
# Readers cap the size (GetOp.bytes_max), decode strictly (exact types, no unknown fields, value
# ranges) and check the record against where it was found (its run, its batch, its seeds); a
# record that fails raises RecordInvalid, and the procedures below then quarantine it
# (QuarantineOp: copied aside under corrupt/, logged once) and carry on as if it were absent.

Seed = Annotated[int, msgspec.Meta(ge=0)]  # msgspec decodes at most 2**64 - 1
Count = Annotated[int, msgspec.Meta(ge=0)]
BatchNumber = Annotated[int, msgspec.Meta(ge=0, lt=BATCH_COUNT_MAX)]
Name = Annotated[str, msgspec.Meta(max_length=256)]
LEASE_SECONDS_MAX = 86_400.0  # a lease longer than a day is not one a daemon wrote
LeaseSeconds = Annotated[float, msgspec.Meta(gt=0, le=LEASE_SECONDS_MAX)]
LEASE_BYTES_MAX = 4096
PROGRESS_BYTES_MAX = 4096
SPEC_BYTES_MAX = 64 * 1024
ALERT_CLAIM_BYTES_MAX = 4096
RECORD_BYTES_MAX = 64 * 1024  # default cap of a GetOp


def done_bytes_max(seed_count: int) -> int:
    """Cap of a done record of a batch of `seed_count` seeds (each may have failed: a failed
    seed takes at most 21 bytes, 20 digits and a comma)."""
    return 4096 + 24 * seed_count


class RecordInvalid(ValueError):
    """A record read from the bucket is too large, does not decode strictly, or contradicts where
    it was found; the message says which."""


def _check_schema(schema: int) -> None:
    if schema != SCHEMA_VERSION:
        raise ValueError(f"schema {schema}, expected {SCHEMA_VERSION}")


class RunSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every daemon of a run must agree on; the first daemon creates it, the rest compare."""

    schema: int = SCHEMA_VERSION
    run: Name
    seed_start: Seed
    batch_size: Annotated[int, msgspec.Meta(ge=1)]
    seed_count: Annotated[int, msgspec.Meta(ge=1)] | None
    fingerprint: Annotated[str, msgspec.Meta(max_length=SPEC_BYTES_MAX // 2)] = ""

    def __post_init__(self) -> None:
        _check_schema(self.schema)

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


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema: int = SCHEMA_VERSION
    run: Name
    batch: BatchNumber
    holder: Name
    token: Name  # unique per claim: tells a retried write that succeeded from a lost race
    lease_seconds: LeaseSeconds
    acquired_at_s: float  # holder's wall clock (informational)
    expires_at_s: float  # holder's wall clock + lease_seconds at the last write (informational)
    renew_count: Count = 0
    takeover_of: Name | None = None  # holder whose expired lease this one replaced

    def __post_init__(self) -> None:
        _check_schema(self.schema)


class DoneRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema: int = SCHEMA_VERSION
    run: Name
    batch: BatchNumber
    holder: Name
    token: Name
    seed_first: Seed
    seed_end: Seed  # exclusive
    successes: Count
    failures: Count
    failed_seeds: list[Seed]
    started_at_s: float
    completed_at_s: float

    def __post_init__(self) -> None:
        # ValueError: msgspec turns it into a ValidationError when a record is decoded.
        _check_schema(self.schema)
        if not self.seed_end > self.seed_first:
            raise ValueError("seed_end must be above seed_first")
        if self.successes + self.failures != self.seed_end - self.seed_first:
            raise ValueError("successes + failures must be the batch's seed count")
        if len(self.failed_seeds) != self.failures:
            raise ValueError("failed_seeds must list `failures` seeds")
        previous = self.seed_first - 1
        for seed in self.failed_seeds:
            if not previous < seed < self.seed_end:
                raise ValueError("failed_seeds must be ascending seeds of the batch")
            previous = seed


class ProgressRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cache of the fleet's watermark: every batch below `watermark` is done. Written only from
    a listing of done/, possibly behind the truth; read only as a hint that a listing checks."""

    schema: int = SCHEMA_VERSION
    run: Name
    watermark: Annotated[int, msgspec.Meta(ge=0, le=BATCH_COUNT_MAX)]
    batch_count: Annotated[int, msgspec.Meta(ge=1)] | None
    updated_at_s: float

    def __post_init__(self) -> None:
        _check_schema(self.schema)


class AlertClaim(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`alerts/{run}/{fingerprint}.json`: the daemon that created it alerts the fingerprint; the
    others count its failures into their digests."""

    schema: int = SCHEMA_VERSION
    run: Name
    fingerprint: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{1,64}$")]
    holder: Name
    token: Name
    seed: Seed
    claimed_at_s: float

    def __post_init__(self) -> None:
        _check_schema(self.schema)


_encoder = msgspec.json.Encoder()
_decoders: dict[type[msgspec.Struct], msgspec.json.Decoder[Any]] = {
    record_type: msgspec.json.Decoder(record_type)
    for record_type in (RunSpec, LeaseRecord, DoneRecord, ProgressRecord, AlertClaim)
}


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def _decode(body: bytes, record_type: type[R]) -> R:
    try:
        record: R = _decoders[record_type].decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordInvalid(f"not a valid {record_type.__name__}: {exc}") from None
    return record


def decode_lease(body: bytes) -> LeaseRecord:
    return _decode(body, LeaseRecord)


def decode_done(body: bytes) -> DoneRecord:
    return _decode(body, DoneRecord)


def decode_progress(body: bytes) -> ProgressRecord:
    return _decode(body, ProgressRecord)


def decode_spec(body: bytes) -> RunSpec:
    return _decode(body, RunSpec)


def decode_alert_claim(body: bytes) -> AlertClaim:
    return _decode(body, AlertClaim)


def _body(reply: GetReply, bytes_max: int) -> bytes:
    """The body of a found object within its cap (the shell stops reading past the cap)."""
    if reply.too_large or (reply.body is not None and len(reply.body) > bytes_max):
        raise RecordInvalid(f"larger than {bytes_max} bytes")
    assert reply.body is not None, "absent objects are handled by the caller"
    return reply.body


def _expect(what: str, found: object, expected: object) -> None:
    if found != expected:
        raise RecordInvalid(f"{what} {found!r} where {expected!r} belongs")


def read_lease(reply: GetReply, run: str, batch: int) -> LeaseRecord:
    record = decode_lease(_body(reply, LEASE_BYTES_MAX))
    _expect("run", record.run, run)
    _expect("batch", record.batch, batch)
    return record


def read_done(reply: GetReply, run: str, batch: int, seeds: range) -> DoneRecord:
    record = decode_done(_body(reply, done_bytes_max(len(seeds))))
    _expect("run", record.run, run)
    _expect("batch", record.batch, batch)
    _expect("seeds", (record.seed_first, record.seed_end), (seeds.start, seeds.stop))
    return record


def read_progress(reply: GetReply, run: str, space: BatchSpace) -> ProgressRecord:
    record = decode_progress(_body(reply, PROGRESS_BYTES_MAX))
    _expect("run", record.run, run)
    _expect("batch_count", record.batch_count, space.batch_count)
    if space.batch_count is not None and record.watermark > space.batch_count:
        raise RecordInvalid(f"watermark {record.watermark} beyond the run's "
                            f"{space.batch_count} batches")
    return record


def read_spec(reply: GetReply, run: str) -> RunSpec:
    record = decode_spec(_body(reply, SPEC_BYTES_MAX))
    _expect("run", record.run, run)
    return record


def read_alert_claim(reply: GetReply, run: str, fingerprint: str) -> AlertClaim:
    record = decode_alert_claim(_body(reply, ALERT_CLAIM_BYTES_MAX))
    _expect("run", record.run, run)
    _expect("fingerprint", record.fingerprint, fingerprint)
    return record


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
    exclude: Collection[int] = (),
) -> list[Candidate]:
    """Batches to try, in order: expired leases first (oldest batch first: they hold the
    watermark back), then free batches from a window above the watermark, starting at an offset
    hashed from the holder and its claim number so a herd of claimers spreads out. Batches in
    `exclude` (this daemon's own, being recorded done) are never candidates."""
    done = set(done_above) | set(exclude)
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
    bytes_max: int = RECORD_BYTES_MAX  # read no further: a larger object is too_large


class PutOp(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    body: bytes
    if_none_match: bool = False  # If-None-Match: * (create only)
    if_match: str | None = None  # If-Match: etag (replace only that version)


class DeleteOp(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    if_match: str | None = None


class QuarantineOp(msgspec.Struct, frozen=True, kw_only=True):
    """Copy an unreadable record aside (quarantine_key) and log it once; with `delete`, then
    delete it (If-Match its ETag) so that its key can be written again. `body`: the bytes that
    were judged (stored as the copy); None (not read: too large) copies the object at `etag`."""

    key: str
    etag: str
    reason: str
    delete: bool = False
    body: bytes | None = None


S3Op = ListOp | GetOp | PutOp | DeleteOp | QuarantineOp


class ListReply(msgspec.Struct, frozen=True, kw_only=True):
    objects: list[ObjectInfo]
    next_continuation: str | None
    server_now_s: float


class GetReply(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes | None  # None: 404 (or too_large)
    etag: str = ""
    last_modified_s: float = 0.0
    server_now_s: float = 0.0
    too_large: bool = False  # the object is larger than the GetOp's bytes_max (body not read)

    @property
    def found(self) -> bool:
        return self.body is not None or self.too_large


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
    watermark: int | None = None  # None: not read yet (list done/ from the start first)
    cached_watermark: int = 0  # what the progress record says, as far as we know
    progress_stale: bool = False  # the progress record is unreadable or ahead: rewrite it
    progress_etag: str = ""  # of the progress record as last read
    progress_body: bytes | None = None
    # Every done record below this was read and checked (by this daemon, or by the daemon that
    # wrote the progress record); the watermark above it rests on the listing alone.
    trusted_below: int = 0
    exclude: set[int] = msgspec.field(default_factory=set)  # batches this daemon is completing
    fleet_estimate: int = 1  # daemons in the run, the most the lease listings have shown
    verify_skips: int = 0
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


def list_all(
    prefix: str, start_after: str, pages_max: int = LIST_PAGES_MAX
) -> Generator[S3Op, S3Reply, ListReply]:
    """A listing of up to `pages_max` pages; next_continuation is set if it stopped early."""
    objects: list[ObjectInfo] = []
    continuation: str | None = None
    server_now_s = 0.0
    for _page in range(pages_max):
        reply = yield ListOp(prefix=prefix, start_after=start_after, continuation=continuation)
        assert isinstance(reply, ListReply)
        objects += reply.objects
        server_now_s = reply.server_now_s
        continuation = reply.next_continuation
        if continuation is None:
            break
    return ListReply(objects=objects, next_continuation=continuation, server_now_s=server_now_s)


def _listed_batches(listing: ListReply, space: BatchSpace) -> list[int]:
    return [b for b in (batch_from_key(o.key) for o in listing.objects)
            if b is not None and space.contains(b)]


def _read_cached_watermark(state: ClaimState) -> Generator[S3Op, S3Reply, int | None]:
    """The progress record's watermark (None if absent or unsound: quarantined); its ETag is
    kept in state.progress_etag, so that only that version is ever copied aside."""
    key = progress_key(state.run)
    reply = yield GetOp(key=key, bytes_max=PROGRESS_BYTES_MAX)
    assert isinstance(reply, GetReply)
    state.progress_etag, state.progress_body = reply.etag, reply.body
    if not reply.found:
        return None
    try:
        return read_progress(reply, state.run, state.space).watermark
    except RecordInvalid as exc:
        yield QuarantineOp(key=key, etag=reply.etag, reason=str(exc), body=reply.body)
        state.progress_stale = True
        return None


def read_done_record(state: ClaimState, batch: int
                     ) -> Generator[S3Op, S3Reply, DoneRecord | None]:
    """The batch's done record if it exists and is sound; an unsound one is quarantined and
    deleted (the batch then runs again, and its key can take a sound record)."""
    key = done_key(state.run, batch)
    seeds = state.space.seeds(batch)
    reply = yield GetOp(key=key, bytes_max=done_bytes_max(len(seeds)))
    assert isinstance(reply, GetReply)
    if not reply.found:
        return None
    try:
        return read_done(reply, state.run, batch, seeds)
    except RecordInvalid as exc:
        yield QuarantineOp(key=key, etag=reply.etag, reason=str(exc), delete=True,
                           body=reply.body)
        return None


def refresh_watermark(state: ClaimState) -> Generator[S3Op, S3Reply, list[int]]:
    """Bring state.watermark (every batch below it has a done record: the listing proves it) up
    to date; return the done batches above it.

    The first call lists done/ from the run's first batch: the progress record (a cache written
    by daemons) is trusted only as far as that listing proves it, and one that claims more is
    quarantined and rewritten, so a forged watermark can neither skip seeds nor end a run. Later
    calls list from the watermark on (their cost does not grow with the run's history)."""
    prefix = done_prefix(state.run)
    if state.watermark is None:
        cached = yield from _read_cached_watermark(state)
        listing = yield from list_all(prefix, "", STARTUP_LIST_PAGES_MAX)
        state.watermark, above = advance_watermark(0, _listed_batches(listing, state.space))
        if cached is not None and cached > state.watermark:
            yield QuarantineOp(
                key=progress_key(state.run), etag=state.progress_etag, body=state.progress_body,
                reason=f"watermark {cached} is ahead of the done/ listing, which proves "
                       f"{state.watermark}",
            )
            state.progress_stale = True
            cached = None
        state.trusted_below = state.cached_watermark = cached or 0
        return above
    listing = yield from list_all(prefix, start_after(prefix, state.watermark))
    state.watermark, above = advance_watermark(
        state.watermark, _listed_batches(listing, state.space))
    return above


def verify_done(state: ClaimState) -> Generator[S3Op, S3Reply, int | None]:
    """Read and check the done records from `trusted_below` up to the watermark (at most
    VERIFY_GETS_MAX), moving `trusted_below` over the sound ones. Returns the first batch whose
    record was missing or unsound (quarantined and deleted: the watermark drops back to it, and
    the batch runs again), or None. Only the daemon about to write the progress record (or to
    declare the run finished) does this, so each record is read about once fleet-wide."""
    assert state.watermark is not None
    for _read in range(VERIFY_GETS_MAX):
        batch = state.trusted_below
        if batch >= state.watermark:
            return None
        if (yield from read_done_record(state, batch)) is None:
            state.watermark = batch
            return batch
        state.trusted_below = batch + 1
    return None


def _update_progress(state: ClaimState, now_wall_s: float
                     ) -> Generator[S3Op, S3Reply, int | None]:
    """When the watermark has moved `progress_every_batches` past the progress record (or the
    run may be finished, or the record is unsound): adopt a newer record another daemon wrote,
    else verify the done records it would cover and write it. Returns a batch found not done
    (see verify_done), or None."""
    assert state.watermark is not None

    def due() -> bool:
        assert state.watermark is not None
        return state.progress_stale or (
            state.watermark - state.cached_watermark >= state.progress_every_batches) or (
            run_finished(state.space, state.watermark) and state.trusted_below < state.watermark)

    if not due():
        return None
    if not state.progress_stale:
        cached = yield from _read_cached_watermark(state)
        if cached is not None and state.trusted_below <= cached <= state.watermark:
            # Another daemon checked these records and wrote the record: trust it that far.
            if cached > state.trusted_below:
                state.verify_skips = 0  # somebody is checking: keep leaving it to them
            state.trusted_below = state.cached_watermark = cached
            if not due():
                return None
        # About one daemon of the fleet checks each stretch: when the whole fleet's watermark
        # jumps at once (a taken-over batch done, the end of a run), the rest adopt its record
        # at their next claim instead of all reading the same done records. Hashed, not random
        # (the fleet simulation is deterministic). A daemon whose VERIFY_SKIPS_MAX last skips saw
        # the record not move checks anyway, so a fleet that shrank (a stale estimate) gets on.
        chosen = stable_u64(f"{state.holder}/verify/{state.claims}") % state.fleet_estimate == 0
        if not chosen and state.verify_skips < VERIFY_SKIPS_MAX:
            state.verify_skips += 1
            return None
    state.verify_skips = 0
    not_done = yield from verify_done(state)
    if state.trusted_below > state.cached_watermark or state.progress_stale:
        progress = ProgressRecord(
            run=state.run, watermark=state.trusted_below, batch_count=state.space.batch_count,
            updated_at_s=now_wall_s,
        )
        yield PutOp(key=progress_key(state.run), body=encode(progress))
        state.cached_watermark = state.trusted_below
        state.progress_stale = False
    return not_done


def claim_procedure(state: ClaimState, now_wall_s: float, token: str) -> Procedure:
    """One attempt to claim a batch. `now_wall_s` is the holder's wall clock (informational
    fields only); `token` must be unique per call."""
    done_above = yield from refresh_watermark(state)
    assert state.watermark is not None
    not_done = yield from _update_progress(state, now_wall_s)
    if not_done is not None:  # an unsound done record was removed: that batch is free again
        done_above = [b for b in done_above if b > not_done]
    # Finished only once every done record of the run was checked (by us or the progress
    # record's writer), not on the listing alone.
    if run_finished(state.space, state.trusted_below):
        return Finished(watermark=state.trusted_below)
    listing = yield from list_all(leases_prefix(state.run), "")
    leases: dict[int, LeaseView] = {}
    done_set = set(done_above)
    for obj in listing.objects:
        batch = batch_from_key(obj.key)
        if batch is not None and batch >= state.watermark and batch not in done_set:
            leases[batch] = LeaseView(batch=batch, etag=obj.etag,
                                      last_modified_s=obj.last_modified_s)
    live = sum(1 for view in leases.values()
               if not lease_expired(view.last_modified_s, listing.server_now_s,
                                    state.timing.lease_seconds, state.timing))
    # A daemon holds up to two batches (the next is claimed before the last ends). The largest
    # estimate is kept, so that the end of a run (few leases left) does not look like a lone
    # daemon; a fleet that shrank is covered by VERIFY_SKIPS_MAX.
    state.fleet_estimate = max(state.fleet_estimate, (live + 1) // 2)
    state.claims += 1
    candidates = choose_candidates(
        state.space, state.watermark, done_above, leases, listing.server_now_s, state.timing,
        state.holder, state.claims, state.spread, exclude=state.exclude,
    )
    for candidate in candidates:
        takeover_of: str | None = None
        key = lease_key(state.run, candidate.batch)
        if candidate.takeover_etag is not None:
            # Read the expired lease to name its holder and to learn its own lease_seconds.
            got = yield GetOp(key=key, bytes_max=LEASE_BYTES_MAX)
            assert isinstance(got, GetReply)
            if not got.found or got.etag != candidate.takeover_etag:
                state.conflicts += 1
                continue
            try:
                old = read_lease(got, state.run, candidate.batch)
                lease_seconds, takeover_of = old.lease_seconds, old.holder
            except RecordInvalid as exc:
                # Its LastModified still says when it was last written: judge it by ours.
                yield QuarantineOp(key=key, etag=got.etag, reason=str(exc), body=got.body)
                lease_seconds, takeover_of = state.timing.lease_seconds, "(unreadable lease)"
            if not lease_expired(got.last_modified_s, got.server_now_s, lease_seconds,
                                 state.timing):
                continue
        record = LeaseRecord(
            run=state.run, batch=candidate.batch, holder=state.holder, token=token,
            lease_seconds=state.timing.lease_seconds, acquired_at_s=now_wall_s,
            expires_at_s=now_wall_s + state.timing.lease_seconds, takeover_of=takeover_of,
        )
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
        done_now = yield from read_done_record(state, candidate.batch)
        if done_now is not None:
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


CompleteOutcome = Literal["recorded", "already_done", "unresolved"]


def create_once(
    key: str, body: bytes, bytes_max: int, read: Callable[[GetReply], R]
) -> Generator[S3Op, S3Reply, tuple[bool, R | None]]:
    """Create `key` once (If-None-Match). (True, None): this write created it. (False, the
    record): another write had, and it reads back sound (read raises RecordInvalid otherwise;
    an unsound one is quarantined and deleted, and the write tried again). (False, None):
    neither after WRITE_TRIES_MAX tries. A record of ours whose answer was lost comes back as
    the stored record: the caller tells it by its token."""
    for _try in range(WRITE_TRIES_MAX):
        written = yield PutOp(key=key, body=body, if_none_match=True)
        assert isinstance(written, WriteReply)
        if written.ok:
            return True, None
        got = yield GetOp(key=key, bytes_max=bytes_max)
        assert isinstance(got, GetReply)
        if not got.found:
            continue  # quarantined by another daemon meanwhile: write ours
        try:
            return False, read(got)
        except RecordInvalid as exc:
            yield QuarantineOp(key=key, etag=got.etag, reason=str(exc), delete=True,
                               body=got.body)
    return False, None


def complete_procedure(
    lease: LeaseRecord, done: DoneRecord
) -> Generator[S3Op, S3Reply, CompleteOutcome]:
    """Record the batch as done, once (If-None-Match). A 412 is read back: the record is ours
    (same token: an earlier attempt whose answer was lost, or a retry of this procedure) or
    another holder's; an unsound one is quarantined and deleted, and the write tried again.
    "unresolved": neither after WRITE_TRIES_MAX tries (try again later). The lease is released
    apart (release_procedure): nothing about the lease can undo a recorded batch."""
    assert done.batch == lease.batch and done.run == lease.run and done.token == lease.token
    key = done_key(lease.run, lease.batch)
    seeds = range(done.seed_first, done.seed_end)
    created, stored = yield from create_once(
        key, encode(done), done_bytes_max(len(seeds)),
        lambda got: read_done(got, lease.run, lease.batch, seeds),
    )
    if created:
        return "recorded"
    if stored is None:
        return "unresolved"
    return "recorded" if stored.token == done.token else "already_done"


def release_procedure(lease: LeaseRecord, etag: str) -> Generator[S3Op, S3Reply, bool]:
    """Give a batch's lease back (finished, or unfinished on drain): delete it if it is still
    ours. A refused If-Match may mean only that our ETag is stale (a renewal applied whose answer
    was lost, e.g. cancelled in flight): the lease is read, and deleted at its current ETag if
    it still carries our claim's token. False if it was not ours any more (or already gone)."""
    key = lease_key(lease.run, lease.batch)
    reply = yield DeleteOp(key=key, if_match=etag)
    assert isinstance(reply, WriteReply)
    if reply.ok:
        return True
    got = yield GetOp(key=key, bytes_max=LEASE_BYTES_MAX)
    assert isinstance(got, GetReply)
    if not got.found:
        return False
    try:
        current = read_lease(got, lease.run, lease.batch)
    except RecordInvalid:
        return False  # not ours to judge here: an observer quarantines it when it expires
    if current.token != lease.token:
        return False
    again = yield DeleteOp(key=key, if_match=got.etag)
    assert isinstance(again, WriteReply)
    return again.ok


def alert_claim_procedure(claim: AlertClaim) -> Generator[S3Op, S3Reply, bool | None]:
    """Create alerts/{run}/{fingerprint}.json once: True if this claim is the fingerprint's
    (also when an earlier attempt of ours won and its answer was lost), False if another
    daemon's is, None if neither could be settled after WRITE_TRIES_MAX tries."""
    created, stored = yield from create_once(
        alert_key(claim.run, claim.fingerprint), encode(claim), ALERT_CLAIM_BYTES_MAX,
        lambda got: read_alert_claim(got, claim.run, claim.fingerprint),
    )
    if created:
        return True
    return None if stored is None else stored.token == claim.token


def spec_procedure(
    spec: RunSpec, adopt_batch_size: bool = False
) -> Generator[S3Op, S3Reply, RunSpec]:
    """Create the run's spec, or check ours against the one in the bucket (FleetError if they
    differ: the batches would mean different seeds). With `adopt_batch_size` (no --batch-size
    given), a joining daemon takes the run's batch size. An unsound spec is quarantined and
    deleted, and ours created in its place."""
    key = spec_key(spec.run)
    created, stored = yield from create_once(
        key, encode(spec), SPEC_BYTES_MAX, lambda got: read_spec(got, spec.run)
    )
    if created:
        return spec
    if stored is None:
        raise FleetError(f"{key}: could not be created nor read in {WRITE_TRIES_MAX} tries; retry")
    if adopt_batch_size:
        spec = msgspec.structs.replace(spec, batch_size=stored.batch_size)
    differences = stored.differences(spec)
    if differences:
        raise FleetError(
            f"run {spec.run!r} in the bucket was started with a different seed space ("
            + "; ".join(differences) + "); use the same flags or another --run NAME"
        )
    return stored
