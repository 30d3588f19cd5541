"""Command line: `voprd COMMAND [flags]`, git/systemctl style, plus the flat VOPR-compatible form.

Commands (docs/daemon.md, "Command line"):
  run       a bounded batch of seeds S..S+N-1 in a worker pool, in a fresh scratch state
  replay    one seed: its verdict, `-v` trace, trace/history files, an HTML report
  daemon    seeds forever (or until -n), resumable; the systemd unit, AWS and fleet use it
  status, lincheck, selftest, bugs   (their own modules, each with `main(argv)`)

The flat form (`voprd --seed S -n N --json`, `voprd --once --seed N -v`, every flag it has ever
taken) stays for scripts, the VOPR-compatible `--target exec` protocol and old units: `--once`
replays; otherwise it is the daemon, bounded by `-n` (a bounded run without a bucket starts fresh,
as `voprd run` does).

Flag groups are defined once (the `_*_flags` functions) and shared: each mode takes the groups in
`MODE_GROUPS`, the flat form takes all of them. A flag a mode does not take is refused (exit 2, one
line) naming the modes it belongs to, rather than silently ignored. Every error is one line on
stderr with exit 2. Settings come from `voprd.config.build_settings` (flags > VOPRD_* > file).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from voprd import __version__
from voprd.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Settings,
    build_settings,
    read_config_file,
)
from voprd.exits import guarded
from voprd.options import FAULT_CLASSES, parse_faults
from voprd.service.signals import hold as hold_signals

# Commands with their own module and `main(argv)`, imported lazily so that `voprd replay` does not
# pay for the daemon or AWS imports.
SUBCOMMANDS: dict[str, str] = {
    "lincheck": "voprd.check.cli",
    "selftest": "voprd.selftest",
    "status": "voprd.service.status_cli",
}
# Every command, in the order the main help lists them, with its one-line summary.
COMMANDS: dict[str, str] = {
    "run": "run seeds S..S+N-1 in a worker pool (fresh state each time), then exit",
    "replay": "replay one seed: verdict, -v trace, --report FILE.html",
    "daemon": "run seeds forever (or until -n), resuming where it stopped; AWS and fleet",
    "status": "ask the running daemon what it is doing",
    "lincheck": "check recorded histories for linearizability",
    "selftest": "prove the simulator catches every planted bug",
    "bugs": "list the planted bugs (switch one on with --bug NAME)",
}
DEFAULT_RUN_ITERATIONS = 100  # `voprd run` without -n
SCRATCH_PREFIX = "voprd-run-"
# Environment variables that name a state directory for `voprd run` to resume (see parse()).
STATE_DIR_VARIABLES = ("VOPRD_STATE_DIR", "STATE_DIRECTORY")

Group = Callable[[argparse.ArgumentParser, str], None]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`voprd run: error: ...`), exit 2."""

    help_command: str | None = None  # what the error line suggests (default: PROG --help)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} "
                     f"(try {self.help_command or self.prog + ' --help'})\n")


# --- value types --------------------------------------------------------------------------------

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


# --- flag groups (each defined once; `mode` is "run", "replay", "daemon" or "flat") -------------

def _seed_range_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    group = parser.add_argument_group("seeds")
    group.add_argument("--seed", type=_int_at_least(0), help="first seed of the run (default 0)")
    iterations_help = {
        "run": f"how many seeds: S..S+N-1 (default {DEFAULT_RUN_ITERATIONS})",
        "daemon": "stop after seeds S..S+N-1 (default: run forever)",
        "flat": "run seeds S..S+N-1, then exit (default: run forever)",
    }[mode]
    group.add_argument("-n", "--iterations", type=_int_at_least(1), metavar="N",
                       help=iterations_help)


def _system_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    """The system under test and what a seed draws: these define the seed space."""
    del mode
    group = parser.add_argument_group("system under test")
    group.add_argument(
        "--target",
        help="builtin (default), exec, or a system plugin / target: an entry point name "
             "(groups voprd.systems, voprd.targets) or module:attribute",
    )
    group.add_argument(
        "--exec", dest="exec_cmd", metavar="CMD",
        help="run your simulator (implies --target exec): its command line, split like a shell "
             "would (no shell runs it). Placeholders {seed}, {count} and {verbose} (-v in a "
             "verbose replay) are filled per run, e.g. 'vopr --json --seed {seed} -n {count}'; "
             "without placeholders voprd appends --json --seed S -n B. See "
             "docs/bring-your-own-simulator.md",
    )
    group.add_argument(
        "--exec-protocol", dest="exec_protocol", choices=("json-lines", "exit-code"),
        help="how the --exec command gives its verdict: json-lines (default: VOPR JSON "
             "iteration lines, a batch of seeds per process) or exit-code (one process per "
             "seed, e.g. --exec 'sim {seed}': exit 0 passes, another code fails, a signal is "
             "a crash)",
    )
    group.add_argument(
        "--exec-env", dest="exec_env", action="append", metavar="NAME",
        help="pass environment variable NAME (its value from voprd's environment) to the "
             "--exec command, which otherwise gets only PATH, HOME, LANG, TMPDIR and "
             "VOPRD_STATE_DIR (repeatable)",
    )
    group.add_argument(
        "--faults", type=_faults,
        help="fault classes: all (default), none, or a comma list of "
             + ",".join(FAULT_CLASSES) + " (docs/simulator.md)",
    )
    group.add_argument(
        "--max-events", dest="max_events", type=_int_at_least(1), metavar="N",
        help="bound on simulated events per seed; the safety phase may use 3/4 of it "
             "(reported), reaching it in the liveness phase fails the seed (liveness)",
    )
    group.add_argument(
        "--bug", dest="bugs", action="append", metavar="NAME",
        help="switch on a planted bug (repeatable; `voprd bugs` lists them)",
    )
    group.add_argument(
        "--check-determinism", dest="check_determinism", action="store_true",
        help="run every seed twice and fail it (kind nondeterminism) if the traces differ",
    )


def _json_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    events = "one iteration event" if mode == "replay" else "start/iteration/batch_complete events"
    parser.add_argument_group("output").add_argument(
        "--json", action="store_true", help=f"JSON lines on stdout ({events}), logs on stderr"
    )


def _replay_output_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    only = " (with --once)" if mode == "flat" else ""
    group = parser.add_argument_group("replay output")
    group.add_argument("-v", "--verbose", action="store_true",
                       help=f"print the readable trace{only}")
    group.add_argument("--trace-file", type=Path, metavar="FILE",
                       help=f"write the trace to FILE{only}")
    group.add_argument("--history-file", type=Path, metavar="FILE",
                       help=f"write the client history (JSON lines) to FILE{only}")
    group.add_argument("--report", type=Path, metavar="FILE.html",
                       help=f"write a self-contained HTML report of the run{only}")


def _pool_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    group = parser.add_argument_group("worker pool")
    group.add_argument(
        "--workers", type=_int_at_least(1), metavar="N",
        help="worker processes (default: one per core)",
    )
    group.add_argument(
        "--seed-timeout", dest="seed_timeout_s", type=_positive_float, metavar="SECONDS",
        help="wall-clock limit per seed; a worker past it is killed (kind timeout)",
    )
    group.add_argument(
        "--worker-memory-mb", dest="worker_memory_mb", type=_int_at_least(16), metavar="MB",
        help="memory limit per worker; a worker past it is killed (kind oom)",
    )
    group.add_argument(
        "--drain-timeout", dest="drain_timeout_s", type=_positive_float, metavar="SECONDS",
        help="on SIGTERM, how long in-flight seeds may finish before the final checkpoint",
    )
    group.add_argument(
        "--batch-size", dest="batch_size", type=_int_at_least(1), metavar="N",
        help="seeds handed to a worker at a time (default 4; 16 for --target exec); in a fleet, "
             "seeds per S3 lease (default: about a minute of this daemon's work)",
    )
    if mode != "run":  # a bounded run has no focus seeds
        group.add_argument(
            "--focus-every", dest="focus_every", type=_int_at_least(0), metavar="N",
            help="unbounded runs of an engine target: after every N seeds, one extra focus "
                 "seed steered toward the least-covered protocol path (default 8; 0: none)",
        )


def _state_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    group = parser.add_argument_group("state")
    where = ("default VOPRD_STATE_DIR, else a fresh scratch directory" if mode == "run" else
             "default VOPRD_STATE_DIR, $STATE_DIRECTORY, else ~/.local/state/voprd")
    group.add_argument("--state-dir", dest="state_dir", metavar="DIR",
                       help=f"checkpoint, failures, alerts and metrics go here ({where})")
    group.add_argument("--checkpoint-file", dest="checkpoint_file", metavar="FILE",
                       help="checkpoint path (default STATE_DIR/checkpoint.json)")
    group.add_argument("--reset", action="store_true",
                       help="start the stored run over instead of resuming it")


def _config_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    del mode
    parser.add_argument_group("settings").add_argument(
        "--config", type=Path, metavar="FILE",
        help=f"TOML settings file (default {DEFAULT_CONFIG_PATH}, if it exists)",
    )


def _aws_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    del mode
    group = parser.add_argument_group("AWS backend (used when a bucket is configured)")
    group.add_argument("--bucket", help="S3 bucket (VOPRD_BUCKET)")
    group.add_argument(
        "--sns-topic-arn", dest="sns_topic_arn", metavar="ARN",
        help="SNS topic for alerts (VOPRD_SNS_TOPIC_ARN)",
    )
    group.add_argument("--log-group", dest="log_group", metavar="NAME",
                       help="CloudWatch log group (VOPRD_LOG_GROUP)")
    group.add_argument("--namespace", help="CloudWatch metric namespace (VOPRD_NAMESPACE)")
    group.add_argument(
        "--log-iterations", dest="log_iterations", action="store_true",
        help="also send per-seed iteration events to CloudWatch Logs",
    )
    group.add_argument(
        "--metrics-instance-dimension", dest="metrics_instance_dimension", action="store_true",
        help="also publish an InstanceId-dimension copy of each metric",
    )


def _fleet_flags(parser: argparse.ArgumentParser, mode: str) -> None:
    del mode
    group = parser.add_argument_group("fleet (several daemons sharing one run through a bucket)")
    group.add_argument(
        "--run", dest="run_name", metavar="NAME",
        help="with a bucket: join the fleet run NAME, sharing its seeds with every daemon of that "
             "name through S3 leases (VOPRD_RUN); without it a daemon with a bucket runs alone",
    )
    group.add_argument(
        "--lease-seconds", dest="lease_seconds", type=_positive_float, metavar="SECONDS",
        help="how long a batch's lease lasts without renewal before another daemon may take it "
             "(default 180)",
    )
    group.add_argument("--seed-start", dest="seed", type=_int_at_least(0), metavar="S",
                       help="same as --seed (static partitioning)")
    group.add_argument(
        "--seed-stride", dest="seed_stride", type=_int_at_least(1), metavar="K",
        help="without a bucket: run seeds S, S+K, S+2K, ... (static partitioning)",
    )
    group.add_argument(
        "--no-fleet", dest="fleet", action="store_false",
        help="run alone (the default without --run; kept for old command lines); refused "
             "together with a run name",
    )


MODE_GROUPS: dict[str, tuple[Group, ...]] = {
    "run": (_seed_range_flags, _system_flags, _json_flags, _pool_flags, _state_flags,
            _config_flags),
    "replay": (_system_flags, _json_flags, _replay_output_flags, _config_flags),
    "daemon": (_seed_range_flags, _system_flags, _json_flags, _pool_flags, _state_flags,
               _config_flags, _aws_flags, _fleet_flags),
}
MODE_DESCRIPTIONS: dict[str, str] = {
    "run": "Run seeds S..S+N-1 in a supervised worker pool and exit: 0 all passed, 1 a seed "
           "failed. Each run starts fresh in a scratch state directory (its path is printed) "
           "unless --state-dir, --checkpoint-file, VOPRD_STATE_DIR or systemd's STATE_DIRECTORY "
           "names one to resume (or "
           "--reset); always local (a bucket "
           "in the environment or config file is ignored: use `voprd daemon -n N` for that).",
    "replay": "Replay one seed exactly and print its outcome: exit 0 passed, 1 failed. The "
              "failure's reproduce line is such a command.",
    "daemon": "Run seeds forever in a supervised worker pool (or until -n), checkpointing, "
              "archiving each failure and alerting; a restart resumes where it stopped. With a "
              "bucket (--bucket, VOPRD_BUCKET, the config file) it uses S3, CloudWatch and SNS, "
              "and daemons sharing a bucket and --run share the seeds. SIGUSR1 dumps its status "
              "(`voprd status`); SIGTERM drains it.",
}
# Flags that are not Settings fields (they steer the command itself).
_COMMAND_FLAGS = ("once", "list_bugs", "trace_file", "history_file", "report", "config")
_REPLAY_OUTPUT = frozenset({"verbose", "trace_file", "history_file", "report"})


def build_mode_parser(mode: str) -> Parser:
    """The parser of `voprd run`, `voprd replay` or `voprd daemon`."""
    parser = Parser(prog=f"voprd {mode}", description=MODE_DESCRIPTIONS[mode],
                    argument_default=argparse.SUPPRESS)
    if mode == "replay":
        parser.add_argument("seed_arg", nargs="?", type=_int_at_least(0), metavar="SEED",
                            default=None, help="the seed to replay (or --seed SEED)")
        parser.add_argument("--seed", type=_int_at_least(0), help=argparse.SUPPRESS)
    for add_group in MODE_GROUPS[mode]:
        add_group(parser, mode)
    return parser


def build_parser() -> Parser:
    """The flat VOPR-compatible parser: every flag of every mode, plus --once and --list-bugs."""
    parser = Parser(
        prog="voprd",
        description="The flat form: with --once, replay one seed; otherwise run seeds in a "
                    "supervised worker pool (forever, or S..S+N-1 with -n). Prefer the commands "
                    "(voprd --help).",
        argument_default=argparse.SUPPRESS,
    )
    parser.help_command = "voprd -h flat"
    parser.add_argument("--version", action="version", version=f"voprd {__version__}")
    parser.add_argument("--once", action="store_true", help="replay the single seed --seed")
    parser.add_argument("--list-bugs", action="store_true",
                        help="list the planted bugs of --target's system and exit")
    seen: set[Group] = set()
    for groups in MODE_GROUPS.values():
        for add_group in groups:
            if add_group not in seen:
                seen.add(add_group)
                add_group(parser, "flat")
    return parser


def main_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: voprd COMMAND [flags]     (voprd {__version__})",
        "",
        "Continuous deterministic simulation testing: seeds drive a simulated cluster under",
        "faults; invariant checkers judge every run; a failing seed replays exactly.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()),
        "",
        "First bug:  voprd run --seed 0 -n 20 --bug commit_without_quorum",
        "More:       voprd COMMAND --help, and docs/ in the source tree. The flat form",
        "            (voprd --seed S -n N --json, voprd --once --seed N) still works:",
        "            voprd -h flat",
    ]
    return "\n".join(lines) + "\n"


# --- parsing ------------------------------------------------------------------------------------

def _option_strings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _modes_taking(option: str) -> list[str]:
    return [mode for mode in MODE_GROUPS if option in _option_strings(build_mode_parser(mode))]


def _refuse_extras(parser: Parser, mode: str | None, extras: list[str]) -> NoReturn:
    """One line for the first argument `voprd MODE` (None: the flat form) does not take: the
    modes that take it, or the nearest flag of this parser (a typo)."""
    word = extras[0]
    if not word.startswith("-"):
        parser.error(f"unrecognized argument {word!r}")
    option = word.split("=", 1)[0]
    elsewhere = _modes_taking(option) if mode is not None else []
    if mode is not None and not elsewhere and option in _option_strings(build_parser()):
        elsewhere = ["the flat form"]
    if elsewhere:
        where = " and ".join(f"voprd {m}" if m in MODE_GROUPS else m for m in elsewhere)
        parser.error(f"argument {option}: does nothing in voprd {mode}; it is a flag of {where}")
    close = difflib.get_close_matches(option, list(_option_strings(parser)), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    parser.error(f"unrecognized argument {option}{hint}")


def _first_given(parser: argparse.ArgumentParser, argv: Sequence[str], dests: set[str]) -> str:
    """The first flag on the command line whose destination is in `dests`."""
    options = _option_strings(parser)
    for word in argv:
        action = options.get(word.split("=", 1)[0])
        if action is not None and action.dest in dests:
            return "/".join(action.option_strings)
    return sorted(dests)[0]


def _flat_mode(parser: Parser, argv: Sequence[str], given: dict[str, Any]) -> str:
    """The mode of a flat command line; refuses a flag that mode would ignore."""
    if given.get("once"):
        replay_dests = {action.dest for action in build_mode_parser("replay")._actions}
        ignored = set(given) - replay_dests - {"once", "seed"}
        if ignored:
            flag = _first_given(parser, argv, ignored)
            parser.error(f"argument {flag}: does nothing with --once, which replays one seed")
        return "replay"
    ignored = set(given) & _REPLAY_OUTPUT
    if ignored:
        flag = _first_given(parser, argv, ignored)
        parser.error(f"argument {flag}: only with --once, which replays one seed")
    return "daemon"


def _settings(parser: Parser, given: dict[str, Any], command: dict[str, Any]) -> Settings:
    if "bugs" in given:
        given["bugs"] = tuple(given["bugs"])
    config_path: Path = command.get("config", DEFAULT_CONFIG_PATH)
    try:
        file_text = read_config_file(config_path, explicit="config" in command)
        return build_settings(given, file_text=file_text, file_name=str(config_path))
    except ConfigError as exc:  # one line naming the setting and where it came from
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


def parse(argv: Sequence[str]) -> tuple[Settings, dict[str, Any]]:
    """Parse a command line (`run`/`replay`/`daemon` or the flat form) into Settings plus
    command-only values: `mode` ("run", "replay", "daemon") and `fresh` (a bounded run that
    starts in a new scratch state), and the flags of `_COMMAND_FLAGS` that were given. Pure: it
    creates nothing. Exits 2 with one line on bad input."""
    args = list(argv)
    if args and args[0] in MODE_GROUPS:
        mode = args[0]
        parser = build_mode_parser(mode)
        namespace, extras = parser.parse_known_args(args[1:])
        if extras:
            _refuse_extras(parser, mode, extras)
        given = vars(namespace)
        if mode == "replay":
            seed_arg = given.pop("seed_arg")
            if seed_arg is not None and "seed" in given:
                parser.error("argument SEED: give the seed once (SEED or --seed)")
            if seed_arg is None and "seed" not in given:
                parser.error("the following arguments are required: SEED")
            if seed_arg is not None:
                given["seed"] = seed_arg
    else:
        parser = build_parser()
        namespace, extras = parser.parse_known_args(args)
        if extras:
            _refuse_extras(parser, None, extras)
        given = vars(namespace)
        mode = _flat_mode(parser, args, given)
    command = {key: given.pop(key) for key in _COMMAND_FLAGS if key in given}
    # VOPRD_STATE_DIR names a state as explicitly as --state-dir does (and is how the exec target
    # gives voprd-as-a-binary its fresh directory), and so does systemd's STATE_DIRECTORY (a unit's
    # StateDirectory=); the config file's state_dir and the default (~/.local/state) do not.
    explicit_state = ("state_dir" in given or "checkpoint_file" in given
                      or any(os.environ.get(name) for name in STATE_DIR_VARIABLES))
    if args[:1] == ["run"]:
        given["bucket"] = None  # always local: see MODE_DESCRIPTIONS["run"]
    settings = _settings(parser, given, command)
    if mode == "run" and settings.iterations is None:
        settings = msgspec.structs.replace(settings, iterations=DEFAULT_RUN_ITERATIONS)
    if mode == "daemon" and args[:1] != ["daemon"] and settings.iterations is not None \
            and settings.backend == "local":
        mode = "run"  # the flat `voprd --seed S -n N` is `voprd run`
    command["mode"] = mode
    # A bounded local run starts fresh unless a state was named; the daemon
    # (also bounded by -n, and the flat form's bounded run on a bucket) resumes.
    command["fresh"] = mode == "run" and not explicit_state
    return settings, command


def scratch_state_dir() -> Path:
    """A new, empty state directory for a fresh bounded run (kept after it: failures are there)."""
    return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))


# --- dispatch -----------------------------------------------------------------------------------

def _call(module_name: str, function: str, *args: Any) -> int:
    module = importlib.import_module(module_name)
    result: int = getattr(module, function)(*args)
    return result


def _bugs_main(argv: Sequence[str]) -> int:
    parser = Parser(prog="voprd bugs", description="List the planted bugs of a system (the "
                    "builtin VSR, or a plugin's with --target): switch one on with --bug NAME; "
                    "`voprd selftest` proves each is caught.")
    parser.add_argument("--target", default="builtin",
                        help="the system whose bugs to list (default builtin)")
    args = parser.parse_args(list(argv))
    return _call("voprd.targets.loader", "list_bugs_main", args.target)


def _unknown_command(word: str) -> int:
    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    sys.stderr.write(f"voprd: error: argument COMMAND: invalid choice: {word!r}{hint} "
                     f"(choose from {', '.join(COMMANDS)})\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The `voprd` command: exit statuses as voprd.exits says (a bug is 70, never 1)."""
    return guarded(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        # Bare `voprd` used to start the daemon: it now asks what to do (exit 2, as a usage
        # error, so that a unit or script still calling it that way fails visibly).
        sys.stderr.write(main_help())
        return 2
    if args[0] in ("-h", "--help"):
        if args[1:2] == ["flat"]:
            build_parser().print_help()
        else:
            sys.stdout.write(main_help())
        return 0
    if args[0] in SUBCOMMANDS:
        return _call(SUBCOMMANDS[args[0]], "main", args[1:])
    if args[0] == "bugs":
        return _bugs_main(args[1:])
    if not args[0].startswith("-") and args[0] not in MODE_GROUPS:
        return _unknown_command(args[0])
    settings, command = parse(args)
    if command.get("list_bugs"):
        return _call("voprd.targets.loader", "list_bugs_main", settings.target)
    if command["mode"] == "replay":
        return _call("voprd.sim.reproduce", "once_main", settings, command)
    if command["fresh"]:
        state_dir = scratch_state_dir()
        settings = msgspec.structs.replace(settings, state_dir=str(state_dir),
                                           checkpoint_file=None)
        command["scratch_state_dir"] = state_dir
    hold_signals()  # a stop or status signal while the daemon loads is remembered, not fatal
    return _call("voprd.service.app", "daemon_main", settings, command)
