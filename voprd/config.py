"""Settings: one validated object built from flags, VOPRD_* environment and an optional TOML file.

Precedence: flags win over environment, environment over the file, the file over defaults.
`build_settings` is pure (it takes the environment and file text as arguments) so it is unit-tested
without touching the process environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from voprd.options import (
    DEFAULT_MAX_EVENTS,
    FAULT_CLASSES,
    SEED_MAX,
    SEED_SPACE_END,
    RunOptions,
    parse_faults,
)

DEFAULT_CONFIG_PATH = Path("/etc/voprd/voprd.toml")
DEFAULT_LOG_GROUP = "/aws/ec2/vopr-simulation"
DEFAULT_NAMESPACE = "VOPR"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


# Bounds that keep every value inside what the daemon can act on (timers, rlimits, msgpack ints).
SECONDS_MAX = 7 * 24 * 3600.0
WORKERS_MAX = 1024
MAX_EVENTS_MAX = 1 << 40
WORKER_MEMORY_MB_MAX = 1 << 24  # 16 TiB
BATCH_SIZE_MAX = 1 << 20
TEXT_LENGTH_MAX = 4096


class Settings(msgspec.Struct, kw_only=True):
    # What to run.
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0  # at most SEED_MAX (_CHECKS: no int64 bound)
    # None: run forever (daemon)
    iterations: Annotated[int, msgspec.Meta(ge=1)] | None = None  # at most SEED_SPACE_END
    target: str = "builtin"
    exec_cmd: str | None = None
    exec_protocol: Literal["json-lines", "exit-code"] = "json-lines"
    exec_env: tuple[str, ...] = ()
    faults: tuple[str, ...] = FAULT_CLASSES
    max_events: Annotated[int, msgspec.Meta(ge=1, le=MAX_EVENTS_MAX)] = DEFAULT_MAX_EVENTS
    bugs: tuple[str, ...] = ()
    check_determinism: bool = False
    # Output.
    json: bool = False
    verbose: bool = False
    # Daemon.
    workers: Annotated[int, msgspec.Meta(ge=0, le=WORKERS_MAX)] = 0  # 0: one per CPU core
    seed_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=SECONDS_MAX)] = 60.0
    worker_memory_mb: Annotated[int, msgspec.Meta(ge=16, le=WORKER_MEMORY_MB_MAX)] = 1024
    drain_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=SECONDS_MAX)] = 20.0
    reset: bool = False
    state_dir: str | None = None
    checkpoint_file: str | None = None
    # One coverage-steered focus seed after every N seeds of an unbounded local run (0: none).
    focus_every: Annotated[int, msgspec.Meta(ge=0)] = 8
    # AWS backend (used when bucket is set).
    bucket: str | None = None
    sns_topic_arn: str | None = None
    log_group: str = DEFAULT_LOG_GROUP
    namespace: str = DEFAULT_NAMESPACE
    region: str | None = None
    log_iterations: bool = False
    metrics_instance_dimension: bool = False
    # Fleet.
    # A run name (--run / VOPRD_RUN / run_name) puts a daemon with a bucket in fleet mode: it
    # shares the run's seeds with every daemon of that name through S3 leases. Without one it runs
    # alone (lone mode): the guide's layout, checkpoints/latest.json, no lease traffic.
    run_name: str | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=0, le=BATCH_SIZE_MAX)] = 0  # 0: automatic
    lease_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 180.0  # a day at most
    seed_stride: Annotated[int, msgspec.Meta(ge=1)] = 1  # at most SEED_MAX
    fleet: bool = True  # False: --no-fleet (lone mode; refused together with a run name)

    @property
    def fleet_mode(self) -> bool:
        """A bucket and a run name: coordinate through S3 leases (docs/fleet.md)."""
        return self.backend == "aws" and self.fleet and self.run_name is not None

    @property
    def mode(self) -> Literal["local", "lone", "fleet"]:
        """local: no bucket; lone: a bucket, one daemon alone; fleet: a bucket and a run name."""
        if self.backend == "local":
            return "local"
        return "fleet" if self.fleet_mode else "lone"

    @property
    def backend(self) -> Literal["aws", "local"]:
        return "aws" if self.bucket else "local"

    def run_options(self) -> RunOptions:
        return RunOptions(
            target=self.target,
            exec_cmd=self.exec_cmd,
            exec_protocol=self.exec_protocol,
            exec_env=self.exec_env,
            faults=self.faults,
            max_events=self.max_events,
            bugs=self.bugs,
            check_determinism=self.check_determinism,
        )


# Settings that may come from the environment (VOPRD_*) or the TOML file, by field name.
ENV_VARS: dict[str, str] = {
    "bucket": "VOPRD_BUCKET",
    "sns_topic_arn": "VOPRD_SNS_TOPIC_ARN",
    "log_group": "VOPRD_LOG_GROUP",
    "namespace": "VOPRD_NAMESPACE",
    "state_dir": "VOPRD_STATE_DIR",
    "run_name": "VOPRD_RUN",
}
FILE_KEYS: frozenset[str] = frozenset(Settings.__struct_fields__)


DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
IPV6_IMDS_ENDPOINT = "http://[fd00:ec2::254]"
IMDS_ENDPOINT_MODES = {"ipv4": DEFAULT_IMDS_ENDPOINT, "ipv6": IPV6_IMDS_ENDPOINT}


def imds_endpoint(env: Mapping[str, str]) -> str:
    """The EC2 metadata service's base URL, chosen from the environment as botocore's credential
    chain chooses it: `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set, else by
    `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` the IPv4 (default) or the IPv6 address (an instance
    in an IPv6-only subnet has no IPv4 route). Raises ValueError for a mode other than IPv4/IPv6,
    as botocore does, even with an explicit endpoint."""
    mode = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") or "IPv4"
    if mode.lower() not in IMDS_ENDPOINT_MODES:
        raise ValueError(
            f"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE must be IPv4 or IPv6, not {mode!r}"
        )
    explicit = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    return explicit.rstrip("/") if explicit else IMDS_ENDPOINT_MODES[mode.lower()]


# How each setting is named to the user when a flag gave it (argparse `dest` -> the flag).
FLAG_NAMES: dict[str, str] = {
    "iterations": "-n", "exec_cmd": "--exec", "bugs": "--bug", "verbose": "-v",
    "seed_timeout_s": "--seed-timeout", "drain_timeout_s": "--drain-timeout",
    "run_name": "--run", "fleet": "--no-fleet",
}


def flag_name(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _printable(value: str) -> str:
    """A text setting: non-empty, bounded, no control characters (a NUL in a path, an escape
    sequence in a name); raises ValueError saying which."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > TEXT_LENGTH_MAX:
        raise ValueError(f"longer than {TEXT_LENGTH_MAX} characters")
    bad = next((c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        raise ValueError(f"contains the control character {bad!r}")
    return value


def _faults(value: Any) -> Any:
    """`all`, `none`, a comma list (the flag's syntax) or a list of class names: one canonical
    tuple either way."""
    if isinstance(value, str):
        return parse_faults(value)
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        return parse_faults(",".join(value)) if value else ()
    return value  # not text: the type check names it


def _bugs(value: Any) -> Any:
    """Names only here: which bugs exist depends on the target's system (`_cross_checks`)."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        for name in value:
            _printable(name)
        return tuple(value)
    return value


def _exec_cmd(value: Any) -> Any:
    if isinstance(value, str):
        import shlex

        _printable(value)
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"not a command line ({exc})") from None
        if not argv:
            raise ValueError("names no command")
    return value


def _exec_env(value: Any) -> Any:
    """Names of voprd's own variables passed to an external target (the values are read at run
    time, never stored): one name or a list, each a plain environment variable name."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        from voprd.targets.exec_command import ExecCommandError, check_env_name

        try:
            return tuple(dict.fromkeys(check_env_name(name) for name in value))
        except ExecCommandError as exc:
            raise ValueError(str(exc).removeprefix("--exec-env: ")) from None
    return value


def _run_name(value: Any) -> Any:
    if isinstance(value, str):
        from voprd.fleet.core import FleetError, validate_run_name

        try:
            validate_run_name(value)
        except FleetError as exc:
            raise ValueError(str(exc).removeprefix("--run: ")) from None
    return value


def _text(value: Any) -> Any:
    return _printable(value) if isinstance(value, str) else value


_SNS_ARN = re.compile(r"^arn:[a-z0-9-]+:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


def _sns_topic_arn(value: Any) -> Any:
    if isinstance(value, str) and not _SNS_ARN.match(_printable(value)):
        raise ValueError(f"{value!r} is not an SNS topic ARN "
                         "(arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


def _at_most(maximum: int, *, text: bool = False) -> Any:
    """An integer setting bounded above by `maximum` (msgspec's bounds stop at 2^63-1). With
    `text`, decimal text is read too (a seed past TOML's 2^63-1 can be written "...")."""

    def check(value: Any) -> Any:
        if text and isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return check


def _given_at_least_one(value: Any) -> Any:
    """0 is the default's "automatic"; given explicitly (flag or file alike) it is refused."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError("must be at least 1 (leave it out for the automatic choice)")
    return value


# The one validation path: every value, from a flag, the environment or the file, goes through its
# field's check here and then through Settings' own type and range constraints.
_CHECKS: dict[str, Any] = {
    "seed": _at_most(SEED_MAX, text=True), "iterations": _at_most(SEED_SPACE_END, text=True),
    "seed_stride": _at_most(SEED_MAX), "workers": _given_at_least_one,
    "batch_size": _given_at_least_one, "faults": _faults, "bugs": _bugs, "exec_cmd": _exec_cmd,
    "exec_env": _exec_env,
    "run_name": _run_name, "target": _text, "state_dir": _text, "checkpoint_file": _text,
    "bucket": _text, "sns_topic_arn": _sns_topic_arn, "log_group": _text, "namespace": _text,
    "region": _text,
}
_CONSTRAINT = re.compile(r"^Expected `(\w+)` (>=|<=|>|<) (\S+)$")
_WORDS = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}


def _message(exc: msgspec.ValidationError) -> str:
    """msgspec's `Expected `int` >= 1 - at `$.workers`` as `must be at least 1`."""
    text = str(exc).split(" - at `")[0]
    match = _CONSTRAINT.match(text)
    if match:
        return f"must be {_WORDS[match.group(2)]} {match.group(3)}"
    return text.replace("Expected", "expected")


def check_setting(field: str, value: Any) -> Any:
    """`value` for `field` checked and normalised; ValueError with a message that does not name
    the setting (the caller knows where the value came from)."""
    checked = _CHECKS.get(field, lambda v: v)(value)
    try:
        return getattr(msgspec.convert({field: checked}, Settings), field)
    except msgspec.ValidationError as exc:
        raise ValueError(_message(exc)) from None


def _cross_checks(settings: Settings, origin: Mapping[str, str]) -> None:
    """What no single value can break alone."""
    if settings.target == "exec" and not settings.exec_cmd:
        raise ConfigError(f"{origin.get('target', '--target')}: 'exec' needs --exec CMD")
    if not settings.fleet and settings.run_name is not None:
        raise ConfigError(
            f"argument --no-fleet: contradicts the run name {settings.run_name!r} "
            f"({origin.get('run_name', '--run')}): a run name asks for fleet mode; drop one")
    if settings.exec_cmd and settings.target != "exec":
        raise ConfigError(f"{origin.get('exec_cmd', '--exec')}: only with --target exec "
                          f"(the target is {settings.target!r})")
    if settings.bugs:
        from voprd.targets.loader import validate_bugs

        try:
            validate_bugs(settings.target, settings.bugs)
        except ValueError as exc:
            raise ConfigError(f"{origin.get('bugs', '--bug')}: {exc}") from None
    if settings.iterations is not None:
        last = settings.seed + (settings.iterations - 1) * settings.seed_stride
        if last > SEED_MAX:
            name = origin.get("iterations", "-n")
            raise ConfigError(
                f"{name}: seeds {settings.seed}.. reach {last}, past the largest seed "
                f"{SEED_MAX} (seeds are unsigned 64-bit)"
            )


def read_config_file(path: Path, *, explicit: bool) -> str | None:
    """The text of the TOML settings file; None when the default file does not exist. Any other
    problem (a directory, unreadable, not UTF-8, missing when named explicitly) is a ConfigError
    naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"--config: no such file: {path}") from None
        return None
    except IsADirectoryError:
        raise ConfigError(f"--config: {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--config: {path} is not UTF-8 text (byte {exc.start}: {data[exc.start]:#04x})"
        ) from None


def build_settings(
    flags: dict[str, Any],
    env: dict[str, str] | None = None,
    file_text: str | None = None,
    file_name: str = str(DEFAULT_CONFIG_PATH),
) -> Settings:
    """Layer file < environment < flags. `flags` holds only flags the user gave. Every value is
    checked by `check_setting` whatever its source; an error names the flag, variable or file key
    that gave it."""
    env = dict(os.environ) if env is None else env
    layers: list[tuple[dict[str, Any], Any]] = []
    if file_text:
        try:
            from_file = msgspec.toml.decode(file_text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{file_name}: not valid TOML: {exc}") from exc
        if not isinstance(from_file, dict):
            raise ConfigError(f"{file_name}: expected a table of settings")
        for key in from_file:
            if key not in FILE_KEYS:
                raise ConfigError(f"{file_name}: unknown setting {key!r}")
        layers.append((from_file, lambda key: f"{file_name}: {key}"))
    from_env = {field: env[var] for field, var in ENV_VARS.items() if env.get(var)}
    layers.append((from_env, lambda key: ENV_VARS[key]))
    # The standard AWS variables are environment too: they win over the file, lose to flags.
    region_var = next((var for var in ("AWS_REGION", "AWS_DEFAULT_REGION") if env.get(var)), None)
    if region_var is not None:
        layers.append(({"region": env[region_var]}, lambda key: region_var))
    try:
        # botocore would fail only at its first credential fetch, the spot watcher at its first
        # poll: refuse a bad metadata endpoint mode at start-up instead, naming the variable.
        imds_endpoint(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    layers.append((flags, lambda key: f"argument {flag_name(key)}"))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for values, label in layers:
        for key, value in values.items():
            try:
                merged[key] = check_setting(key, value)
            except ValueError as exc:
                raise ConfigError(f"{label(key)}: {exc}") from None
            origin[key] = label(key)
    if merged.get("exec_cmd") and "target" not in merged:
        merged["target"] = "exec"  # an external command is what --exec asks to run
    settings = msgspec.convert(merged, Settings)
    _cross_checks(settings, origin)
    return settings
