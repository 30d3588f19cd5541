"""The worker pool: N worker processes fed seeds in order, results taken in any order.

Each slot owns one worker process at a time. A worker that dies (exit, signal), runs one seed past
the seed timeout or grows past the memory limit is killed (its whole process group) and replaced;
the seed it was running becomes a `crash`, `timeout` or `oom` result and the seeds queued behind it
go back to the dispatcher. Consecutive deaths in a slot back off exponentially, so a crash loop
cannot spin the CPU. The main process only moves small msgpack frames: seeds are assigned in
batches and a slot keeps the next batch queued in the pipe so a worker never waits for us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from voprd import procs
from voprd.core.records import Severity
from voprd.events import FailureKind, SeedResult, WorkerStatus
from voprd.service.protocol import (
    HEADER_BYTES,
    Assign,
    Board,
    Ready,
    Results,
    WorkerConfig,
    decode_from_worker,
    frame,
    header_length,
)

MONITOR_INTERVAL_S = 0.2
DISPATCH_WAIT_S = 0.05  # a source with nothing right now (a fleet claim in flight): look again
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 5.0
STARTUP_FAILURES_MAX = 5
# A worker must send its first heartbeat and become ready (its target loaded) within this, or
# --seed-timeout if longer; once it beats, it may be silent for at most --seed-timeout.
STARTUP_TIMEOUT_S_MIN = 60.0
EXIT_WAIT_S = 5.0  # after a worker's pipe closes, how long its exit status may take to arrive
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class WorkerStartupError(RuntimeError):
    """Workers keep dying before they are ready (bad target, broken environment)."""


class SeedSource(Protocol):
    def dispatch(self, count_max: int) -> list[int]: ...

    def requeue(self, seeds: list[int]) -> None: ...

    @property
    def dispatch_exhausted(self) -> bool: ...


ResultHandler = Callable[[SeedResult, int], Awaitable[None]]
EventHandler = Callable[[str, Severity, dict[str, Any]], None]


def restart_backoff_s(consecutive_deaths: int) -> float:
    """Delay before restarting a slot whose worker died `consecutive_deaths` times in a row."""
    if consecutive_deaths <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(consecutive_deaths - 1, 20)))


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


class _Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process, board: Board) -> None:
        self.index = index
        self.proc = proc
        self.board = board
        self.assigned: dict[int, int] = {}  # seed -> first seed of its batch, in dispatch order
        self.kill_reason: tuple[FailureKind | None, str] | None = None
        self.kill_seed: int | None = None  # the seed running when we decided to kill
        self.completed = 0
        self.stop_sent = False
        self.spawned_s = time.monotonic()
        self.ready = False

    def running(self) -> tuple[int | None, float]:
        """The seed the worker runs now (None: between seeds) and since when."""
        view = self.board.read()
        return view.seed, view.started_s

    def kill(self, kind: FailureKind | None, message: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = (kind, message)
            self.kill_seed = self.running()[0]
        # The worker leads its own session: this kills it, an external run's process group and
        # anything that run started in another group (voprd.procs).
        procs.kill_session(self.proc.pid)


class Supervisor:
    def __init__(
        self,
        *,
        config: WorkerConfig,
        workers: int,
        seed_timeout_s: float,
        memory_mb: int,
        batch_size: int,
        source: SeedSource,
        on_result: ResultHandler,
        on_event: EventHandler,
    ) -> None:
        assert workers >= 1 and batch_size >= 1 and seed_timeout_s > 0
        self._config = config
        self._slots = workers
        self._seed_timeout_s = seed_timeout_s
        self._startup_timeout_s = max(STARTUP_TIMEOUT_S_MIN, seed_timeout_s)
        self._memory_bytes = memory_mb * 1024 * 1024
        self._batch_size = batch_size
        self._source = source
        self._on_result = on_result
        self._on_event = on_event
        self._workers: dict[int, _Worker] = {}
        self._restarts = [0] * workers
        self._stopping = False
        self._board_paths = [_board_file() for _ in range(workers)]
        self._boards = [Board(path) for path in self._board_paths]
        self.last_completion_s = time.monotonic()

    # --- control ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the source is exhausted and all slots are idle, or until stopped."""
        try:
            async with asyncio.TaskGroup() as group:
                slots = [group.create_task(self._slot(index)) for index in range(self._slots)]
                monitor = group.create_task(self._monitor())
                await asyncio.gather(*slots)
                monitor.cancel()
        finally:
            for board in self._boards:
                board.close()
            for path in self._board_paths:
                Path(path).unlink(missing_ok=True)

    def stop_dispatch(self) -> None:
        """Drain: no new seeds; workers exit once their queued seeds are done."""
        self._stopping = True
        for worker in self._workers.values():
            if not worker.assigned:
                self._send_stop(worker)

    def kill_all(self, reason: str) -> None:
        """End of the drain grace period: in-flight seeds are abandoned (they run again later)."""
        self._stopping = True
        for worker in list(self._workers.values()):
            worker.kill(None, reason)

    def abandon(self, seeds: range, reason: str) -> None:
        """Stop running `seeds` (a fleet lease was lost): workers holding any of them are killed
        (not the seeds' fault, so no failure is recorded) and their other seeds go back."""
        for worker in list(self._workers.values()):
            if any(seed in seeds for seed in worker.assigned):
                worker.kill(None, reason)

    def status(self) -> list[WorkerStatus]:
        now = time.monotonic()
        rows = []
        for index in range(self._slots):
            worker = self._workers.get(index)
            seed, started_s = worker.running() if worker else (None, now)
            rows.append(WorkerStatus(
                index=index, pid=worker.proc.pid if worker else None, seed=seed,
                running_s=round(now - started_s, 3) if seed is not None else 0.0,
                restarts=self._restarts[index],
            ))
        return rows

    # --- one slot ---------------------------------------------------------------------------

    async def _slot(self, index: int) -> None:
        consecutive_deaths = 0
        startup_failures = 0
        while not self._stopping and not self._source.dispatch_exhausted:
            await asyncio.sleep(restart_backoff_s(consecutive_deaths))
            worker = await self._spawn(index)
            self._workers[index] = worker
            try:
                ready = await self._serve(worker)
            except BaseException:  # cancelled (shutdown) or broken: the worker goes
                worker.kill(None, "slot closing")
                raise
            finally:
                # Its pipe closed: it has exited or is exiting, and the exit status may come just
                # after the end of its output. Wait for it, so that a worker that died (a SIGKILL
                # from outside) is recorded as a death, not mistaken for one we closed.
                if worker.proc.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(worker.proc.wait(), EXIT_WAIT_S)
                if worker.proc.returncode is None:
                    worker.kill(None, "slot closing")
                returncode = await worker.proc.wait()
                procs.kill_session(worker.proc.pid)  # a worker that died leaves no external run
                self._workers.pop(index, None)
            if not ready:
                startup_failures += 1
                self._source.requeue(list(worker.assigned))
                if startup_failures >= STARTUP_FAILURES_MAX:
                    raise WorkerStartupError(
                        f"worker processes exit before becoming ready (last exit code "
                        f"{returncode}); see the worker's stderr above"
                    )
                consecutive_deaths += 1
                continue
            startup_failures = 0
            died_working = bool(worker.assigned)
            if died_working:
                await self._record_death(worker, returncode)
            if worker.completed:
                consecutive_deaths = 0
            if died_working or (returncode != 0 and worker.kill_reason is None):
                consecutive_deaths += 1
                self._restarts[index] += 1

    async def _spawn(self, index: int) -> _Worker:
        board = self._boards[index]
        board.reset()
        config = msgspec.structs.replace(self._config, board_path=self._board_paths[index])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voprd.service.worker", msgspec.json.encode(config).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return _Worker(index, proc, board)

    async def _serve(self, worker: _Worker) -> bool:
        """Feed the worker and hand on its results until it exits. False if it never got ready."""
        reader = worker.proc.stdout
        assert reader is not None
        first = await _read_frame(reader)
        if not isinstance(first, Ready):
            return False
        worker.ready = True
        await self._feed(worker)
        while (message := await _read_frame(reader)) is not None:
            assert isinstance(message, Results), message
            for result in message.results:
                batch_start = worker.assigned.pop(result.seed, None)
                if batch_start is None:  # a seed we did not assign: a broken target, never trusted
                    self._on_event("worker_unexpected_seed", "warning",
                                   {"worker": worker.index, "seed": result.seed})
                    continue
                worker.completed += 1
                self.last_completion_s = time.monotonic()
                await self._on_result(result, batch_start)
            await self._feed(worker)
        return True

    async def _feed(self, worker: _Worker) -> None:
        """Top the worker up; if the source has nothing now but is not exhausted (a fleet claim
        in flight), wait for seeds rather than stop the worker; stop it once there are none."""
        self._top_up(worker)
        while not worker.assigned:
            if self._stopping or self._source.dispatch_exhausted:
                self._send_stop(worker)
                return
            await asyncio.sleep(DISPATCH_WAIT_S)
            if worker.proc.returncode is not None or worker.kill_reason is not None:
                return
            self._top_up(worker)

    def _top_up(self, worker: _Worker) -> None:
        """Keep up to two batches queued at the worker."""
        if self._stopping or len(worker.assigned) > self._batch_size:
            return
        seeds = self._source.dispatch(self._batch_size)
        if not seeds:
            return
        for seed in seeds:
            worker.assigned[seed] = seeds[0]
        self._write(worker, Assign(seeds=seeds))

    def _send_stop(self, worker: _Worker) -> None:
        if not worker.stop_sent:  # once: stop_dispatch and _feed may both get here
            worker.stop_sent = True
            self._write(worker, Assign(seeds=[]))

    @staticmethod
    def _write(worker: _Worker, message: Assign) -> None:
        stdin = worker.proc.stdin
        assert stdin is not None
        if not stdin.is_closing():
            stdin.write(frame(message))

    async def _record_death(self, worker: _Worker, returncode: int) -> None:
        seeds = list(worker.assigned)
        kind: FailureKind | None
        if worker.kill_reason is not None:
            kind, message = worker.kill_reason
        elif returncode < 0:
            kind, message = "crash", f"worker killed by signal {_signal_name(-returncode)}"
        else:
            kind, message = "crash", f"worker exited with code {returncode}"
        running, started_s = worker.running()
        crashed = worker.kill_seed if worker.kill_reason is not None else running
        if crashed not in worker.assigned:
            # Between seeds (or the seed we killed it for reported just in time): nobody to blame.
            if kind is not None:
                self._on_event("worker_died_between_seeds", "warning", {
                    "worker": worker.index, "reason": message, "requeued": len(seeds)})
            kind = None
        if kind is None:  # killed by us for a reason that is not a seed's fault (drain)
            self._source.requeue(seeds)
            return
        assert crashed is not None
        rest = [seed for seed in seeds if seed != crashed]
        self._source.requeue(rest)
        self._on_event("worker_replaced", "warning", {
            "worker": worker.index, "seed": crashed, "kind": kind, "reason": message,
            "requeued": len(rest),
        })
        result = SeedResult(
            seed=crashed, status="failed", kind=kind,
            message=f"{message} while running seed {crashed}",
            duration_s=round(max(time.monotonic() - started_s, 0.0), 6),
        )
        await self._on_result(result, worker.assigned[crashed])

    # --- limits -----------------------------------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            now = time.monotonic()
            for worker in list(self._workers.values()):
                if worker.kill_reason is None:
                    self._check_limits(worker, now)

    def _check_limits(self, worker: _Worker, now: float) -> None:
        """Kill a worker past a limit: its seed past --seed-timeout (a `timeout` failure of that
        seed), silent (no heartbeat) for longer than --seed-timeout between seeds or while
        loading, or not ready within the start-up bound (not a seed's fault: the seeds it held
        run again), or past --worker-memory-mb (an `oom` failure)."""
        view = worker.board.read()
        heard_s = view.heartbeat_s or worker.spawned_s  # no beat yet: since it was started
        silent_s = now - heard_s
        if view.seed is not None and worker.assigned:
            running_s = now - view.started_s
            if running_s > self._seed_timeout_s:
                silence = (f" (and silent for {silent_s:.1f} s: stopped or stuck)"
                           if silent_s > self._seed_timeout_s else "")
                worker.kill("timeout", f"seed ran {running_s:.1f} s, past --seed-timeout "
                                       f"{self._seed_timeout_s:g} s{silence}")
                return
        elif silent_s > (self._seed_timeout_s if view.heartbeat_s else self._startup_timeout_s):
            worker.kill(None, f"worker silent for {silent_s:.1f} s (no heartbeat; stopped or "
                              f"stuck {'while idle' if worker.ready else 'while starting'})")
            self._on_event("worker_silent", "warning", {
                "worker": worker.index, "pid": worker.proc.pid, "silent_s": round(silent_s, 1),
                "requeued": len(worker.assigned)})
            return
        if not worker.ready and now - worker.spawned_s > self._startup_timeout_s:
            worker.kill(None, f"worker not ready within {self._startup_timeout_s:g} s")
            self._on_event("worker_start_timeout", "warning", {
                "worker": worker.index, "pid": worker.proc.pid,
                "timeout_s": self._startup_timeout_s})
            return
        if not worker.assigned:
            return
        rss = rss_bytes(worker.proc.pid)
        if rss is not None and rss > self._memory_bytes:
            worker.kill("oom", f"worker RSS {rss // (1024 * 1024)} MB exceeded "
                               f"--worker-memory-mb {self._memory_bytes // (1024 * 1024)}")


async def _read_frame(reader: asyncio.StreamReader) -> Ready | Results | None:
    try:
        header = await reader.readexactly(HEADER_BYTES)
        body = await reader.readexactly(header_length(header))
    except asyncio.IncompleteReadError:
        return None
    return decode_from_worker(body)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _board_file() -> str:
    """A 16-byte file for one worker slot's board, in memory when /dev/shm is there."""
    directory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="voprd-board-", dir=directory)
    os.close(fd)
    return path
