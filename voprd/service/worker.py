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
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import msgspec

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.service.protocol import Ready, Result, WorkerConfig, frame, read_assign
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
            message="MemoryError: worker address-space limit reached",
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


def results_for(target: Target, seeds: Sequence[int], options: RunOptions) -> Iterator[SeedResult]:
    if isinstance(target, BatchTarget):
        yield from target.run_batch(seeds, options)
    else:
        for seed in seeds:
            yield run_one(target, seed, options)


def serve(config: WorkerConfig, commands: BinaryIO, replies: BinaryIO) -> None:
    target = load_target(config.target, config.exec_cmd)
    if not isinstance(target, BatchTarget):
        # A batch target runs external processes, which would inherit the limit: address-space
        # needs differ wildly between runtimes, so they are not limited this way.
        _limit_memory(config.memory_mb)
    replies.write(frame(Ready(pid=os.getpid())))
    replies.flush()
    while (assign := read_assign(commands)) is not None and assign.seeds:
        for result in results_for(target, assign.seeds, config.options):
            replies.write(frame(Result(result=result)))
            replies.flush()


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
    config = msgspec.json.decode(argv[0], type=WorkerConfig)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    faulthandler.enable()
    serve(config, sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
