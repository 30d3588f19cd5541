"""Fitting the alert text into SNS's limits (pure).

SNS: Subject at most 100 printable ASCII characters on one line; Message at most 256 KB of UTF-8.
The daemon's alert text is sent as is when it fits. When it does not, the lines that make the alert
actionable are kept whole (the summary line, Seed, Invariant, Reproduce, and the footer after
`---`), the Message line is shortened if it alone is huge, and the rest (history, digests) is cut
from its end with a marker saying how much was cut and where the full record is.
"""

from __future__ import annotations

import re

from voprd.text import cut_utf8, printable_lines

SUBJECT_CHARS_MAX = 100
MESSAGE_BYTES_MAX = 256 * 1024
# Leave room for SNS's own envelope accounting and our truncation marker.
MESSAGE_BYTES_BUDGET = MESSAGE_BYTES_MAX - 1024
KEPT_LINE_PREFIXES = ("Seed:", "Seeds:", "Invariant:", "Kind:", "Reproduce:", "Archive:")
MESSAGE_LINE_BYTES_MAX = 16 * 1024

_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def fit_subject(subject: str) -> str:
    """One line of printable ASCII, at most 100 characters (ends with '...' when cut)."""
    flat = _NOT_PRINTABLE_ASCII.sub("?", " ".join(subject.split()))
    if not flat:
        flat = "VOPR alert"
    if len(flat) > SUBJECT_CHARS_MAX:
        flat = flat[: SUBJECT_CHARS_MAX - 3] + "..."
    assert 0 < len(flat) <= SUBJECT_CHARS_MAX
    return flat


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def fit_message(message: str, bytes_max: int = MESSAGE_BYTES_BUDGET) -> str:
    """The message within `bytes_max` UTF-8 bytes, never losing a kept line (see module doc).
    Whatever the text, the e-mail gets printable lines only: escape sequences and control
    characters are removed and every line break is LF (voprd.text.printable_lines), so a
    message built elsewhere cannot hide or forge lines either."""
    trailing = "\n" if message.endswith(("\n", "\r")) else ""
    message = "\n".join(printable_lines(message)) + trailing
    if _utf8_len(message) <= bytes_max:
        return message
    lines = message.split("\n")
    footer_at = lines.index("---") if "---" in lines else len(lines)
    kept: set[int] = {0} | set(range(footer_at, len(lines)))
    for index, line in enumerate(lines):
        if line.startswith(KEPT_LINE_PREFIXES):
            kept.add(index)
        if line.startswith("Message:") and _utf8_len(line) > MESSAGE_LINE_BYTES_MAX:
            lines[index] = cut_utf8(line, MESSAGE_LINE_BYTES_MAX + 6, " [...]")
        if line.startswith("Message:"):
            kept.add(index)
    kept_bytes = sum(_utf8_len(lines[i]) + 1 for i in kept)
    marker_bytes = 200
    budget = bytes_max - kept_bytes - marker_bytes
    if budget <= 0:
        # Pathological kept lines; the summary, Seed and Reproduce lines come first anyway.
        return cut_utf8(message, bytes_max)
    out: list[str] = []
    cut_lines, marker_at = 0, 0
    for index, line in enumerate(lines):
        if index in kept:
            out.append(line)
            continue
        size = _utf8_len(line) + 1
        if cut_lines == 0 and size <= budget:
            out.append(line)
            budget -= size
            continue
        if cut_lines == 0:
            marker_at = len(out)
        cut_lines += 1
    if cut_lines:
        out.insert(marker_at, f"[... {cut_lines} line(s) cut to fit SNS's 256 KB; see Archive]")
    fitted = "\n".join(out)
    assert _utf8_len(fitted) <= bytes_max
    return fitted
