"""Deterministic test targets for the daemon's tests and benchmark (loaded as module:attribute).

Knobs come from the environment so a daemon started by a test passes them to its workers:
VOPRD_TEST_RUN_LOG (append each seed run, one per line), VOPRD_TEST_WORK_MS (sleep per seed),
VOPRD_TEST_FAIL_EVERY (seed % N == N-1 fails; default 7), VOPRD_TEST_LOAD_MS (sleep when the target
is loaded, in the daemon and in each worker: a slow start-up), VOPRD_TEST_CAUSES (K > 1: failures
cycle through K distinct invariants cause_a, cause_b, ..., so K fingerprints),
VOPRD_TEST_RESULT_LOG (append "seed unix_time" as each failed result is returned: the start of
an alert's latency).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import time

from voprd.events import SeedResult
from voprd.options import RunOptions


def _log_run(seed: int) -> None:
    path = os.environ.get("VOPRD_TEST_RUN_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{seed}\n".encode())
        finally:
            os.close(fd)


def _letters(number: int) -> str:
    """0 -> a, 25 -> z, 26 -> ba, ...: a name without digits (a fingerprint normalises those)."""
    text = ""
    while True:
        number, digit = divmod(number, 26)
        text = "abcdefghijklmnopqrstuvwxyz"[digit] + text
        if number == 0:
            return text


def _ok(seed: int) -> SeedResult:
    trace = hashlib.sha256(str(seed).encode()).hexdigest()[:16]
    return SeedResult(seed=seed, status="ok", events=100 + seed % 13,
                      simulated_time_ms=seed * 3 % 1000, trace_hash=trace)


class Flaky:
    """Passes, except seeds with seed % N == N-1 fail the `agreement` invariant."""

    name = "flaky"

    def __init__(self) -> None:
        load_ms = float(os.environ.get("VOPRD_TEST_LOAD_MS", "0"))
        if load_ms:
            time.sleep(load_ms / 1000)

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        _log_run(seed)
        work_ms = float(os.environ.get("VOPRD_TEST_WORK_MS", "2"))
        if work_ms:
            time.sleep(work_ms / 1000)
        every = int(os.environ.get("VOPRD_TEST_FAIL_EVERY", "7"))
        if seed % every == every - 1:
            causes = int(os.environ.get("VOPRD_TEST_CAUSES", "1"))
            invariant = "agreement" if causes <= 1 else f"cause_{_letters(seed // every % causes)}"
            result_log = os.environ.get("VOPRD_TEST_RESULT_LOG")
            if result_log:
                with open(result_log, "a") as log:
                    log.write(f"{seed} {time.time():.6f}\n")
            return SeedResult(
                seed=seed, status="failed", kind="invariant", invariant=invariant,
                message=f"replicas {seed % 3} and {(seed + 1) % 3} committed different ops at "
                        f"op {seed * 7}",
                events=50, history=[{"process": 1, "op": "put", "key": "k", "value": str(seed),
                                     "call_us": 1, "return_us": 2}],
                trace_tail=[f"t={i} replica {i % 3} event" for i in range(5)],
            )
        return _ok(seed)


class Misbehaving:
    """Seed 3: SIGKILLs itself. Seed 5: segfaults. Seed 7: hangs. Seed 9: allocates without bound.
    Seed 11: raises. Others pass."""

    name = "misbehaving"

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        _log_run(seed)
        if seed == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        if seed == 5:
            ctypes.string_at(0)
        if seed == 7:
            while True:
                time.sleep(1)
        if seed == 9:
            hoard = []
            while True:
                hoard.append(bytearray(32 * 1024 * 1024))
                time.sleep(0.001)
        if seed == 11:
            self._explode(seed)
        return _ok(seed)

    @staticmethod
    def _explode(seed: int) -> None:
        raise KeyError(f"client {seed} missing from table")


class Burn:
    """CPU-bound and deterministic: ~VOPRD_BENCH_ROUNDS sha256 rounds per seed (benchmarks)."""

    name = "burn"

    def run(self, seed: int, options: RunOptions) -> SeedResult:
        rounds = int(os.environ.get("VOPRD_BENCH_ROUNDS", "30000"))
        digest = seed.to_bytes(8, "little")
        for _ in range(rounds):
            digest = hashlib.sha256(digest).digest()
        return SeedResult(seed=seed, status="ok", events=rounds, trace_hash=digest.hex()[:16])
