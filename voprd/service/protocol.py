"""The pipe protocol between the daemon and its worker processes (msgpack frames, length-prefixed).

daemon -> worker: `Assign` (seeds to run, in order; an empty list means: exit).
worker -> daemon: `Ready` once the target is loaded, then one `Result` per seed, in any order.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import msgspec

from voprd.events import SeedResult
from voprd.options import RunOptions

FRAME_BYTES_MAX = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class WorkerConfig(msgspec.Struct, kw_only=True):
    """argv[1] of a worker, JSON: what to load and its limits."""

    target: str
    exec_cmd: str | None
    options: RunOptions
    memory_mb: int


class Assign(msgspec.Struct, tag="assign"):
    seeds: list[int]


class Ready(msgspec.Struct, tag="ready"):
    pid: int


class Result(msgspec.Struct, tag="result"):
    result: SeedResult


ToWorker = Assign
FromWorker = Ready | Result

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_from_worker = msgspec.msgpack.Decoder(FromWorker)


def frame(message: Assign | Ready | Result) -> bytes:
    body = _encoder.encode(message)
    assert len(body) <= FRAME_BYTES_MAX
    return _HEADER.pack(len(body)) + body


def decode_from_worker(body: bytes) -> Ready | Result:
    message: Ready | Result = _from_worker.decode(body)
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
