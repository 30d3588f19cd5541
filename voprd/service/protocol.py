"""The pipe protocol between the daemon and its worker processes (msgpack frames, length-prefixed),
and the board: a small shared file where a worker posts the seed it is running and its heartbeat.

daemon -> worker: `Assign` (seeds to run, in order; an empty list means: exit).
worker -> daemon: `Ready` once the target is loaded, then `Results` (one or more seeds each, in any
order). A worker sends results at least every RESULT_FLUSH_S and at the end of each assignment;
because the board, not the pipe, says which seed is running, results can be coalesced without
losing the ability to blame the right seed when a worker dies or hangs.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from typing import BinaryIO

import msgspec

from voprd.events import SeedResult
from voprd.options import RunOptions

FRAME_BYTES_MAX = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


RESULT_FLUSH_S = 0.05
HEARTBEAT_S = 0.5  # a worker's heartbeat thread posts this often, idle or busy
# seed (unsigned 64-bit), whether it is running (0: the worker is between seeds), time.monotonic()
# when it started, the worker's last heartbeat, and a check word over all four: the 40-byte store
# is not atomic, so a reader can see a new seed beside an old time (a torn read once blamed a
# fresh seed for a 6,594 s "timeout"); a read is used only when its check matches.
_BOARD = struct.Struct("<QQddQ")
_FLOAT_BITS = struct.Struct("<d")
BOARD_READS_MAX = 64
_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _bits(value: float) -> int:
    return int.from_bytes(_FLOAT_BITS.pack(value), "little")


def _board_check(seed: int, running: int, started_s: float, heartbeat_s: float) -> int:
    """A hash of the four fields: a torn mix of two stores fails to match."""
    z = _mix64((seed * 0x9E3779B97F4A7C15 ^ running) & _MASK64)
    z = _mix64(z ^ _bits(started_s))
    return _mix64(z ^ _bits(heartbeat_s))


class WorkerConfig(msgspec.Struct, kw_only=True):
    """argv[1] of a worker, JSON: what to load and its limits."""

    target: str
    exec_cmd: str | None
    options: RunOptions
    memory_mb: int
    board_path: str = ""


class BoardView(msgspec.Struct, frozen=True):
    """One consistent read of a board."""

    seed: int | None  # the seed running now; None between seeds
    started_s: float  # since when (time.monotonic(), shared by all processes)
    heartbeat_s: float  # the worker's last heartbeat; 0.0: none yet


class Board:
    """The seed a worker is running, since when, and the worker's heartbeat.

    Written by the worker (the seed before each one, from its main thread; the heartbeat every
    HEARTBEAT_S from a small thread, so a worker stopped or stuck anywhere, even before its first
    seed, goes silent); no syscall, a store into a shared mapping. Read by the supervisor when it
    checks limits and liveness, handles a death or dumps status."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < _BOARD.size:
                os.ftruncate(fd, _BOARD.size)
            self._map = mmap.mmap(fd, _BOARD.size)
        finally:
            os.close(fd)
        # The worker's two writers (seed, heartbeat) store whole records of the same values.
        self._lock = threading.Lock()
        self._seed, self._running, self._started_s, self._heartbeat_s = 0, 0, 0.0, 0.0

    def _store(self) -> None:
        _BOARD.pack_into(self._map, 0, self._seed, self._running, self._started_s,
                         self._heartbeat_s, _board_check(self._seed, self._running,
                                                         self._started_s, self._heartbeat_s))

    def reset(self) -> None:
        """A fresh board for a new worker: idle, no heartbeat yet."""
        with self._lock:
            self._seed, self._running, self._started_s, self._heartbeat_s = 0, 0, 0.0, 0.0
            self._store()

    def post(self, seed: int | None, started_s: float | None = None) -> None:
        """The worker runs `seed` from now (or `started_s`); None: between seeds."""
        assert seed is None or 0 <= seed <= _MASK64, seed
        started = time.monotonic() if started_s is None else started_s
        with self._lock:
            self._seed, self._running = (0, 0) if seed is None else (seed, 1)
            self._started_s = started
            self._store()

    def beat(self, now_s: float | None = None) -> None:
        with self._lock:
            self._heartbeat_s = time.monotonic() if now_s is None else now_s
            self._store()

    def read(self) -> BoardView:
        """A read whose check word matches, so a write in progress is never used. If every read
        is torn (the worker is mid-store each time), the seed counts as just started and the
        worker as just heard from: a limit is then checked again at the next look, never
        enforced on a torn time."""
        for _ in range(BOARD_READS_MAX):
            seed, running, started_s, heartbeat_s, check = _BOARD.unpack_from(self._map, 0)
            if check == _board_check(seed, running, started_s, heartbeat_s):
                return BoardView(seed if running else None, started_s, heartbeat_s)
        now_s = time.monotonic()
        return BoardView(seed if running else None, now_s, now_s)

    def close(self) -> None:
        self._map.close()


class Assign(msgspec.Struct, tag="assign"):
    seeds: list[int]


class Ready(msgspec.Struct, tag="ready"):
    pid: int


class Results(msgspec.Struct, tag="results"):
    results: list[SeedResult]


ToWorker = Assign
FromWorker = Ready | Results

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)


def frame(message: Assign | Ready | Results) -> bytes:
    body = _encoder.encode(message)
    assert len(body) <= FRAME_BYTES_MAX
    return _HEADER.pack(len(body)) + body


def decode_from_worker(body: bytes) -> Ready | Results:
    message: Ready | Results = _from_worker.decode(body)
    return message


def header_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > FRAME_BYTES_MAX:
        raise ValueError(f"frame of {length} bytes exceeds {FRAME_BYTES_MAX}")
    return int(length)


HEADER_BYTES = _HEADER.size


def read_assign(stream: BinaryIO) -> Assign | None:
    """Blocking read of one Assign (worker side); None at end of input."""
    header = stream.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None
    body = stream.read(header_length(header))
    return _to_worker.decode(body)
