"""deploy/bootstrap.sh against a temporary root (VOPRD_ROOT + --dry-run): the files it installs.

The instance's user data is rendered from the template (its Fn::Sub header with stack values,
then the embedded bootstrap and units) and run exactly as cloud-init would, then the bootstrap
as voprd-bootstrap.service runs it, except that every path is under a temporary root and
package installs, pip and systemctl are only printed. The "bucket" source is also run for real:
the bootstrap's aws CLI calls go to a moto server over HTTP, with dnf, pip and systemctl
replaced by recorders.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.aws_fixtures import AwsWorld, boto
from tests.deploy_support import (
    BOOTSTRAP,
    BOOTSTRAP_UNIT,
    UNIT,
    VENV_BIN,
    embed_module,
    logical_lines,
    user_data_parts,
)

STACK_VALUES = {
    "VoprdSource": "git+https://github.com/example/voprd.git@v0.1.0",
    "VoprdArgs": "--faults network,crash --workers 2",
    "SeedStart": "7000000",
    "Bucket": "vopr-simulation-results-123456789012-us-east-1",
    "AlertTopic": "arn:aws:sns:us-east-1:123456789012:voprd-AlertTopic-X",
    "LogGroup": "/aws/ec2/vopr-simulation",
    "RunName": "nightly",
    "Network": "public-ipv4",  # a git source: github.com has no IPv6 address
    "AWS::Region": "us-east-1",
}


def render_user_data(values: dict[str, str]) -> str:
    """What CloudFormation hands the instance: Fn::Sub of the header, then the literal body."""
    header, body = user_data_parts()
    rendered = re.sub(r"\$\{([^}!]+)\}", lambda m: values[m[1]], header["Fn::Sub"])
    assert "${" not in rendered
    return str(rendered + body)


def would_run(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split("would run: ", 1)[1] for line in proc.stdout.splitlines()
            if "would run: " in line]


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


def boot(tmp_path: Path, values: dict[str, str]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The user data (which hands over to voprd-bootstrap.service), then what that unit runs."""
    root = tmp_path / "root"
    root.mkdir()
    user_data = tmp_path / "user-data.sh"
    user_data.write_text(render_user_data(values))
    handover = run(user_data, root, "--dry-run")
    assert handover.returncode == 0, handover.stderr
    assert sorted(snapshot(root)) == [
        "etc/systemd/system/voprd-bootstrap.service",
        "etc/voprd/stack.env",
        "opt/voprd/bootstrap.sh",
        "opt/voprd/voprd-bootstrap.service",
        "opt/voprd/voprd.service",
    ]
    assert would_run(handover) == [
        "systemctl daemon-reload",
        "systemctl enable voprd-bootstrap.service",
        "systemctl start --no-block voprd-bootstrap.service",  # cloud-init does not wait
    ]
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--wait", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    return root, proc


@pytest.fixture
def booted(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    return boot(tmp_path, STACK_VALUES)


def test_user_data_installs_bootstrap_unit_and_environment(
    booted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, proc = booted
    assert sorted(snapshot(root)) == [
        "etc/default/voprd",
        "etc/systemd/system/voprd-bootstrap.service",
        "etc/systemd/system/voprd.service",
        "etc/voprd/stack.env",
        "opt/voprd/bootstrap.sh",
        "opt/voprd/voprd-bootstrap.service",
        "opt/voprd/voprd.service",
        "usr/local/bin/voprd",
    ]
    embedded = embed_module().embedded_text  # the user data's copies: comments left out
    assert (root / "opt/voprd/bootstrap.sh").read_text() == embedded(BOOTSTRAP)
    assert os.readlink(root / "usr/local/bin/voprd") == "/opt/voprd/venv/bin/voprd"
    assert os.access(root / "opt/voprd/bootstrap.sh", os.X_OK)
    assert (root / "etc/systemd/system/voprd.service").read_text() == embedded(UNIT)
    assert (root / "etc/systemd/system/voprd-bootstrap.service").read_text() == embedded(
        BOOTSTRAP_UNIT
    )
    assert (root / "etc/default/voprd").read_text().splitlines() == [
        "# Written by /opt/voprd/bootstrap.sh from /etc/voprd/stack.env; edits are overwritten.",
        'VOPRD_BUCKET="vopr-simulation-results-123456789012-us-east-1"',
        'VOPRD_SNS_TOPIC_ARN="arn:aws:sns:us-east-1:123456789012:voprd-AlertTopic-X"',
        'VOPRD_LOG_GROUP="/aws/ec2/vopr-simulation"',
        'VOPRD_RUN="nightly"',  # every instance of the stack joins the run RunName
        'AWS_REGION="us-east-1"',
        'VOPRD_ARGS="--seed 7000000 --faults network,crash --workers 2"',
    ]
    assert not (root / "etc/amazon").exists()  # public IPv4: the SSM agent's defaults work
    assert not (root / "etc/chrony.d").exists()  # ... and chrony's 169.254.169.123
    # What a real boot would run, in order: packages (git for a git source), venv, pip, units.
    assert would_run(proc) == [
        "dnf install -y -q python3.11 python3.11-pip git",
        f"python3.11 -m venv {root}/opt/voprd/venv",
        f"{root}/opt/voprd/venv/bin/pip install -q {STACK_VALUES['VoprdSource']}",
        "systemctl daemon-reload",
        "systemctl enable voprd.service voprd-bootstrap.service",
        "systemctl restart --no-block voprd.service",
    ]


def test_ipv6_only_network_sets_dual_stack_endpoints_and_metadata_over_ipv6(
    tmp_path: Path,
) -> None:
    """The default network: the daemon's SDK settings and the SSM agent's, from stack.env."""
    values = {**STACK_VALUES, "Network": "ipv6-only", "VoprdSource": "voprd==0.1.0"}
    root, proc = boot(tmp_path, values)
    env_lines = (root / "etc/default/voprd").read_text().splitlines()
    assert env_lines[-3:] == [
        'AWS_USE_DUALSTACK_ENDPOINT="true"',
        'AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE="IPv6"',
        'VOPRD_ARGS="--seed 7000000 --faults network,crash --workers 2"',
    ]
    agent = (root / "etc/amazon/ssm/amazon-ssm-agent.json").read_text()
    assert agent.strip() == '{ "Agent": { "UseDualStackEndpoint": true } }'
    assert would_run(proc)[0] == "systemctl restart amazon-ssm-agent.service"
    assert "no /etc/chrony.conf: the clock is not synchronised over IPv6" in proc.stdout
    again = run(root / "opt/voprd/bootstrap.sh", root, "--wait", "--dry-run")
    assert "unchanged: /etc/amazon/ssm/amazon-ssm-agent.json" in again.stdout
    assert "amazon-ssm-agent" not in " ".join(would_run(again))  # no needless restart


@pytest.mark.parametrize("layout", ["sourcedir", "one-file"])
def test_ipv6_only_network_gives_chrony_the_ipv6_time_sync_address(
    tmp_path: Path, layout: str
) -> None:
    """Amazon Linux's chrony uses the Time Sync Service's IPv4 address only (AWS's EC2 guide:
    the IPv6 endpoint is opt-in); an instance without IPv4 needs fd00:ec2::123, as a sources
    file where chrony.conf reads /etc/chrony.d, else as a line of chrony.conf, once."""
    root = tmp_path / "root"
    (root / "etc/voprd").mkdir(parents=True)
    conf = "driftfile /var/lib/chrony/drift\n"
    if layout == "sourcedir":
        conf += "sourcedir /run/chrony.d\nsourcedir /etc/chrony.d\n"
    (root / "etc/chrony.conf").write_text(conf)
    (root / "etc/voprd/stack.env").write_text(
        "VOPRD_SOURCE=voprd==0.1.0\nVOPRD_SEED_START=0\nVOPRD_BUCKET=b\nVOPRD_SNS_TOPIC_ARN=t\n"
        "VOPRD_LOG_GROUP=g\nAWS_REGION=r\nVOPRD_NETWORK=ipv6-only\n"
    )
    line = "server fd00:ec2::123 prefer iburst minpoll 4 maxpoll 4"
    for attempt in range(2):
        proc = run(BOOTSTRAP, root, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        if layout == "sourcedir":
            sources = root / "etc/chrony.d/voprd-time-sync-ipv6.sources"
            assert sources.read_text() == line + "\n"
            assert (root / "etc/chrony.conf").read_text() == conf
            reload = "chronyc reload sources"
        else:
            assert (root / "etc/chrony.conf").read_text() == conf + line + "\n"
            assert not (root / "etc/chrony.d").exists()
            reload = "systemctl try-restart chronyd.service"
        assert (reload in would_run(proc)) == (attempt == 0)  # the second run changes nothing
    assert "unchanged: chrony already has fd00:ec2::123" in proc.stdout


def test_second_run_changes_nothing(booted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = booted
    before = snapshot(root)
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root) == before  # same content, modes and mtimes: nothing rewritten
    assert "unchanged: /etc/default/voprd" in proc.stdout
    assert "unchanged: /etc/systemd/system/voprd.service" in proc.stdout
    assert "would run: systemctl start --no-block voprd.service" in proc.stdout  # no restart
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
    # A same-version rebuild is reinstalled too (pip alone would keep the installed one).
    assert (f"would run: {root}/opt/voprd/venv/bin/pip install -q --force-reinstall --no-deps "
            "voprd==0.2.0") in proc.stdout
    assert "would run: systemctl restart --no-block voprd.service" in proc.stdout
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


RECORDER = """#!/bin/bash
echo "$(basename "$0") $*" >> "{log}"
"""
FAKE_PYTHON = """#!/bin/bash
# python3.11 -m venv DIR: a venv whose pip records its arguments and "installs" voprd.
echo "python3.11 $*" >> "{log}"
[ "$1 $2" = "-m venv" ] || exit 1
mkdir -p "$3/bin"
printf '#!/bin/bash\\necho "pip $*" >> "{log}"\\ntouch "%s/bin/voprd"; chmod +x "%s/bin/voprd"\\n' \
  "$3" "$3" > "$3/bin/pip"
printf '#!/bin/bash\\n' > "$3/bin/python"
chmod +x "$3/bin/pip" "$3/bin/python"
"""


def fake_instance(tmp_path: Path, aws: AwsWorld, source: str) -> tuple[Path, Path, dict[str, str]]:
    """A root with the stack's stack.env, recorders for dnf/rpm/systemctl/python3.11, and an
    environment whose aws CLI (the real one, awscli) talks to the moto server over HTTP."""
    root, fakes, log = tmp_path / "root", tmp_path / "bin", tmp_path / "calls.log"
    (root / "etc/voprd").mkdir(parents=True)
    fakes.mkdir()
    (root / "etc/voprd/stack.env").write_text(
        f"VOPRD_SOURCE={source}\nVOPRD_SEED_START=0\nVOPRD_BUCKET={aws.bucket}\n"
        f"VOPRD_SNS_TOPIC_ARN={aws.topic_arn}\nVOPRD_LOG_GROUP={aws.log_group}\n"
        "VOPRD_NETWORK=ipv6-only\nAWS_REGION=us-east-1\n"
    )
    for name in ("dnf", "systemctl", "chronyc"):
        (fakes / name).write_text(RECORDER.format(log=log))
    (fakes / "rpm").write_text("#!/bin/bash\nexit 1\n")  # nothing installed yet
    (fakes / "python3.11").write_text(FAKE_PYTHON.format(log=log))
    for f in fakes.iterdir():
        f.chmod(0o755)
    env = {
        **aws.env(), "VOPRD_ROOT": str(root), "LC_ALL": "C", "VOPRD_WHEEL_POLL_S": "1",
        "PATH": f"{fakes}:{VENV_BIN}:/usr/bin:/bin",
    }
    return root, log, env


def test_bucket_source_waits_for_a_wheel_then_updates_to_the_one_uploaded_last(
    tmp_path: Path, aws: AwsWorld
) -> None:
    """VoprdSource "bucket" (the default): the instance waits for a wheel under releases/,
    fetches it with the aws CLI (here from moto, over HTTP) and pip installs it; `--update`
    takes the wheel uploaded last, whatever its version, and reinstalls it."""
    root, log, env = fake_instance(tmp_path, aws, "bucket")
    s3 = boto("s3")
    bootstrap = subprocess.Popen(
        ["bash", str(BOOTSTRAP), "--wait"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert bootstrap.stderr is not None
        waiting = bootstrap.stderr.readline()  # the first look finds nothing
        assert f"waiting: no voprd wheel under s3://{aws.bucket}/releases/" in waiting
        s3.put_object(Bucket=aws.bucket, Key="releases/notes.txt", Body=b"not a wheel")
        s3.put_object(Bucket=aws.bucket, Key="releases/voprd-0.9.0-py3-none-any.whl", Body=b"old")
        _, err = bootstrap.communicate(timeout=120)
    finally:
        bootstrap.kill()
    assert bootstrap.returncode == 0, err
    first = root / "opt/voprd/dist/voprd-0.9.0-py3-none-any.whl"
    assert first.read_bytes() == b"old"
    calls = log.read_text().splitlines()
    assert calls == [
        "systemctl restart amazon-ssm-agent.service",
        "dnf install -y -q python3.11 python3.11-pip",
        f"python3.11 -m venv {root}/opt/voprd/venv",
        f"pip install -q {first}",
        "systemctl daemon-reload",
        "systemctl enable voprd.service voprd-bootstrap.service",
        "systemctl restart --no-block voprd.service",
    ]
    assert f"fetched: s3://{aws.bucket}/releases/voprd-0.9.0-py3-none-any.whl" in err
    assert 'AWS_USE_DUALSTACK_ENDPOINT="true"' in (root / "etc/default/voprd").read_text()
    assert not (root / "opt/voprd/dist/.download").exists()

    # A lower version uploaded later (a rollback), with the quick start's own command as
    # written: --update installs it, reinstalling even what pip would call up to date.
    time.sleep(1.1)  # LastModified has whole seconds
    (upload,) = {line for line in logical_lines() if line.startswith("aws s3 cp dist/")}
    checkout = tmp_path / "checkout"
    (checkout / "dist").mkdir(parents=True)
    (checkout / "dist/voprd-0.2.0-py3-none-any.whl").write_bytes(b"new")
    uploaded = subprocess.run(["bash", "-c", upload], cwd=checkout, capture_output=True,
                              text=True, timeout=120, env={**env, "BUCKET": aws.bucket})
    assert uploaded.returncode == 0, uploaded.stderr
    log.write_text("")
    update = subprocess.run(["bash", str(BOOTSTRAP), "--update"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert update.returncode == 0, update.stderr
    newest = root / "opt/voprd/dist/voprd-0.2.0-py3-none-any.whl"
    assert newest.read_bytes() == b"new"
    pip_calls = [c for c in log.read_text().splitlines() if c.startswith("pip ")]
    assert pip_calls == [
        "pip install -q --upgrade pip",
        f"pip install -q --upgrade {newest}",
        f"pip install -q --force-reinstall --no-deps {newest}",
    ]


def test_bucket_source_failed_listing_is_not_taken_for_a_missing_wheel(
    tmp_path: Path, aws: AwsWorld
) -> None:
    root, log, env = fake_instance(tmp_path, aws, "bucket")
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: the listing itself fails
    env["AWS_MAX_ATTEMPTS"] = "1"
    proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert f"could not list s3://{aws.bucket}/releases/" in proc.stderr
    assert "no voprd wheel" not in proc.stderr
    assert not (root / "etc/default/voprd").exists()
    assert not [c for c in log.read_text().splitlines() if c.startswith("pip ")]


def test_bucket_source_without_wait_fails_at_once_naming_the_upload(
    tmp_path: Path, aws: AwsWorld
) -> None:
    root, log, env = fake_instance(tmp_path, aws, "bucket")
    proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert f"no voprd wheel under s3://{aws.bucket}/releases/ (upload one" in proc.stderr
    assert not (root / "etc/default/voprd").exists()  # stopped before writing anything else
    assert not [c for c in log.read_text().splitlines() if c.startswith("pip ")]


def test_a_changed_bootstrap_unit_reloads_systemd_but_leaves_the_daemon_running(
    booted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = booted
    installed = root / "etc/systemd/system/voprd-bootstrap.service"
    installed.write_text(installed.read_text() + "# an older copy\n")
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert [c for c in would_run(proc) if c.startswith("systemctl")] == [
        "systemctl daemon-reload",
        "systemctl enable voprd.service voprd-bootstrap.service",
        "systemctl start --no-block voprd.service",  # not a restart: its own unit is unchanged
    ]
