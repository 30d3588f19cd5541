"""The daemon's signals from its first moment to its last, so none is ever fatal by accident.

SIGTERM, SIGINT and SIGHUP drain (a second one skips the grace period); SIGUSR1 asks for a status
dump. The event loop handles them while it runs (voprd.service.app). Before that (arguments
parsed, modules importing, the loop starting) `hold` remembers them and the loop acts on them
once it is up; after the loop has stopped, `ignore` makes them harmless while the process exits
(CPython's shutdown would otherwise restore the default actions, which kill). This module is
small on purpose: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STATUS_SIGNAL = signal.SIGUSR1
HANDLED: tuple[signal.Signals, ...] = (*STOP_SIGNALS, STATUS_SIGNAL)
HELD_MAX = 64  # a storm before the loop is up: remembering the first few is enough

_held: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    del frame
    if len(_held) < HELD_MAX:
        _held.append(signum)


def hold() -> None:
    """Remember every handled signal until `take_held` (the loop's handlers are installed)."""
    for signum in HANDLED:
        signal.signal(signum, _remember)


def take_held() -> list[int]:
    """The signals remembered since `hold`, oldest first (and forget them)."""
    taken = list(_held)
    del _held[: len(taken)]
    return taken


def ignore() -> None:
    """From now until the process exits, the handled signals do nothing."""
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)
