"""Discrete-event simulation of a fleet of daemons sharing a run through a modelled S3.

It drives the same core procedures as the real coordinator (claim_procedure, complete_procedure,
renew_record, HolderClock) against an S3 model with S3's semantics: conditional writes evaluated
atomically, LastModified and Date stamped by the server's clock and truncated to whole seconds,
request latencies drawn from a log-normal distribution, and server errors (some after the write
was applied, so a retry sees 412 and reads the object back, as voprd.fleet.s3 does). Each daemon
has its own clocks (a wall-clock offset and a monotonic drift), batch durations vary, and daemons
crash and come back under a new holder id. Deterministic: one `random.Random(seed)`.

It checks, as it goes, that no two daemons hold the same batch at one true instant (a holder's
span ends when its own clock says the lease ran out, when it stops, or when it crashes) and that
every batch is recorded done exactly once; it counts S3 requests and lost races per batch.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import msgspec

from voprd.fleet.core import (
    BatchSpace,
    Busy,
    ClaimState,
    DeleteOp,
    DoneRecord,
    Finished,
    GetOp,
    GetReply,
    HolderClock,
    ListOp,
    ListReply,
    ObjectInfo,
    PutOp,
    QuarantineOp,
    S3Op,
    S3Reply,
    Timing,
    WriteReply,
    claim_procedure,
    complete_procedure,
    encode,
    lease_key,
    quarantine_key,
    release_procedure,
    renew_record,
)

T = TypeVar("T")
LIST_PAGE_KEYS = 1000  # S3's page size
EVENTS_MAX = 50_000_000
RETRIES_MAX = 4  # as botocore's standard mode (5 attempts)

# us-east-1 S3 Standard request prices (USD per 1000 requests); DELETE is free.
PRICE_PER_1000 = {"PUT": 0.005, "LIST": 0.005, "GET": 0.0004, "DELETE": 0.0}
SECONDS_PER_MONTH = 30 * 86_400


class SimParams(msgspec.Struct, frozen=True, kw_only=True):
    daemons: int
    batches: int | None = None  # a bounded run (-n); None: unbounded, stop after sim_s_max
    sim_s_max: float = 1800.0
    seed: int = 1
    batch_size: int = 1000
    batch_s_mean: float = 60.0
    batch_s_jitter: float = 0.2  # uniform +-20 %
    lease_seconds: float = 180.0
    takeover_margin_s: float = 2.0
    holder_guard_s: float = 0.25
    poll_s: float = 5.0
    start_spread_s: float = 1.0  # all daemons start within this (the herd case)
    wall_skew_s_max: float = 300.0  # wall-clock offset per daemon, +- (should not matter)
    drift_ppm_max: float = 100.0  # monotonic clock rate error per daemon, +-
    latency_ms_median: float = 20.0
    latency_sigma: float = 0.6  # log-normal shape: p99 about 4x the median
    error_rate: float = 0.001  # per request: 5xx (half of them after the write was applied)
    crashes_per_daemon_hour: float = 0.0
    restart_s: float = 30.0
    spread: bool = True


class SimReport(msgspec.Struct, kw_only=True):
    params: SimParams
    sim_s: float
    batches_done: int
    claims: int
    conflicts: int  # conditional writes lost to another daemon during claims
    busy_polls: int
    takeovers: int
    crashes: int
    duplicate_done: int  # done writes refused because another holder recorded the batch
    overlap_violations: int
    requests: dict[str, int]
    requests_per_batch: float
    conflicts_per_batch: float
    cost_per_batch_usd: float
    requests_per_daemon_hour: float
    monthly_cost_usd: float  # S3 requests for the whole fleet, running continuously
    monthly_cost_per_daemon_usd: float


class _Sleep(msgspec.Struct, frozen=True):
    seconds: float


Step = S3Op | _Sleep


class S3Model:
    """A bucket: atomic conditional writes, server-stamped LastModified (whole seconds)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str, float]] = {}
        self.keys: list[str] = []  # sorted, for listings
        self.etags = itertools.count(1)

    def apply(self, op: S3Op, now_s: float) -> S3Reply:
        stamp = math.floor(now_s)
        if isinstance(op, ListOp):
            start = max(bisect.bisect_right(self.keys, max(op.start_after, op.continuation or "")),
                        bisect.bisect_left(self.keys, op.prefix))
            end = bisect.bisect_left(self.keys, op.prefix + "\uffff")
            page = self.keys[start:min(end, start + LIST_PAGE_KEYS)]
            more = start + LIST_PAGE_KEYS < end
            objects = [ObjectInfo(key=k, etag=self.objects[k][1],
                                  last_modified_s=self.objects[k][2]) for k in page]
            return ListReply(objects=objects, next_continuation=page[-1] if more else None,
                             server_now_s=stamp)
        if isinstance(op, GetOp):
            found = self.objects.get(op.key)
            if found is None:
                return GetReply(body=None, server_now_s=stamp)
            too_large = len(found[0]) > op.bytes_max
            return GetReply(body=None if too_large else found[0], etag=found[1],
                            last_modified_s=found[2], server_now_s=stamp, too_large=too_large)
        if isinstance(op, QuarantineOp):
            found = self.objects.get(op.key)
            if found is not None:
                self.apply(PutOp(key=quarantine_key(op.key, stamp, str(next(self.etags))),
                                 body=found[0] if op.body is None else op.body), now_s)
                if op.delete:
                    return self.apply(DeleteOp(key=op.key, if_match=op.etag), now_s)
            return WriteReply(ok=found is not None)
        current = self.objects.get(op.key)
        if op.if_match is not None and (current is None or current[1] != op.if_match):
            return WriteReply(ok=False)
        if isinstance(op, DeleteOp):
            if current is not None:
                del self.objects[op.key]
                self.keys.pop(bisect.bisect_left(self.keys, op.key))
            return WriteReply(ok=True)
        if op.if_none_match and current is not None:
            return WriteReply(ok=False)
        etag = f'"{next(self.etags)}"'
        if current is None:
            bisect.insort(self.keys, op.key)
        self.objects[op.key] = (op.body, etag, float(stamp))
        return WriteReply(ok=True, etag=etag)


class _Daemon:
    def __init__(self, index: int, incarnation: int, rng: random.Random, p: SimParams) -> None:
        self.holder = f"i-{index:04d}-{incarnation}"
        self.index = index
        self.wall_offset_s = rng.uniform(-p.wall_skew_s_max, p.wall_skew_s_max)
        self.drift = rng.uniform(-p.drift_ppm_max, p.drift_ppm_max) * 1e-6
        self.alive = True
        self.holding: dict[int, float] = {}  # batch -> true time it started holding


class FleetSim:
    def __init__(self, params: SimParams) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.now_s = 0.0
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.s3 = S3Model()
        self.space = BatchSpace(
            seed_start=0, batch_size=params.batch_size,
            seed_count=None if params.batches is None else params.batch_size * params.batches)
        self.timing = Timing(lease_seconds=params.lease_seconds,
                             takeover_margin_s=params.takeover_margin_s,
                             holder_guard_s=params.holder_guard_s, poll_s=params.poll_s)
        self.requests = {"LIST": 0, "GET": 0, "PUT": 0, "DELETE": 0}
        self.holds: dict[int, list[tuple[float, float, str]]] = {}
        self.done_by: dict[int, str] = {}
        self.counts = {"claims": 0, "conflicts": 0, "busy": 0, "takeovers": 0, "crashes": 0,
                       "duplicate_done": 0}
        self.finished_daemons = 0
        self.daemons: list[_Daemon] = []

    # --- event loop --------------------------------------------------------------------------

    def at(self, time_s: float, action: Callable[[], None]) -> None:
        assert time_s >= self.now_s
        heapq.heappush(self.queue, (time_s, next(self.seq), action))

    def latency_s(self) -> float:
        return self.p.latency_ms_median / 1000 * math.exp(self.rng.gauss(0, self.p.latency_sigma))

    def run(self) -> SimReport:
        p = self.p
        for index in range(p.daemons):
            self._boot(index, 0, self.rng.uniform(0, p.start_spread_s))
        for _ in range(EVENTS_MAX):
            if not self.queue or self.finished_daemons == p.daemons:
                break
            if self.queue[0][0] > p.sim_s_max:
                break
            self.now_s, _, action = heapq.heappop(self.queue)
            action()
        else:
            raise AssertionError("simulation exceeded EVENTS_MAX")
        return self._report()

    def _boot(self, index: int, incarnation: int, at_s: float) -> None:
        daemon = _Daemon(index, incarnation, self.rng, self.p)
        self.daemons.append(daemon)
        process = self._daemon_process(daemon)
        self.at(at_s, lambda: self._step(daemon, process, None))
        if self.p.crashes_per_daemon_hour > 0:
            crash_in_s = self.rng.expovariate(self.p.crashes_per_daemon_hour / 3600)
            self.at(at_s + crash_in_s, lambda: self._crash(daemon))

    def _crash(self, daemon: _Daemon) -> None:
        if not daemon.alive:
            return
        daemon.alive = False
        self.counts["crashes"] += 1
        for batch in list(daemon.holding):
            self._stop_holding(daemon, batch)
        self._boot(daemon.index, int(daemon.holder.rsplit("-", 1)[1]) + 1,
                   self.now_s + self.p.restart_s)

    def _step(self, daemon: _Daemon, process: Generator[Step, S3Reply | None, None],
              reply: S3Reply | None) -> None:
        if not daemon.alive:
            return
        try:
            step = process.send(reply)
        except StopIteration:
            daemon.alive = False
            self.finished_daemons += 1
            return
        if isinstance(step, _Sleep):
            self.at(self.now_s + step.seconds, lambda: self._step(daemon, process, None))
            return
        self._request(daemon, step, lambda reply: self._step(daemon, process, reply), 0)

    def _request(self, daemon: _Daemon, op: S3Op, deliver: Callable[[S3Reply], None],
                 attempt: int) -> None:
        kind = {ListOp: "LIST", GetOp: "GET", PutOp: "PUT", DeleteOp: "DELETE",
                QuarantineOp: "PUT"}[type(op)]
        self.requests[kind] += 1
        arrive_s = self.now_s + self.latency_s()

        def at_server() -> None:
            fails = self.rng.random() < self.p.error_rate and attempt < RETRIES_MAX
            applied_then_lost = fails and self.rng.random() < 0.5
            reply = self.s3.apply(op, self.now_s) if (not fails or applied_then_lost) else None
            back_s = self.now_s + self.latency_s()
            if fails:
                backoff_s = self.rng.uniform(0, 0.05 * 2**attempt)
                self.at(back_s + backoff_s, lambda: self._retry(daemon, op, deliver, attempt + 1))
                return
            assert reply is not None
            self.at(back_s, lambda: deliver(reply))

        self.at(arrive_s, at_server)

    def _retry(self, daemon: _Daemon, op: S3Op, deliver: Callable[[S3Reply], None],
               attempt: int) -> None:
        if not daemon.alive:
            return
        if not (isinstance(op, PutOp) and (op.if_none_match or op.if_match)):
            self._request(daemon, op, deliver, attempt)
            return
        body = op.body

        # A conditional write retried: a 412 may mean our first attempt won (voprd.fleet.s3).
        def check(reply: S3Reply) -> None:
            assert isinstance(reply, WriteReply)
            if reply.ok:
                deliver(reply)
                return

            def compare(got: S3Reply) -> None:
                assert isinstance(got, GetReply)
                deliver(WriteReply(ok=True, etag=got.etag) if got.body == body else reply)

            self._request(daemon, GetOp(key=op.key), compare, 0)

        self._request(daemon, op, check, attempt)

    # --- the daemon ----------------------------------------------------------------------------

    def _mono(self, daemon: _Daemon) -> float:
        return self.now_s * (1 + daemon.drift)

    def _wall(self, daemon: _Daemon) -> float:
        return self.now_s + daemon.wall_offset_s

    def _true_time_of_mono(self, daemon: _Daemon, mono_s: float) -> float:
        return mono_s / (1 + daemon.drift)

    def _stop_holding(self, daemon: _Daemon, batch: int, until_s: float | None = None) -> None:
        start_s = daemon.holding.pop(batch)
        end_s = self.now_s if until_s is None else min(until_s, self.now_s)
        self.holds.setdefault(batch, []).append((start_s, end_s, daemon.holder))

    def _noting_puts(
        self, daemon: _Daemon, procedure: Generator[S3Op, S3Reply, T], sent: dict[str, float]
    ) -> Generator[Step, S3Reply | None, T]:
        """Forward a core procedure's ops, noting when each PUT leaves (as the coordinator)."""
        reply: S3Reply | None = None
        while True:
            try:
                op = procedure.send(reply) if reply is not None else next(procedure)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if isinstance(op, PutOp):
                sent[op.key] = self._mono(daemon)
            reply = yield op

    def _daemon_process(self, daemon: _Daemon) -> Generator[Step, S3Reply | None, None]:
        state = ClaimState(run="sim", holder=daemon.holder, space=self.space, timing=self.timing,
                           spread=self.p.spread)
        tokens = itertools.count()
        puts_sent_mono: dict[str, float] = {}
        while True:
            conflicts_before = state.conflicts
            puts_sent_mono.clear()
            outcome = yield from self._noting_puts(daemon, claim_procedure(
                state, self._wall(daemon), f"{daemon.holder}/{next(tokens)}"), puts_sent_mono)
            self.counts["conflicts"] += state.conflicts - conflicts_before
            if isinstance(outcome, Finished):
                return
            if isinstance(outcome, Busy):
                self.counts["busy"] += 1
                yield _Sleep(outcome.retry_after_s)
                continue
            self.counts["claims"] += 1
            if outcome.record.takeover_of is not None:
                self.counts["takeovers"] += 1
            record, etag, batch = outcome.record, outcome.etag, outcome.record.batch
            clock = HolderClock(lease_seconds=self.timing.lease_seconds,
                                last_write_sent_mono=puts_sent_mono[lease_key("sim", batch)])
            daemon.holding[batch] = self.now_s
            p = self.p
            duration_s = p.batch_s_mean * self.rng.uniform(1 - p.batch_s_jitter,
                                                           1 + p.batch_s_jitter)
            end_mono = self._mono(daemon) + duration_s
            lost = False
            while not lost:
                renew_at = clock.renew_due_mono(self.timing)
                if end_mono <= renew_at:
                    yield _Sleep(max(0.0, end_mono - self._mono(daemon)))
                    break
                yield _Sleep(max(0.0, renew_at - self._mono(daemon)))
                sent = self._mono(daemon)
                renewed = renew_record(record, self._wall(daemon))
                reply = yield PutOp(key=lease_key("sim", batch), body=encode(renewed),
                                    if_match=etag)
                assert isinstance(reply, WriteReply)
                if not clock.valid(self._mono(daemon), self.timing) or not reply.ok:
                    lost = True
                    break
                record, etag, clock.last_write_sent_mono = renewed, reply.etag, sent
            valid_until_s = self._true_time_of_mono(daemon, clock.valid_until_mono(self.timing))
            if lost or not clock.valid(self._mono(daemon), self.timing):
                self._stop_holding(daemon, batch, valid_until_s)
                continue
            self._stop_holding(daemon, batch)
            seeds = self.space.seeds(batch)
            done = DoneRecord(
                run="sim", batch=batch, holder=daemon.holder, token=record.token,
                seed_first=seeds.start, seed_end=seeds.stop, successes=len(seeds), failures=0,
                failed_seeds=[], started_at_s=0.0, completed_at_s=self._wall(daemon),
            )
            result = yield from complete_procedure(record, done)
            yield from release_procedure(record, etag)
            if result == "recorded":
                assert batch not in self.done_by, batch
                self.done_by[batch] = daemon.holder
            else:
                self.counts["duplicate_done"] += 1

    # --- results ---------------------------------------------------------------------------

    def overlap_violations(self) -> int:
        violations = 0
        for spans in self.holds.values():
            spans.sort()
            for (_, end_s, holder), (start_s, _, other) in itertools.pairwise(spans):
                if start_s < end_s and holder != other:
                    violations += 1
        return violations

    def _report(self) -> SimReport:
        p = self.p
        batches_done = len(self.done_by)
        total = sum(self.requests.values())
        cost = sum(self.requests[k] * PRICE_PER_1000[k] / 1000 for k in self.requests)
        per_batch = cost / max(1, batches_done)
        # From the request rate over the whole simulated time (start-up herd and crashes
        # included; batches still in flight at the end count requests but not as done).
        monthly = cost / max(self.now_s, 1e-9) * SECONDS_PER_MONTH
        return SimReport(
            params=p, sim_s=self.now_s, batches_done=batches_done, claims=self.counts["claims"],
            conflicts=self.counts["conflicts"], busy_polls=self.counts["busy"],
            takeovers=self.counts["takeovers"], crashes=self.counts["crashes"],
            duplicate_done=self.counts["duplicate_done"],
            overlap_violations=self.overlap_violations(), requests=dict(self.requests),
            requests_per_batch=total / max(1, batches_done),
            conflicts_per_batch=self.counts["conflicts"] / max(1, batches_done),
            cost_per_batch_usd=per_batch,
            requests_per_daemon_hour=total / max(self.now_s, 1e-9) * 3600 / p.daemons,
            monthly_cost_usd=monthly,
            monthly_cost_per_daemon_usd=monthly / p.daemons,
        )


def simulate(params: SimParams) -> SimReport:
    return FleetSim(params).run()


def report_row(report: SimReport) -> dict[str, Any]:
    return {
        "daemons": report.params.daemons, "batches done": report.batches_done,
        "conflicts/batch": round(report.conflicts_per_batch, 3),
        "requests/batch": round(report.requests_per_batch, 2),
        "requests/daemon-hour": round(report.requests_per_daemon_hour, 1),
        "takeovers": report.takeovers, "crashes": report.crashes,
        "overlaps": report.overlap_violations,
        "$/month fleet": round(report.monthly_cost_usd, 2),
        "$/month/daemon": round(report.monthly_cost_per_daemon_usd, 3),
    }
