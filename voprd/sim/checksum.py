"""Message checksums for systems: `seal` a message when sending, `unseal` it when receiving.

A system that declares `System.message_checksums = True` has its messages corrupted in flight by
the `corrupt` fault class (one leaf of the payload changed, shape and types kept: plausible data).
These two functions are the easy correct path: `seal(msg)` appends a checksum of the message
(zlib's crc32 over its msgpack encoding), `unseal(msg)` returns the message without it, or
None when it does not match (drop the message: the sender retries like after a loss). Messages
must be msgpack-encodable (tuples, lists, str, bytes, int, float, bool, None, dicts of those);
what `unseal` returns is a plain tuple.
"""

from __future__ import annotations

from zlib import crc32

import msgspec

from voprd.sim.system import Message

_encode = msgspec.msgpack.Encoder().encode


def checksum(msg: Message) -> int:
    return crc32(_encode(msg))


def seal(msg: Message) -> Message:
    """`msg` with its checksum appended as its last item."""
    return (*msg, crc32(_encode(msg)))


def unseal(msg: Message) -> Message | None:
    """The message `seal` was given, or None if the checksum does not match (corrupted)."""
    body = msg[:-1]
    try:
        return body if crc32(_encode(body)) == msg[-1] else None
    except (TypeError, ValueError, msgspec.EncodeError):  # a corrupted leaf that cannot encode
        return None
