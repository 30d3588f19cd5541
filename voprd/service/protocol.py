"""The pipe protocol between the daemon and its worker processes (msgpack frames, length-prefixed),
and the board: a 16-byte shared file where a worker posts the seed it is running.

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
import time
from typing import BinaryIO

import msgspec

from voprd.events import SeedResult
from voprd.options import RunOptions

FRAME_BYTES_MAX = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


RESULT_FLUSH_S = 0.05
IDLE_SEED = -1
# seed (IDLE_SEED: none), time.monotonic() when it started, and a check word over both: the
# 24-byte store is not atomic, so a reader can see a new seed beside an old time (a torn read
# once blamed a fresh seed for a 6,594 s "timeout"); a read is used only when its check matches.
_BOARD = struct.Struct("<qdQ")
_BOARD_TIME = struct.Struct("<d")
BOARD_READS_MAX = 64
_MASK64 = (1 << 64) - 1


def _board_check(seed: int, started_s: float) -> int:
    """SplitMix64's finaliser over the seed and the time's bits: a torn pair fails to match."""
    time_bits: int = struct.unpack("<Q", _BOARD_TIME.pack(started_s))[0]
    z = ((seed & _MASK64) * 0x9E3779B97F4A7C15 ^ time_bits) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return int(z ^ (z >> 31))


class WorkerConfig(msgspec.Struct, kw_only=True):
    """argv[1] of a worker, JSON: what to load and its limits."""

    target: str
    exec_cmd: str | None
    options: RunOptions
    memory_mb: int
    board_path: str = ""


class Board:
    """The seed a worker is running and since when (CLOCK_MONOTONIC is shared by all processes).

    Written by the worker before each seed (no syscall: a store into a shared mapping); read by
    the supervisor only when it checks limits, handles a death or dumps status."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < _BOARD.size:
                os.ftruncate(fd, _BOARD.size)
            self._map = mmap.mmap(fd, _BOARD.size)
        finally:
            os.close(fd)

    def post(self, seed: int, started_s: float | None = None) -> None:
        started = time.monotonic() if started_s is None else started_s
        _BOARD.pack_into(self._map, 0, seed, started, _board_check(seed, started))

    def read(self) -> tuple[int, float]:
        """(seed, started_s) from a read whose check word matches, so a write in progress is never
        used. If every read is torn (the worker is mid-post each time), the seed counts as just
        started: a limit is then checked again at the next look, never enforced on a torn time."""
        seed, started_s = IDLE_SEED, time.monotonic()
        for _ in range(BOARD_READS_MAX):
            seed, started_s, check = _BOARD.unpack_from(self._map, 0)
            if check == _board_check(seed, started_s):
                return int(seed), float(started_s)
        return int(seed), time.monotonic()

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
