"""The daemon: wires the pure cores (progress, failures, metrics) to the supervisor and a backend.

Output (see docs/daemon.md): with `--json`, stdout carries only the JSON-lines envelope
events (start, iteration, batch_complete, status) and the structlog log lines go to stderr; without
`--json`, stdout carries the structlog log lines (JSON, or readable when stdout is a terminal).

Exit codes: 0 run finished without failures, drained on SIGTERM/SIGINT/SIGHUP, or already finished;
1 a bounded run finished and at least one of its seeds failed (as the VOPR binary);
2 refused (fingerprint mismatch, another daemon on the state dir, bad target/backend, an unsafe
state directory) or stopped by its environment (the state directory full, read-only or deleted);
70 a bug in voprd (a traceback; voprd.exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any, TextIO

import msgspec
import structlog

from voprd import __version__
from voprd.config import ConfigError, Settings, imds_endpoint
from voprd.core.coverage import BoundTally, CoverageTally, FocusSource
from voprd.core.failures import (
    AlertPolicy,
    FailureInfo,
    alert_for,
    digest_for,
    fingerprint,
    report_location,
)
from voprd.core.metrics import MetricBatch, MetricsAggregator, minute_of
from voprd.core.progress import RunProgress, resume_decision
from voprd.core.records import (
    JOURNAL_FORMAT,
    FailureRecord,
    JournalContents,
    JournalHeader,
    JournalRecord,
    RunFingerprint,
    Severity,
)
from voprd.events import (
    BatchCompleteData,
    EventType,
    FingerprintCount,
    FleetDaemonStatus,
    IterationData,
    SeedResult,
    StartData,
    StatusData,
    encode_event,
    rfc3339_now,
)
from voprd.fleet.core import BatchSpace, FleetError, Timing, default_batch_size
from voprd.fleet.runner import (
    FleetCoordinator,
    FleetDispatchSource,
    RecordedBatch,
    default_holder_id,
)
from voprd.fleet.s3 import FleetS3Error, S3Store, create_client
from voprd.options import RunOptions, reproduce_command
from voprd.service import signals, spot
from voprd.service.live import LiveProgress, Snapshot, terminal_console, terminal_renderer
from voprd.service.notify import Notifier
from voprd.service.protocol import WorkerConfig
from voprd.service.report_worker import ReportJob
from voprd.service.supervisor import SeedSource, Supervisor, WorkerStartupError
from voprd.sim.faults import SWARM_FAMILIES
from voprd.sinks.base import Backend
from voprd.sinks.factory import make_backend, resolve_state_dir
from voprd.sinks.local import (
    FILE_MODE,
    PID_FILE,
    STATE_NAMES,
    STATUS_FILE,
    ProgressJournal,
    StateDirError,
    checkpoint_paths,
    keep_aside,
    prepare_state_dir,
    refuse_symlinks,
    write_atomically,
)
from voprd.targets.exec_command import ExecCommandError, check_command
from voprd.targets.loader import TargetNotFound, engine_system, load_target
from voprd.text import plural

GROUP_COMMIT_INTERVAL_S = 0.1
CHECKPOINT_INTERVAL_S = 2.0
HOUSEKEEPING_INTERVAL_S = 0.5
NOTIFY_STATUS_INTERVAL_S = 5.0
PROGRESS_LOG_INTERVAL_S = 60.0
TRACE_TAIL_BYTES_MAX = 64 * 1024
HISTORY_OPS_MAX = 10_000
# A failure's HTML report is rendered in its own process (it reruns the seed): bounded in time,
# and in size (the report is at most 5 MB by construction; anything larger is not archived).
REPORT_TIMEOUT_S = 120.0
REPORT_BYTES_MAX = 8 * 1024 * 1024
REPORT_STDERR_SHOWN_MAX = 2_000
DRAIN_RESERVE_S_MAX = 2.0
BACKEND_CLOSE_AFTER_ERROR_S = 15.0
# A fleet run without --batch-size: the first daemon sizes batches (about a minute of its
# workers' time) from this estimate of a seed's cost. The builtin VSR target takes ~30 ms of CPU a
# seed (BENCHMARKS.md, daemon section); other targets are unknown, so a cautious 0.5 s. Batches far
# shorter than a minute would multiply the S3 lease requests (and their cost) per seed.
FLEET_SEED_S_ESTIMATE_BUILTIN = 0.03
FLEET_SEED_S_ESTIMATE_OTHER = 0.5
DISPATCH_BATCH_BUILTIN, DISPATCH_BATCH_EXEC = 4, 16
# Joining a fleet run: S3 must answer within this (it is retried meanwhile), else refused.
FLEET_START_TIMEOUT_S = 60.0
# A fleet alert is held while its fingerprint is claimed in the bucket; unsettled after this
# long (S3 away) it is sent anyway (it may repeat another daemon's; it is never lost).
ALERT_CLAIM_WAIT_S = 30.0
ALERT_SETTLE_ON_EXIT_S = 5.0
# The daemon reports itself degraded once its S3 coordination or its AWS outbox has been
# failing for this long (a single retried call is not worth a log line).
DEGRADED_AFTER_S = 2.0
EXIT_OK, EXIT_FAILURES, EXIT_REFUSED = 0, 1, 2


class Refused(Exception):
    """The daemon must not start; the message says why and what to do."""


def run_fingerprint(settings: Settings) -> RunFingerprint:
    return RunFingerprint(
        first_seed=settings.seed, target=settings.target, exec_cmd=settings.exec_cmd,
        faults=settings.faults, max_events=settings.max_events, bugs=settings.bugs,
        check_determinism=settings.check_determinism, voprd_version=__version__,
        seed_stride=settings.seed_stride, exec_protocol=settings.exec_protocol,
        exec_env=settings.exec_env,
    )


def bound_trace_tail(lines: list[str], bytes_max: int = TRACE_TAIL_BYTES_MAX) -> tuple[list[str],
                                                                                        bool]:
    """The newest lines of a trace whose total size stays within bytes_max."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line.encode()) + 1
        if size > bytes_max:
            return kept[::-1], True
        kept.append(line)
    return kept[::-1], False


def with_metrics(record: JournalRecord, result: SeedResult, now_s: float) -> JournalRecord:
    """The record with what the metrics count of its seed (a target's odd numbers clamped)."""
    duration_s = result.duration_s if 0 <= result.duration_s < float("inf") else 0.0
    return msgspec.structs.replace(record, minute_unix=minute_of(now_s),
                                   events=max(result.events, 0), duration_s=duration_s)


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent.parent.parent
    try:
        proc = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def configure_logging(stream: TextIO) -> None:
    renderer: Any = terminal_renderer if stream.isatty() else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the pid file for the daemon's lifetime; write our pid into it."""
    fd = os.open(state_dir / PID_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        other = handle.read().strip()
        handle.close()
        raise Refused(f"another voprd (pid {other or '?'}) is running on {state_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Daemon:
    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.options: RunOptions = settings.run_options()
        self.state_dir = resolve_state_dir(settings, env)
        self.env = env
        self.instance = env.get("VOPRD_INSTANCE") or socket.gethostname()
        self.notifier = Notifier(env)
        self.log = structlog.get_logger("voprd")
        self.events_out = sys.stdout.buffer if settings.json else None
        self.started_s = time.monotonic()
        self.metrics = MetricsAggregator()  # replaced in start() by the run's
        self._uncommitted: list[JournalRecord] = []  # counted seeds whose journal line is pending
        self.done_this_start = 0
        self.failures_this_start: list[int] = []
        self.bounds_reached: dict[str, int] = {}  # seeds since start that reached each bound
        self.bound_tally = BoundTally()  # bounds per configuration: those that recur
        self.coverage: CoverageTally | None = None  # engine targets: protocol-path coverage
        self.focus: FocusSource | None = None  # unbounded local runs: coverage-steered seeds
        self.last_checkpoint: str | None = None
        self.last_checkpoint_s: float | None = None
        self.state = "starting"
        self.git_commit = git_commit()
        self._stop_loops = asyncio.Event()
        self._drain = asyncio.Event()
        self._status_requested = asyncio.Event()
        self._checkpoint_dirty = False
        self._checkpoint_now = False  # a spot notice: checkpoint (and upload) at the next tick
        # Set in start().
        self.backend: Backend
        self.progress: RunProgress
        self.journal: ProgressJournal
        self.policy: AlertPolicy
        self.supervisor: Supervisor
        self._lock: IO[str] | None = None
        # Fleet mode (a bucket and a run name): seeds come from S3 leases (voprd.fleet); alerts
        # are held while their fingerprint is claimed fleet-wide (_settle_alert).
        self.fleet: FleetDispatchSource | None = None
        self._alert_claims: set[asyncio.Task[None]] = set()
        self._health_degraded: str | None = None  # why, while the daemon reports degraded
        self._backend_unhealthy_since: float | None = None
        # The live progress line on a terminal (voprd.service.live), set by daemon_main.
        self.live: LiveProgress | None = None

    # --- output -----------------------------------------------------------------------------

    def event(self, event_type: EventType, data: msgspec.Struct) -> None:
        if self.events_out is not None:
            try:
                self.events_out.write(encode_event(event_type, data) + b"\n")
            except BrokenPipeError:  # the reader went away: keep running, keep checkpointing
                self.events_out = None
                self.emit("stdout_closed", "warning", dropped_event=event_type)

    def flush_events(self) -> None:
        if self.events_out is not None:
            try:
                self.events_out.flush()
            except BrokenPipeError:
                self.events_out = None
                self.emit("stdout_closed", "warning")

    def emit(self, event: str, severity: Severity, **fields: Any) -> None:
        """A log event: `event` is a stable snake_case name; a readable sentence goes in `msg`.
        Before the backend exists (early start-up), straight to the local log."""
        backend: Backend | None = getattr(self, "backend", None)
        if backend is None:
            getattr(self.log, severity)(event, **fields)
        else:
            backend.events.emit(event, severity, fields)

    # --- start-up ---------------------------------------------------------------------------

    async def start(self) -> bool:
        """Load or create the run. False when the run is already finished."""
        checkpoint_path = (Path(self.settings.checkpoint_file) if self.settings.checkpoint_file
                           else self.state_dir / "checkpoint.json")
        try:
            prepare_state_dir(self.state_dir)
            if checkpoint_path.parent != self.state_dir:
                prepare_state_dir(checkpoint_path.parent)
            refuse_symlinks([*(self.state_dir / name for name in STATE_NAMES),
                             *checkpoint_paths(checkpoint_path)])
            if checkpoint_path.is_dir():
                raise StateDirError(f"--checkpoint-file {checkpoint_path} is a directory")
            self._lock = lock_state_dir(self.state_dir)
        except StateDirError as exc:
            raise Refused(str(exc)) from None
        try:
            if self.settings.target == "exec":
                check_command(self.options.exec_cmd, self.options.exec_protocol,
                              self.options.exec_env)
            load_target(self.settings.target, self.settings.exec_cmd)
        except ExecCommandError as exc:
            raise Refused(str(exc)) from exc
        except TargetNotFound as exc:
            raise Refused(f"--target: {exc}") from exc
        self.backend = make_backend(self.settings, self.state_dir, self.instance)
        await self.backend.start()
        # A backend that knows better (the EC2 instance id) names this machine in alerts.
        self.instance = getattr(self.backend, "instance_id", None) or self.instance
        current = run_fingerprint(self.settings)
        # A fleet daemon's progress core is its own tally (what it ran, floored at the fleet's
        # watermark); the fleet's done/ records decide what runs, so it has no local end.
        end_seed = (None if self.settings.iterations is None or self.settings.fleet_mode
                    else self.settings.seed + self.settings.iterations * self.settings.seed_stride)
        loaded = await self.backend.checkpoints.load()
        for problem in loaded.problems:
            self.emit("checkpoint_invalid", "error", problem=problem)
        stored = loaded.checkpoint
        journal_path = checkpoint_paths(checkpoint_path)[2]
        journal = ProgressJournal.read(journal_path)
        header = journal.header
        decision, differences = resume_decision(
            stored.fingerprint if stored else (header.fingerprint if header else None),
            current, self.settings.reset,
        )
        if decision == "refuse":
            raise Refused(
                f"the stored run in {loaded.source or journal_path} was started with a different "
                f"configuration ({'; '.join(differences)}); refusing to continue it. Start it over "
                "with --reset, or use another --state-dir/--checkpoint-file."
            )
        if decision == "reset":
            if stored is not None:  # what the old run counted but had not published yet
                old = MetricsAggregator(stored.run_id, stored.metrics, stored.metrics_batches)
                await self.backend.metrics.publish(old.take_all())
            await self.backend.checkpoints.discard()
            if os.path.lexists(journal_path):
                keep_aside(journal_path, "reset", int(time.time()))
            header, journal = None, msgspec.structs.replace(journal, header=None, records=[])
            self.emit("run_reset", "warning", checkpoint=str(checkpoint_path))
        if stored is not None and decision == "resume":
            self.progress = RunProgress.from_checkpoint(stored, end_seed)
            self.metrics = MetricsAggregator(stored.run_id, stored.metrics,
                                             stored.metrics_batches)
        else:
            resumable = header is not None and decision == "resume"
            run_id = header.run_id if header is not None and resumable else uuid.uuid4().hex
            self.progress = RunProgress(run_id=run_id, fingerprint=current, end_seed=end_seed)
            self.metrics = MetricsAggregator(run_id)
        self.policy = AlertPolicy(stored.alerts if stored and decision == "resume" else ())
        replayed = 0
        if header is not None and header.run_id == self.progress.run_id:
            replayed = self._replay_journal(journal, journal_path)
        self.journal = ProgressJournal(journal_path)
        if decision == "resume":
            self.emit("run_resumed", "info", source=loaded.source,
                      watermark=self.progress.watermark, done=self.progress.total_iterations,
                      journal_records_replayed=replayed)
        # What a previous process counted is published now, whether or not its minute is over
        # (voprd.core.metrics: numbered as that process would have numbered it).
        await self.backend.metrics.publish(self.metrics.take_all())
        # Compact what we loaded into a fresh checkpoint + empty journal before running anything.
        await self.write_checkpoint(final=False)
        return self.settings.fleet_mode or not self.progress.finished

    def _replay_journal(self, journal: JournalContents, path: Path) -> int:
        """Apply the journal's proven records up to the first one that cannot belong to the run
        (a lie or a bug: it and everything after it are ignored, their seeds run again). Returns
        how many records counted. A journal with anything ignored is kept aside as evidence."""
        problem, untrusted = journal.problem, journal.untrusted
        replayed = 0
        for index, record in enumerate(journal.records):
            record_problem = self.progress.record_problem(record)
            if record_problem is not None:
                problem = record_problem
                untrusted += len(journal.records) - index
                break
            replayed += self._replay(record)
        if problem is not None:
            aside = keep_aside(path, "untrusted", int(time.time()))
            self.emit("journal_untrusted", "warning",
                      msg=f"progress journal: {problem}; {plural(untrusted, 'record')} from there "
                          f"on ignored (their seeds run again); kept aside as {aside}",
                      problem=problem, records_ignored=untrusted, kept_aside=str(aside))
        return replayed

    def _replay(self, record: JournalRecord) -> bool:
        """Apply a journalled result. Its alert went out right after it was journalled, so its
        fingerprint is known from now on (a repeat is counted, not alerted again)."""
        if not self.progress.record(record):
            return False
        self.metrics.add(record.minute_unix, failed=record.failed, events=record.events,
                         duration_s=record.duration_s)
        if record.failed and record.fingerprint:
            self.policy.observe(record.fingerprint, FailureInfo(
                seed=record.seed, batch_start=record.seed, kind="invariant",
                invariant=record.invariant, message="", reproduce="", archive="",
            ), time.time())
        return True

    # --- per-seed handling ------------------------------------------------------------------

    async def on_result(self, result: SeedResult, batch_start: int) -> None:
        seed = result.seed
        # A re-run of a done seed cannot happen locally; in a fleet a batch this daemon half ran
        # before a restart may come back to it, and the fleet still needs every result.
        if self.progress.is_done(seed) and self.fleet is None:
            return
        failed = result.status == "failed"
        record: JournalRecord
        if failed:
            reproduce = reproduce_command(seed, self.options)
            kind = result.kind or "invariant"
            message = result.message or "(no message)"
            fp = fingerprint(kind, result.invariant, message, result.trace_tail)
            tail, truncated = bound_trace_tail(result.trace_tail)
            unix_ts = int(time.time())
            failure = FailureRecord(
                run_id=self.progress.run_id, seed=seed, kind=kind, invariant=result.invariant,
                message=message, reproduce=reproduce, fingerprint=fp,
                configuration=msgspec.to_builtins(self.settings), voprd_version=__version__,
                git_commit=self.git_commit, python_version=platform.python_version(),
                detected_at=rfc3339_now(), unix_ts=unix_ts,
                history=result.history[-HISTORY_OPS_MAX:], trace_tail=tail,
                trace_tail_truncated=truncated, instance=self.instance,
            )
            # Archived and alerted now, as the result arrives, before anything else can fail
            # (in a fleet: before anything about the batch's lease or done record). The report
            # is rendered after the alert (it reruns the seed, which may take a while); the
            # journal counts the seed only once the record and the report are archived, so a
            # crash in between runs the seed again (the archive and the alert's once key make
            # that idempotent).
            location = await self.backend.archive.put(failure)
            will_render = self.will_render_report()
            info = FailureInfo(
                seed=seed, batch_start=batch_start, kind=kind, invariant=result.invariant,
                message=message, reproduce=reproduce, archive=location,
                report=report_location(location) if will_render else None,
                report_pending=will_render)
            await self.announce_failure(failure, info)
            if will_render:
                await self.store_report(seed, location, await self.render_report(seed))
            record = JournalRecord(seed=seed, failed=True, fingerprint=fp,
                                   invariant=result.invariant or kind)
        else:
            record = JournalRecord(seed=seed, failed=False)
        record = with_metrics(record, result, time.time())
        # A focus seed is extra: alerted and archived, never in the run's exact progress (nor in
        # the journal: its metrics are counted at once, not exactly across a crash).
        focus = self.focus.take(seed) if self.focus is not None else None
        if focus is None:
            self.journal.append(record)
            if not self.progress.record(record):
                if self.fleet is not None:  # counted before; this batch's run still needs it
                    await self.fleet.seed_done(seed, failed)
                return
            self._checkpoint_dirty = True
            self._uncommitted.append(record)  # counted in the metrics once durable
        else:
            self.metrics.add(record.minute_unix, failed=record.failed, events=record.events,
                             duration_s=record.duration_s)
        self.done_this_start += 1
        self._observe(result, focus)
        iteration = IterationData(
            seed=seed, status=result.status, events=result.events,
            simulated_time_ms=result.simulated_time_ms, trace_hash=result.trace_hash,
            kind=result.kind or ("invariant" if failed else None), invariant=result.invariant,
            message=result.message, reproduce=reproduce if failed else None,
            bounds_reached=list(result.bounds_reached), focus=focus,
        )
        self.event("iteration", iteration)
        if self.settings.log_iterations:  # per-seed lines to the event log (CloudWatch) too
            self.emit("iteration", "info", **msgspec.to_builtins(iteration))
        if failed:
            self.failures_this_start.append(seed)
        if self.fleet is not None:
            await self.fleet.seed_done(seed, failed)

    def _on_batch_recorded(self, recorded: RecordedBatch) -> None:
        """Our done record is the batch's: this daemon's tally follows the fleet's watermark."""
        assert self.fleet is not None
        space = self.fleet.fleet.space
        floor_seed = space.seed_start + self.fleet_watermark() * space.batch_size
        if space.seed_count is not None:  # the last batch of a bounded run is cut short
            floor_seed = min(floor_seed, space.seed_start + space.seed_count)
        self.progress.advance_floor(floor_seed)

    def fleet_watermark(self) -> int:
        assert self.fleet is not None
        return self.fleet.fleet.state.watermark or 0

    async def announce_failure(self, failure: FailureRecord, info: FailureInfo) -> None:
        """Log an archived failure and alert on a new fingerprint. Alone, the policy decides;
        in a fleet the alert is held in the outbox while the fingerprint is claimed in the
        bucket (see _settle_alert), so only the fleet's first daemon to see it alerts."""
        seed, kind, message, reproduce = failure.seed, failure.kind, failure.message, info.reproduce
        fp = failure.fingerprint
        self.emit("seed_failed", "warning",
                  msg=f"seed {seed} failed: {info.invariant_or_kind}: {message} "
                      f"(reproduce: {reproduce})",
                  seed=seed, kind=kind, invariant=failure.invariant, fingerprint=fp,
                  archive=info.archive, report=info.report, reproduce=reproduce)
        if not self.policy.observe(fp, info, time.time()):
            return
        # A seed re-run after a crash between this alert and the journal's fsync fails again
        # with a new timestamp: the key lets the AWS outbox send the first alert only. The run
        # id is in it: a run started afresh (--reset: a new id, no known fingerprints) alerts
        # its failures again instead of having them taken for sent.
        once_key = f"failure:{self.progress.run_id}:{fp}:{seed}"
        if self.fleet is None:
            alert = alert_for([info], self.instance, rfc3339_now(), self.policy.take_repeats())
            await self.backend.alerts.send(alert.subject, alert.message, once_key=once_key)
            return
        # Repeats stay for the digest: a held alert may yet be dropped.
        alert = alert_for([info], self.instance, rfc3339_now())
        ticket = await self.backend.alerts.hold(alert.subject, alert.message, once_key=once_key)
        settle = asyncio.create_task(self._settle_alert(fp, info, ticket),
                                     name=f"alert-claim-{fp}")
        self._alert_claims.add(settle)
        settle.add_done_callback(self._alert_claims.discard)

    async def _settle_alert(self, fp: str, info: FailureInfo, ticket: int | None) -> None:
        """Claim the fingerprint fleet-wide (alerts/{run}/{fp}.json, create-only): release the
        held alert if the claim is ours, drop it if another daemon's (the failure then counts
        into our digest). Undecided within ALERT_CLAIM_WAIT_S (S3 away), or cancelled at exit:
        released, as after a crash (an alert may repeat, none is lost)."""
        assert self.fleet is not None
        won: bool | None = None
        started_s = time.monotonic()
        try:
            async with asyncio.timeout(ALERT_CLAIM_WAIT_S):
                won = await self.fleet.fleet.claim_alert(fp, info.seed)
            self.log.debug("alert_claim_settled", fingerprint=fp, won=won,
                           claim_ms=round((time.monotonic() - started_s) * 1000, 1))
        except (TimeoutError, FleetS3Error) as exc:
            self.emit("alert_claim_undecided", "warning", fingerprint=fp, seed=info.seed,
                      error=str(exc) or f"no answer within {ALERT_CLAIM_WAIT_S:g} s",
                      msg="the fleet's alert claim could not be settled: alerting anyway")
        finally:
            if won is False:
                await self.backend.alerts.drop(ticket)
                self.policy.demote(fp, info)
                self.emit("alert_claimed_elsewhere", "info", fingerprint=fp, seed=info.seed,
                          msg="another daemon of the fleet alerted this fingerprint first; "
                              "counted into the digest")
            else:
                await self.backend.alerts.release(ticket)

    async def settle_alerts(self) -> None:
        """At exit: give pending alert claims ALERT_SETTLE_ON_EXIT_S, then release their alerts."""
        if not self._alert_claims:
            return
        _, late = await asyncio.wait(set(self._alert_claims), timeout=ALERT_SETTLE_ON_EXIT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def will_render_report(self) -> bool:
        """Only engine targets (the builtin and system plugins) have a run to draw; none while
        draining."""
        return engine_system(self.options.target) is not None and not self._drain.is_set()

    async def render_report(self, seed: int) -> bytes | None:
        """Render the seed's HTML report in a separate process. Never raises: a failed report
        costs the report (a warning), never the failure record or its alert. Only engine targets
        (the builtin and system plugins) have a run to draw."""
        if engine_system(self.options.target) is None:
            return None
        if self._drain.is_set():
            self.emit("report_skipped", "warning", seed=seed, reason="draining")
            return None
        try:
            return await self._render_report(seed)
        except Exception as exc:  # any report error must cost only the report
            self.emit("report_failed", "warning", msg=f"report for seed {seed} failed: {exc!r}",
                      seed=seed, error=repr(exc))
            return None

    async def store_report(self, seed: int, archived_at: str, html: bytes | None) -> str | None:
        """Archive a rendered report beside the record `archived_at`; never raises."""
        if html is None:
            return None
        try:
            return await self.backend.archive.put_report(archived_at, html)
        except Exception as exc:  # any report error must cost only the report
            self.emit("report_failed", "warning", msg=f"report for seed {seed} failed: {exc!r}",
                      seed=seed, error=repr(exc))
            return None

    async def _render_report(self, seed: int) -> bytes | None:
        job = msgspec.json.encode(ReportJob(seed=seed, options=self.options)).decode()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voprd.service.report_worker", job,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        output = asyncio.ensure_future(proc.communicate())
        drain = asyncio.ensure_future(self._drain.wait())
        try:
            await asyncio.wait([output, drain], timeout=REPORT_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the daemon is going down: no orphan renderers
            proc.kill()
            raise
        finally:
            drain.cancel()
        if not output.done():
            proc.kill()
            await output
            reason = "draining" if self._drain.is_set() else f"timed out ({REPORT_TIMEOUT_S:g}s)"
            self.emit("report_skipped", "warning", seed=seed, reason=reason)
            return None
        stdout, stderr = output.result()
        if proc.returncode != 0:
            raise RuntimeError(f"report worker exited {proc.returncode}: "
                               f"{stderr.decode(errors='replace')[-REPORT_STDERR_SHOWN_MAX:]}")
        if not stdout or len(stdout) > REPORT_BYTES_MAX:
            raise RuntimeError(f"report of {len(stdout)} bytes (limit {REPORT_BYTES_MAX})")
        return stdout

    # --- persistence ------------------------------------------------------------------------

    async def commit_journal(self) -> None:
        """Group commit; the committed seeds then count in the metrics (never before: a seed
        the metrics counted is a seed a restart will not run again)."""
        data, counted = self.journal.take_pending(), self._uncommitted
        self._uncommitted = []
        if data:
            await asyncio.to_thread(self.journal.write_durably, data)
        self._count_metrics(counted)

    def _count_metrics(self, records: list[JournalRecord]) -> None:
        for record in records:
            self.metrics.add(record.minute_unix, failed=record.failed, events=record.events,
                             duration_s=record.duration_s)

    async def write_checkpoint(self, *, final: bool) -> None:
        # Seeds not yet journalled durably are made durable by this checkpoint: their metrics
        # go into it with them (their journal lines follow in the new journal, as repeats).
        self._count_metrics(self._uncommitted)
        self._uncommitted = []
        checkpoint = msgspec.structs.replace(
            self.progress.checkpoint(rfc3339_now(), self.policy.states()),
            metrics=self.metrics.pending(), metrics_batches=self.metrics.batches_published,
        )
        await self.backend.checkpoints.save(checkpoint, final=final)
        header = JournalHeader(run_id=self.progress.run_id, fingerprint=self.progress.fingerprint,
                               format=JOURNAL_FORMAT)
        await asyncio.to_thread(self.journal.restart, header)
        self._checkpoint_dirty = False
        self.last_checkpoint = checkpoint.last_update
        self.last_checkpoint_s = time.monotonic()

    async def publish_metrics(self, batches: list[MetricBatch]) -> None:
        """Hand numbered batches to the sink, then checkpoint at once (before any further journal
        commit), so a restart rebuilds exactly these batches if it must publish them again."""
        if batches:
            await self.backend.metrics.publish(batches)
            await self.write_checkpoint(final=False)

    async def _wait_stop(self, timeout_s: float) -> bool:
        # A plain sleep, not wait_for(event): these loops wake often and wait_for costs a task
        # per wake-up; stopping is noticed within one interval.
        await asyncio.sleep(timeout_s)
        return self._stop_loops.is_set()

    async def persist_loop(self) -> None:
        """Group commit of the journal; periodic compaction into the checkpoint."""
        while not await self._wait_stop(GROUP_COMMIT_INTERVAL_S):
            await self.commit_journal()
            self.flush_events()
            await self.publish_metrics(self.metrics.take_closed(time.time()))
            assert self.last_checkpoint_s is not None
            due = time.monotonic() - self.last_checkpoint_s >= CHECKPOINT_INTERVAL_S
            if self._checkpoint_now:
                self._checkpoint_now = False
                await self.write_checkpoint(final=True)
            elif due and self._checkpoint_dirty:
                await self.write_checkpoint(final=False)

    # --- housekeeping -----------------------------------------------------------------------

    def healthy(self) -> bool:
        if self.fleet is not None and all(w.seed is None for w in self.supervisor.status()):
            # Idle workers in a fleet: every remaining batch is leased by another daemon (the
            # end of a bounded run); the claim loop is alive and polls, so this is healthy.
            return True
        since_s = time.monotonic() - self.supervisor.last_completion_s
        return since_s < self.settings.seed_timeout_s + 10.0

    async def housekeeping_loop(self) -> None:
        last_status_s = last_watchdog_s = last_progress_s = time.monotonic()
        while not await self._wait_stop(HOUSEKEEPING_INTERVAL_S):
            now = time.monotonic()
            digest = self.policy.digest(time.time(), self.instance, rfc3339_now())
            if digest is not None:
                await self.backend.alerts.send(digest.subject, digest.message)
            self.check_health()
            if self._status_requested.is_set():
                self._status_requested.clear()
                await self.dump_status()
            interval = self.notifier.watchdog_interval_s
            if interval is not None and now - last_watchdog_s >= interval and self.healthy():
                self.notifier.send(watchdog="1")
                last_watchdog_s = now
            if now - last_status_s >= NOTIFY_STATUS_INTERVAL_S:
                self.notifier.send(status=self.status_line())
                last_status_s = now
            if now - last_progress_s >= PROGRESS_LOG_INTERVAL_S:
                self.emit("progress", "info", msg=self.status_line(),
                          seeds_done=self.progress.total_iterations, rate_per_s=self.rate())
                last_progress_s = now

    def _observe(self, result: SeedResult, focus: str | None) -> None:
        """A seed counted for the status: its bounds (per configuration) and coverage (`focus`:
        the family of a focus seed, else None)."""
        for bound in result.bounds_reached:
            self.bounds_reached[bound] = self.bounds_reached.get(bound, 0) + 1
        self.bound_tally.observe(result.seed, result.config, result.bounds_reached)
        if self.coverage is not None:
            self.coverage.observe(result, focus)

    def _seed_source(self, source: SeedSource) -> SeedSource:
        """Coverage for an engine target; with it, in an unbounded run without a fleet, focus
        seeds (one after every --focus-every seeds; 0: none) steered toward rare paths."""
        system = engine_system(self.options.target)
        if system is None:
            return source
        families = [name for name, fault_class in SWARM_FAMILIES.items()
                    if fault_class in self.options.faults]
        self.coverage = CoverageTally(system.coverage_paths, families)
        every = self.settings.focus_every
        if every == 0 or self.settings.iterations is not None or self.fleet is not None:
            return source
        self.focus = FocusSource(source, self.coverage, every)
        return self.focus

    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started_s, 1e-6)
        return round(self.done_this_start / elapsed, 3)

    def status_line(self) -> str:
        return (f"{self.state}: {plural(self.progress.total_iterations, 'seed')} done, watermark "
                f"{self.progress.watermark}, {self.rate():g} seeds/s, "
                f"{plural(self.progress.total_failures, 'failure')}")

    def status(self) -> StatusData:
        by_fingerprint = self.failure_counts()
        return StatusData(
            pid=os.getpid(), state=self.state, uptime_s=round(time.monotonic() - self.started_s, 3),
            first_seed=self.progress.first_seed, end_seed=self.progress.end_seed,
            watermark=self.progress.watermark, seeds_done=self.progress.total_iterations,
            seeds_done_this_start=self.done_this_start, rate_per_s=self.rate(),
            total_failures=self.progress.total_failures, failures_by_fingerprint=by_fingerprint,
            workers=self.supervisor.status(), last_checkpoint=self.last_checkpoint,
            last_checkpoint_age_s=(round(time.monotonic() - self.last_checkpoint_s, 3)
                                   if self.last_checkpoint_s is not None else None),
            backend=self.backend.health(),
            pending_alerts=self.policy.pending + self.backend.pending_alerts(),
            bounds_reached=dict(sorted(self.bounds_reached.items())),
            mode=self.settings.mode, health="degraded" if self._health_degraded else "ok",
            health_detail=self._health_degraded or "", fleet=self.fleet_status(),
            bounds_recurring=self.bound_tally.recurring(),
            coverage=(self.coverage.status(self.focus.current if self.focus else None)
                      if self.coverage is not None else None),
        )

    def fleet_status(self) -> FleetDaemonStatus | None:
        if self.fleet is None:
            return None
        coordinator = self.fleet.fleet
        health = coordinator.health()
        return FleetDaemonStatus(
            run=coordinator.run, holder=coordinator.holder, watermark=self.fleet_watermark(),
            batches_held=sorted(self.fleet.running),
            batches_recording=sorted(self.fleet.completing), s3_healthy=health.ok,
            s3_detail="" if health.ok else health.last_error or "",
            records_quarantined=health.quarantined,
        )

    def check_health(self) -> None:
        """Degraded while the fleet's S3 calls or the AWS outbox have been failing for
        DEGRADED_AFTER_S; logged when it starts and when it ends (the daemon keeps running)."""
        problems: list[str] = []
        now = time.monotonic()
        if self.fleet is not None:
            coordinator = self.fleet.fleet
            s3 = coordinator.health()
            if s3.failing_since_mono is not None and (
                    now - s3.failing_since_mono >= DEGRADED_AFTER_S):
                problems.append(f"fleet S3 failing: {s3.last_error}")
            if coordinator.claim_error is not None and (
                    now - coordinator.claim_error_since_mono >= DEGRADED_AFTER_S):
                problems.append(f"fleet claims refused: {coordinator.claim_error}")
        backend = self.backend.health()
        if backend.healthy:
            self._backend_unhealthy_since = None
        elif self._backend_unhealthy_since is None:
            self._backend_unhealthy_since = now
        elif now - self._backend_unhealthy_since >= DEGRADED_AFTER_S:
            problems.append(f"backend {backend.name}: {backend.detail}")
        degraded = "; ".join(problems) or None
        if degraded and not self._health_degraded:
            self.emit("health_degraded", "warning", detail=degraded,
                      msg="AWS is not answering; running on and retrying until it does")
        elif self._health_degraded and not degraded:
            self.emit("health_restored", "info", msg="AWS answers again")
        self._health_degraded = degraded

    def snapshot(self) -> Snapshot:
        """The counters of the live progress line (a fleet's total is the fleet's, not ours)."""
        return Snapshot(
            done=self.progress.total_iterations,
            total=None if self.fleet is not None else self.settings.iterations,
            done_this_start=self.done_this_start, elapsed_s=time.monotonic() - self.started_s,
            failures=self.progress.total_failures, distinct=self.failure_counts(),
        )

    def failure_counts(self) -> list[FingerprintCount]:
        return [FingerprintCount(fingerprint=s.fingerprint, invariant=s.invariant, count=s.count,
                                 first_seed=s.first_seed) for s in self.policy.states()]

    async def dump_status(self, *, announce: bool = True) -> None:
        """status.json (what `voprd status` reads) and, with `announce`, the `status` event and
        log line."""
        status = self.status()
        data = msgspec.json.encode(status) + b"\n"
        # Atomic for `voprd status`, not fsynced: a dump is a view, not state.
        await asyncio.to_thread(write_atomically, self.state_dir / STATUS_FILE, data,
                                durable=False)
        if announce:
            self.event("status", status)
            self.emit("status", "info", **msgspec.to_builtins(status))

    # --- drain ------------------------------------------------------------------------------

    async def spot_watch(self) -> None:
        """On EC2 spot: a notice (interruption or rebalance) drains like SIGTERM, with the
        checkpoint written and uploaded at once instead of after the in-flight seeds."""
        watcher = spot.SpotWatcher(self.on_spot_notice, endpoint=imds_endpoint(self.env))
        await watcher.run(self._stop_loops)

    def on_spot_notice(self, notice: spot.SpotNotice) -> None:
        self._checkpoint_now = True
        if not self._drain.is_set():
            self.emit("drain", "warning", reason=f"spot {notice.kind}", action=notice.action,
                      time=notice.time)
            self._drain.set()

    def install_signal_handlers(self) -> None:
        """The loop handles the daemon's signals from now until the process exits (no handler is
        ever removed: the shutdown's writes happen under them too); signals that came while the
        loop was not up yet (voprd.service.signals.hold) are acted on now."""
        loop = asyncio.get_running_loop()
        for stop in signals.STOP_SIGNALS:
            loop.add_signal_handler(stop, self.request_drain, stop)
        loop.add_signal_handler(signals.STATUS_SIGNAL, self.request_status)
        for held in signals.take_held():
            if held == signals.STATUS_SIGNAL:
                self.request_status()
            else:
                self.request_drain(held)

    def request_status(self) -> None:
        """SIGUSR1: the housekeeping loop dumps the status; in start-up as soon as it runs, in
        shutdown the final dump answers it."""
        self._status_requested.set()

    def request_drain(self, signum: int) -> None:
        """SIGTERM, SIGINT, SIGHUP: drain. A second one stops waiting for in-flight seeds."""
        supervisor: Supervisor | None = getattr(self, "supervisor", None)
        if self._drain.is_set():
            if supervisor is not None:
                supervisor.kill_all("second stop signal")
            return
        self.emit("drain", "info", signal=signal.Signals(signum).name)
        self._drain.set()

    async def drain_watch(self, pool: asyncio.Task[None]) -> None:
        stop = asyncio.create_task(self._stop_loops.wait())
        drain = asyncio.create_task(self._drain.wait())
        try:
            await asyncio.wait([stop, drain], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            drain.cancel()
        if not self._drain.is_set():
            return
        self.state = "draining"
        self.notifier.send(stopping="1", status="draining")
        self.supervisor.stop_dispatch()
        if self.fleet is not None:
            self.fleet.stop_claiming()
        reserve_s = min(DRAIN_RESERVE_S_MAX, self.settings.drain_timeout_s / 2)
        grace_s = self.settings.drain_timeout_s - reserve_s
        done, _ = await asyncio.wait([pool], timeout=grace_s)
        if not done:
            self.emit("drain_grace_expired", "warning", grace_s=grace_s,
                      in_flight=[w.seed for w in self.supervisor.status() if w.seed is not None])
            self.supervisor.kill_all("drain grace period expired")

    # --- main -------------------------------------------------------------------------------

    async def run(self) -> int:
        self.install_signal_handlers()
        try:
            return await self._run()
        except Exception:
            await self._close_backend_after_error()
            raise

    async def _close_backend_after_error(self) -> None:
        """The run ended in an error: still try to flush what the backend holds (bounded)."""
        backend: Backend | None = getattr(self, "backend", None)
        if backend is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.close(), timeout=BACKEND_CLOSE_AFTER_ERROR_S)

    async def _run(self) -> int:
        if not await self.start():
            message = (f"run already finished: seeds {self.progress.first_seed}.."
                       f"{self.progress.watermark - 1} are done "
                       f"({plural(self.progress.total_iterations, 'seed')}, "
                       f"{self.progress.total_failures} failed); --reset starts it over")
            self.emit("run_already_finished", "info", msg=message)
            await self.backend.close()
            return EXIT_OK
        workers = self.settings.workers or os.cpu_count() or 1
        exec_target = self.settings.target == "exec"
        dispatch_batch = DISPATCH_BATCH_EXEC if exec_target else DISPATCH_BATCH_BUILTIN
        if self.settings.fleet_mode:
            batch_size = dispatch_batch  # --batch-size is the fleet's lease batch there
        else:
            batch_size = self.settings.batch_size or dispatch_batch
        fleet_stack = contextlib.AsyncExitStack()
        source: SeedSource = self.progress
        if self.settings.fleet_mode:
            try:
                source = self.fleet = await self.open_fleet(fleet_stack, workers)
            except (FleetError, FleetS3Error) as exc:
                await fleet_stack.aclose()
                await self.backend.close()
                raise Refused(f"fleet run {self.settings.run_name!r}: {exc}") from exc
            batch_size = min(batch_size, self.fleet.fleet.space.batch_size)
        source = self._seed_source(source)
        self.supervisor = Supervisor(
            config=WorkerConfig(target=self.settings.target, exec_cmd=self.settings.exec_cmd,
                                options=self.options, memory_mb=self.settings.worker_memory_mb),
            workers=workers, seed_timeout_s=self.settings.seed_timeout_s,
            memory_mb=self.settings.worker_memory_mb, batch_size=batch_size,
            source=source, on_result=self.on_result, on_event=self._on_supervisor_event,
        )
        self.event("start", StartData(
            starting_seed=self.progress.first_seed, iterations=self.settings.iterations,
            faults=list(self.options.faults),
            options={**msgspec.to_builtins(self.options), "resume_watermark":
                     self.progress.watermark, "workers": workers, "state_dir": str(self.state_dir)},
        ))
        self.emit("start", "info", first_seed=self.progress.first_seed,
                  end_seed=self.progress.end_seed, watermark=self.progress.watermark,
                  workers=workers, state_dir=str(self.state_dir), backend=self.backend.name)
        self.state = "running"
        self.notifier.send(ready="1", status=self.status_line())
        started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                persist = group.create_task(self.persist_loop())
                group.create_task(self.housekeeping_loop())
                pool = group.create_task(self.supervisor.run())
                group.create_task(self.drain_watch(pool))
                if spot.watch_enabled(self.settings.backend, self.env):
                    group.create_task(self.spot_watch())
                if self.live is not None:
                    group.create_task(self.live.run(self.snapshot, self._stop_loops))
                prefetch = (group.create_task(self.fleet.prefetch_loop())
                            if self.fleet is not None else None)
                await pool
                if prefetch is not None:
                    prefetch.cancel()
                self._stop_loops.set()
                await persist
        finally:
            await self.settle_alerts()  # before the S3 client closes
            await fleet_stack.aclose()  # gives unfinished batches back (drain) and closes S3
        return await self.shut_down(started)

    async def shut_down(self, started: float) -> int:
        """The final journal commit, metrics, digest, checkpoint, status dump and summary, and the
        backend's flush. Signals stay handled throughout: a stop signal finds nothing left to
        stop, a status request is answered by the final dump."""
        await self.commit_journal()
        await self.backend.metrics.publish(self.metrics.take_all())
        repeats = self.policy.take_repeats()
        if repeats:  # nothing counted is lost at exit: summarise it now
            final = digest_for(repeats, self.instance, rfc3339_now())
            await self.backend.alerts.send(final.subject, final.message)
        self.state = "finished" if self.progress.finished else "stopped"
        await self.write_checkpoint(final=True)
        self._status_requested.clear()
        await self.dump_status()
        elapsed_s = time.monotonic() - started
        self.event("batch_complete", BatchCompleteData(
            successes=self.done_this_start - len(self.failures_this_start),
            failures=len(self.failures_this_start), elapsed_secs=round(elapsed_s, 3),
            rate=round(self.done_this_start / max(elapsed_s, 1e-6), 3),
            failed_seeds=self.failures_this_start,
        ))
        self.emit("batch_complete", "info", msg=self.status_line(),
                  seeds_done_this_start=self.done_this_start,
                  failures_this_start=len(self.failures_this_start))
        await self.backend.flush()
        if self._status_requested.is_set():  # asked during the flush: the file answers (the
            await self.dump_status(announce=False)  # summary stays the last event); later: ignored
        await self.backend.close()
        self.flush_events()
        if self.progress.finished and self.progress.total_failures > 0:
            return EXIT_FAILURES
        return EXIT_OK

    async def open_fleet(self, stack: contextlib.AsyncExitStack, workers: int
                         ) -> FleetDispatchSource:
        """Join (or create) the fleet run named by --run in the bucket: seeds come from leases."""
        settings = self.settings
        assert settings.bucket is not None
        assert settings.run_name is not None
        if settings.seed_stride != 1:
            raise Refused("--seed-stride is static partitioning without a shared run; a fleet "
                          "run (--run) shares the seeds by itself (drop --run to run alone)")
        client = await stack.enter_async_context(create_client(settings.region))
        seed_s = (FLEET_SEED_S_ESTIMATE_BUILTIN if settings.target == "builtin"
                  else FLEET_SEED_S_ESTIMATE_OTHER)
        batch_size = settings.batch_size or default_batch_size(workers, seed_s)
        coordinator = FleetCoordinator(
            S3Store(client, settings.bucket), run=settings.run_name,
            holder=default_holder_id(self.instance),
            space=BatchSpace(seed_start=settings.seed, batch_size=batch_size,
                             seed_count=settings.iterations),
            timing=Timing(lease_seconds=settings.lease_seconds,
                          poll_s=min(Timing().poll_s, settings.lease_seconds / 3)),
            fingerprint=msgspec.json.encode(run_fingerprint(settings)).decode(),
        )
        try:
            async with asyncio.timeout(FLEET_START_TIMEOUT_S):
                spec = await coordinator.start(adopt_batch_size=settings.batch_size == 0)
        except TimeoutError:
            raise Refused(f"S3 did not answer within {FLEET_START_TIMEOUT_S:g} s "
                          f"({coordinator.health().last_error or 'no answer'})") from None
        source = FleetDispatchSource(coordinator, on_lost=self._on_lease_lost,
                                     on_recorded=self._on_batch_recorded)
        await stack.enter_async_context(source)
        self.emit("fleet_joined", "info", run=spec.run, holder=coordinator.holder,
                  batch_size=spec.batch_size, seed_start=spec.seed_start,
                  seed_count=spec.seed_count)
        return source

    def _on_lease_lost(self, batch: int, seeds: range) -> None:
        """Another daemon has (or may take) this batch: stop running it. Its failures so far
        were archived and alerted as they came (a re-run finds them archived and known)."""
        self.supervisor.abandon(seeds, f"fleet lease of batch {batch} lost")
        self.emit("fleet_batch_abandoned", "warning", batch=batch,
                  seeds=[seeds.start, seeds.stop])

    def _on_supervisor_event(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        self.backend.events.emit(event, severity, fields)

    def close(self) -> None:
        self.notifier.close()
        if self._lock is not None:
            self._lock.close()


def environment_error(exc: BaseException) -> str | None:
    """One line for an error of the machine rather than of voprd (a full, read-only, deleted or
    foreign state directory, a file where a directory belongs); None for anything else."""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, sqlite3.OperationalError) and any(
            words in str(exc) for words in _SQLITE_ENVIRONMENT):
        return f"the AWS outbox database in the state directory: {exc}"
    return None


# SQLite's words for a disk, not a query, at fault.
_SQLITE_ENVIRONMENT = ("disk", "readonly", "read-only", "unable to open", "I/O error")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def refusal(exc: BaseException) -> str | None:
    """The one line that explains `exc` to the operator when it is a refusal or an environment
    error (exit 2); None when it is a bug (a traceback, exit 70)."""
    if isinstance(exc, Refused | ConfigError | WorkerStartupError):
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        lines = [refusal(leaf) for leaf in leaves]
        if leaves and all(lines):
            return lines[0]
        return None
    return environment_error(exc)


def daemon_main(settings: Settings, command: dict[str, Any]) -> int:
    """Entry point from voprd.cli for every invocation without --once. Exit codes: module
    docstring; an unexpected exception propagates to the CLI (a traceback, exit 70)."""
    import uvloop

    signals.hold()  # until the loop's handlers are installed (the CLI did it already)
    os.umask(0o077)  # everything the daemon creates is its own (SQLite's files included)
    console = None if settings.json else terminal_console(sys.stdout)
    live = LiveProgress(console) if console is not None else None
    configure_logging(sys.stderr if settings.json else
                      live.log_stream() if live is not None else sys.stdout)
    scratch: Path | None = command.get("scratch_state_dir")
    if scratch is not None and not settings.json:  # with --json: the start event names it
        print(f"voprd: a fresh run in {scratch} (--state-dir DIR keeps a run to resume)",
              file=sys.stderr)
    daemon = Daemon(settings, dict(os.environ))
    daemon.live = live
    try:
        code = uvloop.run(daemon.run())
        if live is not None and daemon.state in ("finished", "stopped"):
            live.summary(daemon.snapshot(), lambda seed: reproduce_command(seed, daemon.options),
                         daemon.state_dir / "failures" if settings.backend == "local" else None)
        return code
    except Exception as exc:
        line = refusal(exc)
        if line is None:
            raise
        if not daemon.state_dir.is_dir():
            line = f"state directory {daemon.state_dir} was removed while the daemon ran ({line})"
        print(f"voprd: {line}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        signals.ignore()
        daemon.close()
