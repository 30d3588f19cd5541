"""deploy/bootstrap.sh against a temporary root (VOPRD_ROOT + --dry-run): the files it installs.

The instance's user data is rendered from the template (its Fn::Sub header with stack values,
then the embedded bootstrap and units) and run exactly as cloud-init would, then the bootstrap
as voprd-bootstrap.service runs it, except that every path is under a temporary root and
package installs, pip and systemctl are only printed. The "bucket" source is also run for real:
the bootstrap's aws CLI calls go to a moto server over HTTP, with dnf, pip and systemctl
replaced by recorders.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import ssl
import subprocess
import threading
import zipfile
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

COMMIT = "0123456789abcdef0123456789abcdef01234567"
STACK_VALUES = {
    "VoprdSource": f"git+https://github.com/example/voprd.git@{COMMIT}",
    "VoprdWheelSha256": "",
    "VoprdArgs": "--faults network,crash --workers 2",
    "SeedStart": "7000000",
    "Bucket": "vopr-simulation-results-123456789012-us-east-1",
    "AlertTopic": "arn:aws:sns:us-east-1:123456789012:voprd-AlertTopic-X",
    "LogGroup": "/aws/ec2/vopr-simulation",
    "Run": "nightly",  # FleetSize > 1: the stack passes RunName (1: empty, the daemon alone)
    "Network": "public-ipv4",  # a git source: github.com has no IPv6 address
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
}


SHA = "ab" * 32  # a wheel's sha256, as the stack passes it


def stack_env(source: str = "bucket", **extra: str) -> str:
    """A stack.env as the user data writes it (minimal values), plus `extra`."""
    values = {"VOPRD_SOURCE": source, "VOPRD_WHEEL_SHA256": SHA, "VOPRD_SEED_START": "0",
              "VOPRD_BUCKET": "b", "VOPRD_SNS_TOPIC_ARN": "t", "VOPRD_LOG_GROUP": "g",
              "AWS_REGION": "r", "AWS_ACCOUNT_ID": "123456789012", **extra}
    return "".join(f"{key}={value}\n" for key, value in values.items())


def render_user_data(values: dict[str, str]) -> str:
    """What CloudFormation hands the instance: Fn::Sub of the header, then the literal body."""
    header, body = user_data_parts()
    text, _ = header["Fn::Sub"]
    rendered = re.sub(r"\$\{([^}!]+)\}", lambda m: values[m[1]], text)
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
    assert (root / "opt/voprd/bootstrap.sh").read_text() == embedded(BOOTSTRAP)  # decoded
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
    # What a real boot would run, in order: packages (git for a git source), venv, pip from its
    # hashed lock, the runtime from the hashed lock inside the verified wheel, the wheel itself
    # without dependencies or an index, the units.
    assert f"dry-run: would fetch and verify the wheel of {STACK_VALUES['VoprdSource']}" in (
        proc.stdout)
    pip = f"{root}/opt/voprd/venv/bin/pip install -q --disable-pip-version-check --no-cache-dir"
    assert would_run(proc) == [
        "dnf install -y -q python3.11 python3.11-pip git",
        f"python3.11 -m venv {root}/opt/voprd/venv",
        f"{pip} --require-hashes --only-binary=:all: -r {root}/opt/voprd/locks/instance-pip.txt",
        f"{pip} --require-hashes --only-binary=:all: -r "
        f"{root}/opt/voprd/locks/instance-runtime.txt",
        f"{pip} --no-deps --no-index --force-reinstall {root}/opt/voprd/dist/VERIFIED.whl",
        "systemctl daemon-reload",
        "systemctl enable voprd.service voprd-bootstrap.service",
        "systemctl restart --no-block voprd.service",
    ]


def test_ipv6_only_network_sets_dual_stack_endpoints_and_metadata_over_ipv6(
    tmp_path: Path,
) -> None:
    """The default network: the daemon's SDK settings and the SSM agent's, from stack.env."""
    values = {**STACK_VALUES, "Network": "ipv6-only", "VoprdSource": "bucket",
              "VoprdWheelSha256": SHA, "Run": ""}
    root, proc = boot(tmp_path, values)
    env_lines = (root / "etc/default/voprd").read_text().splitlines()
    assert not [line for line in env_lines if line.startswith("VOPRD_RUN=")]  # alone: no run
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
    (root / "etc/voprd/stack.env").write_text(stack_env(VOPRD_NETWORK="ipv6-only"))
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


def test_update_with_new_source_reinstalls_and_restarts(
    booted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = booted
    url = "https://example.com/r/voprd-0.2.0-py3-none-any.whl#sha256=" + "c" * 64
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run", "--update", "--source", url)
    assert proc.returncode == 0, proc.stderr
    stack_env = (root / "etc/voprd/stack.env").read_text()
    assert f"VOPRD_SOURCE={url}\n" in stack_env
    assert stack_env.count("VOPRD_SOURCE=") == 1
    assert "VOPRD_BUCKET=vopr-simulation-results-123456789012-us-east-1\n" in stack_env
    # A same-version rebuild is reinstalled too (pip alone would keep the installed one).
    assert (f"would run: {root}/opt/voprd/venv/bin/pip install -q --disable-pip-version-check "
            f"--no-cache-dir --no-deps --no-index --force-reinstall "
            f"{root}/opt/voprd/dist/VERIFIED.whl") in proc.stdout
    assert "would run: systemctl restart --no-block voprd.service" in proc.stdout
    assert "git" not in proc.stdout.split("dnf install", 1)[1].splitlines()[0]


@pytest.mark.parametrize("source", [
    "voprd==0.2.0",  # a name on an index nobody here owns
    "git+https://github.com/example/voprd.git@v0.2.0",  # a tag moves
    "https://example.com/voprd-0.2.0-py3-none-any.whl",  # no hash
    "https://example.com/voprd-0.2.0.tar.gz#sha256=" + "c" * 64,  # not a wheel
    "http://example.com/voprd-0.2.0-py3-none-any.whl#sha256=" + "c" * 64,
])
def test_unpinned_sources_are_refused_and_not_recorded(
    booted: tuple[Path, subprocess.CompletedProcess[str]], source: str
) -> None:
    root, _ = booted
    before = (root / "etc/voprd/stack.env").read_text()
    proc = run(root / "opt/voprd/bootstrap.sh", root, "--dry-run", "--update", "--source", source)
    assert proc.returncode == 1
    assert "bootstrap.sh:" in proc.stderr and ("sha256" in proc.stderr or "commit" in proc.stderr)
    assert (root / "etc/voprd/stack.env").read_text() == before
    assert "would run" not in proc.stdout


def test_environment_file_values_are_quoted_for_systemd(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/voprd").mkdir(parents=True)
    (root / "etc/voprd/stack.env").write_text(
        stack_env(VOPRD_EXTRA_ARGS='--run a"b$HOME\\x`id`'))
    proc = run(BOOTSTRAP, root, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    env_lines = (root / "etc/default/voprd").read_text().splitlines()
    # Never expanded: the value reaches systemd as the literal text.
    assert env_lines[-1] == 'VOPRD_ARGS="--seed 0 --run a\\"b\\$HOME\\\\x\\`id\\`"'


@pytest.mark.parametrize(
    ("stack_env", "args", "code", "message"),
    [
        (None, [], 1, "missing"),
        ("VOPRD_SOURCE=bucket\n", [], 1, "has no VOPRD_SEED_START"),
        (stack_env(VOPRD_SEED_START="1e9"), [], 1, "must be a number"),
        (stack_env().replace("AWS_ACCOUNT_ID=123456789012\n", ""), [], 1, "no AWS_ACCOUNT_ID"),
        (stack_env(VOPRD_WHEEL_SHA256=""), [], 1, "source bucket needs VOPRD_WHEEL_SHA256"),
        (stack_env(VOPRD_WHEEL_SHA256="AB" * 32), [], 1, "needs VOPRD_WHEEL_SHA256"),
        (stack_env("voprd==0.1.0"), [], 1, "VOPRD_SOURCE must be bucket, https://"),
        (stack_env(), ["--wheel-sha256", "f" * 63], 1, "needs VOPRD_WHEEL_SHA256"),
        ("", ["--bogus"], 2, "unknown argument: --bogus"),
        ("", ["--source"], 2, "--source needs a value"),
        ("", ["--wheel-sha256"], 2, "--wheel-sha256 needs a value"),
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
# python3.11 -c CODE ...: the real interpreter (the bootstrap reads the locks out of the wheel).
if [ "$1" = "-c" ]; then exec python3 "$@"; fi
echo "python3.11 $*" >> "{log}"
[ "$1 $2" = "-m venv" ] || exit 1
mkdir -p "$3/bin"
printf '#!/bin/bash\\necho "pip $*" >> "{log}"\\ntouch "%s/bin/voprd"; chmod +x "%s/bin/voprd"\\n' \
  "$3" "$3" > "$3/bin/pip"
printf '#!/bin/bash\\n' > "$3/bin/python"
chmod +x "$3/bin/pip" "$3/bin/python"
"""
# The real aws CLI, with each call's arguments recorded first.
AWS_RECORDER = """#!/bin/bash
echo "aws $*" >> "{log}"
exec "{aws}" "$@"
"""


def fake_wheel(path: Path, version: str, marker: str = "") -> str:
    """A wheel (a zip) carrying the locks, as deploy/lock.py puts them in voprd's wheels; its
    sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("voprd/__init__.py", f"# {version} {marker}\n")
        for name in ("instance-pip.txt", "instance-runtime.txt", "instance-build.txt"):
            wheel.writestr(f"voprd/lock/{name}", f"# {name} of {version}\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_instance(tmp_path: Path, aws: AwsWorld, source: str, sha256: str = SHA
                  ) -> tuple[Path, Path, dict[str, str]]:
    """A root with the stack's stack.env, recorders for dnf/rpm/systemctl/python3.11, and an
    environment whose aws CLI (the real one, awscli) talks to the moto server over HTTP."""
    root, fakes, log = tmp_path / "root", tmp_path / "bin", tmp_path / "calls.log"
    (root / "etc/voprd").mkdir(parents=True)
    fakes.mkdir()
    (root / "etc/voprd/stack.env").write_text(stack_env(
        source, VOPRD_WHEEL_SHA256=sha256, VOPRD_BUCKET=aws.bucket,
        VOPRD_SNS_TOPIC_ARN=aws.topic_arn, VOPRD_LOG_GROUP=aws.log_group,
        VOPRD_NETWORK="ipv6-only", AWS_REGION="us-east-1"))
    for name in ("dnf", "systemctl", "chronyc"):
        (fakes / name).write_text(RECORDER.format(log=log))
    (fakes / "rpm").write_text("#!/bin/bash\nexit 1\n")  # nothing installed yet
    (fakes / "python3.11").write_text(FAKE_PYTHON.format(log=log))
    (fakes / "aws").write_text(AWS_RECORDER.format(log=tmp_path / "aws.log",
                                                   aws=VENV_BIN / "aws"))
    for f in fakes.iterdir():
        f.chmod(0o755)
    env = {
        **aws.env(), "VOPRD_ROOT": str(root), "LC_ALL": "C", "VOPRD_WHEEL_POLL_S": "1",
        "PATH": f"{fakes}:{VENV_BIN}:/usr/bin:/bin",
    }
    return root, log, env


def pip_calls(log: Path) -> list[str]:
    return [c for c in log.read_text().splitlines() if c.startswith("pip ")]


PIP = "pip install -q --disable-pip-version-check --no-cache-dir"


def test_bucket_source_waits_for_the_pinned_wheel_and_refuses_one_whose_hash_differs(
    tmp_path: Path, aws: AwsWorld
) -> None:
    """VoprdSource "bucket" (the default): the instance waits for a wheel under
    releases/SHA256/, fetches it with the aws CLI (here from moto, over HTTP), and checks its
    sha256 with sha256sum -c before pip sees it: a wheel that does not match is refused."""
    good = tmp_path / "good/voprd-0.9.0-py3-none-any.whl"
    sha256 = fake_wheel(good, "0.9.0")
    root, log, env = fake_instance(tmp_path, aws, "bucket", sha256)
    s3 = boto("s3")
    key = f"releases/{sha256}/voprd-0.9.0-py3-none-any.whl"
    bootstrap = subprocess.Popen(
        ["bash", str(BOOTSTRAP), "--wait"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert bootstrap.stderr is not None
        waiting = bootstrap.stderr.readline()  # the first look finds nothing
        assert f"waiting: no voprd wheel under s3://{aws.bucket}/releases/{sha256}/" in waiting
        # Another wheel elsewhere is not looked at; a tampered one at the pinned key is refused.
        s3.put_object(Bucket=aws.bucket, Key="releases/voprd-9.9.9-py3-none-any.whl", Body=b"x")
        tampered = tmp_path / "bad/voprd-0.9.0-py3-none-any.whl"
        fake_wheel(tampered, "0.9.0", marker="backdoor")
        s3.put_object(Bucket=aws.bucket, Key=key, Body=tampered.read_bytes())
        _, err = bootstrap.communicate(timeout=120)
    finally:
        bootstrap.kill()
    assert bootstrap.returncode == 1
    assert (f"bootstrap.sh: voprd-0.9.0-py3-none-any.whl does not have the sha256 the stack pins "
            f"({sha256}): refused") in err
    assert pip_calls(log) == []
    assert not list((root / "opt/voprd/dist").iterdir())  # nothing kept, not even the download
    assert not (root / "etc/default/voprd").exists()

    # The right wheel at the same key: installed, its own locks first.
    s3.put_object(Bucket=aws.bucket, Key=key, Body=good.read_bytes())
    proc = subprocess.run(["bash", str(BOOTSTRAP), "--wait"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    installed = root / "opt/voprd/dist/voprd-0.9.0-py3-none-any.whl"
    assert installed.read_bytes() == good.read_bytes()
    locks = root / "opt/voprd/locks"
    assert (locks / "instance-runtime.txt").read_text() == "# instance-runtime.txt of 0.9.0\n"
    assert pip_calls(log) == [
        f"{PIP} --require-hashes --only-binary=:all: -r {locks}/instance-pip.txt",
        f"{PIP} --require-hashes --only-binary=:all: -r {locks}/instance-runtime.txt",
        f"{PIP} --no-deps --no-index --force-reinstall {installed}",
    ]
    assert f"verified: voprd-0.9.0-py3-none-any.whl (sha256 {sha256})" in proc.stderr
    # Every aws call names the bucket's owner: a same-named bucket of another account is refused.
    aws_calls = (tmp_path / "aws.log").read_text().splitlines()
    assert aws_calls and all("--expected-bucket-owner 123456789012" in c for c in aws_calls)


def test_publish_step_of_the_guide_then_update_to_the_new_hash(
    tmp_path: Path, aws: AwsWorld
) -> None:
    """The guide's own publish lines (as written) put a wheel where the instance looks, and
    `--update --wheel-sha256 HASH` records and installs it."""
    first = tmp_path / "v1/voprd-0.9.0-py3-none-any.whl"
    sha1 = fake_wheel(first, "0.9.0")
    root, log, env = fake_instance(tmp_path, aws, "bucket", sha1)
    boto("s3").put_object(Bucket=aws.bucket, Key=f"releases/{sha1}/{first.name}",
                          Body=first.read_bytes())
    assert subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True,
                          timeout=120).returncode == 0

    checkout = tmp_path / "checkout"
    sha2 = fake_wheel(checkout / "dist/voprd-0.2.0-py3-none-any.whl", "0.2.0")
    lines = logical_lines()
    (hashing,) = {line for line in lines if line.startswith("WHEEL=$(")}
    (upload,) = {line for line in lines if line.startswith('aws s3 cp "$WHEEL"')}
    published = subprocess.run(["bash", "-euc", f"{hashing}\n{upload}"], cwd=checkout,
                               capture_output=True, text=True, timeout=120,
                               env={**env, "BUCKET": aws.bucket})
    assert published.returncode == 0, published.stderr
    assert sha2 in published.stdout  # the hash to give the stack (VoprdWheelSha256)
    log.write_text("")
    update = subprocess.run(["bash", str(BOOTSTRAP), "--update", "--wheel-sha256", sha2],
                            env=env, capture_output=True, text=True, timeout=120)
    assert update.returncode == 0, update.stderr
    assert f"VOPRD_WHEEL_SHA256={sha2}\n" in (root / "etc/voprd/stack.env").read_text()
    newest = root / "opt/voprd/dist/voprd-0.2.0-py3-none-any.whl"
    assert hashlib.sha256(newest.read_bytes()).hexdigest() == sha2
    assert pip_calls(log)[-1] == f"{PIP} --no-deps --no-index --force-reinstall {newest}"
    assert "systemctl restart --no-block voprd.service" in log.read_text()


def test_bucket_source_failed_listing_is_not_taken_for_a_missing_wheel(
    tmp_path: Path, aws: AwsWorld
) -> None:
    root, log, env = fake_instance(tmp_path, aws, "bucket")
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: the listing itself fails
    env["AWS_MAX_ATTEMPTS"] = "1"
    proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert f"could not list s3://{aws.bucket}/releases/{SHA}/" in proc.stderr
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
    assert f"no voprd wheel under s3://{aws.bucket}/releases/{SHA}/ (publish it" in proc.stderr
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


def test_a_verified_wheel_without_its_locks_is_refused(tmp_path: Path, aws: AwsWorld) -> None:
    """A wheel of a voprd before the locks existed carries nothing to install its dependencies
    from with hashes: refused, nothing installed."""
    old = tmp_path / "old/voprd-0.1.0-py3-none-any.whl"
    old.parent.mkdir()
    with zipfile.ZipFile(old, "w") as wheel:
        wheel.writestr("voprd/__init__.py", "")
    sha256 = hashlib.sha256(old.read_bytes()).hexdigest()
    _, log, env = fake_instance(tmp_path, aws, "bucket", sha256)
    boto("s3").put_object(Bucket=aws.bucket, Key=f"releases/{sha256}/{old.name}",
                          Body=old.read_bytes())
    proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "has no voprd/lock/ (a wheel of voprd before its locks?)" in proc.stderr
    assert pip_calls(log) == []


def test_https_source_is_fetched_over_tls_and_checked_against_its_hash(
    tmp_path: Path, aws: AwsWorld
) -> None:
    """VoprdSource https://.../NAME.whl#sha256=HASH: curl (HTTPS only) from a local TLS server
    (a self-signed certificate the test trusts), then sha256sum -c, then the locked install; the
    same URL with another hash is refused."""
    served = tmp_path / "www"
    wheel = served / "voprd-0.3.0-py3-none-any.whl"
    sha256 = fake_wheel(wheel, "0.3.0")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/{wheel.name}"
        for pinned, code in (("cd" * 32, 1), (sha256, 0)):
            root, log, env = fake_instance(tmp_path / pinned[:4], aws, f"{url}#sha256={pinned}")
            env["CURL_CA_BUNDLE"] = str(cert)
            proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == code, proc.stderr
            if code:
                assert f"does not have the sha256 the stack pins ({pinned}): refused" in (
                    proc.stderr)
                assert pip_calls(log) == []
            else:
                installed = root / "opt/voprd/dist" / wheel.name
                assert installed.read_bytes() == wheel.read_bytes()
                assert pip_calls(log)[-1] == (
                    f"{PIP} --no-deps --no-index --force-reinstall {installed}")
    finally:
        server.shutdown()
        server.server_close()


FAKE_VENV_PIP = """#!/bin/bash
# Records its arguments; `pip wheel ... --wheel-dir DIR SRC` makes a wheel of SRC's voprd/lock/.
echo "pip $*" >> "{log}"
if [ "$1" = wheel ]; then
  python3 - "${{@: -1}}" "$(sed 's/.*--wheel-dir \\([^ ]*\\).*/\\1/' <<< "$*")" <<'PY'
import pathlib, sys, zipfile
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(out / "voprd-0.4.0-py3-none-any.whl", "w") as wheel:
    for lock in (src / "voprd/lock").iterdir():
        wheel.write(lock, f"voprd/lock/{{lock.name}}")
PY
fi
touch "{venv}/bin/voprd"; chmod +x "{venv}/bin/voprd"
"""


def test_git_source_fetches_the_pinned_commit_and_builds_with_the_build_lock(
    tmp_path: Path, aws: AwsWorld
) -> None:
    """VoprdSource git+https://HOST/REPO.git@COMMIT: the real git fetches exactly that commit
    (the https URL is mapped to a local repository by git's own url.insteadOf), the pip and
    build locks of that commit are installed with hashes, the wheel is built without build
    isolation or an index, then installed like any other. A commit the repository does not have
    fails."""
    repo = tmp_path / "repo"
    (repo / "voprd/lock").mkdir(parents=True)
    for name in ("instance-pip.txt", "instance-runtime.txt", "instance-build.txt"):
        (repo / "voprd/lock" / name).write_text(f"# {name} at the pinned commit\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    subprocess.run([*git, "add", "."], check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "locks"], check=True, timeout=60)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True, timeout=60).stdout.strip()
    (repo / "voprd/lock/instance-runtime.txt").write_text("# a later commit\n")
    subprocess.run([*git, "commit", "-qam", "later"], check=True, timeout=60)
    url = "https://git.example.test/voprd.git"
    for pinned, code in (("f" * 40, 1), (commit, 0)):
        root, log, env = fake_instance(tmp_path / pinned[:4], aws, f"git+{url}@{pinned}")
        venv = root / "opt/voprd/venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin/python").write_text("#!/bin/bash\n")
        (venv / "bin/pip").write_text(FAKE_VENV_PIP.format(log=log, venv=venv))
        for script in ("python", "pip"):
            (venv / "bin" / script).chmod(0o755)
        env.update({"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": f"url.{repo}.insteadOf",
                    "GIT_CONFIG_VALUE_0": url, "GIT_CONFIG_KEY_1": "uploadpack.allowAnySHA1InWant",
                    "GIT_CONFIG_VALUE_1": "true"})
        proc = subprocess.run(["bash", str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                              timeout=120)
        if code:  # git's own error ("not our ref"), then the bootstrap stops
            assert proc.returncode != 0 and "not our ref" in proc.stderr
            assert pip_calls(log) == []
            continue
        assert proc.returncode == 0, proc.stderr
        src, dist, locks = (root / "opt/voprd" / d for d in ("src", "dist", "locks"))
        wheel = dist / "voprd-0.4.0-py3-none-any.whl"
        assert pip_calls(log) == [
            f"{PIP} --require-hashes --only-binary=:all: -r {src}/voprd/lock/instance-pip.txt",
            f"{PIP} --require-hashes --only-binary=:all: -r {src}/voprd/lock/instance-build.txt",
            f"pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps "
            f"--no-build-isolation --no-index --wheel-dir {dist} {src}",
            f"{PIP} --require-hashes --only-binary=:all: -r {locks}/instance-pip.txt",
            f"{PIP} --require-hashes --only-binary=:all: -r {locks}/instance-runtime.txt",
            f"{PIP} --no-deps --no-index --force-reinstall {wheel}",
        ]
        # The pinned commit's lock, not the later one's.
        assert (locks / "instance-runtime.txt").read_text() == (
            "# instance-runtime.txt at the pinned commit\n")
        assert "dnf install -y -q python3.11 python3.11-pip git" in log.read_text()
