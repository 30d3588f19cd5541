"""LocalStack, a second AWS emulator beside moto, for the tests marked `localstack`.

It checks what moto cannot: CloudWatch alarms are evaluated and publish their state changes to
SNS, its CloudFormation applies bucket policies, topic policies, KMS keys and alarms, and its S3
refuses conditional deletes (`DeleteObject` with `If-Match`: NotImplemented) as an S3-compatible
store may. It runs without Docker from its own venv, `.venv-localstack` (Python 3.13; .ci/run
creates it from tests/requirements-localstack.txt), one server per test session on a free
loopback port with its state in a temporary directory. docs/development.md, "LocalStack", tells
how to run these tests; /work/shared/notes/localstack.md what LocalStack does and does not apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws_fixtures import AWS_ENV, free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv-localstack" / "bin" / "python"
ACCOUNT = "000000000000"  # LocalStack's default account for the "test"-style credentials
SERVICES = "s3,sns,sqs,cloudwatch,logs,cloudformation,iam,sts,ec2,kms,ssm"
START_WAIT_S_MAX = 180.0  # a bound for a loaded machine, not a target (it answers in 2-15 s)
STOP_WAIT_S_MAX = 5.0  # then SIGKILL: its state is a temporary directory, nothing to save


def unavailable() -> str | None:
    """Why LocalStack cannot run here, or None."""
    if not VENV_PYTHON.exists():
        return f"no {VENV_PYTHON.parent.parent.name} (see docs/development.md, 'LocalStack')"
    return None


def require() -> None:
    """Skip a laptop without LocalStack's venv; under CI (.ci/run installs it) fail instead."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"LocalStack is required under CI: {reason}")
    pytest.skip(reason)


class LocalStack:
    """One LocalStack process on 127.0.0.1 only, its state under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / "localstack.log"
        self._process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOPRD_"))}
        env.update({
            # hypercorn binds exactly GATEWAY_LISTEN (the default server binds 0.0.0.0).
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "GATEWAY_SERVER": "hypercorn",
            # This machine kind carries Docker's marker file: without this LocalStack believes
            # it runs in its own container and ignores FILESYSTEM_ROOT.
            "OVERRIDE_IN_DOCKER": "0",
            "DNS_ADDRESS": "0",  # no DNS server (it would bind port 53)
            "DISABLE_EVENTS": "1",  # no analytics
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "FILESYSTEM_ROOT": str(self.state_dir / "fs"),
            "LOCALSTACK_VOLUME_DIR": str(self.state_dir / "volume"),
            "SERVICES": SERVICES,
        })
        return env

    def start(self) -> None:
        assert self._process is None
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [str(VENV_PYTHON), "-m", "localstack.runtime.main"],
                cwd=self.state_dir, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_WAIT_S_MAX
        while not self._healthy():
            if self._process.poll() is not None:
                raise RuntimeError(f"LocalStack exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"LocalStack did not answer in time:\n{self.log_tail()}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_localstack/health", timeout=5) as answer:
                services = json.load(answer)["services"]
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return False
        wanted = SERVICES.split(",")
        return all(services.get(name) in ("available", "running") for name in wanted)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_WAIT_S_MAX)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def client_env(self, region: str) -> dict[str, str]:
        """Environment of a process (the daemon, the awscli) talking to this LocalStack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOPRD_"))}
        env.update(AWS_ENV)
        env.update({"AWS_REGION": region, "AWS_DEFAULT_REGION": region,
                    "AWS_ENDPOINT_URL": self.url})
        return env

    def client(self, service: str, region: str) -> Any:
        return boto3.client(
            service, endpoint_url=self.url, region_name=region,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )


@contextlib.contextmanager
def running(state_dir: Path) -> Iterator[LocalStack]:
    server = LocalStack(state_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
