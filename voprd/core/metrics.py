"""Per-minute metric aggregates (pure: the caller passes the time).

IterationsCompleted, FailuresDetected, EventsSimulated and the SeedDuration statistic set (seconds)
are summed per wall-clock minute; a minute is emitted once it is closed, so a metrics sink publishes
one datapoint set per minute (PutMetricData once a minute for the AWS backend).
"""

from __future__ import annotations

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


class MetricsAggregator:
    """Accumulates seed results into per-minute aggregates."""

    def __init__(self) -> None:
        self._open: dict[int, MinuteAggregate] = {}

    def add(self, now_s: float, *, failed: bool, events: int, duration_s: float) -> None:
        assert events >= 0 and duration_s >= 0
        minute = int(now_s // MINUTE_S) * MINUTE_S
        aggregate = self._open.get(minute)
        if aggregate is None:
            aggregate = self._open[minute] = MinuteAggregate(minute_start_unix=minute)
        aggregate.iterations_completed += 1
        aggregate.failures_detected += int(failed)
        aggregate.events_simulated += events
        aggregate.seed_duration_s.add(duration_s)

    def take_closed(self, now_s: float) -> list[MinuteAggregate]:
        """Aggregates of minutes that ended at or before now_s (oldest first); they are removed."""
        current = int(now_s // MINUTE_S) * MINUTE_S
        closed = sorted(minute for minute in self._open if minute < current)
        extra = sorted(self._open)[:-OPEN_MINUTES_MAX] if len(self._open) > OPEN_MINUTES_MAX else []
        return [self._open.pop(minute) for minute in sorted(set(closed) | set(extra))]

    def take_all(self) -> list[MinuteAggregate]:
        """Everything, open minutes included (at shutdown)."""
        taken = [self._open[minute] for minute in sorted(self._open)]
        self._open.clear()
        return taken
