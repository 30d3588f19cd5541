"""Real daemon records (checkpoints, failure records, minute aggregates, alerts) for AWS tests."""

from __future__ import annotations

import datetime as _dt

from voprd.core.metrics import MetricBatch, StatisticSet
from voprd.core.records import Checkpoint, FailureRecord, RunFingerprint
from voprd.options import reproduce_command

FINGERPRINT = RunFingerprint(
    first_seed=0, target="builtin", exec_cmd=None, faults=("network",), max_events=1000,
    bugs=(), check_determinism=False, voprd_version="0.1.0",
)


def checkpoint(done: int, *, failures: int = 0, run_id: str = "run-1",
               last_update: str = "2026-11-27T06:00:00.000Z") -> Checkpoint:
    failed = list(range(done))[:failures]
    return Checkpoint(
        run_id=run_id, fingerprint=FINGERPRINT, end_seed=None, watermark=done, done_above=[],
        last_seed=done - 1, total_iterations=done, total_failures=failures,
        failed_seeds=failed, last_update=last_update,
    )


def failure_record(seed: int, unix_ts: int, *, history_ops: int = 3) -> FailureRecord:
    from voprd.options import RunOptions

    return FailureRecord(
        run_id="run-1", seed=seed, kind="invariant", invariant="linearizability",
        message="Final history is not linearizable",
        reproduce=reproduce_command(seed, RunOptions()),
        fingerprint="invariant:linearizability:abc", configuration={"faults": ["network"]},
        voprd_version="0.1.0", git_commit=None, python_version="3.11", unix_ts=unix_ts,
        detected_at=_dt.datetime.fromtimestamp(unix_ts, _dt.UTC).isoformat(),
        history=[{"op": "put", "key": f"k{i}", "value": i} for i in range(history_ops)],
        trace_tail=["t1", "t2"], instance="i-test",
    )


def aggregate(minute_start_unix: int, iterations: int, failures: int, events: int,
              durations_s: list[float], *, run_id: str = "run-1",
              batch: int | None = None) -> MetricBatch:
    """A published metric batch; by default numbered by its minute (distinct minutes, distinct
    batches)."""
    stats = StatisticSet()
    for value in durations_s:
        stats.add(value)
    return MetricBatch(
        minute_start_unix=minute_start_unix, iterations_completed=iterations,
        failures_detected=failures, events_simulated=events, seed_duration_s=stats,
        run_id=run_id, batch=minute_start_unix // 60 if batch is None else batch,
    )


def alert_text(seed: int, archive: str) -> tuple[str, str]:
    subject = "VOPR: 1 Invariant Violation(s) Detected"
    message = (
        f"VOPR detected 1 invariant violation(s) in batch starting at seed {seed - seed % 1000}.\n"
        "\n"
        f"Seed: {seed}\n"
        "Invariant: linearizability\n"
        "Message: Final history is not linearizable\n"
        f"Reproduce: voprd --once --seed {seed} -v\n"
        "---\n"
        "Instance: i-test\n"
        "Timestamp: 2026-11-27T06:00:00Z\n"
        f"Archive: {archive}\n"
    )
    return subject, message
