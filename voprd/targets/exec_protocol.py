"""What an external simulator says, read leniently (pure: bytes and exit statuses in, values out).

Two protocols (docs/bring-your-own-simulator.md has the whole contract):

- json-lines: the VOPR format. A line is `{"type": ..., "data": {...}}`; an `iteration` line needs
  `data.seed` and `data.status` (`events` is expected, 0 when missing, as in the guide's own failed
  example). `status` "ok" (any case) passes, anything else fails. `kind`, `invariant`, `message`,
  `simulated_time_ms`, `trace_hash`, `timestamp` are optional; unknown fields are ignored; a field
  of the wrong type or out of range is dropped, never trusted. Anything that is not such a line
  (noise, torn JSON, an array, a number) is a `Problem`, counted and never fatal.
- exit-code: the exit status is the verdict; the output's last lines are the message.

Output is bounded: lines are cut at LINE_BYTES_MAX (the rest of a longer line is dropped), and only
the last TAIL_LINES_MAX lines of output are kept for messages and archives.
"""

from __future__ import annotations

import re
import signal
from collections import deque
from collections.abc import Sequence
from typing import Annotated, Any, get_args

import msgspec

from voprd.events import FailureKind, SeedResult

LINE_BYTES_MAX = 1024 * 1024
SEED_MAX = 2**63 - 1
COUNT_MAX = 2**53  # events, simulated_time_ms: larger values are not believed
MESSAGE_CHARS_MAX = 4000
NAME_CHARS_MAX = 200
TRACE_HASH_CHARS_MAX = 128
PROBLEM_EXCERPT_CHARS_MAX = 200
TAIL_LINES_MAX = 200
TAIL_LINE_CHARS_MAX = 1000
MESSAGE_TAIL_LINES = 5
KNOWN_LINE_TYPES = frozenset({"start", "iteration", "batch_complete", "status"})
_FAILURE_KINDS: frozenset[str] = frozenset(get_args(FailureKind))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# A binary's own word for a failure (its `kind`, else its `status`) -> voprd's kind. Words not
# listed are `invariant` (a failed check); the binary's word is kept in the message.
_KIND_OF_WORD: dict[str, FailureKind] = {
    **{word: "invariant" for word in (
        "invariant", "assertion", "assert", "safety", "violation", "failed", "fail", "failure")},
    **{word: "liveness" for word in (
        "liveness", "stuck", "deadlock", "livelock", "no_progress", "starvation")},
    **{word: "crash" for word in (
        "crash", "crashed", "panic", "panicked", "abort", "aborted", "segfault", "signal",
        "exception", "error")},
    **{word: "timeout" for word in ("timeout", "timed_out", "hang", "hung")},
    **{word: "oom" for word in ("oom", "out_of_memory")},
    **{word: "nondeterminism" for word in ("nondeterminism", "nondeterministic", "determinism")},
}
# Words that say no more than "it failed": not repeated in the message.
_PLAIN_FAILURE_WORDS = frozenset({"failed", "fail", "failure"})


class Report(msgspec.Struct, kw_only=True, frozen=True):
    """An `iteration` line, read."""

    seed: int
    ok: bool
    events: int
    simulated_time_ms: int
    trace_hash: str
    kind: FailureKind | None
    invariant: str | None
    message: str | None
    # Optional fields that were present but unusable (wrong type, out of range): named, dropped.
    dropped_fields: tuple[str, ...] = ()


class Ignored(msgspec.Struct, frozen=True):
    """A well-formed line that reports no seed (`start`, `batch_complete`, `status`, unknown)."""

    type: str
    known: bool


class Problem(msgspec.Struct, frozen=True):
    """A line that is not protocol: `kind` names the problem (a stable name), `detail` says more."""

    kind: str
    detail: str


Line = Report | Ignored | Problem


class _Envelope(msgspec.Struct):
    type: str
    data: Any = None


class _IterationCore(msgspec.Struct):
    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)]
    status: str


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def excerpt(text: bytes | str, chars_max: int = PROBLEM_EXCERPT_CHARS_MAX) -> str:
    """Printable text for logs and messages: decoded, escapes and control bytes removed, cut."""
    decoded = text.decode(errors="replace") if isinstance(text, bytes) else text
    clean = _CONTROL.sub("", _ANSI.sub("", decoded)).rstrip()
    return clean if len(clean) <= chars_max else clean[: chars_max - 1] + "…"


def _text(value: Any, chars_max: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return excerpt(text, chars_max)


def _count(data: dict[str, Any], name: str, dropped: list[str]) -> int:
    value = data.get(name)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= COUNT_MAX:
        return value
    dropped.append(name)
    return 0


def kind_of_word(word: str) -> FailureKind:
    return _KIND_OF_WORD.get(word.strip().lower().replace("-", "_").replace(" ", "_"),
                             "invariant")


def read_line(line: bytes) -> Line:
    """One output line (without its newline, at most LINE_BYTES_MAX bytes), read leniently."""
    stripped = line.strip()
    if not stripped:
        return Ignored(type="", known=True)
    if not stripped.startswith(b"{"):
        return Problem("not_json", excerpt(stripped))
    try:
        envelope = _envelope_decoder.decode(stripped)
    except msgspec.ValidationError as exc:
        return Problem("not_an_event", f"{exc}: {excerpt(stripped)}")
    except (msgspec.DecodeError, RecursionError) as exc:
        return Problem("not_json", f"{str(exc)[:100]}: {excerpt(stripped)}")
    if envelope.type != "iteration":
        return Ignored(type=excerpt(envelope.type, NAME_CHARS_MAX),
                       known=envelope.type in KNOWN_LINE_TYPES)
    data = envelope.data
    if not isinstance(data, dict):
        return Problem("bad_iteration", f"data is not an object: {excerpt(stripped)}")
    try:
        core = msgspec.convert(data, _IterationCore)
    except msgspec.ValidationError as exc:
        return Problem("bad_iteration", f"{exc}: {excerpt(stripped)}")
    return _report(core, data)


def _report(core: _IterationCore, data: dict[str, Any]) -> Report:
    dropped: list[str] = []
    events = _count(data, "events", dropped)
    simulated_time_ms = _count(data, "simulated_time_ms", dropped)
    trace_hash = data.get("trace_hash")
    if trace_hash is not None and not (
        isinstance(trace_hash, str) and len(trace_hash) <= TRACE_HASH_CHARS_MAX
    ):
        dropped.append("trace_hash")
        trace_hash = None
    passed = Report(seed=core.seed, ok=True, events=events, simulated_time_ms=simulated_time_ms,
                    trace_hash=trace_hash or "", kind=None, invariant=None, message=None,
                    dropped_fields=tuple(dropped))
    if core.status.strip().lower() == "ok":
        return passed
    kind, invariant, message = failure_of(
        status=core.status, kind=_text(data.get("kind"), NAME_CHARS_MAX),
        invariant=_text(data.get("invariant"), NAME_CHARS_MAX),
        message=_text(data.get("message"), MESSAGE_CHARS_MAX),
    )
    return msgspec.structs.replace(passed, ok=False, kind=kind, invariant=invariant,
                                   message=message)


def failure_of(
    *, status: str, kind: str | None, invariant: str | None, message: str | None
) -> tuple[FailureKind, str | None, str | None]:
    """voprd's (kind, invariant, message) for a failed iteration: `kind` as the binary said it
    (mapped), else `invariant` when an invariant is named, else the status word (mapped). A word
    that is not itself one of voprd's kinds is kept at the front of the message."""
    word: str | None
    if kind:
        word, mapped = kind, kind_of_word(kind)
    elif invariant:
        word, mapped = None, "invariant"
    else:
        word, mapped = status, kind_of_word(status)
    if word is not None:
        plain = word.strip().lower()
        if plain not in _FAILURE_KINDS and plain not in _PLAIN_FAILURE_WORDS and plain:
            message = f"{excerpt(word, NAME_CHARS_MAX)}: {message}" if message else word
    return mapped, invariant, message


# --- output bounds ----------------------------------------------------------------------------


class LineSplitter:
    """Bytes -> lines, each cut at `line_bytes_max` (the rest of a longer line is dropped and the
    line flagged as cut). Holds at most one partial line: memory is bounded whatever arrives."""

    def __init__(self, line_bytes_max: int = LINE_BYTES_MAX) -> None:
        assert line_bytes_max > 0
        self.line_bytes_max = line_bytes_max
        self._partial = bytearray()
        self._cut = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            self._take(chunk, start, newline)
            lines.append((bytes(self._partial), self._cut))
            self._partial.clear()
            self._cut = False
            start = newline + 1
        self._take(chunk, start, len(chunk))
        return lines

    def _take(self, chunk: bytes, start: int, end: int) -> None:
        room = self.line_bytes_max - len(self._partial)
        if end - start > room:
            self._cut = True
            end = start + max(room, 0)
        self._partial += chunk[start:end]

    def finish(self) -> list[tuple[bytes, bool]]:
        """The last line if the output did not end with a newline."""
        if not self._partial and not self._cut:
            return []
        line = (bytes(self._partial), self._cut)
        self._partial.clear()
        self._cut = False
        return [line]


class OutputTail:
    """The last `lines_max` non-empty lines of output (each cut to TAIL_LINE_CHARS_MAX)."""

    def __init__(self, lines_max: int = TAIL_LINES_MAX) -> None:
        self._lines: deque[str] = deque(maxlen=lines_max)

    def add(self, line: bytes) -> None:
        text = excerpt(line, TAIL_LINE_CHARS_MAX)
        if text.strip():
            self._lines.append(text)

    def clear(self) -> None:
        self._lines.clear()

    def lines(self) -> list[str]:
        return list(self._lines)


def tail_summary(lines: Sequence[str], lines_max: int = MESSAGE_TAIL_LINES) -> str:
    """The last few lines on one line (`a | b | c`), cut from the front to MESSAGE_CHARS_MAX."""
    text = " | ".join(line.strip() for line in lines[-lines_max:])
    return text if len(text) <= MESSAGE_CHARS_MAX else "…" + text[-(MESSAGE_CHARS_MAX - 1):]


# --- exit statuses ----------------------------------------------------------------------------


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(returncode: int) -> str:
    """`exited with code 3` / `was killed by signal SIGSEGV` (Popen's negative returncode)."""
    if returncode < 0:
        return f"was killed by signal {signal_name(-returncode)}"
    return f"exited with code {returncode}"


def exit_status_result(seed: int, returncode: int, tail: Sequence[str]) -> SeedResult:
    """The exit-code protocol's verdict: 0 passes; a non-zero exit is a failed check named after
    its code (`exit code 3`), its message the output's last lines; a signal is a `crash`."""
    summary = tail_summary(tail)
    trace_tail = list(tail)
    if returncode == 0:
        return SeedResult(seed=seed, status="ok")
    if returncode > 0:
        return SeedResult(
            seed=seed, status="failed", kind="invariant", invariant=f"exit code {returncode}",
            message=summary or f"exited with code {returncode} and printed nothing",
            trace_tail=trace_tail,
        )
    text = f"killed by signal {signal_name(-returncode)}"
    return SeedResult(seed=seed, status="failed", kind="crash",
                      message=f"{text}: {summary}" if summary else text, trace_tail=trace_tail)


def unreported_result(
    seed: int, how: str, tail: Sequence[str], problem: str | None = None
) -> SeedResult:
    """A json-lines seed the binary never reported, even when run alone: a `crash`. `how` says
    how its process ended (describe_exit, or that voprd stopped it)."""
    message = f"the external command {how} without reporting the seed"
    if problem:
        message += f" (last unreadable line: {problem})"
    summary = tail_summary(tail)
    if summary:
        message += f"; last output: {summary}"
    return SeedResult(seed=seed, status="failed", kind="crash", message=message,
                      trace_tail=list(tail))

