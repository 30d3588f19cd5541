"""The JSON-lines wire format: one envelope, one Struct per event type.

Every line voprd prints with `--json` (and every line an external VOPR binary must print for the
`exec` target) is `{"timestamp": RFC 3339, "type": ..., "data": {...}}`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

import msgspec

FailureKind = Literal["invariant", "liveness", "crash", "timeout", "oom", "nondeterminism"]


class SeedResult(msgspec.Struct, kw_only=True):
    """The outcome of running one seed, as a worker returns it."""

    seed: int
    status: Literal["ok", "failed"]
    events: int = 0
    simulated_time_ms: int = 0
    trace_hash: str = ""
    kind: FailureKind | None = None
    invariant: str | None = None
    message: str | None = None
    # Client history (voprd history format records, as builtins) and the tail of the trace, kept
    # for failure archives; empty for passing seeds unless asked for.
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)
    trace_tail: list[str] = msgspec.field(default_factory=list)
    duration_s: float = 0.0
    # Bounds reached during the run (e.g. "max_events"); reported, never silent.
    bounds_reached: list[str] = msgspec.field(default_factory=list)
    # The seed's configuration fingerprint (cluster shape and the fault families it drew on,
    # `voprd.sim.faults.FaultPlan.fingerprint`): what a recurring bound is counted per.
    config: str = ""
    # Protocol paths the run exercised (`System.coverage_paths`), non-zero counts only.
    coverage: dict[str, int] = msgspec.field(default_factory=dict)


class StartData(msgspec.Struct, kw_only=True):
    starting_seed: int
    iterations: int | None
    faults: list[str]
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class IterationData(msgspec.Struct, kw_only=True, omit_defaults=True):
    seed: int
    status: Literal["ok", "failed"]
    events: int
    simulated_time_ms: int
    trace_hash: str
    kind: str | None = None
    invariant: str | None = None
    message: str | None = None
    reproduce: str | None = None
    # Bounds the seed reached (SeedResult.bounds_reached); omitted when none.
    bounds_reached: list[str] = msgspec.field(default_factory=list)
    # A focus seed's fault family (an extra seed, outside the run's progress); omitted otherwise.
    focus: str | None = None


class BatchCompleteData(msgspec.Struct, kw_only=True):
    successes: int
    failures: int
    elapsed_secs: float
    rate: float
    failed_seeds: list[int]


class BackendHealth(msgspec.Struct, kw_only=True):
    """A backend's health for the status dump (local: always healthy unless a write failed)."""

    name: str
    healthy: bool
    detail: str = ""
    outbox_pending: int = 0
    dropped: int = 0


class WorkerStatus(msgspec.Struct, kw_only=True):
    index: int
    pid: int | None
    seed: int | None
    running_s: float
    restarts: int


class FingerprintCount(msgspec.Struct, kw_only=True):
    fingerprint: str
    invariant: str
    count: int
    first_seed: int


class FleetDaemonStatus(msgspec.Struct, kw_only=True):
    """A fleet daemon's part in its run (the status dump's `fleet`)."""

    run: str
    holder: str
    watermark: int  # every batch below is done (as this daemon last listed done/)
    batches_held: list[int]  # leased and running here
    batches_recording: list[int]  # all results in, done record being written
    s3_healthy: bool
    s3_detail: str = ""
    records_quarantined: int = 0


class BoundRecurrence(msgspec.Struct, kw_only=True):
    """A bound that recurs: `seeds` of the `config_seeds` seeds of configuration `config` (since
    the daemon started) reached it (`voprd.core.coverage.BoundTally`)."""

    bound: str
    config: str
    seeds: int
    config_seeds: int
    first_seed: int
    last_seed: int


class FocusArm(msgspec.Struct, kw_only=True):
    """The focus seeds of one fault family: how many ran, and per path how many exercised it."""

    family: str
    seeds: int
    paths: dict[str, int] = msgspec.field(default_factory=dict)


class CoverageStatus(msgspec.Struct, kw_only=True):
    """Protocol-path coverage since the daemon started (`voprd.core.coverage.CoverageTally`):
    per path, the seeds that exercised it; the rarest exercised path; the focus seeds."""

    seeds: int
    paths: dict[str, int]
    rarest: str | None
    focus_seeds: int
    focus_failures: int
    focus_current: str | None
    focus_arms: list[FocusArm] = msgspec.field(default_factory=list)


class StatusData(msgspec.Struct, kw_only=True):
    """The `status` event (SIGUSR1 dump, status.json)."""

    pid: int
    state: str
    uptime_s: float
    first_seed: int
    end_seed: int | None
    watermark: int
    seeds_done: int
    seeds_done_this_start: int
    rate_per_s: float
    total_failures: int
    failures_by_fingerprint: list[FingerprintCount]
    workers: list[WorkerStatus]
    last_checkpoint: str | None
    last_checkpoint_age_s: float | None
    backend: BackendHealth
    pending_alerts: int
    # Seeds (since this start) that reached each bound, by bound name.
    bounds_reached: dict[str, int] = msgspec.field(default_factory=dict)
    # local (no bucket), lone (a bucket, one daemon alone) or fleet (a bucket and a run name).
    mode: str = "local"
    # "degraded" while AWS does not answer (the fleet's S3 calls or the outbox's sends have been
    # failing for a while): the daemon keeps running and retries; health_detail says what fails.
    health: str = "ok"
    health_detail: str = ""
    fleet: FleetDaemonStatus | None = None
    # Bounds that recur for one configuration (since this start), most first.
    bounds_recurring: list[BoundRecurrence] = msgspec.field(default_factory=list)
    # Protocol-path coverage and focus seeds (engine targets that report coverage), since start.
    coverage: CoverageStatus | None = None


EventType = Literal["start", "iteration", "batch_complete", "status"]


class Envelope(msgspec.Struct, kw_only=True):
    timestamp: str
    type: str
    data: dict[str, Any]


def rfc3339_now() -> str:
    """Wall-clock timestamp for the envelope (never used inside the simulator)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_encoder = msgspec.json.Encoder()


def encode_event(event_type: EventType, data: msgspec.Struct | dict[str, Any]) -> bytes:
    """One JSON line (without newline) in the envelope."""
    payload = data if isinstance(data, dict) else msgspec.to_builtins(data)
    return _encoder.encode(Envelope(timestamp=rfc3339_now(), type=event_type, data=payload))


_envelope_decoder = msgspec.json.Decoder(Envelope)


def decode_event(line: bytes | str) -> Envelope:
    """Parse one JSON line; raises msgspec.DecodeError / ValidationError on bad input."""
    return _envelope_decoder.decode(line)


def iteration_from_data(data: dict[str, Any]) -> IterationData:
    return msgspec.convert(data, IterationData)
