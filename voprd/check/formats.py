"""History readers: Porcupine's Jepsen etcd logs, Porcupine's kv format, voprd JSON lines.

Every reader turns text into a list of `Operation`s on one time line (a line's position is its
time for the two Porcupine formats; `call_us`/`return_us` for voprd's format). A malformed line
raises `HistoryParseError` naming the file and the line number. `detect_format` picks the reader
from the first non-blank line: `INFO ... jepsen.util` -> etcd, `{:` -> kv, `{"` -> voprd; an
empty (or blank) file is the format `empty`, trivially linearizable under any model.

Unknown outcomes, as the data README says: a call still open at the end of the file, or closed by
an `:info` line, never returned (`ret=None`: it may take effect at any time after its call, or
never); `:fail :read :timed-out` ends the read there with an unknown result. Extensions beyond
the README, following Jepsen's meaning of the types: any `:info` return is an unknown outcome;
a `:fail` of a write/put/append (or any return whose value is `:timed-out` other than a read's)
is treated conservatively as an unknown outcome; `:nemesis` lines of an etcd log are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from voprd.check.history import HistoryOp
from voprd.check.models import Operation, Value

FormatName = Literal["etcd", "kv", "voprd", "empty"]
DEFAULT_MODEL: dict[str, str] = {"etcd": "register", "kv": "kv", "voprd": "kv", "empty": "kv"}


class HistoryParseError(ValueError):
    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line


@dataclass(frozen=True)
class History:
    format: FormatName
    ops: list[Operation]


def detect_format(text: str, file: str = "<history>") -> FormatName:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("INFO") and "jepsen.util" in stripped:
            return "etcd"
        if re.match(r"\{\s*:", stripped):
            return "kv"
        if re.match(r"\{\s*\"", stripped):
            return "voprd"
        raise HistoryParseError(
            file, number, "cannot detect the history format (expected a Jepsen etcd log line, "
            "a Porcupine kv map or a voprd JSON object)"
        )
    return "empty"


def parse_history(text: str, file: str = "<history>") -> History:
    fmt = detect_format(text, file)
    if fmt == "etcd":
        return History(fmt, parse_etcd(text, file))
    if fmt == "kv":
        return History(fmt, parse_kv(text, file))
    if fmt == "voprd":
        return History(fmt, parse_voprd(text, file))
    return History(fmt, [])


def load_history(path: Path) -> History:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HistoryParseError(str(path), 0, f"not UTF-8 text: {exc}") from None
    return parse_history(text, str(path))


class _Open:
    """A call seen on a line, waiting for its return."""

    __slots__ = ("expected", "f", "key", "line", "process", "value")

    def __init__(
        self, process: int, f: str, key: str, value: Value | None, expected: Value | None,
        line: int,
    ) -> None:
        self.process, self.f, self.key = process, f, key
        self.value, self.expected, self.line = value, expected, line

    def close(self, ret: int | None, output: Value | bool | None, unknown: bool) -> Operation:
        return Operation(
            process=self.process, f=self.f, key=self.key, value=self.value,
            expected=self.expected, output=output, unknown=unknown, call=self.line, ret=ret,
            line=self.line,
        )


def _check_idle(open_calls: dict[int, _Open], process: int) -> None:
    if process in open_calls:
        raise ValueError(f"process {process} invokes while its call on line "
                         f"{open_calls[process].line} is still open")


def _take_open(open_calls: dict[int, _Open], process: int, kind: str) -> _Open:
    if kind not in ("ok", "fail", "info"):
        raise ValueError(f"unknown type :{kind}")
    call = open_calls.pop(process, None)
    if call is None:
        raise ValueError(f"process {process} returns (:{kind}) with no open call")
    return call


def _finish(open_calls: dict[int, _Open], done: list[Operation]) -> list[Operation]:
    for call in open_calls.values():
        done.append(call.close(None, None, True))
    done.sort(key=lambda op: op.call)
    return done


_ETCD_LINE = re.compile(
    r"^INFO[ \t]+jepsen\.util[ \t]+-[ \t]+(\S+)[ \t]+:(\w+)[ \t]+:(\w+)(?:[ \t]+(.*?))?[ \t]*$"
)
_INT = re.compile(r"-?\d+")
_PAIR = re.compile(r"\[[ \t]*(-?\d+|nil)[ \t,]+(-?\d+|nil)[ \t]*\]")
_TIMED_OUT = ":timed-out"


def _etcd_scalar(text: str) -> Value | None:
    if text == "nil":
        return None
    if _INT.fullmatch(text):
        return int(text)
    raise ValueError(f"expected nil or an integer, got {text!r}")


def parse_etcd(text: str, file: str = "<history>") -> list[Operation]:
    """Porcupine's Jepsen etcd logs: one register, read/write/cas with integer values."""
    open_calls: dict[int, _Open] = {}
    done: list[Operation] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _ETCD_LINE.match(line)
        if match is None:
            raise HistoryParseError(file, number, f"not a Jepsen etcd log line: {line!r}")
        proc_text, kind, f, raw = match.group(1), match.group(2), match.group(3), match.group(4)
        raw = raw or ""
        if proc_text == ":nemesis":
            continue
        if not _INT.fullmatch(proc_text):
            raise HistoryParseError(file, number, f"process must be an integer: {proc_text!r}")
        process = int(proc_text)
        if f not in ("read", "write", "cas"):
            raise HistoryParseError(file, number, f"unknown function :{f}")
        try:
            _etcd_event(open_calls, done, process, kind, f, raw, number)
        except ValueError as exc:
            raise HistoryParseError(file, number, str(exc)) from None
    return _finish(open_calls, done)


def _etcd_event(
    open_calls: dict[int, _Open], done: list[Operation], process: int, kind: str, f: str,
    raw: str, number: int,
) -> None:
    if kind == "invoke":
        _check_idle(open_calls, process)
        if f == "read":
            open_calls[process] = _Open(process, f, "", None, None, number)
        elif f == "write":
            value = _etcd_scalar(raw)
            if value is None:
                raise ValueError("write needs an integer value")
            open_calls[process] = _Open(process, f, "", value, None, number)
        else:
            pair = _PAIR.fullmatch(raw)
            if pair is None:
                raise ValueError(f"cas needs [EXPECTED NEW], got {raw!r}")
            new = _etcd_scalar(pair.group(2))
            open_calls[process] = _Open(
                process, f, "", new, _etcd_scalar(pair.group(1)), number
            )
        return
    call = _take_open(open_calls, process, kind)
    if call.f != f:
        raise ValueError(f"return :{f} does not match the open call :{call.f} (line {call.line})")
    if kind == "info" or (raw == _TIMED_OUT and f != "read"):
        done.append(call.close(None, None, True))
    elif kind == "fail" and f == "read":
        done.append(call.close(number, None, True))
    elif f == "read":
        done.append(call.close(number, _etcd_scalar(raw), False))
    elif f == "cas":
        done.append(call.close(number, kind == "ok", False))
    elif kind == "ok":
        done.append(call.close(number, None, False))
    else:
        done.append(call.close(None, None, True))


_EDN_PAIR = re.compile(
    r"[ \t]*,?[ \t]*:([\w.*+!?<>=/-]+)[ \t]+"
    r"(nil|true|false|-?\d+|:[\w.*+!?<>=/-]+|\"(?:[^\"\\]|\\.)*\")"
)
_EDN_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _edn_value(token: str) -> Any:
    if token == "nil":
        return None
    if token in ("true", "false"):
        return token == "true"
    if token.startswith(":"):
        return ("keyword", token[1:])
    if token.startswith('"'):
        return re.sub(r"\\(.)", lambda m: _EDN_ESCAPES.get(m.group(1), m.group(1)), token[1:-1])
    return int(token)


def _edn_map(line: str) -> dict[str, Any]:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("expected an EDN map {...}")
    body, pos, fields = text[1:-1], 0, {}
    while body[pos:].strip(" \t,"):
        match = _EDN_PAIR.match(body, pos)
        if match is None:
            raise ValueError(f"cannot read the map at {body[pos:pos + 30]!r}")
        fields[match.group(1)] = _edn_value(match.group(2))
        pos = match.end()
    return fields


def parse_kv(text: str, file: str = "<history>") -> list[Operation]:
    """Porcupine's kv format: `{:process P, :type T, :f F, :key "K", :value V}` per line."""
    open_calls: dict[int, _Open] = {}
    done: list[Operation] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            _kv_event(open_calls, done, _edn_map(line), number)
        except ValueError as exc:
            raise HistoryParseError(file, number, str(exc)) from None
    return _finish(open_calls, done)


def _kv_event(
    open_calls: dict[int, _Open], done: list[Operation], fields: dict[str, Any], number: int
) -> None:
    for name in ("process", "type", "f", "key"):
        if name not in fields:
            raise ValueError(f"missing :{name}")
    process, kind, f, key = fields["process"], fields["type"], fields["f"], fields["key"]
    value = fields.get("value")
    if not isinstance(process, int) or isinstance(process, bool):
        raise ValueError(f":process must be an integer, got {process!r}")
    if not (isinstance(kind, tuple) and isinstance(f, tuple)):
        raise ValueError(":type and :f must be keywords")
    kind, f = kind[1], f[1]
    if f not in ("get", "put", "append"):
        raise ValueError(f"unknown function :{f}")
    if not isinstance(key, str):
        raise ValueError(f":key must be a string, got {key!r}")
    if value is not None and not isinstance(value, str) and value != ("keyword", "timed-out"):
        raise ValueError(f":value must be a string or nil, got {value!r}")
    if kind == "invoke":
        _check_idle(open_calls, process)
        if f == "get":
            open_calls[process] = _Open(process, f, key, None, None, number)
        else:
            if not isinstance(value, str):
                raise ValueError(f":{f} needs a string :value")
            open_calls[process] = _Open(process, f, key, value, None, number)
        return
    call = _take_open(open_calls, process, kind)
    if (call.f, call.key) != (f, key):
        raise ValueError(f"return :{f} {key!r} does not match the open call :{call.f} "
                         f"{call.key!r} (line {call.line})")
    if kind == "ok" and f == "get":
        if not (value is None or isinstance(value, str)):
            raise ValueError(f"get returned {value!r}")
        done.append(call.close(number, value, False))
    elif kind == "ok":
        done.append(call.close(number, None, False))
    elif f == "get":
        done.append(call.close(number, None, True))
    else:
        done.append(call.close(None, None, True))


_VOPRD_DECODER = msgspec.json.Decoder(HistoryOp)


def parse_voprd(text: str, file: str = "<history>") -> list[Operation]:
    """voprd's JSON lines (`voprd.check.history.HistoryOp`)."""
    records: list[tuple[int, HistoryOp]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, _VOPRD_DECODER.decode(line)))
        except msgspec.DecodeError as exc:
            raise HistoryParseError(file, number, str(exc)) from None
    try:
        return from_history_ops(records)
    except HistoryOpError as exc:
        raise HistoryParseError(file, exc.line, str(exc)) from None


class HistoryOpError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


_VALUE_OPS = ("put", "append", "write", "cas")


def from_history_ops(records: Iterable[tuple[int, HistoryOp]]) -> list[Operation]:
    """HistoryOps (with their line or index numbers) -> Operations on one time line.

    Events at the same microsecond are ordered calls first: operations that touch in time count
    as concurrent (the permissive reading, as Porcupine does). An unknown outcome (`return_us`
    null, or a cas with a return but no output) may take effect any time after the call, or never.
    """
    staged: list[tuple[int, HistoryOp]] = []
    for line, record in records:
        if record.op in _VALUE_OPS and record.value is None:
            raise HistoryOpError(line, f"{record.op} needs a value")
        if record.op == "cas" and record.expected is None:
            raise HistoryOpError(line, "cas needs an expected value")
        if record.return_us is not None and record.return_us < record.call_us:
            raise HistoryOpError(line, "return_us is before call_us")
        if record.op == "cas" and record.output is not None and not isinstance(
            record.output, bool
        ):
            raise HistoryOpError(line, "a cas output must be true, false or null")
        if record.op in ("get", "read") and isinstance(record.output, bool):
            raise HistoryOpError(line, f"a {record.op} output must be a string or null")
        staged.append((line, record))
    events: list[tuple[int, int, int]] = []
    for index, (_line, record) in enumerate(staged):
        events.append((record.call_us, 0, index))
        if record.return_us is not None:
            events.append((record.return_us, 1, index))
    events.sort()
    call_pos = [0] * len(staged)
    ret_pos: list[int | None] = [None] * len(staged)
    for position, (_time, kind, index) in enumerate(events, start=1):
        if kind == 0:
            call_pos[index] = position
        else:
            ret_pos[index] = position
    ops: list[Operation] = []
    for index, (line, record) in enumerate(staged):
        ret = ret_pos[index]
        unknown = ret is None or (record.op == "cas" and record.output is None)
        if unknown and record.op not in ("get", "read"):
            ret = None
        ops.append(Operation(
            process=record.process, f=record.op, key=record.key, value=record.value,
            expected=record.expected, output=None if unknown else record.output,
            unknown=unknown, call=call_pos[index], ret=ret, line=line,
        ))
    return ops
