"""Command line: flags -> Settings; dispatches to reproduce / daemon / subcommands.

`voprd --once --seed N` replays one seed (voprd.sim.reproduce); `voprd` with no `--once` runs the
daemon (voprd.service.app), bounded to seeds S..S+N-1 by `--seed S -n N`, forever otherwise.
Subcommands (`lincheck`, `selftest`, `status`) live in their own modules, each with `main(argv)`.
Bad arguments exit 2 with a message naming the flag.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voprd import __version__
from voprd.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, build_settings
from voprd.options import parse_faults

# Imported lazily so `voprd --once` does not pay for the daemon or AWS imports.
SUBCOMMANDS: dict[str, str] = {
    "lincheck": "voprd.check.cli",
    "selftest": "voprd.selftest",
    "status": "voprd.service.status_cli",
}


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _faults(text: str) -> tuple[str, ...]:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voprd",
        description=(
            "Continuous deterministic simulation testing. With --once, replay one seed; "
            "otherwise run seeds in a supervised worker pool (forever, or S..S+N-1 with -n)."
        ),
        epilog="Subcommands: " + ", ".join(sorted(SUBCOMMANDS)) + " (voprd SUBCOMMAND --help).",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--version", action="version", version=f"voprd {__version__}")

    run = parser.add_argument_group("what to run")
    run.add_argument("--seed", type=_int_at_least(0), help="first seed of the run (default 0)")
    run.add_argument(
        "-n", "--iterations", type=_int_at_least(1), help="run seeds S..S+N-1, then exit"
    )
    run.add_argument("--once", action="store_true", help="run the single seed --seed and exit")
    run.add_argument(
        "--faults", type=_faults,
        help="fault classes: all (default), none, or a comma list of "
             "network,crash,storage,clock,disk",
    )
    run.add_argument(
        "--max-events", dest="max_events", type=_int_at_least(1),
        help="bound on simulated events per seed (reaching it is reported)",
    )
    run.add_argument(
        "--bug", dest="bugs", action="append", metavar="NAME",
        help="switch on a planted bug (repeatable; see --list-bugs)",
    )
    run.add_argument(
        "--list-bugs", action="store_true", help="list the planted bugs of --target's system, exit"
    )
    run.add_argument(
        "--check-determinism", dest="check_determinism", action="store_true",
        help="run every seed twice and fail it (kind nondeterminism) if the traces differ",
    )
    run.add_argument(
        "--target",
        help="builtin (default), exec, or a system plugin / target: an entry point name "
             "(groups voprd.systems, voprd.targets) or module:attribute",
    )
    run.add_argument(
        "--exec", dest="exec_cmd", metavar="CMD",
        help="with --target exec: external VOPR command, run as CMD --json --seed S -n B",
    )

    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="JSON lines (start/iteration/...)")
    out.add_argument("-v", "--verbose", action="store_true", help="readable trace (with --once)")
    out.add_argument("--trace-file", type=Path, help="write the trace to this file (--once)")
    out.add_argument("--history-file", type=Path, help="write the client history (--once)")
    out.add_argument("--report", type=Path, metavar="FILE.html", help="HTML report (--once)")

    daemon = parser.add_argument_group("daemon")
    daemon.add_argument(
        "--workers", type=_int_at_least(1), help="worker processes (default: one per core)"
    )
    daemon.add_argument(
        "--seed-timeout", dest="seed_timeout_s", type=_positive_float, metavar="SECONDS",
        help="wall-clock limit per seed; a worker past it is killed (kind timeout)",
    )
    daemon.add_argument(
        "--worker-memory-mb", dest="worker_memory_mb", type=_int_at_least(16),
        help="memory limit per worker; a worker past it is killed (kind oom)",
    )
    daemon.add_argument(
        "--drain-timeout", dest="drain_timeout_s", type=_positive_float, metavar="SECONDS",
        help="on SIGTERM, how long in-flight seeds may finish before the final checkpoint",
    )
    daemon.add_argument("--reset", action="store_true", help="start the run over")
    daemon.add_argument("--state-dir", dest="state_dir", help="local state directory")
    daemon.add_argument("--checkpoint-file", dest="checkpoint_file", help="checkpoint path")

    aws = parser.add_argument_group("AWS backend (used when a bucket is configured)")
    aws.add_argument(
        "--config", type=Path, help=f"TOML settings file (default {DEFAULT_CONFIG_PATH})"
    )
    aws.add_argument("--bucket", help="S3 bucket (VOPRD_BUCKET)")
    aws.add_argument(
        "--sns-topic-arn", dest="sns_topic_arn", help="SNS topic (VOPRD_SNS_TOPIC_ARN)"
    )
    aws.add_argument("--log-group", dest="log_group", help="CloudWatch log group (VOPRD_LOG_GROUP)")
    aws.add_argument("--namespace", help="CloudWatch metric namespace (VOPRD_NAMESPACE)")
    aws.add_argument(
        "--log-iterations", dest="log_iterations", action="store_true",
        help="also send per-seed iteration events to CloudWatch Logs",
    )
    aws.add_argument(
        "--metrics-instance-dimension", dest="metrics_instance_dimension", action="store_true",
        help="also publish an InstanceId-dimension copy of each metric",
    )

    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--run", dest="run_name", help="name of the shared run (default 'default')")
    fleet.add_argument("--batch-size", dest="batch_size", type=_int_at_least(1))
    fleet.add_argument("--lease-seconds", dest="lease_seconds", type=_positive_float)
    fleet.add_argument("--seed-start", dest="seed", type=_int_at_least(0), help="static partition")
    fleet.add_argument("--seed-stride", dest="seed_stride", type=_int_at_least(1))
    fleet.add_argument(
        "--no-fleet", dest="fleet", action="store_false",
        help="with a bucket: one daemon alone, exact per-seed resume (no leases)",
    )
    return parser


# Flags that are not Settings fields (they steer the command itself).
_COMMAND_FLAGS = ("once", "list_bugs", "trace_file", "history_file", "report", "config")


def parse(argv: Sequence[str]) -> tuple[Settings, dict[str, Any]]:
    """Parse argv into Settings plus command-only flags. Exits 2 on bad input."""
    parser = build_parser()
    given = vars(parser.parse_args(list(argv)))
    command = {key: given.pop(key) for key in _COMMAND_FLAGS if key in given}
    if "bugs" in given:
        given["bugs"] = tuple(given["bugs"])
    config_path: Path = command.get("config", DEFAULT_CONFIG_PATH)
    file_text: str | None = None
    if config_path.exists():
        file_text = config_path.read_text()
    elif "config" in command:
        parser.error(f"argument --config: no such file: {config_path}")
    try:
        settings = build_settings(given, file_text=file_text, file_name=str(config_path))
    except ConfigError as exc:
        parser.error(str(exc))
    if settings.target == "exec" and not settings.exec_cmd:
        parser.error("argument --target: 'exec' needs --exec CMD")
    return settings, command


def _call(module_name: str, function: str, *args: Any) -> int:
    module = importlib.import_module(module_name)
    result: int = getattr(module, function)(*args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return _call(SUBCOMMANDS[args[0]], "main", args[1:])
    settings, command = parse(args)
    if command.get("list_bugs"):
        return _call("voprd.targets.loader", "list_bugs_main", settings.target)
    if command.get("once"):
        return _call("voprd.sim.reproduce", "once_main", settings, command)
    once_only = [flag for key, flag in _ONCE_ONLY_FLAGS if key in command]
    if settings.verbose:
        once_only.insert(0, "-v")
    if once_only:  # the daemon would silently ignore them
        build_parser().error(f"argument {once_only[0]}: only with --once (replay one seed)")
    return _call("voprd.service.app", "daemon_main", settings, command)


_ONCE_ONLY_FLAGS = (
    ("trace_file", "--trace-file"), ("history_file", "--history-file"), ("report", "--report"),
)
