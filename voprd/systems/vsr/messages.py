"""VSR wire messages and log entries, as plain tuples (the simulator's hot path allocates many).

Every message is a tuple whose first item is its type and second its sender node id. Entries form
a hash chain: an entry's checksum covers its fields and its parent's checksum, so equal checksums
at the same op number mean equal log prefixes, and a torn or misplaced sector is detected on read.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from voprd.check.history import op_text

# An operation: (name, key, value, expected); name is get/put/append/cas, or register (a
# client's session starts: logged and executed like an operation, it changes no key).
Operation = tuple[str, str, str | None, str | None]
REGISTER: Operation = ("register", "", None, None)
# A log entry: (op, view, client_id, request_number, operation, checksum).
Entry = tuple[int, int, int, int, Operation, int]
Message = tuple[Any, ...]

E_OP, E_VIEW, E_CLIENT, E_REQUEST, E_OPERATION, E_CHECKSUM = range(6)

# Message types (index 0 of every message). On the wire each also carries, last, its checksum
# (voprd.sim.checksum.seal); the receiver verifies and strips it before reading the fields below.
# client_id: the client's session (its node id in the low byte: CLIENT_NODE_MASK); request number
# 0 registers the session.
REQUEST = 0  # (REQUEST, src, client_id, request_number, operation)
REPLY = 1  # (REPLY, src, view, client_id, request_number, result, op)
PREPARE = 2  # (PREPARE, src, view, entry, commit)
PREPARE_OK = 3  # (PREPARE_OK, src, view, op)
COMMIT = 4  # (COMMIT, src, view, commit, op_number)
START_VIEW_CHANGE = 5  # (SVC, src, view)
DO_VIEW_CHANGE = 6  # (DVC, src, view, log, last_normal_view, commit)
START_VIEW = 7  # (START_VIEW, src, view, log, commit)
RECOVERY = 8  # (RECOVERY, src, nonce)
RECOVERY_RESPONSE = 9  # (RECOVERY_RESPONSE, src, view, nonce, log | None, commit)
GET_ENTRIES = 10  # (GET_ENTRIES, src, view, after_op)
ENTRIES = 11  # (ENTRIES, src, view, entries, commit, op_number)
EVICTED = 12  # (EVICTED, src, view, client_id): the session is not in the client table
# Repair of one damaged sector of the log by checksum: any replica holding that entry answers.
REPAIR_REQUEST = 13  # (REPAIR_REQUEST, src, op, checksum)
REPAIR_REPLY = 14  # (REPAIR_REPLY, src, entry, parent checksum)

MESSAGE_NAMES: tuple[str, ...] = (
    "request", "reply", "prepare", "prepare_ok", "commit", "start_view_change",
    "do_view_change", "start_view", "recovery", "recovery_response", "get_entries", "entries",
    "evicted", "repair_request", "repair_reply",
)
# A client id (session) is its node id plus CLIENT_NODE_MASK + 1 times a session counter.
CLIENT_NODE_MASK = 0xFF


def client_node(client_id: int) -> int:
    """The node a session's replies go to."""
    return client_id & CLIENT_NODE_MASK


def session_text(client_id: int) -> str:
    """A session for the trace: its node id, then `.k` for the node's k-th later session."""
    later = client_id >> 8
    return f"{client_id & CLIENT_NODE_MASK}.{later}" if later else str(client_id)

# Bound on entries carried by one ENTRIES message (message size bound).
ENTRIES_PER_MESSAGE_MAX = 64

# The operation of an entry whose body is not in memory (evicted from the replica's cache: read it
# from the disk). Compared by identity; never a real operation.
BODY_EVICTED: Operation = ("", "", None, None)


def entry_checksum(
    op: int, view: int, client_id: int, request: int, operation: Operation, parent: int
) -> int:
    text = f"{op}|{view}|{client_id}|{request}|{operation!r}|{parent}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def make_entry(
    op: int, view: int, client_id: int, request: int, operation: Operation, parent: int
) -> Entry:
    checksum = entry_checksum(op, view, client_id, request, operation, parent)
    return (op, view, client_id, request, operation, checksum)


def entry_valid(entry: Entry, parent: int) -> bool:
    """True if the entry's checksum matches its fields and chains to `parent`."""
    op, view, client_id, request, operation, checksum = entry
    return entry_checksum(op, view, client_id, request, operation, parent) == checksum


# Entries at rest on the simulated disk (raw bytes to the engine): msgpack of the entry's fields
# followed by its parent's checksum, so a sector verifies on its own (`entry_valid` with the
# stored parent) and names its predecessor: the checksum of a damaged sector is known from the
# sector after it, which lets a replica repair it by checksum.
_sector_decoder = msgspec.msgpack.Decoder(tuple[int, int, int, int, Operation, int, int])


def encode_entry(entry: Entry, parent: int) -> bytes:
    return msgspec.msgpack.encode((*entry, parent))


def decode_entry(data: bytes) -> tuple[Entry, int] | None:
    """(entry, parent checksum) stored in `data`, or None if the bytes do not decode as one."""
    try:
        op, view, client, request, operation, checksum, parent = _sector_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None  # garbage (msgspec reports invalid UTF-8 in a string as UnicodeDecodeError)
    return (op, view, client, request, operation, checksum), parent


def describe(msg: Message) -> str:
    """A short readable rendering of a message for the trace."""
    kind = msg[0]
    name = MESSAGE_NAMES[kind]
    if kind == REQUEST:
        operation = msg[4]
        what = "register" if operation[0] == "register" else op_text(*operation)
        return f"{name} c{session_text(msg[2])}#{msg[3]} {what}"
    if kind == REPLY:
        return f"{name} v{msg[2]} c{session_text(msg[3])}#{msg[4]} op={msg[6]} -> {msg[5]!r}"
    if kind == PREPARE:
        entry = msg[3]
        return (f"{name} v{msg[2]} op={entry[0]} c{session_text(entry[2])}#{entry[3]} "
                f"commit={msg[4]}")
    if kind == PREPARE_OK:
        return f"{name} v{msg[2]} op={msg[3]}"
    if kind == COMMIT:
        return f"{name} v{msg[2]} commit={msg[3]} op={msg[4]}"
    if kind == START_VIEW_CHANGE:
        return f"{name} v{msg[2]}"
    if kind == DO_VIEW_CHANGE:
        return f"{name} v{msg[2]} ops={len(msg[3])} lnv={msg[4]} commit={msg[5]}"
    if kind == START_VIEW:
        return f"{name} v{msg[2]} ops={len(msg[3])} commit={msg[4]}"
    if kind == RECOVERY:
        return f"{name} nonce={msg[2]}"
    if kind == RECOVERY_RESPONSE:
        ops = "-" if msg[4] is None else str(len(msg[4]))
        return f"{name} v{msg[2]} ops={ops} commit={msg[5]}"
    if kind == GET_ENTRIES:
        return f"{name} v{msg[2]} after={msg[3]}"
    if kind == EVICTED:
        return f"{name} v{msg[2]} c{session_text(msg[3])}"
    if kind == REPAIR_REQUEST:
        return f"{name} op={msg[2]}"
    if kind == REPAIR_REPLY:
        return f"{name} op={msg[2][0]}"
    return f"{name} v{msg[2]} n={len(msg[3])} commit={msg[4]} op={msg[5]}"
