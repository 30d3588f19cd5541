"""The daemon's disk formats: checkpoint, progress-journal record, failure-archive record.

Each format is one msgspec Struct with its one reader and one writer right next to it. Readers
validate at the edge (a record that decodes is well-typed) and check the invariants the type system
cannot express, so nothing downstream re-checks.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from voprd.core.metrics import MINUTE_S, MinuteAggregate
from voprd.events import FailureKind

CHECKPOINT_SCHEMA_VERSION = 1
FAILED_SEEDS_KEPT_MAX = 100


class RunFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that defines a run's seed space: two runs with equal fingerprints are one run."""

    first_seed: int
    target: str
    exec_cmd: str | None
    faults: tuple[str, ...]
    max_events: int
    bugs: tuple[str, ...]
    check_determinism: bool
    voprd_version: str
    # Static partitioning (`--seed-stride K`): the run is first_seed, first_seed+K, ...
    seed_stride: int = 1
    # The exec target's protocol and --exec-env names (defaults: what runs before them had).
    exec_protocol: str = "json-lines"
    exec_env: tuple[str, ...] = ()

    def differences(self, other: RunFingerprint) -> list[str]:
        """Human-readable `field: stored -> current` lines; empty when equal."""
        lines: list[str] = []
        for field in self.__struct_fields__:
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                lines.append(f"{field}: {mine!r} -> {theirs!r}")
        return lines


class AlertState(msgspec.Struct, kw_only=True):
    """Per-fingerprint alert bookkeeping (see voprd.core.failures)."""

    fingerprint: str
    first_seed: int
    invariant: str
    count: int
    last_alert_s: float
    suppressed_seeds: list[int] = msgspec.field(default_factory=list)
    suppressed_count: int = 0


class Checkpoint(msgspec.Struct, kw_only=True):
    """A run's exact progress.

    last_seed: highest seed completed so far (-1: none yet). total_iterations: seeds completed in
    this run, each counted once. total_failures: failed seeds in this run (cumulative across
    restarts). failed_seeds: the most recent FAILED_SEEDS_KEPT_MAX failed seeds, oldest first (the
    archive holds all). last_update: RFC 3339 time of this checkpoint. watermark: every seed in
    [first_seed, watermark) on the run's sequence (first_seed + k * seed_stride) is done.
    done_above: done seeds >= watermark, ascending.
    end_seed: exclusive bound of a `-n` run, None for a run without end.
    """

    schema_version: int = CHECKPOINT_SCHEMA_VERSION
    run_id: str  # random id minted when the run starts (or restarts with --reset)
    fingerprint: RunFingerprint
    end_seed: int | None
    watermark: int
    done_above: list[int]
    last_seed: int
    total_iterations: int
    total_failures: int
    failed_seeds: list[int]
    last_update: str
    alerts: list[AlertState] = msgspec.field(default_factory=list)
    # Metric aggregates of counted seeds not yet handed to the metrics sink, and how many batches
    # this run has handed over (voprd.core.metrics: the next batch's number).
    metrics: list[MinuteAggregate] = msgspec.field(default_factory=list)
    metrics_batches: int = 0


class CheckpointInvalid(ValueError):
    """The checkpoint bytes do not decode or violate an invariant."""


_checkpoint_decoder = msgspec.json.Decoder(Checkpoint)
_encoder = msgspec.json.Encoder()


def checkpoint_problems(checkpoint: Checkpoint) -> list[str]:
    """Invariant violations of a checkpoint; empty when valid."""
    problems: list[str] = []
    if checkpoint.schema_version != CHECKPOINT_SCHEMA_VERSION:
        problems.append(f"schema_version {checkpoint.schema_version} is not "
                        f"{CHECKPOINT_SCHEMA_VERSION}")
    if checkpoint.watermark < checkpoint.fingerprint.first_seed:
        problems.append("watermark below first_seed")
    if any(b <= a for a, b in zip(checkpoint.done_above, checkpoint.done_above[1:], strict=False)):
        problems.append("done_above not strictly ascending")
    if checkpoint.done_above and checkpoint.done_above[0] <= checkpoint.watermark:
        problems.append("done_above holds a seed at or below the watermark")
    first, stride = checkpoint.fingerprint.first_seed, checkpoint.fingerprint.seed_stride
    if stride < 1 or (checkpoint.watermark - first) % stride or any(
            (seed - first) % stride for seed in checkpoint.done_above):
        problems.append(f"a seed off the run's sequence (stride {stride})")
    done_count = (checkpoint.watermark - first) // max(stride, 1) + len(checkpoint.done_above)
    if checkpoint.total_iterations != done_count:
        problems.append(
            f"total_iterations {checkpoint.total_iterations} != done seeds {done_count}"
        )
    if not 0 <= checkpoint.total_failures <= checkpoint.total_iterations:
        problems.append("total_failures out of range")
    if len(checkpoint.failed_seeds) > FAILED_SEEDS_KEPT_MAX:
        problems.append("failed_seeds longer than its bound")
    minutes = [aggregate.minute_start_unix for aggregate in checkpoint.metrics]
    if len(set(minutes)) != len(minutes) or any(m < 0 or m % MINUTE_S for m in minutes):
        problems.append("metrics minutes repeated or not minute starts")
    if any(not 0 <= a.failures_detected <= a.iterations_completed or a.events_simulated < 0
           for a in checkpoint.metrics):
        problems.append("metrics counts out of range")
    if checkpoint.metrics_batches < 0:
        problems.append("metrics_batches negative")
    return problems


def read_checkpoint(data: bytes) -> Checkpoint:
    """Decode and validate; raises CheckpointInvalid naming the problem."""
    try:
        checkpoint = _checkpoint_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointInvalid(str(exc)) from exc
    problems = checkpoint_problems(checkpoint)
    if problems:
        raise CheckpointInvalid("; ".join(problems))
    return checkpoint


def write_checkpoint(checkpoint: Checkpoint) -> bytes:
    problems = checkpoint_problems(checkpoint)
    assert not problems, problems
    return _encoder.encode(checkpoint) + b"\n"


JOURNAL_FORMAT = 2


class JournalRecord(msgspec.Struct, kw_only=True, array_like=True):
    """One completed seed in the progress journal (array-encoded to stay small). It carries what
    the metrics count (its minute, events, duration), so metrics are as durable as progress."""

    seed: int
    failed: bool
    fingerprint: str | None = None
    invariant: str | None = None
    minute_unix: int = 0  # start of the wall-clock minute its result arrived in
    events: int = 0
    duration_s: float = 0.0


class JournalHeader(msgspec.Struct, kw_only=True, tag="header"):
    """First line of a journal: which run its records belong to, and the line format (1: bare
    records, voprd before checksums; 2: each record line carries its checksum)."""

    run_id: str
    fingerprint: RunFingerprint
    format: int = 1


class JournalContents(msgspec.Struct, kw_only=True):
    """What a journal proves: its header and the records up to the first line that is torn,
    undecodable or fails its checksum. `untrusted` counts the complete lines after that point
    (ignored, like a torn tail: their seeds run again) and `problem` says what stopped the read;
    a torn last line alone (a crash mid-write) is no problem."""

    header: JournalHeader | None
    records: list[JournalRecord]
    untrusted: int = 0
    problem: str | None = None


_journal_record_decoder = msgspec.json.Decoder(JournalRecord)
_journal_header_decoder = msgspec.json.Decoder(JournalHeader)
CHECKSUM_HEX_LEN = 16


def journal_checksum(run_id: str, body: bytes) -> str:
    """blake2b-64 of a record line's JSON, keyed by the run id: an edited line, or a line copied
    from another run's journal, does not match."""
    key = run_id.encode()[:64]
    return hashlib.blake2b(body, key=key, digest_size=CHECKSUM_HEX_LEN // 2).hexdigest()


def write_journal_header(header: JournalHeader) -> bytes:
    assert header.format == JOURNAL_FORMAT
    return _encoder.encode(header) + b"\n"


def write_journal_record(record: JournalRecord, run_id: str) -> bytes:
    """`<checksum> <record JSON>` and a newline."""
    body = _encoder.encode(record)
    return journal_checksum(run_id, body).encode() + b" " + body + b"\n"


def read_journal(data: bytes) -> JournalContents:
    """Header and proven records of a journal (see JournalContents). A journal of format 1 has no
    checksums: none of its records is proven."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" after a final newline, else a torn line
    if not complete or not complete[0]:
        return JournalContents(header=None, records=[])
    try:
        header = _journal_header_decoder.decode(complete[0])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return JournalContents(header=None, records=[], untrusted=len(complete) - 1,
                               problem="header line undecodable")
    body_lines = [line for line in complete[1:] if line]
    if header.format != JOURNAL_FORMAT:
        return JournalContents(
            header=header, records=[], untrusted=len(body_lines),
            problem=f"journal format {header.format} (this voprd writes {JOURNAL_FORMAT}) has no "
                    "checksums",
        )
    records: list[JournalRecord] = []
    for index, line in enumerate(body_lines):
        check, _, body = line.partition(b" ")
        if check.decode(errors="replace") != journal_checksum(header.run_id, body):
            problem = f"record line {index + 1} fails its checksum"
        else:
            try:
                records.append(_journal_record_decoder.decode(body))
                continue
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                problem = f"record line {index + 1} undecodable ({exc})"
        return JournalContents(header=header, records=records,
                               untrusted=len(body_lines) - index, problem=problem)
    return JournalContents(header=header, records=records)


class FailureRecord(msgspec.Struct, kw_only=True):
    """One archived failure: everything needed to understand and replay it."""

    run_id: str
    seed: int
    kind: FailureKind
    invariant: str | None
    message: str
    reproduce: str
    fingerprint: str
    configuration: dict[str, Any]
    voprd_version: str
    git_commit: str | None
    python_version: str
    detected_at: str
    unix_ts: int
    history: list[dict[str, Any]]
    trace_tail: list[str]
    trace_tail_truncated: bool = False
    instance: str = ""


_failure_decoder = msgspec.json.Decoder(FailureRecord)


def read_failure(data: bytes) -> FailureRecord:
    return _failure_decoder.decode(data)


def write_failure(record: FailureRecord) -> bytes:
    assert record.message and record.reproduce, "a failure record needs message and reproduce"
    return _encoder.encode(record) + b"\n"


def failure_name(record: FailureRecord) -> str:
    """The archive object/file name: failures/seed-{seed}-{unix_ts}.json."""
    return f"seed-{record.seed}-{record.unix_ts}.json"


Severity = Literal["debug", "info", "warning", "error"]
