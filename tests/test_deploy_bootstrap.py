"""deploy/bootstrap.sh against a temporary root (VOPRD_ROOT + --dry-run): the files it installs.

The instance's user data is rendered from the template (its Fn::Sub header with stack values,
then the embedded bootstrap and unit) and run exactly as cloud-init would, except that every
path is under a temporary root and package installs, pip and systemctl are only printed.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy_support import BOOTSTRAP, UNIT, VENV_BIN, user_data_parts

STACK_VALUES = {
    "VoprdSource": "git+https://github.com/example/voprd.git@v0.1.0",
    "VoprdArgs": "--faults network,crash --workers 2",
    "SeedStart": "7000000",
    "Bucket": "vopr-simulation-results-123456789012-us-east-1",
    "AlertTopic": "arn:aws:sns:us-east-1:123456789012:voprd-AlertTopic-X",
    "LogGroup": "/aws/ec2/vopr-simulation",
    "RunName": "nightly",
    "AWS::Region": "us-east-1",
}


def render_user_data(values: dict[str, str]) -> str:
    """What CloudFormation hands the instance: Fn::Sub of the header, then the literal body."""
    header, body = user_data_parts()
    rendered = re.sub(r"\$\{([^}!]+)\}", lambda m: values[m[1]], header["Fn::Sub"])
    assert "${" not in rendered
    return str(rendered + body)


def run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "VOPRD_ROOT": str(root), "LC_ALL": "C"}
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """path -> (content or link target, mode, mtime_ns) of every file and link under root."""
    entries: dict[str, tuple[bytes, int, int]] = {}
    for p in sorted(root.rglob("*")):
        stat = p.lstat()
        if p.is_symlink():
            content = os.readlink(p).encode()
        elif p.is_file():
            content = p.read_bytes()
        else:
            continue
        entries[str(p.relative_to(root))] = (content, stat.st_mode, stat.st_mtime_ns)
    return entries


@pytest.fixture
def booted(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path / "root"
    root.mkdir()
    user_data = tmp_path / "user-data.sh"
    user_data.write_text(render_user_data(STACK_VALUES))
    proc = run(user_data, root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_user_data_installs_bootstrap_unit_and_environment(
    booted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, proc = booted
    assert sorted(snapshot(root)) == [
        "etc/default/voprd",
        "etc/systemd/system/voprd.service",
        "etc/voprd/stack.env",
        "opt/voprd/bootstrap.sh",
        "opt/voprd/voprd.service",
        "usr/local/bin/voprd",
    ]
    assert (root / "opt/voprd/bootstrap.sh").read_text() == BOOTSTRAP.read_text()
    assert os.readlink(root / "usr/local/bin/voprd") == "/opt/voprd/venv/bin/voprd"
    assert os.access(root / "opt/voprd/bootstrap.sh", os.X_OK)
    assert (root / "etc/systemd/system/voprd.service").read_text() == UNIT.read_text()
    assert (root / "etc/default/voprd").read_text().splitlines() == [
        "# Written by /opt/voprd/bootstrap.sh from /etc/voprd/stack.env; edits are overwritten.",
        'VOPRD_BUCKET="vopr-simulation-results-123456789012-us-east-1"',
        'VOPRD_SNS_TOPIC_ARN="arn:aws:sns:us-east-1:123456789012:voprd-AlertTopic-X"',
        'VOPRD_LOG_GROUP="/aws/ec2/vopr-simulation"',
        'VOPRD_RUN="nightly"',  # every instance of the stack joins the run RunName
        'AWS_REGION="us-east-1"',
        'VOPRD_ARGS="--seed 7000000 --faults network,crash --workers 2"',
    ]
    # What a real boot would run, in order: packages (git for a git source), venv, pip, unit.
    would = [line.split("would run: ", 1)[1] for line in proc.stdout.splitlines()
             if "would run: " in line]
    assert would == [
        "dnf install -y -q python3.11 python3.11-pip git",
        f"python3.11 -m venv {root}/opt/voprd/venv",
        f"{root}/opt/voprd/venv/bin/pip install -q {STACK_VALUES['VoprdSource']}",
        "systemctl daemon-reload",
        "systemctl enable voprd.service",
        "systemctl restart voprd.service",
    ]


def test_second_run_changes_nothing(booted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = booted
    before = snapshot(root)
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root) == before  # same content, modes and mtimes: nothing rewritten
    assert "unchanged: /etc/default/voprd" in proc.stdout
    assert "unchanged: /etc/systemd/system/voprd.service" in proc.stdout
    assert "would run: systemctl start voprd.service" in proc.stdout  # no needless restart
    assert "restart" not in proc.stdout and "daemon-reload" not in proc.stdout


def test_update_with_new_source_upgrades_and_restarts(
    booted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = booted
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run", "--update",
               "--source", "voprd==0.2.0")
    assert proc.returncode == 0, proc.stderr
    stack_env = (root / "etc/voprd/stack.env").read_text()
    assert "VOPRD_SOURCE=voprd==0.2.0\n" in stack_env
    assert stack_env.count("VOPRD_SOURCE=") == 1
    assert "VOPRD_BUCKET=vopr-simulation-results-123456789012-us-east-1\n" in stack_env
    assert f"would run: {root}/opt/voprd/venv/bin/pip install -q --upgrade voprd==0.2.0" in (
        proc.stdout
    )
    assert "would run: systemctl restart voprd.service" in proc.stdout
    assert "git" not in proc.stdout.split("dnf install", 1)[1].splitlines()[0]


def test_environment_file_values_are_quoted_for_systemd(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/voprd").mkdir(parents=True)
    (root / "etc/voprd/stack.env").write_text(
        "VOPRD_SOURCE=voprd\nVOPRD_SEED_START=0\nVOPRD_BUCKET=b\nVOPRD_SNS_TOPIC_ARN=t\n"
        'VOPRD_LOG_GROUP=g\nAWS_REGION=r\nVOPRD_EXTRA_ARGS=--run a"b$HOME\\x`id`\n'
    )
    proc = run(BOOTSTRAP, root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    env_lines = (root / "etc/default/voprd").read_text().splitlines()
    # Never expanded: the value reaches systemd as the literal text.
    assert env_lines[-1] == 'VOPRD_ARGS="--seed 0 --run a\\"b\\$HOME\\\\x\\`id\\`"'


@pytest.mark.parametrize(
    ("stack_env", "args", "code", "message"),
    [
        (None, [], 1, "missing"),
        ("VOPRD_SOURCE=voprd\n", [], 1, "has no VOPRD_SEED_START"),
        ("VOPRD_SOURCE=voprd\nVOPRD_SEED_START=1e9\nVOPRD_BUCKET=b\nVOPRD_SNS_TOPIC_ARN=t\n"
         "VOPRD_LOG_GROUP=g\nAWS_REGION=r\n", [], 1, "must be a number"),
        ("", ["--bogus"], 2, "unknown argument: --bogus"),
        ("", ["--source"], 2, "--source needs a value"),
    ],
)
def test_bad_input_is_refused_with_a_message(
    tmp_path: Path, stack_env: str | None, args: list[str], code: int, message: str
) -> None:
    if stack_env is not None:
        (tmp_path / "etc/voprd").mkdir(parents=True)
        (tmp_path / "etc/voprd/stack.env").write_text(stack_env)
    proc = run(BOOTSTRAP, tmp_path, "--dry-run", *args)
    assert proc.returncode == code
    assert message in proc.stderr
    assert not (tmp_path / "etc/default/voprd").exists()


def test_shellcheck_clean(tmp_path: Path) -> None:
    shellcheck = VENV_BIN / "shellcheck"
    user_data = tmp_path / "user-data.sh"
    user_data.write_text(render_user_data(STACK_VALUES))
    proc = subprocess.run(
        [str(shellcheck), "--shell=bash", str(BOOTSTRAP), str(user_data)],
        capture_output=True, text=True, timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
