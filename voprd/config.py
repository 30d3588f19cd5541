"""Settings: one validated object built from flags, VOPRD_* environment and an optional TOML file.

Precedence: flags win over environment, environment over the file, the file over defaults.
`build_settings` is pure (it takes the environment and file text as arguments) so it is unit-tested
without touching the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from voprd.options import DEFAULT_MAX_EVENTS, FAULT_CLASSES, RunOptions

DEFAULT_CONFIG_PATH = Path("/etc/voprd/voprd.toml")
DEFAULT_LOG_GROUP = "/aws/ec2/vopr-simulation"
DEFAULT_NAMESPACE = "VOPR"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


class Settings(msgspec.Struct, kw_only=True):
    # What to run.
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    iterations: Annotated[int, msgspec.Meta(ge=1)] | None = None  # None: run forever (daemon)
    target: str = "builtin"
    exec_cmd: str | None = None
    faults: tuple[str, ...] = FAULT_CLASSES
    max_events: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_EVENTS
    bugs: tuple[str, ...] = ()
    check_determinism: bool = False
    # Output.
    json: bool = False
    verbose: bool = False
    # Daemon.
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: one per CPU core
    seed_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    worker_memory_mb: Annotated[int, msgspec.Meta(ge=16)] = 1024
    drain_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0
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
    run_name: str = "default"
    batch_size: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: chosen automatically
    lease_seconds: Annotated[float, msgspec.Meta(gt=0)] = 180.0
    seed_stride: Annotated[int, msgspec.Meta(ge=1)] = 1
    fleet: bool = True  # with a bucket: coordinate through S3 leases (False: --no-fleet)

    @property
    def fleet_mode(self) -> bool:
        return self.backend == "aws" and self.fleet

    @property
    def backend(self) -> Literal["aws", "local"]:
        return "aws" if self.bucket else "local"

    def run_options(self) -> RunOptions:
        return RunOptions(
            target=self.target,
            exec_cmd=self.exec_cmd,
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


def build_settings(
    flags: dict[str, Any],
    env: dict[str, str] | None = None,
    file_text: str | None = None,
    file_name: str = str(DEFAULT_CONFIG_PATH),
) -> Settings:
    """Layer file < environment < flags. `flags` holds only flags the user gave."""
    env = dict(os.environ) if env is None else env
    merged: dict[str, Any] = {}
    if file_text:
        try:
            from_file = msgspec.toml.decode(file_text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{file_name}: not valid TOML: {exc}") from exc
        if not isinstance(from_file, dict):
            raise ConfigError(f"{file_name}: expected a table of settings")
        for key, value in from_file.items():
            if key not in FILE_KEYS:
                raise ConfigError(f"{file_name}: unknown setting {key!r}")
            merged[key] = value
    for field, var in ENV_VARS.items():
        if env.get(var):
            merged[field] = env[var]
    # The standard AWS variables are environment too: they win over the file, lose to flags.
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        merged["region"] = region
    try:
        # botocore would fail only at its first credential fetch, the spot watcher at its first
        # poll: refuse a bad metadata endpoint mode at start-up instead, naming the variable.
        imds_endpoint(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    merged.update(flags)
    try:
        return msgspec.convert(merged, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
