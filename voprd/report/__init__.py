"""The HTML picture of a run. See docs/report.md.

- `build_report(seed, options)`: rerun a seed of an engine target (the builtin VSR or a system
  plugin) with its trace and return the page (what `voprd --once --seed N --report F` and the
  daemon's failure archive use);
- `report_html(picture)`: collapse any RunPicture to the size bound and render it;
- `write_report` / `write_report_for_seed`: the same, written atomically to a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from voprd.options import RunOptions
from voprd.report.collapse import Limits, collapse
from voprd.report.model import RunPicture
from voprd.report.render import render_html

__all__ = [
    "REPORT_BYTES_MAX",
    "Limits",
    "RunPicture",
    "build_report",
    "report_html",
    "write_report",
    "write_report_for_seed",
]

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


def build_report(seed: int, options: RunOptions, limits: Limits | None = None) -> str:
    """Rerun `seed` of the target's system with recording and return its report page.
    Deterministic in (seed, options): the same page every time. Raises ValueError for targets
    that do not run in the simulation engine (an external VOPR binary gives no trace to draw)."""
    # Imported here so rendering a picture does not import the simulator.
    from voprd.report.from_sim import picture_for_seed
    from voprd.targets.loader import TargetNotFound, load_system

    try:
        system = load_system(options.target)
    except TargetNotFound as exc:
        raise ValueError(f"reports need a simulation-engine target: {exc}") from exc
    return report_html(picture_for_seed(seed, options, system), limits)


def write_report_for_seed(seed: int, options: RunOptions, path: Path) -> int:
    """`build_report` written atomically to `path`; returns the size in bytes."""
    return _write_atomically(path, build_report(seed, options).encode("utf-8"))


def write_report(picture: RunPicture, path: Path, limits: Limits | None = None) -> int:
    """Write the report to `path` (atomically: temp file + rename). Returns the size in bytes."""
    return _write_atomically(path, report_html(picture, limits).encode("utf-8"))


def _write_atomically(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp makes the file private; a report is meant to be shared like any other file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)
