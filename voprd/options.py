"""RunOptions: everything that defines a run's seed space, and the reproduce command built from it.

One home for the options a worker needs to run a seed, so that the simulator, the daemon and the
alerts all derive the same `reproduce` line from the same values.
"""

from __future__ import annotations

import shlex

import msgspec

# The fault classes (`--faults`), in the order the seed draws them (docs/simulator.md).
FAULT_CLASSES: tuple[str, ...] = (
    "network", "crash", "storage", "clock", "partition", "pause", "time", "gray", "replay",
    "corrupt", "clients", "disk",
)
DEFAULT_MAX_EVENTS = 60_000
# Seeds are unsigned 64-bit everywhere (flags, config, the worker protocol, checkpoints, the fleet):
# the PRNG takes 64 bits, so a larger "seed" would silently replay a smaller one.
SEED_MAX = (1 << 64) - 1
SEED_SPACE_END = SEED_MAX + 1  # exclusive end of the seed space (a run without -n stops there)


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Options that, with a seed, fully determine one run."""

    target: str = "builtin"
    exec_cmd: str | None = None
    # The exec target: how the binary gives its verdict, and the environment variables (names,
    # values from voprd's own environment) it gets besides the minimal set.
    exec_protocol: str = "json-lines"
    exec_env: tuple[str, ...] = ()
    faults: tuple[str, ...] = FAULT_CLASSES
    max_events: int = DEFAULT_MAX_EVENTS
    bugs: tuple[str, ...] = ()
    check_determinism: bool = False

    def fingerprint_fields(self) -> dict[str, object]:
        """The fields that define the seed space (used by checkpoint fingerprints)."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def parse_faults(text: str) -> tuple[str, ...]:
    """Parse `--faults`: `all`, `none`, or a comma list of fault classes. Raises ValueError."""
    value = text.strip()
    if value == "all":
        return FAULT_CLASSES
    if value == "none":
        return ()
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise ValueError("expected 'all', 'none' or a comma list of " + ", ".join(FAULT_CLASSES))
    unknown = [name for name in names if name not in FAULT_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown fault class {unknown[0]!r}; choose from {', '.join(FAULT_CLASSES)}, all, none"
        )
    return tuple(name for name in FAULT_CLASSES if name in names)


def option_args(options: RunOptions) -> list[str]:
    """Command-line flags for every option that differs from its default."""
    default = RunOptions()
    args: list[str] = []
    if options.target != default.target:
        args += ["--target", options.target]
    if options.exec_cmd is not None:
        args += ["--exec", options.exec_cmd]
    if options.exec_protocol != default.exec_protocol:
        args += ["--exec-protocol", options.exec_protocol]
    for name in options.exec_env:
        args += ["--exec-env", name]
    if options.faults != default.faults:
        args += ["--faults", ",".join(options.faults) if options.faults else "none"]
    if options.max_events != default.max_events:
        args += ["--max-events", str(options.max_events)]
    for bug in options.bugs:
        args += ["--bug", bug]
    if options.check_determinism:
        args.append("--check-determinism")
    return args


def reproduce_command(seed: int, options: RunOptions) -> str:
    """The complete one-line command that replays `seed` with `options`."""
    words = ["voprd", "--once", "--seed", str(seed), *option_args(options), "-v"]
    return shlex.join(words)
