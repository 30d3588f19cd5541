"""`voprd lincheck [--model register|kv | --target SYSTEM] [--json] [--budget-ms N] FILE...`

One line per file (`FILE: VERDICT (N ops, T ms)` plus the explanation, indented), or with
`--json` one object per file: {"file", "verdict", "ops", "elapsed_ms", "explanation"}.
Exit 0 if every file is linearizable, 1 if any is not (and none failed to be decided), 2 on any
error (unreadable or malformed file, operation outside the model) or `unknown` verdict.
Without --model the model follows the format: etcd -> register, kv and voprd -> kv; with
`--target X` it is the model of X's system (a plugin may name one or supply its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from voprd.check.checker import DEFAULT_BUDGET_MS, ModelMismatchError, check_operations
from voprd.check.formats import DEFAULT_MODEL, HistoryParseError, load_history
from voprd.check.models import MODELS, Model, get_model
from voprd.cli import _positive_float


class FileResult(msgspec.Struct):
    file: str
    verdict: Literal["linearizable", "not_linearizable", "unknown", "error"]
    ops: int
    elapsed_ms: float
    explanation: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voprd lincheck",
        description="Check recorded histories for linearizability (format detected per file).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", choices=sorted(MODELS),
        help="sequential model (default: register for etcd logs, kv otherwise)",
    )
    which.add_argument(
        "--target", metavar="SYSTEM",
        help="use the model of this simulation-engine target's system (builtin, an entry point, "
             "or module:attribute): for histories written by `voprd --once --target SYSTEM`",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    parser.add_argument(
        "--budget-ms", dest="budget_ms", type=_positive_float, default=DEFAULT_BUDGET_MS,
        help=f"search time budget per file; past it the verdict is unknown "
             f"(default {DEFAULT_BUDGET_MS:g})",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="a history: voprd's JSON lines, Porcupine's kv or etcd log format")
    return parser


def check_file(path: Path, model_choice: str | Model | None, budget_ms: float) -> FileResult:
    try:
        history = load_history(path)
        if isinstance(model_choice, str) or model_choice is None:
            model = get_model(model_choice or DEFAULT_MODEL[history.format])
        else:
            model = model_choice
        verdict = check_operations(history.ops, model, budget_ms=budget_ms)
    except (OSError, HistoryParseError) as exc:
        return FileResult(str(path), "error", 0, 0.0, str(exc))
    except ModelMismatchError as exc:
        return FileResult(str(path), "error", 0, 0.0, f"{path}:{exc}")
    return FileResult(
        str(path), verdict.verdict, verdict.ops, verdict.elapsed_ms, verdict.explanation
    )


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    model: str | Model | None = args.model
    if args.target is not None:
        from voprd.targets.loader import TargetNotFound, load_system

        try:
            model = load_system(args.target).linearizability_model()
        except TargetNotFound as exc:
            parser.error(f"argument --target: {exc}")
    results = [check_file(path, model, args.budget_ms) for path in args.files]
    encoder = msgspec.json.Encoder()
    for result in results:
        if args.json:
            sys.stdout.write(encoder.encode(result).decode() + "\n")
            continue
        if result.verdict == "error":
            sys.stdout.write(f"{result.file}: error: {result.explanation}\n")
            continue
        sys.stdout.write(
            f"{result.file}: {result.verdict} ({result.ops} ops, {result.elapsed_ms:.1f} ms)\n"
        )
        if result.explanation:
            sys.stdout.write("".join(f"    {line}\n" for line in result.explanation.splitlines()))
    sys.stdout.flush()
    verdicts = {result.verdict for result in results}
    if verdicts & {"error", "unknown"}:
        return 2
    return 1 if "not_linearizable" in verdicts else 0
