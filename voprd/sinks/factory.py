"""The one place that picks a backend: `aws` when a bucket is configured, else `local`."""

from __future__ import annotations

import os
from pathlib import Path

from voprd.config import Settings
from voprd.sinks.base import Backend
from voprd.sinks.local import LocalBackend, default_state_dir


def resolve_state_dir(settings: Settings, env: dict[str, str] | None = None) -> Path:
    """`--state-dir` / VOPRD_STATE_DIR, else `$STATE_DIRECTORY` (systemd), else XDG state dir."""
    if settings.state_dir:
        return Path(settings.state_dir).expanduser()
    return default_state_dir(dict(os.environ) if env is None else env)


def make_backend(settings: Settings, state_dir: Path, instance: str) -> Backend:
    """The backend for `settings`. `state_dir` is always local (the AWS outbox lives there too);
    `instance` names this machine (VOPRD_INSTANCE or the host name). A backend may expose an
    `instance_id` attribute once `start()` returned (e.g. the EC2 instance id): the daemon then uses
    it in alerts and failure records instead.

    The AWS branch expects `voprd.sinks.aws.make_aws_backend(settings, state_dir, instance,
    checkpoint_path)`, where checkpoint_path is `--checkpoint-file` or None (local default
    STATE_DIR/checkpoint.json; the daemon keeps its progress journal next to it)."""
    checkpoint_path = Path(settings.checkpoint_file) if settings.checkpoint_file else None
    if settings.backend == "aws":
        # Added by the AWS backend (voprd.sinks.aws); imported lazily to keep local start-up light.
        from voprd.sinks import aws  # type: ignore[attr-defined,unused-ignore]

        backend: Backend = aws.make_aws_backend(settings, state_dir, instance, checkpoint_path)
        return backend
    return LocalBackend(state_dir, checkpoint_path)
