"""Exact run progress (pure): low watermark + done set, dispatch order, checkpoint state.

A run is the seeds first_seed, first_seed + stride, ... below end_seed (end_seed None: no end but
the seed space's, 2^64;
stride is 1 except with static partitioning, `--seed-stride`). The core works on real seeds (so the
checkpoint and reproduce commands name them), stepping by the stride. Seeds are dispatched in
ascending order and may complete in any order; the watermark is the lowest seed not yet done, so the
checkpoint is the watermark plus the (small) set of done seeds above it. Applying a completion twice
is a no-op, which is what makes journal replay after a crash exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from voprd.core.metrics import MINUTE_S
from voprd.core.records import (
    FAILED_SEEDS_KEPT_MAX,
    AlertState,
    Checkpoint,
    JournalRecord,
    RunFingerprint,
)
from voprd.options import SEED_SPACE_END

# A journal record names a fingerprint and an invariant of at most this many characters.
RECORD_TEXT_MAX = 1024


class RunProgress:
    def __init__(
        self,
        *,
        run_id: str,
        fingerprint: RunFingerprint,
        end_seed: int | None,
        watermark: int | None = None,
        done_above: Iterable[int] = (),
        last_seed: int = -1,
        total_failures: int = 0,
        failed_seeds: Iterable[int] = (),
    ) -> None:
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.first_seed = fingerprint.first_seed
        self.stride = fingerprint.seed_stride
        assert self.stride >= 1
        assert end_seed is None or end_seed >= self.first_seed
        self.end_seed = end_seed
        # Where dispatch stops: no seed is past the 64-bit seed space, with or without -n.
        self.stop_seed = SEED_SPACE_END if end_seed is None else min(end_seed, SEED_SPACE_END)
        self.watermark = self.first_seed if watermark is None else watermark
        assert self.watermark >= self.first_seed
        self.done_above: set[int] = set(done_above)
        assert all(seed > self.watermark and self.on_sequence(seed) for seed in self.done_above)
        self.last_seed = last_seed
        self.total_failures = total_failures
        self.failed_seeds: list[int] = list(failed_seeds)[-FAILED_SEEDS_KEPT_MAX:]
        # Dispatch state (not checkpointed: after a restart, dispatch resumes at the watermark).
        self._cursor = self.watermark
        self._requeued: list[int] = []
        self._in_flight: set[int] = set()

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, end_seed: int | None) -> RunProgress:
        """Resume a stored run; `end_seed` is the current command's bound (it may differ)."""
        return cls(
            run_id=checkpoint.run_id,
            fingerprint=checkpoint.fingerprint,
            end_seed=end_seed,
            watermark=checkpoint.watermark,
            done_above=checkpoint.done_above,
            last_seed=checkpoint.last_seed,
            total_failures=checkpoint.total_failures,
            failed_seeds=checkpoint.failed_seeds,
        )

    # --- completion -------------------------------------------------------------------------

    def on_sequence(self, seed: int) -> bool:
        return seed >= self.first_seed and (seed - self.first_seed) % self.stride == 0

    def is_done(self, seed: int) -> bool:
        return seed < self.watermark or seed in self.done_above

    @property
    def total_iterations(self) -> int:
        return (self.watermark - self.first_seed) // self.stride + len(self.done_above)

    def record_problem(self, record: JournalRecord) -> str | None:
        """Why a journal record cannot belong to this run (None when it can): a seed off the
        run's sequence or past its end, a failure without its fingerprint, metric fields out of
        range. Such a record is not trusted (nor anything after it in the journal)."""
        seed = record.seed
        if not self.on_sequence(seed) or seed >= self.stop_seed:
            return (f"seed {seed} is not in the run (seeds {self.first_seed}, +{self.stride} .. "
                    f"below {self.stop_seed})")
        if record.failed != bool(record.fingerprint) or record.failed != bool(record.invariant):
            return f"seed {seed}: failed={record.failed} does not match its fingerprint/invariant"
        if any(len(text or "") > RECORD_TEXT_MAX for text in (record.fingerprint,
                                                                record.invariant)):
            return f"seed {seed}: fingerprint or invariant longer than {RECORD_TEXT_MAX}"
        if record.minute_unix < 0 or record.minute_unix % MINUTE_S or record.events < 0 or not (
                0 <= record.duration_s < float("inf")):
            return f"seed {seed}: minute, events or duration out of range"
        return None

    def record(self, record: JournalRecord) -> bool:
        """Apply one completed seed. Returns False (and changes nothing) if it was already done."""
        seed = record.seed
        assert self.on_sequence(seed), (seed, self.first_seed, self.stride)
        self._in_flight.discard(seed)
        if self.is_done(seed):
            return False
        before = self.total_iterations
        self.done_above.add(seed)
        while self.watermark in self.done_above:
            self.done_above.remove(self.watermark)
            self.watermark += self.stride
        self.last_seed = max(self.last_seed, seed)
        if record.failed:
            self.total_failures += 1
            self.failed_seeds.append(seed)
            if len(self.failed_seeds) > FAILED_SEEDS_KEPT_MAX:
                del self.failed_seeds[: len(self.failed_seeds) - FAILED_SEEDS_KEPT_MAX]
        assert self.total_iterations == before + 1
        return True

    def advance_floor(self, seed: int) -> None:
        """Every seed below `seed` is done elsewhere (a fleet's watermark): keep the done set
        bounded to what lies above it. Only for a tally that is not a seed source."""
        floor = max(self.watermark, seed)
        floor += (self.first_seed - floor) % self.stride  # the next seed on our sequence
        self.done_above = {s for s in self.done_above if s >= floor}
        self.watermark = floor
        while self.watermark in self.done_above:
            self.done_above.remove(self.watermark)
            self.watermark += self.stride

    @property
    def finished(self) -> bool:
        """Every seed of the run is done (a run without -n only at the end of the seed space)."""
        return self.watermark >= self.stop_seed

    # --- dispatch ---------------------------------------------------------------------------

    def dispatch(self, count_max: int) -> list[int]:
        """Up to count_max seeds to run next, ascending: re-queued seeds first, then new ones."""
        assert count_max >= 0
        seeds: list[int] = []
        while self._requeued and len(seeds) < count_max:
            seed = heapq.heappop(self._requeued)
            if not self.is_done(seed) and seed not in self._in_flight:
                seeds.append(seed)
        self._cursor = max(self._cursor, self.watermark)
        while len(seeds) < count_max and self._cursor < self.stop_seed:
            seed = self._cursor
            self._cursor += self.stride
            if not self.is_done(seed) and seed not in self._in_flight:
                seeds.append(seed)
        self._in_flight.update(seeds)
        return seeds

    def requeue(self, seeds: Iterable[int]) -> None:
        """Seeds that were dispatched but will not complete (their worker went away)."""
        for seed in seeds:
            self._in_flight.discard(seed)
            if not self.is_done(seed):
                heapq.heappush(self._requeued, seed)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def dispatch_exhausted(self) -> bool:
        """Nothing left to hand out (a bounded run whose seeds are all dispatched or done)."""
        return not self._requeued and max(self._cursor, self.watermark) >= self.stop_seed

    # --- checkpoint -------------------------------------------------------------------------

    def checkpoint(self, last_update: str, alerts: list[AlertState]) -> Checkpoint:
        return Checkpoint(
            run_id=self.run_id,
            fingerprint=self.fingerprint,
            end_seed=self.end_seed,
            watermark=self.watermark,
            done_above=sorted(self.done_above),
            last_seed=self.last_seed,
            total_iterations=self.total_iterations,
            total_failures=self.total_failures,
            failed_seeds=list(self.failed_seeds),
            last_update=last_update,
            alerts=alerts,
        )


def resume_decision(
    stored: RunFingerprint | None, current: RunFingerprint, reset: bool
) -> tuple[str, list[str]]:
    """What to do with a stored run: ("new" | "resume" | "reset" | "refuse", differences)."""
    if stored is None:
        return "new", []
    if reset:
        return "reset", []
    differences = stored.differences(current)
    return ("refuse", differences) if differences else ("resume", [])
