"""Command line: flags -> options; dispatches to reproduce / batch / daemon / subcommands."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# Subcommands live in their own modules; each exposes `main(argv) -> int`.
# Imported lazily so `voprd --once` does not pay for the daemon or AWS imports.
SUBCOMMANDS: dict[str, str] = {}


def _load_subcommand(name: str) -> Callable[[Sequence[str]], int]:
    module = importlib.import_module(SUBCOMMANDS[name])
    entry: Callable[[Sequence[str]], int] = module.main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _load_subcommand(args[0])(args[1:])
    print("voprd: nothing here yet", file=sys.stderr)
    return 2
