"""The HTML picture of a run: `report_html(picture)` collapses a RunPicture to the size bound and
renders it; `write_report` writes it atomically. See docs/README-report.md."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from voprd.report.collapse import Limits, collapse
from voprd.report.model import RunPicture
from voprd.report.render import render_html

__all__ = ["REPORT_BYTES_MAX", "Limits", "RunPicture", "report_html", "write_report"]

# The bound for any default seed; `report_html` enforces it for every picture.
REPORT_BYTES_MAX = 5_000_000
# Each retry halves the limits; 12 halvings take every limit to its floor.
_SHRINK_ATTEMPTS_MAX = 12


def report_html(
    picture: RunPicture, limits: Limits | None = None, bytes_max: int = REPORT_BYTES_MAX
) -> str:
    """The report page for `picture`, at most `bytes_max` bytes of UTF-8."""
    current = limits or Limits()
    for _ in range(_SHRINK_ATTEMPTS_MAX):
        page = render_html(collapse(picture, current))
        if len(page.encode("utf-8")) <= bytes_max:
            return page
        current = current.halved()
    raise ValueError(f"report does not fit in {bytes_max} bytes even at the smallest limits")


def write_report(picture: RunPicture, path: Path, limits: Limits | None = None) -> int:
    """Write the report to `path` (atomically: temp file + rename). Returns the size in bytes."""
    data = report_html(picture, limits).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)
