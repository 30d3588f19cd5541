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
    `instance` names this machine in alerts and log streams (instance id or host name)."""
    checkpoint_path = Path(settings.checkpoint_file) if settings.checkpoint_file else None
    if settings.backend == "aws":
        # Added by the AWS backend (voprd.sinks.aws); imported lazily to keep local start-up light.
        from voprd.sinks import aws  # type: ignore[attr-defined,unused-ignore]

        backend: Backend = aws.make_aws_backend(settings, state_dir, instance, checkpoint_path)
        return backend
    return LocalBackend(state_dir, checkpoint_path)
