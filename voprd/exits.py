"""Exit statuses of every voprd command, and the guard that keeps them honest.

0 success; 1 failures found (a failing seed, as the VOPR binary; CI jobs read it so); 2 refused:
bad input or an environment voprd cannot work in, always with one line naming it and never a
traceback; 70 (EX_SOFTWARE, sysexits.h) a bug in voprd: the only case that prints a traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_REFUSED = 2
EXIT_SOFTWARE = 70
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

T = TypeVar("T")


def guarded(main: Callable[[T], int], argv: T) -> int:
    """`main(argv)`, with an unexpected exception turned into its traceback and exit 70 (never
    1, which means "failures found") and Ctrl-C into exit 130 without a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(f"voprd: internal error (a bug in voprd, exit {EXIT_SOFTWARE}); please report "
              "it with the traceback above", file=sys.stderr)
        return EXIT_SOFTWARE
