"""Small text helpers for what voprd prints and sends: counts that agree in number, and text from
outside (a target's messages, files and S3 objects another process wrote) made safe to show.

Text from outside may hold line breaks, terminal escape sequences and other control characters.
Printed raw it can rewrite a terminal (cursor moves, colours, a changed window title) or start a
line that looks like one of our own fields (a forged `Reproduce:` line in an alert). The helpers
below are the one place that decides what is shown: escape sequences are removed whole, then every
C0/C1 control character, DEL and the invisible Unicode format characters (bidirectional overrides,
zero-width characters, BOM) are dropped; tabs become spaces; every line break Python knows
(`str.splitlines`: CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029) ends a line.
"""

from __future__ import annotations

import re

# ECMA-48 escape sequences, 7-bit and 8-bit forms: CSI (ESC [ or 0x9b ... final byte), the string
# controls (OSC, DCS, SOS, PM, APC ... up to BEL or ST, or the end of the line), and the short
# two-character escapes (ESC plus intermediates and a final byte).
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n\r]*(?:\x07|\x9c|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]"
)
# What remains after line splitting that a terminal or a mail reader may act on, or that hides
# text: C0 (tab handled apart), DEL, C1, and Unicode format characters (ALM, ZWSP..RLM, LRE..RLO,
# word joiner..nominal digit shapes, BOM, interlinear annotation).
_CONTROL = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb]"
)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 failure`, `2 failures`, `0 seeds` (an irregular plural may be given)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def printable_lines(text: str) -> list[str]:
    """`text` as lines without line breaks, escape sequences or control characters (tabs become
    spaces). Empty text is no lines."""
    return [
        _CONTROL.sub("", line.replace("\t", " "))
        for line in _ESCAPE.sub("", text).splitlines()
    ]


def one_line(text: str, chars_max: int | None = None) -> str:
    """`text` flattened to one printable line: lines joined by a space, runs of spaces collapsed,
    cut to `chars_max` characters (ending in "...") if given."""
    flat = " ".join(" ".join(printable_lines(text)).split())
    if chars_max is not None and len(flat) > chars_max:
        flat = flat[: max(chars_max - 3, 0)] + "..."
    return flat


def terminal_safe(text: str) -> str:
    """`text` for a terminal: its lines (joined by LF) without escape sequences or controls."""
    return "\n".join(printable_lines(text))


def cut_utf8(text: str, bytes_max: int, marker: str = "") -> str:
    """`text` if it fits in `bytes_max` UTF-8 bytes; else its longest prefix that fits together
    with `marker` (never a partial character), then `marker`."""
    data = text.encode("utf-8")
    if len(data) <= bytes_max:
        return text
    room = max(bytes_max - len(marker.encode("utf-8")), 0)
    return data[:room].decode("utf-8", "ignore") + marker
