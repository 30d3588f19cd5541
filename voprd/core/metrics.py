"""Per-minute metric aggregates (pure: the caller passes the time).

IterationsCompleted, FailuresDetected, EventsSimulated and the SeedDuration statistic set (seconds)
are summed per wall-clock minute; a minute is emitted once it is closed, so a metrics sink publishes
one datapoint set per minute (PutMetricData once a minute for the AWS backend).

Exactly once through crashes (docs/daemon.md, "Metrics"): the daemon adds a seed only once its
journal record is durable (the record carries the seed's minute, events and duration), the
aggregates not yet published are part of every checkpoint, and each published aggregate is a
numbered batch (`run_id`, `batch`): the n-th batch of a run always holds the same seeds, so a
restart that publishes again what a killed process had published uses the same key, which the
sinks let through once.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

MINUTE_S = 60
OPEN_MINUTES_MAX = 4  # results may straddle a minute boundary; older open minutes are closed


class StatisticSet(msgspec.Struct, kw_only=True):
    sample_count: int = 0
    sum: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0

    def add(self, value: float) -> None:
        if self.sample_count == 0:
            self.minimum = self.maximum = value
        else:
            self.minimum = min(self.minimum, value)
            self.maximum = max(self.maximum, value)
        self.sample_count += 1
        self.sum += value


class MinuteAggregate(msgspec.Struct, kw_only=True):
    minute_start_unix: int
    iterations_completed: int = 0
    failures_detected: int = 0
    events_simulated: int = 0
    seed_duration_s: StatisticSet = msgspec.field(default_factory=StatisticSet)


class MetricBatch(MinuteAggregate, kw_only=True):
    """A minute's aggregate as published: the `batch`-th of run `run_id` (its idempotency key)."""

    run_id: str
    batch: int

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.batch}"


def minute_of(now_s: float) -> int:
    """The start (unix seconds) of the wall-clock minute holding `now_s`."""
    return int(now_s // MINUTE_S) * MINUTE_S


class MetricsAggregator:
    """Accumulates seed results into per-minute aggregates and numbers what it hands out.

    `pending` (not yet published) and `batches_published` come from the checkpoint, so a restart
    goes on where the stored state left off."""

    def __init__(self, run_id: str = "", pending: Iterable[MinuteAggregate] = (),
                 batches_published: int = 0) -> None:
        assert batches_published >= 0
        self.run_id = run_id
        self.batches_published = batches_published
        self._open: dict[int, MinuteAggregate] = {}
        for aggregate in pending:
            assert aggregate.minute_start_unix not in self._open, "one aggregate per minute"
            self._open[aggregate.minute_start_unix] = msgspec.convert(
                msgspec.to_builtins(aggregate), MinuteAggregate)

    def add(self, now_s: float, *, failed: bool, events: int, duration_s: float) -> None:
        assert events >= 0 and duration_s >= 0
        minute = minute_of(now_s)
        aggregate = self._open.get(minute)
        if aggregate is None:
            aggregate = self._open[minute] = MinuteAggregate(minute_start_unix=minute)
        aggregate.iterations_completed += 1
        aggregate.failures_detected += int(failed)
        aggregate.events_simulated += events
        aggregate.seed_duration_s.add(duration_s)

    def take_closed(self, now_s: float) -> list[MetricBatch]:
        """Aggregates of minutes that ended at or before now_s (oldest first), numbered; they
        are removed. What is taken is always the oldest minutes, so the numbering of a run's
        batches depends only on which seeds fell in which minute."""
        current = minute_of(now_s)
        closed = sorted(minute for minute in self._open if minute < current)
        extra = sorted(self._open)[:-OPEN_MINUTES_MAX] if len(self._open) > OPEN_MINUTES_MAX else []
        return self._number(sorted(set(closed) | set(extra)))

    def take_all(self) -> list[MetricBatch]:
        """Everything, open minutes included (at shutdown, and at start-up for what a previous
        process left: see the module docstring)."""
        return self._number(sorted(self._open))

    def pending(self) -> list[MinuteAggregate]:
        """What is not yet taken, oldest first (stored in the checkpoint)."""
        return [self._open[minute] for minute in sorted(self._open)]

    def _number(self, minutes: list[int]) -> list[MetricBatch]:
        taken = []
        for minute in minutes:
            aggregate = self._open.pop(minute)
            taken.append(MetricBatch(
                **msgspec.structs.asdict(aggregate), run_id=self.run_id,
                batch=self.batches_published,
            ))
            self.batches_published += 1
        return taken
