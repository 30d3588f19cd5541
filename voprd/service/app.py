"""The daemon: wires the pure cores (progress, failures, metrics) to the supervisor and a backend.

Output (see docs/daemon.md): with `--json`, stdout carries only the JSON-lines envelope
events (start, iteration, batch_complete, status) and the structlog log lines go to stderr; without
`--json`, stdout carries the structlog log lines (JSON, or readable when stdout is a terminal).

Exit codes: 0 run finished without failures, drained on SIGTERM/SIGINT, or already finished;
1 a bounded run finished and at least one of its seeds failed (as the VOPR binary);
2 refused to start (fingerprint mismatch, another daemon on the state dir, bad target/backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import platform
import signal
import socket
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
from voprd.core.failures import AlertPolicy, FailureInfo, alert_for, digest_for, fingerprint
from voprd.core.metrics import MetricsAggregator
from voprd.core.progress import RunProgress, resume_decision
from voprd.core.records import (
    FailureRecord,
    JournalHeader,
    JournalRecord,
    RunFingerprint,
    Severity,
)
from voprd.events import (
    BatchCompleteData,
    EventType,
    FingerprintCount,
    IterationData,
    SeedResult,
    StartData,
    StatusData,
    encode_event,
    rfc3339_now,
)
from voprd.fleet.core import BatchSpace, FleetError, Timing, default_batch_size
from voprd.fleet.runner import FleetCoordinator, FleetDispatchSource, default_holder_id
from voprd.fleet.s3 import FleetS3Error, S3Store, create_client
from voprd.options import RunOptions, reproduce_command
from voprd.service import spot
from voprd.service.notify import Notifier
from voprd.service.protocol import WorkerConfig
from voprd.service.report_worker import ReportJob
from voprd.service.supervisor import SeedSource, Supervisor, WorkerStartupError
from voprd.sim.faults import SWARM_FAMILIES, is_focus_seed, seed_focus
from voprd.sinks.base import Backend
from voprd.sinks.factory import make_backend, resolve_state_dir
from voprd.sinks.local import (
    JOURNAL_SUFFIX,
    PID_FILE,
    STATUS_FILE,
    ProgressJournal,
    keep_aside,
)
from voprd.targets.loader import TargetNotFound, engine_system, load_target, validate_bugs
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
# A fleet run without --batch-size: the first daemon sizes batches (about a minute of its
# workers' time) from this estimate of a seed's cost. The builtin VSR target takes ~30 ms of CPU a
# seed (BENCHMARKS.md, daemon section); other targets are unknown, so a cautious 0.5 s. Batches far
# shorter than a minute would multiply the S3 lease requests (and their cost) per seed.
FLEET_SEED_S_ESTIMATE_BUILTIN = 0.03
FLEET_SEED_S_ESTIMATE_OTHER = 0.5
DISPATCH_BATCH_BUILTIN, DISPATCH_BATCH_EXEC = 4, 16
EXIT_OK, EXIT_FAILURES, EXIT_REFUSED = 0, 1, 2


class Refused(Exception):
    """The daemon must not start; the message says why and what to do."""


def run_fingerprint(settings: Settings) -> RunFingerprint:
    return RunFingerprint(
        first_seed=settings.seed, target=settings.target, exec_cmd=settings.exec_cmd,
        faults=settings.faults, max_events=settings.max_events, bugs=settings.bugs,
        check_determinism=settings.check_determinism, voprd_version=__version__,
        seed_stride=settings.seed_stride,
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


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent.parent.parent
    try:
        proc = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def configure_logging(stream: TextIO) -> None:
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if stream.isatty()
                     else structlog.processors.JSONRenderer())
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
    handle = open(state_dir / PID_FILE, "a+")  # noqa: SIM115 (held until exit)
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


# A failure waiting to be announced: its record, its alert facts, its rendered report (if any).
HeldFailure = tuple[FailureRecord, FailureInfo, bytes | None]


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
        self.metrics = MetricsAggregator()
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
        # Fleet mode (a bucket, not --no-fleet): seeds come from S3 leases (voprd.fleet); the
        # failures of a batch wait here until its done record is ours (archived once fleet-wide).
        self.fleet: FleetDispatchSource | None = None
        self._held_failures: dict[int, list[HeldFailure]] = {}

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
        """A log event: `event` is a stable snake_case name; a readable sentence goes in `msg`."""
        self.backend.events.emit(event, severity, fields)

    # --- start-up ---------------------------------------------------------------------------

    async def start(self) -> bool:
        """Load or create the run. False when the run is already finished."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_state_dir(self.state_dir)
        try:
            load_target(self.settings.target, self.settings.exec_cmd)
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
        checkpoint_path = (Path(self.settings.checkpoint_file) if self.settings.checkpoint_file
                           else self.state_dir / "checkpoint.json")
        journal_path = Path(str(checkpoint_path) + JOURNAL_SUFFIX)
        header, records = ProgressJournal.read(journal_path)
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
            await self.backend.checkpoints.discard()
            if journal_path.exists():
                keep_aside(journal_path, "reset", int(time.time()))
            header, records = None, []
            self.emit("run_reset", "warning", checkpoint=str(checkpoint_path))
        if stored is not None and decision == "resume":
            self.progress = RunProgress.from_checkpoint(stored, end_seed)
        else:
            resumable = header is not None and decision == "resume"
            run_id = header.run_id if header is not None and resumable else uuid.uuid4().hex
            self.progress = RunProgress(run_id=run_id, fingerprint=current, end_seed=end_seed)
        self.policy = AlertPolicy(stored.alerts if stored and decision == "resume" else ())
        replayed = 0
        if header is not None and header.run_id == self.progress.run_id:
            replayed = sum(self._replay(record) for record in records)
        self.journal = ProgressJournal(journal_path)
        if decision == "resume":
            self.emit("run_resumed", "info", source=loaded.source,
                      watermark=self.progress.watermark, done=self.progress.total_iterations,
                      journal_records_replayed=replayed)
        # Compact what we loaded into a fresh checkpoint + empty journal before running anything.
        await self.write_checkpoint(final=False)
        return self.settings.fleet_mode or not self.progress.finished

    def _replay(self, record: JournalRecord) -> bool:
        """Apply a journalled result. Its alert went out right after it was journalled, so its
        fingerprint is known from now on (a repeat is counted, not alerted again)."""
        if not self.progress.record(record):
            return False
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
        held: HeldFailure | None = None
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
            # The report is rendered now (it reruns the seed), so that storing it later is a
            # quick put. Locally the record and the report are archived before the journal counts
            # the seed done (a crash in between re-runs the seed; the archive is idempotent per run
            # and seed). In a fleet both wait for the batch's done record (see _fleet_seed_done).
            html = await self.render_report(seed)
            location = "" if self.fleet is not None else await self.backend.archive.put(failure)
            report = await self.store_report(seed, location, html) if location else None
            record = JournalRecord(seed=seed, failed=True, fingerprint=fp,
                                   invariant=result.invariant or kind)
            held = (failure, FailureInfo(
                seed=seed, batch_start=batch_start, kind=kind, invariant=result.invariant,
                message=message, reproduce=reproduce, archive=location, report=report), html)
        else:
            record = JournalRecord(seed=seed, failed=False)
        if held is not None and self.fleet is None:
            # Alert before journalling: a crash in between re-runs the seed and may alert twice,
            # but a journalled failure (its fingerprint known after a restart) is never unalerted.
            await self.announce_failure(*held)
        # A focus seed is extra: alerted and archived, never in the run's exact progress.
        focus = (seed_focus(seed) or "?") if is_focus_seed(seed) else None
        if focus is None:
            self.journal.append(record)
            if not self.progress.record(record):
                if self.fleet is not None:  # counted before; this batch's run still needs it
                    await self._fleet_seed_done(seed, failed, held)
                return
            self._checkpoint_dirty = True
        self.done_this_start += 1
        self.metrics.add(time.time(), failed=failed, events=result.events,
                         duration_s=result.duration_s)
        self._observe(result)
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
            await self._fleet_seed_done(seed, failed, held)

    async def _fleet_seed_done(self, seed: int, failed: bool,
                               held: HeldFailure | None) -> None:
        """Hand a result to the fleet; a batch's failures are archived and alerted only once its
        done record is ours, so a batch run twice (a lost lease) is archived once fleet-wide."""
        assert self.fleet is not None
        batch = self.fleet.fleet.space.batch_of(seed)
        if held is not None:
            self._held_failures.setdefault(batch, []).append(held)
        recorded = await self.fleet.seed_done(seed, failed)
        if recorded is not None:
            for held_failure in self._held_failures.pop(recorded.batch, []):
                await self.announce_failure(*held_failure)
            space = self.fleet.fleet.space
            floor_seed = space.seed_start + self.fleet_watermark() * space.batch_size
            if space.seed_count is not None:  # the last batch of a bounded run is cut short
                floor_seed = min(floor_seed, space.seed_start + space.seed_count)
            self.progress.advance_floor(floor_seed)
        elif batch not in self.fleet.running:  # lost or recorded by another holder
            self._held_failures.pop(batch, None)

    def fleet_watermark(self) -> int:
        assert self.fleet is not None
        return self.fleet.fleet.state.watermark or 0

    async def announce_failure(self, failure: FailureRecord, info: FailureInfo,
                               html: bytes | None) -> None:
        """Log a failure and alert on a new fingerprint; archive it (and its rendered report)
        first if not yet archived. Only quick puts here: the report was rendered earlier."""
        seed, kind, message, reproduce = failure.seed, failure.kind, failure.message, info.reproduce
        fp = failure.fingerprint
        if not info.archive:
            location = await self.backend.archive.put(failure)
            info = msgspec.structs.replace(
                info, archive=location, report=await self.store_report(seed, location, html))
        location, report = info.archive, info.report
        self.emit("seed_failed", "warning",
                  msg=f"seed {seed} failed: {info.invariant_or_kind}: {message} "
                      f"(reproduce: {reproduce})",
                  seed=seed, kind=kind, invariant=failure.invariant, fingerprint=fp,
                  archive=location, report=report, reproduce=reproduce)
        if self.policy.observe(fp, info, time.time()):
            alert = alert_for([info], self.instance, rfc3339_now(), self.policy.take_repeats())
            # A seed re-run after a crash between this alert and the journal's fsync fails again
            # with a new timestamp: the key lets the AWS outbox send the first alert only. The
            # run id is in it: a run started afresh (--reset: a new id, no known fingerprints)
            # alerts its failures again instead of having them taken for sent.
            await self.backend.alerts.send(
                alert.subject, alert.message,
                once_key=f"failure:{self.progress.run_id}:{fp}:{seed}",
            )

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
        data = self.journal.take_pending()
        if data:
            await asyncio.to_thread(self.journal.write_durably, data)

    async def write_checkpoint(self, *, final: bool) -> None:
        checkpoint = self.progress.checkpoint(rfc3339_now(), self.policy.states())
        await self.backend.checkpoints.save(checkpoint, final=final)
        header = JournalHeader(run_id=self.progress.run_id, fingerprint=self.progress.fingerprint)
        await asyncio.to_thread(self.journal.restart, header)
        self._checkpoint_dirty = False
        self.last_checkpoint = checkpoint.last_update
        self.last_checkpoint_s = time.monotonic()

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
            closed = self.metrics.take_closed(time.time())
            if closed:
                await self.backend.metrics.publish(closed)
            digest = self.policy.digest(time.time(), self.instance, rfc3339_now())
            if digest is not None:
                await self.backend.alerts.send(digest.subject, digest.message)
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

    def _observe(self, result: SeedResult) -> None:
        """A seed counted for the status: its bounds (per configuration) and coverage."""
        for bound in result.bounds_reached:
            self.bounds_reached[bound] = self.bounds_reached.get(bound, 0) + 1
        self.bound_tally.observe(result.seed, result.config, result.bounds_reached)
        if self.coverage is not None:
            self.coverage.observe(result, seed_focus(result.seed))

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
        by_fingerprint = [
            FingerprintCount(fingerprint=s.fingerprint, invariant=s.invariant, count=s.count,
                             first_seed=s.first_seed)
            for s in self.policy.states()
        ]
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
            bounds_recurring=self.bound_tally.recurring(),
            coverage=(self.coverage.status(self.focus.current if self.focus else None)
                      if self.coverage is not None else None),
        )

    async def dump_status(self) -> None:
        status = self.status()
        data = msgspec.json.encode(status) + b"\n"
        path = self.state_dir / STATUS_FILE
        tmp = path.with_name(path.name + ".tmp")

        def write() -> None:
            tmp.write_bytes(data)
            os.replace(tmp, path)

        await asyncio.to_thread(write)
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

    def request_drain(self, signum: int) -> None:
        if self._drain.is_set():  # a second signal: stop waiting for in-flight seeds
            self.supervisor.kill_all("second stop signal")
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
        if not await self.start():
            message = (f"run already finished: seeds {self.progress.first_seed}.."
                       f"{self.progress.watermark - 1} are done "
                       f"({plural(self.progress.total_iterations, 'seed')}, "
                       f"{self.progress.total_failures} failed); --reset starts it over")
            self.emit("run_already_finished", "info", msg=message)
            if not self.settings.json:
                print(message, file=sys.stderr)
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
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_drain, signum)
        loop.add_signal_handler(signal.SIGUSR1, self._status_requested.set)
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
                prefetch = (group.create_task(self.fleet.prefetch_loop())
                            if self.fleet is not None else None)
                await pool
                if prefetch is not None:
                    prefetch.cancel()
                self._stop_loops.set()
                await persist
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            await fleet_stack.aclose()  # gives unfinished batches back (drain) and closes S3
        await self.commit_journal()
        await self.backend.metrics.publish(self.metrics.take_all())
        repeats = self.policy.take_repeats()
        if repeats:  # nothing counted is lost at exit: summarise it now
            final = digest_for(repeats, self.instance, rfc3339_now())
            await self.backend.alerts.send(final.subject, final.message)
        self.state = "finished" if self.progress.finished else "stopped"
        await self.write_checkpoint(final=True)
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
        if settings.seed_stride != 1:
            raise Refused("--seed-stride is static partitioning without a shared bucket; with a "
                          "bucket the fleet shares the seeds (or use --no-fleet)")
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
        spec = await coordinator.start(adopt_batch_size=settings.batch_size == 0)
        source = FleetDispatchSource(coordinator, on_lost=self._on_lease_lost)
        await stack.enter_async_context(source)
        self.emit("fleet_joined", "info", run=spec.run, holder=coordinator.holder,
                  batch_size=spec.batch_size, seed_start=spec.seed_start,
                  seed_count=spec.seed_count)
        return source

    def _on_lease_lost(self, batch: int, seeds: range) -> None:
        """Another daemon has (or may take) this batch: stop running it, forget its failures."""
        self._held_failures.pop(batch, None)
        self.supervisor.abandon(seeds, f"fleet lease of batch {batch} lost")
        self.emit("fleet_batch_abandoned", "warning", batch=batch,
                  seeds=[seeds.start, seeds.stop])

    def _on_supervisor_event(self, event: str, severity: Severity, fields: dict[str, Any]) -> None:
        self.backend.events.emit(event, severity, fields)

    def close(self) -> None:
        self.notifier.close()
        if self._lock is not None:
            self._lock.close()


def daemon_main(settings: Settings, command: dict[str, Any]) -> int:
    """Entry point from voprd.cli for every invocation without --once."""
    import uvloop

    # Until the loop's handler is installed, a `voprd status` must not kill a starting daemon.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        validate_bugs(settings.target, settings.bugs)
    except ValueError as exc:
        print(f"voprd: --bug: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    configure_logging(sys.stderr if settings.json else sys.stdout)
    daemon = Daemon(settings, dict(os.environ))
    try:
        return uvloop.run(daemon.run())
    except (Refused, ConfigError) as exc:
        print(f"voprd: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ExceptionGroup as group:
        startup, rest = group.split(WorkerStartupError)
        if startup is None or rest is not None:
            raise
        print(f"voprd: {startup.exceptions[0]}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        daemon.close()
