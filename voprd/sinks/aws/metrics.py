"""CloudWatch MetricData from the daemon's per-minute aggregates (pure).

Namespace `VOPR` (configurable), no dimension so fleet-wide alarms see every instance; an
`InstanceId`-dimension copy only with --metrics-instance-dimension (it doubles the custom metrics
billed). SeedDuration is a statistic set in seconds; it is left out of a minute without seeds,
because a statistic set needs at least one sample.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from voprd.core.metrics import MinuteAggregate

METRIC_NAMES = ("IterationsCompleted", "FailuresDetected", "EventsSimulated", "SeedDuration")


def metric_data(
    aggregate: MinuteAggregate, *, instance: str, instance_dimension: bool
) -> list[dict[str, Any]]:
    timestamp = _dt.datetime.fromtimestamp(aggregate.minute_start_unix, _dt.UTC)
    base: list[dict[str, Any]] = [
        {"MetricName": "IterationsCompleted", "Value": float(aggregate.iterations_completed),
         "Unit": "Count", "Timestamp": timestamp},
        {"MetricName": "FailuresDetected", "Value": float(aggregate.failures_detected),
         "Unit": "Count", "Timestamp": timestamp},
        {"MetricName": "EventsSimulated", "Value": float(aggregate.events_simulated),
         "Unit": "Count", "Timestamp": timestamp},
    ]
    durations = aggregate.seed_duration_s
    if durations.sample_count > 0:
        base.append({
            "MetricName": "SeedDuration", "Unit": "Seconds", "Timestamp": timestamp,
            "StatisticValues": {
                "SampleCount": float(durations.sample_count), "Sum": durations.sum,
                "Minimum": durations.minimum, "Maximum": durations.maximum,
            },
        })
    if not instance_dimension:
        return base
    dimension = [{"Name": "InstanceId", "Value": instance}]
    return base + [{**datum, "Dimensions": dimension} for datum in base]
