"""A worker process: loads the target once, then runs the seeds the daemon assigns, one at a time.

Started by the supervisor as `python -m voprd.service.worker CONFIG_JSON`. Frames go over the
original stdout; fd 1 is then pointed at stderr so a target that prints cannot corrupt the protocol.
An exception in the target is a `crash` result (with its traceback as trace tail); MemoryError
(RLIMIT_AS, set from --worker-memory-mb) is an `oom` result. Anything worse kills the process and
the supervisor records it.
"""

from __future__ import annotations

import faulthandler
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import msgspec

from voprd import procs
from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.service.protocol import (
    HEARTBEAT_S,
    RESULT_FLUSH_S,
    Board,
    Ready,
    Results,
    WorkerConfig,
    frame,
    read_assign,
)
from voprd.targets.base import Target
from voprd.targets.loader import BatchTarget, load_target

TRACE_LINES_MAX = 200
# Address space is a blunt limit (it counts mappings, not use); the supervisor polls RSS against the
# exact limit, and this backstop only stops a runaway allocation before it hurts the machine.
ADDRESS_SPACE_HEADROOM_MB = 256


def _vm_size_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _limit_memory(memory_mb: int) -> None:
    limit = _vm_size_bytes() + (memory_mb + ADDRESS_SPACE_HEADROOM_MB) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:  # inherited (a worker inside a worker): only lower it
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run_one(target: Target, seed: int, options: RunOptions) -> SeedResult:
    started = time.perf_counter()
    try:
        result = target.run(seed, options)
    except MemoryError:
        result = SeedResult(
            seed=seed, status="failed", kind="oom",
            message="MemoryError: worker memory limit (--worker-memory-mb address space) reached",
        )
    except Exception as exc:  # any bug in the target is a finding, not a worker failure
        lines = traceback.format_exception(exc)
        result = SeedResult(
            seed=seed, status="failed", kind="crash",
            message=f"{type(exc).__name__}: {exc}",
            trace_tail=[line.rstrip("\n") for line in lines][-TRACE_LINES_MAX:],
        )
    if result.duration_s == 0.0:
        result.duration_s = time.perf_counter() - started
    assert result.seed == seed, f"target returned seed {result.seed} for {seed}"
    return result


def results_for(
    target: Target, seeds: Sequence[int], options: RunOptions, board: Board
) -> Iterator[SeedResult]:
    """Run `seeds`, posting on the board the seed that is running (for a batch target: the lowest
    seed it has not reported yet, since the time of its last report)."""
    if isinstance(target, BatchTarget):
        remaining = sorted(seeds)
        board.post(remaining[0])
        for result in target.run_batch(seeds, options):
            if result.seed in remaining:
                remaining.remove(result.seed)
            board.post(remaining[0] if remaining else None)
            yield result
    else:
        for seed in seeds:
            board.post(seed)
            yield run_one(target, seed, options)
    board.post(None)


def _heartbeat(board: Board, stop: threading.Event) -> None:
    """Beat on the board every HEARTBEAT_S while the process lives (loading, idle or busy): a
    worker that stops beating (SIGSTOP, a hang that holds the GIL) is replaced."""
    board.beat()
    while not stop.wait(HEARTBEAT_S):
        board.beat()


def serve(config: WorkerConfig, commands: BinaryIO, replies: BinaryIO) -> None:
    board = Board(config.board_path)
    stop_beating = threading.Event()
    beater = threading.Thread(target=_heartbeat, args=(board, stop_beating),
                              name="voprd-heartbeat", daemon=True)
    beater.start()
    try:
        _serve(config, board, commands, replies)
    finally:
        stop_beating.set()


def _serve(config: WorkerConfig, board: Board, commands: BinaryIO, replies: BinaryIO) -> None:
    target = load_target(config.target, config.exec_cmd)
    if not isinstance(target, BatchTarget):
        # A batch target runs external processes, which would inherit the limit: address-space
        # needs differ wildly between runtimes, so they are not limited this way.
        _limit_memory(config.memory_mb)
    replies.write(frame(Ready(pid=os.getpid())))
    replies.flush()
    outbox = _Outbox(replies)
    flusher = threading.Thread(target=outbox.run, name="voprd-results", daemon=True)
    flusher.start()
    try:
        while (assign := read_assign(commands)) is not None and assign.seeds:
            for result in results_for(target, assign.seeds, config.options, board):
                outbox.add(result)
            outbox.flush()
    finally:
        outbox.stop()
        flusher.join()


class _Outbox:
    """Results go out in groups: every RESULT_FLUSH_S from a small thread (so a result is never
    held back by a long seed after it) and at the end of each assignment."""

    def __init__(self, replies: BinaryIO) -> None:
        self._replies = replies
        self._lock = threading.Lock()
        self._pending: list[SeedResult] = []
        self._stopped = threading.Event()

    def add(self, result: SeedResult) -> None:
        with self._lock:
            self._pending.append(result)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._replies.write(frame(Results(results=self._pending)))
                self._replies.flush()
                self._pending = []

    def run(self) -> None:
        while not self._stopped.wait(RESULT_FLUSH_S):
            self.flush()

    def stop(self) -> None:
        self._stopped.set()
        self.flush()


def _die_with_parent() -> None:
    """Linux PR_SET_PDEATHSIG: a worker must not outlive a daemon that was SIGKILLed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the daemon died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent()
    procs.claim_descendants()  # what an external run leaves behind is swept after it
    config = msgspec.json.decode(argv[0], type=WorkerConfig)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    faulthandler.enable()
    serve(config, sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
