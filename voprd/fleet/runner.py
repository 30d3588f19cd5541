"""The asyncio shell of fleet coordination: claim a batch, keep its lease renewed while it runs,
record it done, and know when the whole fleet has finished a bounded run.

The daemon plugs this in as its seed source:

    async with create_client(region) as client:
        fleet = FleetCoordinator(S3Store(client, bucket), run="default", holder=instance_id,
                                 space=BatchSpace(seed_start=S, batch_size=B, seed_count=N))
        await fleet.start()            # creates or checks checkpoints/fleet/{run}/spec.json
        while (lease := await fleet.claim()) is not None:   # None: every batch is done
            async with fleet.renewing(lease):        # background renewal; lease.lost on loss
                results = await run_seeds(lease.seeds, stop=lease.lost)
            if not lease.lost.is_set():
                await fleet.complete(lease, results)   # True: our done record is the one

or simply `await fleet.run_batches(execute)`, which does exactly that loop.

A batch's failures are the daemon's business before any of this: it archives and alerts each as
its result arrives, so nothing that goes wrong with a lease or a done record (a lost race, an
outage, a store that refuses conditional deletes) can lose one. `complete` writes the done
record until S3 has answered for it (a retry that finds its own record knows it by its token),
and only then releases the lease; a release that fails costs nothing but the lease's expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import msgspec
import structlog

from voprd.fleet.core import (
    BATCH_COUNT_MAX,
    LEASE_BYTES_MAX,
    AlertClaim,
    BatchSpace,
    Busy,
    ClaimState,
    DoneRecord,
    Finished,
    HolderClock,
    LeaseRecord,
    PutOp,
    RecordInvalid,
    RunSpec,
    S3Op,
    Timing,
    WriteReply,
    alert_claim_procedure,
    batch_from_key,
    claim_procedure,
    complete_procedure,
    decode_done,
    decode_lease,
    done_bytes_max,
    done_prefix,
    encode,
    lease_key,
    leases_prefix,
    list_all,
    refresh_watermark,
    release_procedure,
    renew_record,
    run_finished,
    spec_procedure,
    start_after,
    validate_run_name,
)
from voprd.fleet.s3 import FleetS3Error, S3Store, StoreHealth
from voprd.sinks.outbox import Backoff

log = structlog.get_logger("voprd.fleet")

Observer = Callable[[str, dict[str, Any]], None]
RENEW_RETRY_S = 0.2  # pause between renewal attempts after an S3 error (until the deadline)
# A done record is written until S3 has answered for it; between tries after an error (the
# store already retried outages itself) 1 s doubling to 30 s.
COMPLETE_BACKOFF = Backoff(base_s=1.0, cap_s=30.0)
RELEASE_TIMEOUT_S = 10.0  # a lease not deleted by then expires on its own
COMPLETE_ON_EXIT_S = 10.0  # at exit, batches still being recorded get this long

R = TypeVar("R")


class BatchResults(msgspec.Struct, kw_only=True):
    successes: int
    failed_seeds: list[int]
    started_at_s: float


class Lease:
    """A batch this daemon holds. `lost` is set once it may no longer be used."""

    def __init__(self, record: LeaseRecord, etag: str, seeds: range, clock: HolderClock) -> None:
        self.record = record
        self.etag = etag
        self.seeds = seeds
        self.clock = clock
        self.lost = asyncio.Event()

    @property
    def batch(self) -> int:
        return self.record.batch


class FleetCoordinator:
    def __init__(
        self,
        store: S3Store,
        *,
        run: str,
        holder: str,
        space: BatchSpace,
        timing: Timing | None = None,
        fingerprint: str = "",
        observer: Observer | None = None,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.run = validate_run_name(run)
        self.holder = holder
        self.space = space
        self.timing = timing or Timing()
        self.fingerprint = fingerprint
        self.observer = observer
        self.mono = mono
        self.wall = wall
        self.state = ClaimState(run=run, holder=holder, space=space, timing=self.timing)
        self._rng = random.Random(time.time_ns())  # backoff jitter only
        self.claim_error: str | None = None  # set while claims are refused (not an outage)
        self.claim_error_since_mono = 0.0
        self._claim_error_logged_mono = float("-inf")

    def health(self) -> StoreHealth:
        return self.store.health

    def _emit(self, event: str, **fields: Any) -> None:
        fields.update(holder=self.holder, run=self.run, wall=self.wall())
        log.info(event, **fields)
        if self.observer is not None:
            self.observer(event, fields)

    def _valid_until_wall(self, lease: Lease) -> float:
        return self.wall() + (lease.clock.valid_until_mono(self.timing) - self.mono())

    async def start(self, adopt_batch_size: bool = False) -> RunSpec:
        """Create the run's spec or check that ours matches it (FleetError otherwise). With
        `adopt_batch_size` (the user gave no --batch-size), take the run's batch size."""
        spec = RunSpec(run=self.run, seed_start=self.space.seed_start,
                       batch_size=self.space.batch_size, seed_count=self.space.seed_count,
                       fingerprint=self.fingerprint)
        stored = await self.store.run(spec_procedure(spec, adopt_batch_size))
        self.space = self.state.space = stored.space()
        return stored

    async def claim(self, wait: bool = True) -> Lease | None:
        """A batch to run, or None once every batch of a bounded run is done (by anyone).
        While every remaining batch is held by a live daemon, waits (if `wait`) and retries."""
        puts_sent_mono: dict[str, float] = {}

        def note(op: S3Op) -> None:
            if isinstance(op, PutOp):
                puts_sent_mono[op.key] = self.mono()

        while True:
            puts_sent_mono.clear()
            try:
                outcome = await self.store.run(
                    claim_procedure(self.state, self.wall(), secrets.token_hex(8)), note
                )
            except FleetS3Error as exc:
                # Refused (access denied, a bad request): S3 answers, but no. Retried every poll;
                # logged when the error changes, else at most once a minute.
                error = str(exc)
                now = self.mono()
                if self.claim_error is None:
                    self.claim_error_since_mono = now
                if error != self.claim_error or now - self._claim_error_logged_mono >= 60.0:
                    log.warning("fleet_claim_error", error=error, holder=self.holder,
                                run=self.run)
                    self._claim_error_logged_mono = now
                self.claim_error = error
                outcome = Busy(retry_after_s=self.timing.poll_s)
            else:
                self.claim_error = None
            if isinstance(outcome, Finished):
                self._emit("fleet_finished", watermark=outcome.watermark)
                return None
            if isinstance(outcome, Busy):
                if not wait:
                    return None
                await asyncio.sleep(outcome.retry_after_s)
                continue
            # S3 stamped the lease after we sent it: measuring from the send errs on the safe side.
            sent_mono = puts_sent_mono[lease_key(self.run, outcome.record.batch)]
            lease = Lease(outcome.record, outcome.etag, outcome.seeds,
                          HolderClock(lease_seconds=self.timing.lease_seconds,
                                      last_write_sent_mono=sent_mono))
            self._emit("fleet_claimed", batch=lease.batch, seeds=[lease.seeds.start,
                       lease.seeds.stop], takeover_of=lease.record.takeover_of,
                       valid_until_wall=self._valid_until_wall(lease))
            return lease

    async def _renew_once(self, lease: Lease) -> bool:
        """One renewal; False if the lease is lost (someone took it over)."""
        sent_mono = self.mono()
        record = renew_record(lease.record, self.wall())
        reply = await self.store.execute(
            PutOp(key=lease_key(self.run, lease.batch), body=encode(record), if_match=lease.etag)
        )
        assert isinstance(reply, WriteReply)
        if not reply.ok:
            return False
        lease.record, lease.etag = record, reply.etag
        lease.clock.last_write_sent_mono = sent_mono
        self._emit("fleet_renewed", batch=lease.batch, renew_count=record.renew_count,
                   valid_until_wall=self._valid_until_wall(lease))
        return True

    async def keep_renewed(self, lease: Lease) -> None:
        """Renew until cancelled; returns once the lease is lost (lease.lost is then set)."""
        while True:
            await asyncio.sleep(max(0.0, lease.clock.renew_due_mono(self.timing) - self.mono()))
            # Bounded by the lease: once it cannot be valid any more, stop trying.
            while True:
                remaining_s = lease.clock.valid_until_mono(self.timing) - self.mono()
                if remaining_s <= 0:
                    self._lose(lease, "expired")
                    return
                try:
                    async with asyncio.timeout(remaining_s):
                        renewed = await self._renew_once(lease)
                except TimeoutError:
                    self._lose(lease, "expired")
                    return
                except FleetS3Error as exc:
                    log.warning("fleet_renew_error", batch=lease.batch, error=str(exc))
                    await asyncio.sleep(min(RENEW_RETRY_S, max(0.0, remaining_s)))
                    continue
                if not renewed:
                    self._lose(lease, "taken_over")
                    return
                break

    def _lose(self, lease: Lease, reason: str) -> None:
        lease.lost.set()
        self._emit("fleet_lost", batch=lease.batch, reason=reason)

    @contextlib.asynccontextmanager
    async def renewing(self, lease: Lease) -> AsyncIterator[Lease]:
        """Renew the lease in the background for the duration of the block."""
        task = asyncio.create_task(self.keep_renewed(lease), name=f"renew-{lease.batch}")
        try:
            yield lease
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not lease.lost.is_set() and not lease.clock.valid(self.mono(), self.timing):
                self._lose(lease, "expired")

    async def complete(self, lease: Lease, results: BatchResults) -> bool:
        """Record the batch done, then release its lease. True if our done record is the batch's;
        False if the lease was lost first or another holder recorded the batch. The done record
        is written until S3 has answered for it (outages are waited out; cancel to give up); a
        release that fails is logged and left to the lease's expiry."""
        seeds = lease.seeds
        failed = sorted(results.failed_seeds)
        assert all(s in seeds for s in failed)
        assert results.successes + len(failed) == len(seeds)
        if lease.lost.is_set() or not lease.clock.valid(self.mono(), self.timing):
            lease.lost.set()
            return False
        self._emit("fleet_stopped", batch=lease.batch)
        done = DoneRecord(
            run=self.run, batch=lease.batch, holder=self.holder, token=lease.record.token,
            seed_first=seeds.start, seed_end=seeds.stop, successes=results.successes,
            failures=len(failed), failed_seeds=failed, started_at_s=results.started_at_s,
            completed_at_s=self.wall(),
        )
        self.state.exclude.add(lease.batch)  # our own batch: never a claim candidate meanwhile
        try:
            for attempt in range(1, 2**62):
                try:
                    outcome = await self.store.run(complete_procedure(lease.record, done))
                except FleetS3Error as exc:
                    outcome, error = "unresolved", str(exc)
                else:
                    error = "the done record could not be written nor read back"
                if outcome != "unresolved":
                    break
                log.warning("fleet_complete_error", batch=lease.batch, attempt=attempt,
                            error=error, holder=self.holder, run=self.run)
                await asyncio.sleep(COMPLETE_BACKOFF.delay_s(attempt, self._rng))
        finally:
            self.state.exclude.discard(lease.batch)
        self._emit("fleet_done", batch=lease.batch, outcome=outcome, failures=len(failed))
        await self._release(lease, "fleet_done")
        return outcome == "recorded"

    async def _release(self, lease: Lease, after: str) -> bool:
        """Delete our lease (bounded: RELEASE_TIMEOUT_S); False if that failed or it was no longer
        ours. A failure is logged (it reaches CloudWatch) and costs only the lease's expiry."""
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                released = await self.store.run(release_procedure(lease.record, lease.etag))
        except (FleetS3Error, TimeoutError) as exc:
            log.warning("fleet_release_failed", batch=lease.batch, after=after,
                        error=str(exc) or f"no answer within {RELEASE_TIMEOUT_S:g} s",
                        holder=self.holder, run=self.run,
                        msg=f"lease of batch {lease.batch} not deleted; it expires in "
                            f"{lease.record.lease_seconds:g} s")
            return False
        return released

    async def release(self, lease: Lease) -> None:
        """Give the batch back unfinished (drain on SIGTERM): another daemon claims it at once."""
        self._emit("fleet_stopped", batch=lease.batch)
        if await self._release(lease, "drain"):
            self._emit("fleet_released", batch=lease.batch)

    async def claim_alert(self, fingerprint: str, seed: int) -> bool | None:
        """Claim alerts/{run}/{fingerprint}.json: True if this daemon is the fleet's first to
        see the fingerprint (it alerts), False if another daemon claimed it (count the failure
        into digests), None if S3 could not settle it. Waits out outages: bound it with
        asyncio.timeout."""
        claim = AlertClaim(run=self.run, fingerprint=fingerprint, holder=self.holder,
                           token=secrets.token_hex(8), seed=seed, claimed_at_s=self.wall())
        return await self.store.run(alert_claim_procedure(claim))

    async def finished(self) -> bool:
        """Has the fleet done every batch of this (bounded) run?"""
        await self.store.run(refresh_watermark(self.state))
        assert self.state.watermark is not None
        return run_finished(self.space, self.state.watermark)

    async def run_batches(
        self,
        execute: Callable[[Lease], Coroutine[Any, Any, BatchResults]],
        batches_max: int | None = None,
        on_recorded: Callable[[Lease, BatchResults], Coroutine[Any, Any, None]] | None = None,
    ) -> int:
        """Claim, run (cancelled if the lease is lost), complete; until the run is finished or
        `batches_max` batches were recorded by us. `on_recorded` runs for each batch whose done
        record is ours (archive its failures there: exactly once). Returns how many we recorded."""
        recorded = 0
        while batches_max is None or recorded < batches_max:
            lease = await self.claim()
            if lease is None:
                break
            async with self.renewing(lease):
                work = asyncio.create_task(execute(lease))
                lost = asyncio.create_task(lease.lost.wait())
                await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    continue
                results = work.result()
            if await self.complete(lease, results):
                recorded += 1
                if on_recorded is not None:
                    await on_recorded(lease, results)
        return recorded


# ---------------------------------------------------------------------------------------------
# `voprd status --fleet`


class InstanceStatus(msgspec.Struct, kw_only=True):
    holder: str
    current_batches: list[int]
    batches_done: int  # among the recent done records read
    seeds_done: int
    seeds_per_s: float
    failures: int
    failed_seeds: list[int]


class FleetStatus(msgspec.Struct, kw_only=True):
    run: str
    watermark: int
    done_above_watermark: list[int]
    leases: int
    instances: list[InstanceStatus]
    mode: str = "fleet"
    unreadable: list[str] = msgspec.field(default_factory=list)  # records that did not decode


STATUS_DONE_BYTES_MAX = done_bytes_max(1 << 20)  # status does not know the run's batch size


async def fleet_status(
    store: S3Store, run: str, recent_done_max: int = 200, watermark_hint: int = 0
) -> FleetStatus:
    """Per instance: the batches it holds now, and from the most recent done records (at most
    `recent_done_max` reads) its batches, seeds/s and failures. Records that do not decode are
    listed in `unreadable` (status only reads; the daemons quarantine them)."""
    state = ClaimState(run=run, holder="status", space=BatchSpace(seed_start=0, batch_size=1),
                       timing=Timing(), watermark=watermark_hint, trusted_below=BATCH_COUNT_MAX)
    above = await store.run(refresh_watermark(state))
    assert state.watermark is not None
    by_holder: dict[str, InstanceStatus] = {}
    unreadable: list[str] = []

    def instance(holder: str) -> InstanceStatus:
        return by_holder.setdefault(holder, InstanceStatus(
            holder=holder, current_batches=[], batches_done=0, seeds_done=0, seeds_per_s=0.0,
            failures=0, failed_seeds=[]))

    async def read(key: str, bytes_max: int, decode: Callable[[bytes], R]) -> R | None:
        """The record at `key`, or None: gone, or unreadable (then listed in `unreadable`)."""
        got = await store.get(key, bytes_max)
        if not got.found:
            return None
        try:
            if got.too_large or got.body is None:
                raise RecordInvalid("too large")
            return decode(got.body)
        except RecordInvalid:
            unreadable.append(key)
            return None

    lease_list = await store.run(list_all(leases_prefix(run), ""))
    lease_count = 0
    for obj in lease_list.objects:
        record = await read(obj.key, LEASE_BYTES_MAX, decode_lease)
        if record is None:
            continue
        instance(record.holder).current_batches.append(record.batch)
        lease_count += 1
    # The newest done records: those just below the watermark and those above it.
    start = max(0, state.watermark - recent_done_max)
    prefix = done_prefix(run)
    recent = await store.run(list_all(prefix, start_after(prefix, start)))
    spans: dict[str, tuple[float, float]] = {}
    for obj in recent.objects[-recent_done_max:]:
        if batch_from_key(obj.key) is None:
            continue
        done = await read(obj.key, STATUS_DONE_BYTES_MAX, decode_done)
        if done is None:
            continue
        status = instance(done.holder)
        status.batches_done += 1
        status.seeds_done += done.seed_end - done.seed_first
        status.failures += done.failures
        status.failed_seeds += done.failed_seeds
        first, last = spans.get(done.holder, (done.started_at_s, done.completed_at_s))
        spans[done.holder] = (min(first, done.started_at_s), max(last, done.completed_at_s))
    for holder, (first, last) in spans.items():
        status = by_holder[holder]
        status.seeds_per_s = status.seeds_done / (last - first) if last > first else 0.0
    return FleetStatus(
        run=run, watermark=state.watermark, done_above_watermark=above, leases=lease_count,
        instances=[by_holder[h] for h in sorted(by_holder)], unreadable=unreadable,
    )


# ---------------------------------------------------------------------------------------------
# The daemon's seed source


class RecordedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch whose done record is ours."""

    batch: int
    seeds: range
    failed_seeds: list[int]


class _Running:
    def __init__(self, lease: Lease, renewal: asyncio.Task[None], started_at_s: float) -> None:
        self.lease = lease
        self.renewal = renewal
        self.next_index = 0
        self.results: dict[int, bool] = {}  # seed -> failed
        self.started_at_s = started_at_s


class FleetSeedSource:
    """Seeds for the daemon's dispatcher, batch by batch, from the fleet's leases.

        async with FleetSeedSource(fleet, on_lost=cancel_seeds, on_recorded=note) as source:
            while (seed := await source.next_seed()) is not None:   # None: the run is done
                dispatch(seed)                                        # ...later, per result:
            await source.seed_done(seed, failed)

    Seeds come in order; results may arrive out of order. Once every seed of a batch has a
    result, the batch is recorded done in the background (`seed_done` does not wait for S3) and
    `on_recorded(RecordedBatch)` is called if our done record is the batch's. If a lease is lost,
    `on_lost(batch, seeds)` is called so the daemon can stop those seeds; their results are
    ignored. Leaving the block (drain) gives batches still being recorded COMPLETE_ON_EXIT_S and
    releases unfinished ones. At most `batches_held_max` batches are held at once (the next is
    claimed while the last seeds of the previous one run, so workers do not idle at batch
    boundaries).
    """

    def __init__(
        self,
        fleet: FleetCoordinator,
        on_lost: Callable[[int, range], None] | None = None,
        batches_held_max: int = 2,
        on_recorded: Callable[[RecordedBatch], None] | None = None,
    ) -> None:
        assert batches_held_max >= 1
        self.fleet = fleet
        self.on_lost = on_lost
        self.on_recorded = on_recorded
        self.batches_held_max = batches_held_max
        self.running: dict[int, _Running] = {}  # batch -> state, in claim order
        self.completing: dict[int, asyncio.Task[None]] = {}  # batch -> its done record's task
        self.finished = False
        self.claiming = asyncio.Lock()  # concurrent next_seed calls claim one batch at a time

    async def __aenter__(self) -> FleetSeedSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.completing:
            # A batch whose done record is not written yet is run again by another daemon once
            # its lease expires: its failures were archived and alerted as they came.
            _, late = await asyncio.wait(list(self.completing.values()),
                                         timeout=COMPLETE_ON_EXIT_S)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for batch in list(self.running):
            running = self.running.pop(batch)
            await self._stop_renewal(running)
            if not running.lease.lost.is_set():
                await self.fleet.release(running.lease)

    async def _stop_renewal(self, running: _Running) -> None:
        running.renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.renewal

    def _watch(self, lease: Lease) -> None:
        async def renew_then_report() -> None:
            await self.fleet.keep_renewed(lease)
            running = self.running.pop(lease.batch, None)
            if running is not None and self.on_lost is not None:
                self.on_lost(lease.batch, lease.seeds)

        self.running[lease.batch] = _Running(
            lease, asyncio.create_task(renew_then_report(), name=f"renew-{lease.batch}"),
            self.fleet.wall())

    async def next_seed(self) -> int | None:
        """The next seed to run, claiming a batch when needed; None once the run is done."""
        while True:  # each pass dispatches, finishes, sleeps or claims (which waits itself)
            for running in self.running.values():
                if running.next_index < len(running.lease.seeds):
                    seed = running.lease.seeds[running.next_index]
                    running.next_index += 1
                    return seed
            if self.finished:
                return None
            if len(self.running) >= self.batches_held_max:
                await asyncio.sleep(self.fleet.timing.poll_s / 10)  # results will free a slot
                continue
            if self.claiming.locked():
                async with self.claiming:
                    continue  # another caller claimed meanwhile: look again
            async with self.claiming:
                lease = await self.fleet.claim()
            if lease is None:
                self.finished = True
                return None
            self._watch(lease)

    async def seed_done(self, seed: int, failed: bool) -> None:
        """Record one seed's result; the result that completes a batch starts recording it done
        (in the background: see `completions`)."""
        batch = self.fleet.space.batch_of(seed)
        running = self.running.get(batch)
        if running is None:
            return  # its lease was lost: another daemon runs the batch
        assert seed in running.lease.seeds, (seed, batch)
        if seed in running.results:
            # A second result for one seed: a requeued seed of a batch this daemon lost and then
            # claimed again, or a late result of a killed worker. The first result stands.
            return
        running.results[seed] = failed
        if len(running.results) < len(running.lease.seeds):
            return
        del self.running[batch]
        await self._stop_renewal(running)
        self.completing[batch] = asyncio.create_task(self._complete(running),
                                                     name=f"complete-{batch}")

    async def _complete(self, running: _Running) -> None:
        lease = running.lease
        failed_seeds = sorted(s for s, f in running.results.items() if f)
        results = BatchResults(successes=len(lease.seeds) - len(failed_seeds),
                               failed_seeds=failed_seeds, started_at_s=running.started_at_s)
        try:
            if await self.fleet.complete(lease, results) and self.on_recorded is not None:
                self.on_recorded(RecordedBatch(batch=lease.batch, seeds=lease.seeds,
                                               failed_seeds=failed_seeds))
        except Exception:
            # A bug, not S3 (complete waits S3 out): the batch's lease expires and another
            # daemon runs it again; the failures were archived and alerted already.
            log.exception("fleet_complete_failed", batch=lease.batch, holder=self.fleet.holder,
                          run=self.fleet.run)
        finally:
            self.completing.pop(lease.batch, None)
            self._completed()

    def _completed(self) -> None:
        """Hook: a batch's recording ended (the dispatch source wakes its prefetch loop)."""

    async def completions(self) -> None:
        """Wait until every batch whose results are all in has been recorded (or given up)."""
        while self.completing:
            await asyncio.wait(list(self.completing.values()))


class FleetDispatchSource(FleetSeedSource):
    """The same, shaped as the daemon Supervisor's synchronous SeedSource protocol
    (`dispatch(count_max)`, `requeue(seeds)`, `dispatch_exhausted`), with a background
    `prefetch_loop()` that claims the next batch before the current one runs dry:

        source = FleetDispatchSource(fleet, on_lost=supervisor_cancel)
        async with source, asyncio.TaskGroup() as group:
            group.create_task(source.prefetch_loop())
            ... Supervisor(source=source, on_result=...) ...; per result:
            await source.seed_done(result.seed, result.status == "failed")

    `dispatch` returns [] while a claim is in flight (not exhausted: wait, do not stop workers).
    """

    def __init__(
        self,
        fleet: FleetCoordinator,
        on_lost: Callable[[int, range], None] | None = None,
        batches_held_max: int = 2,
        on_recorded: Callable[[RecordedBatch], None] | None = None,
    ) -> None:
        super().__init__(fleet, on_lost, batches_held_max, on_recorded)
        self.requeued: list[int] = []
        self.wake = asyncio.Event()  # set when dispatch ran low or a batch finished
        self.claims_stopped = False  # drain: no new batch (the held ones are given back on exit)

    def stop_claiming(self) -> None:
        self.claims_stopped = True
        self.wake.set()

    def _undispatched(self) -> int:
        return sum(len(r.lease.seeds) - r.next_index for r in self.running.values())

    def dispatch(self, count_max: int) -> list[int]:
        assert count_max >= 0
        seeds: list[int] = []
        while self.requeued and len(seeds) < count_max:
            seed = heapq.heappop(self.requeued)
            running = self.running.get(self.fleet.space.batch_of(seed))
            if running is not None and seed not in running.results:
                seeds.append(seed)
        for running in self.running.values():
            while len(seeds) < count_max and running.next_index < len(running.lease.seeds):
                seeds.append(running.lease.seeds[running.next_index])
                running.next_index += 1
        if self._undispatched() < count_max:
            self.wake.set()
        return seeds

    def requeue(self, seeds: list[int]) -> None:
        for seed in seeds:
            heapq.heappush(self.requeued, seed)

    @property
    def dispatch_exhausted(self) -> bool:
        return self.finished and not self.requeued and self._undispatched() == 0

    async def seed_done(self, seed: int, failed: bool) -> None:
        await super().seed_done(seed, failed)
        self.wake.set()

    def _completed(self) -> None:
        self.wake.set()

    async def prefetch_loop(self) -> None:
        """Keep a batch ready: claim when the held seeds run low and a slot is free; returns
        once the run is finished (then dispatch_exhausted becomes true as seeds drain)."""
        while not self.finished and not self.claims_stopped:
            if self._undispatched() == 0 and len(self.running) < self.batches_held_max:
                lease = await self.fleet.claim()
                if lease is None:
                    self.finished = True
                    break
                self._watch(lease)
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.fleet.timing.poll_s):
                    await self.wake.wait()


def format_fleet_status(status: FleetStatus) -> str:
    """`voprd status --fleet`, readable."""
    lines = [
        f"mode: fleet (run {status.run}: the daemons started with --run {status.run} share its "
        "seeds through S3 leases)",
        f"run {status.run}: watermark batch {status.watermark} (every batch below is done), "
        f"{len(status.done_above_watermark)} done above it, {status.leases} leased",
        f"{'instance':<32} {'batches now':<16} {'done':>6} {'seeds/s':>9} {'failures':>9}",
    ]
    for i in status.instances:
        now = ",".join(str(b) for b in sorted(i.current_batches)) or "-"
        lines.append(f"{i.holder:<32} {now:<16} {i.batches_done:>6} {i.seeds_per_s:>9.2f} "
                     f"{i.failures:>9}")
    if status.unreadable:
        lines.append(f"unreadable records (the daemons quarantine them): "
                     f"{', '.join(status.unreadable)}")
    return "\n".join(lines)


def default_holder_id(instance_id: str | None = None) -> str:
    """Unique per daemon start: the instance id (or host name) and pid plus a random suffix, so
    a restarted daemon never mistakes its predecessor's lease for its own."""
    import os
    import socket

    return f"{instance_id or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def show_fleet_status(bucket: str, run: str, region: str | None, as_json: bool) -> str:
    """What `voprd status --fleet --run NAME` prints (only reads the bucket)."""
    from voprd.fleet.s3 import create_client

    async with create_client(region) as client:
        status = await fleet_status(S3Store(client, bucket, read_only=True),
                                    validate_run_name(run))
    return msgspec.json.encode(status).decode() if as_json else format_fleet_status(status)
