"""What a run shows on a terminal: a live progress line and, at the end, a summary of failures.

Only when stdout is a terminal and the output is not `--json`: piped, redirected or JSON output
never gets any of it. Drawn with rich (cursor movement, clearing, width, colour support): a library
that keeps terminals' quirks out of voprd. The line is redrawn a few times a second from a snapshot
the daemon hands over (`Snapshot`, read-only counters: no work per seed), in one asyncio task that
sleeps in between; log lines are printed above it (`log_stream`), and it is cleared at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from voprd.events import FingerprintCount
from voprd.text import plural

REFRESH_S = 0.25
FIELD_SHOWN_MAX = 100  # a log field longer than this is shortened on a terminal


def terminal_renderer(_logger: object, _method: str, event_dict: dict[str, Any]) -> str:
    """A log line for a person at a terminal: `14:34:01 warning seed_failed: <msg>`, the sentence
    with its own line breaks, then the other fields, each shortened (the full record is in the
    state directory and in JSON output)."""
    event = event_dict.pop("event", "")
    level = event_dict.pop("level", "info")
    stamp = str(event_dict.pop("timestamp", ""))
    clock = stamp[11:19] if len(stamp) >= 19 else stamp
    msg = event_dict.pop("msg", None)
    head = " ".join(part for part in (clock, "" if level == "info" else level, str(event)) if part)
    lines = [head + (f": {msg}" if msg is not None else "")]
    fields = []
    for key, value in event_dict.items():
        text = value if isinstance(value, str) else repr(value)
        if len(text) > FIELD_SHOWN_MAX:
            text = text[:FIELD_SHOWN_MAX - 1] + "…"
        fields.append(f"{key}={text}")
    if fields:
        lines.append("  " + " ".join(fields))
    return "\n".join(lines)


@dataclass(frozen=True)
class Snapshot:
    """The counters the progress line shows, taken from the daemon at one moment."""

    done: int  # seeds of the run that are done (a resumed run's earlier ones included)
    total: int | None  # seeds in the run; None: it runs forever
    done_this_start: int  # seeds done since this process started (the rate's numerator)
    elapsed_s: float  # since this process started
    failures: int  # failed seeds of the run
    distinct: Sequence[FingerprintCount] = field(default_factory=tuple)


def duration(seconds: float) -> str:
    """`0:00:09`, `1:02:03`: hours, minutes, seconds."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def describe(snapshot: Snapshot) -> str:
    """The progress line's text: done/total, percentage, rate, ETA and failures (bounded), or
    done, rate, failures and time up (forever)."""
    rate = snapshot.done_this_start / snapshot.elapsed_s if snapshot.elapsed_s > 0 else 0.0
    failures = plural(snapshot.failures, "failure")
    if snapshot.total is None:
        return (f"{plural(snapshot.done, 'seed')} done  {rate:.1f} seeds/s  {failures}  "
                f"up {duration(snapshot.elapsed_s)}")
    percent = 100.0 * snapshot.done / snapshot.total if snapshot.total else 100.0
    remaining = max(snapshot.total - snapshot.done, 0)
    eta = duration(remaining / rate) if rate > 0 else "-:--:--"
    return (f"{snapshot.done}/{snapshot.total} seeds  {percent:3.0f}%  {rate:.1f} seeds/s  "
            f"ETA {eta}  {failures}")


def terminal_console(stream: TextIO | None = None) -> Console | None:
    """A rich console on `stream` (stdout) when it is a terminal that can redraw a line."""
    console = Console(file=stream or sys.stdout)
    return console if console.is_terminal and not console.is_dumb_terminal else None


class LiveProgress:
    """The live line of one run on a terminal (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            BarColumn(bar_width=30), TextColumn("{task.description}"),
            console=console, auto_refresh=False, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        )
        self._task: TaskID | None = None

    def log_stream(self) -> TextIO:
        """Where log lines go so that they print above the live line, not through it."""
        return cast(TextIO, FileProxy(self.console, self.console.file))

    def show(self, snapshot: Snapshot) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("", total=snapshot.total)
        self._progress.update(self._task, total=snapshot.total, completed=snapshot.done,
                              description=describe(snapshot))
        self._progress.refresh()

    def clear(self) -> None:
        if self._task is not None:
            self._progress.stop()  # transient: the line is erased
            self._task = None

    async def run(self, snapshot: Callable[[], Snapshot], stop: asyncio.Event) -> None:
        """Redraw every REFRESH_S until `stop` is set, then clear the line."""
        try:
            while not stop.is_set():
                self.show(snapshot())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REFRESH_S)
        finally:
            self.clear()

    def summary(self, snapshot: Snapshot, reproduce: Callable[[int], str],
                failures_dir: Path | None) -> None:
        """The end of a run: how many seeds, how fast, and each distinct failure with the command
        that replays its first seed."""
        rate = snapshot.done_this_start / snapshot.elapsed_s if snapshot.elapsed_s > 0 else 0.0
        head = (f"{plural(snapshot.done_this_start, 'seed')} in {duration(snapshot.elapsed_s)} "
                f"({rate:.1f} seeds/s): ")
        if not snapshot.failures:
            self.console.print(head + "[bold green]no failures[/]", highlight=False)
            return
        distinct = f"{len(snapshot.distinct)} distinct"
        self.console.print(
            head + f"[bold red]{plural(snapshot.failures, 'failure')}[/] ({distinct})",
            highlight=False,
        )
        for row in sorted(snapshot.distinct, key=lambda row: row.first_seed):
            self.console.print(
                f"  [bold]{row.invariant or 'failure'}[/]: {plural(row.count, 'seed')}, first "
                f"found seed {row.first_seed}; replay it with:", highlight=False)
            # soft_wrap: the command stays one line (copyable) however narrow the terminal.
            self.console.print(f"    {reproduce(row.first_seed)}", markup=False,
                               highlight=False, soft_wrap=True)
        if failures_dir is not None:
            self.console.print(f"failure records and reports: {failures_dir}", highlight=False)
