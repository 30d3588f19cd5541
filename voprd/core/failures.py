"""Failure fingerprints, alert deduplication and the alert text (pure: time is passed in).

Fingerprint = kind + invariant + message with numbers and ids normalised; for crashes also the
exception type and the innermost frames of our code (not the standard library, not site-packages),
so the same bug found by two seeds has one fingerprint. The first occurrence of a fingerprint is
alerted at once; repeats are counted and summarised in the next alert or in a digest sent at most
once per cooldown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import msgspec

from voprd.core.records import AlertState
from voprd.text import cut_utf8, one_line, printable_lines

CRASH_FRAMES_MAX = 3
SUPPRESSED_SEEDS_KEPT_MAX = 10
FINGERPRINT_HEX_CHARS = 16
DEFAULT_COOLDOWN_S = 3600.0
# The alert shows at most this much of a failure's message (the archive keeps all of it).
ALERT_MESSAGE_BYTES_MAX = 4096
ALERT_NAME_CHARS_MAX = 200
# Continuation lines of a message are indented under `Message:`: no text from a target can start
# a line of the alert's own fields.
MESSAGE_INDENT = "  "

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_HEX_ADDR = re.compile(r"\b0x[0-9a-fA-F]+\b")
_LONG_HEX = re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)
# An absolute (or ./, ../, ~/) path; a source file's name is kept (`<path>/raft.rs`), since which
# file failed is part of the cause, and the directory (a build or temporary directory) is not.
_PATH = re.compile(r"(?<![\w.:/~])(?:~|\.{1,2})?(?:/[^\s/:'\"(),;\[\]{}<>|]+)+/?")
_SOURCE_FILE = re.compile(
    r"[A-Za-z_][\w.-]*\.(?:c|cc|cpp|cxx|h|hh|hpp|rs|go|zig|py|java|kt|scala|js|ts|rb|ex|exs|erl|"
    r"hs|ml|swift|cs|fs|nim|d|v)"
)
_DURATION = re.compile(
    r"\b(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+\b"
    r"|\b\d+(?:\.\d+)? ?(?:ns|us|µs|ms|msecs?|secs?|seconds?|mins?|minutes?|hours?)\b"
)
# An exit code or a signal number names the cause: it stays; every other number goes.
_NUMBER_OR_CAUSE = re.compile(
    r"(?P<cause>\b(?:exit(?:ed)?(?: with)? (?:code|status)|signal) -?\d+\b)|-?\d+(?:\.\d+)?"
)
_FRAME = re.compile(r'File "(?P<path>[^"]+)", line \d+, in (?P<function>\S+)')


def _path(match: re.Match[str]) -> str:
    name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
    return f"<path>/{name}" if _SOURCE_FILE.fullmatch(name) else "<path>"


def normalise_message(message: str) -> str:
    """Replace timestamps, paths, ids, addresses, hashes, durations and numbers (seeds, counts,
    line numbers; not exit codes or signal numbers): messages differing only in them compare
    equal."""
    text = _TIMESTAMP.sub("<time>", message)
    text = _PATH.sub(_path, text)
    text = _UUID.sub("<id>", text)
    text = _HEX_ADDR.sub("<addr>", text)
    text = _LONG_HEX.sub("<hex>", text)
    text = _DURATION.sub("<dur>", text)
    text = _NUMBER_OR_CAUSE.sub(lambda match: match.group("cause") or "<n>", text)
    return " ".join(text.split())


def _is_our_code(path: str) -> bool:
    return not (
        "site-packages" in path
        or "dist-packages" in path
        or re.search(r"/lib/python\d+\.\d+/", path) is not None
        or path.startswith("<")
    )


def crash_frames(trace_lines: Sequence[str]) -> list[str]:
    """The innermost frames of our code in a formatted traceback, as `file.py:function`."""
    frames: list[str] = []
    for line in trace_lines:
        for match in _FRAME.finditer(line):
            path = match.group("path")
            if _is_our_code(path):
                frames.append(f"{path.rsplit('/', 1)[-1]}:{match.group('function')}")
    return frames[-CRASH_FRAMES_MAX:]


def fingerprint(kind: str, invariant: str | None, message: str, trace_lines: Sequence[str]) -> str:
    parts = [kind, invariant or "", normalise_message(message)]
    frames = crash_frames(trace_lines) if kind == "crash" else []
    if frames:
        # A Python exception: its type (the message's first word) and its frames identify the bug.
        parts[2] = normalise_message(message.split(":", 1)[0]) if ":" in message else parts[2]
        parts.extend(frames)
    # A crash without a stack (an external process, a worker killed by a signal) is identified by
    # its normalised message: exit code or signal, and the last lines of output.
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:FINGERPRINT_HEX_CHARS]


class FailureInfo(msgspec.Struct, kw_only=True, frozen=True):
    """What an alert says about one failed seed."""

    seed: int
    batch_start: int
    kind: str
    invariant: str | None
    message: str
    reproduce: str
    archive: str
    # Where the failure's HTML report is (beside the archive), if one was built.
    report: str | None = None
    # The report is still being rendered when the alert goes out (alerts do not wait for it).
    report_pending: bool = False

    @property
    def invariant_or_kind(self) -> str:
        return self.invariant or self.kind


def report_location(archived_at: str) -> str:
    """Where a failure's HTML report goes: beside its record (`...json` -> `...html`), both for a
    path and an s3:// URL."""
    assert archived_at.endswith(".json"), archived_at
    return archived_at.removesuffix(".json") + ".html"


class Alert(msgspec.Struct, kw_only=True, frozen=True):
    subject: str
    message: str

    @property
    def text(self) -> str:
        """The full alert as alerts.log and the issue show it: Subject line, then the message."""
        return f"Subject: {self.subject}\n{self.message}"


def _message_lines(message: str) -> list[str]:
    """`Message: first line`, then the rest indented, printable, at most 4 KiB of it."""
    text = cut_utf8("\n".join(printable_lines(message)), ALERT_MESSAGE_BYTES_MAX,
                    " [... cut at 4 KiB; the archive has the whole message]")
    first, *rest = text.split("\n")
    return [f"Message: {first}".rstrip(), *(MESSAGE_INDENT + line for line in rest)]


def alert_for(
    failures: Sequence[FailureInfo],
    instance: str,
    timestamp: str,
    repeats: Sequence[AlertState] = (),
) -> Alert:
    """The alert text for one or more new failures (one batch), plus repeats to summarise.

    Every line starts with one of the alert's own fields or is indented under `Message:`: text
    from the target (its invariant names and messages) is flattened or indented, its control
    characters and escape sequences removed (voprd.text), and a message is cut at 4 KiB."""
    assert failures, "an alert needs at least one failure"
    count = len(failures)
    batch_start = min(failure.batch_start for failure in failures)
    lines = [
        f"VOPR detected {count} invariant violation(s) in batch starting at seed {batch_start}."
    ]
    for failure in failures:
        lines += [
            "",
            f"Seed: {failure.seed}",
            f"Invariant: {one_line(failure.invariant_or_kind, ALERT_NAME_CHARS_MAX)}",
            *_message_lines(failure.message),
            f"Reproduce: {one_line(failure.reproduce)}",
        ]
    lines += ["---", f"Instance: {one_line(instance)}", f"Timestamp: {one_line(timestamp)}"]
    for failure in failures:
        lines.append(f"Archive: {one_line(failure.archive)}")
        if failure.report:
            pending = " (being rendered)" if failure.report_pending else ""
            lines.append(f"Report: {one_line(failure.report)}{pending}")
    lines += _repeat_lines(repeats)
    return Alert(
        subject=f"VOPR: {count} Invariant Violation(s) Detected", message="\n".join(lines) + "\n"
    )


def _repeat_lines(repeats: Sequence[AlertState]) -> list[str]:
    if not repeats:
        return []
    lines = ["", "Repeats of earlier failures since the last alert:"]
    for state in repeats:
        seeds = ", ".join(str(seed) for seed in state.suppressed_seeds)
        more = state.suppressed_count - len(state.suppressed_seeds)
        suffix = f" and {more} more" if more > 0 else ""
        lines.append(
            f"  {one_line(state.invariant, ALERT_NAME_CHARS_MAX)} (fingerprint "
            f"{one_line(state.fingerprint)}, first seed {state.first_seed}):"
            f" {state.suppressed_count} repeat(s), seeds {seeds}{suffix}"
        )
    return lines


def digest_for(repeats: Sequence[AlertState], instance: str, timestamp: str) -> Alert:
    assert repeats
    total = sum(state.suppressed_count for state in repeats)
    lines = [f"VOPR saw {total} repeat(s) of {len(repeats)} known failure(s)."]
    lines += _repeat_lines(repeats)[1:]
    lines += ["---", f"Instance: {one_line(instance)}", f"Timestamp: {one_line(timestamp)}"]
    return Alert(
        subject=f"VOPR: Digest of {total} Repeated Failure(s)", message="\n".join(lines) + "\n"
    )


class AlertPolicy:
    """Decides which failures alert now and which are counted for a summary."""

    def __init__(self, states: Sequence[AlertState] = (), cooldown_s: float = DEFAULT_COOLDOWN_S):
        assert cooldown_s > 0
        self.cooldown_s = cooldown_s
        self._states: dict[str, AlertState] = {state.fingerprint: state for state in states}
        self._last_digest_s: float | None = None

    def is_new(self, fingerprint_hex: str) -> bool:
        return fingerprint_hex not in self._states

    def observe(self, fingerprint_hex: str, failure: FailureInfo, now_s: float) -> bool:
        """Record a failure; True when it is a new fingerprint that must be alerted now."""
        state = self._states.get(fingerprint_hex)
        if state is None:
            self._states[fingerprint_hex] = AlertState(
                fingerprint=fingerprint_hex, first_seed=failure.seed,
                invariant=failure.invariant_or_kind, count=1, last_alert_s=now_s,
            )
            return True
        state.count += 1
        state.suppressed_count += 1
        if len(state.suppressed_seeds) < SUPPRESSED_SEEDS_KEPT_MAX:
            state.suppressed_seeds.append(failure.seed)
        return False

    def demote(self, fingerprint_hex: str, failure: FailureInfo) -> None:
        """The fleet's first sighting of this fingerprint was another daemon's (it alerted): the
        failure `observe` took for a first is counted as a repeat, into the next digest."""
        state = self._states[fingerprint_hex]
        state.suppressed_count += 1
        if len(state.suppressed_seeds) < SUPPRESSED_SEEDS_KEPT_MAX:
            state.suppressed_seeds.append(failure.seed)

    def take_repeats(self) -> list[AlertState]:
        """Fingerprints with counted repeats (copies), resetting their counters."""
        taken: list[AlertState] = []
        for key in sorted(self._states):
            state = self._states[key]
            if state.suppressed_count:
                taken.append(msgspec.structs.replace(state, suppressed_seeds=list(
                    state.suppressed_seeds)))
                state.suppressed_count = 0
                state.suppressed_seeds = []
        return taken

    def digest_due(self, now_s: float) -> bool:
        if self.pending == 0:
            return False
        if self._last_digest_s is None:
            self._last_digest_s = now_s
            return False
        return now_s - self._last_digest_s >= self.cooldown_s

    def digest(self, now_s: float, instance: str, timestamp: str) -> Alert | None:
        """The digest alert if one is due (and resets the repeat counters)."""
        if not self.digest_due(now_s):
            return None
        self._last_digest_s = now_s
        return digest_for(self.take_repeats(), instance, timestamp)

    @property
    def pending(self) -> int:
        return sum(state.suppressed_count for state in self._states.values())

    def states(self) -> list[AlertState]:
        return [self._states[key] for key in sorted(self._states)]
