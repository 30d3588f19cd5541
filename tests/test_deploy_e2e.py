"""From the stack to a running daemon: deploy the template to moto, run the instance's user data
(bootstrap against a temporary root), then start the daemon the way the unit does (its
ExecStart and EnvironmentFile, inside the unit's sandbox, tests/unit_sandbox.py) against the
stack's bucket, topic and log group in moto. Only the instance profile is replaced by static
test credentials and the endpoint by moto's; there is no metadata service (off EC2).

Runs once the daemon and the AWS backend are in the tree; skipped before.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import unit_sandbox
from tests.deploy_moto_support import Deployed, deployed_stack

pytestmark = [
    pytest.mark.skipif(
        unit_sandbox.unavailable() is not None, reason=str(unit_sandbox.unavailable())
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("voprd.service.app") is None
        or importlib.util.find_spec("voprd.sinks.aws") is None,
        reason="the daemon and its AWS backend are not in this branch yet",
    ),
]
SEEDS = 12


def parse_environment_file(text: str) -> dict[str, str]:
    """systemd EnvironmentFile= lines as bootstrap.sh writes them: KEY="value" with escapes."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        assert value.startswith('"') and value.endswith('"'), line
        env[key] = re.sub(r"\\(.)", r"\1", value[1:-1])
    return env


@pytest.fixture(scope="module")
def stack() -> Iterator[Deployed]:
    with deployed_stack(
        "AlertEmail=ops@example.com", "SeedStart=9000", "VoprdArgs=--workers 2 --faults all",
        region="eu-north-1",
    ) as deployed:
        yield deployed


def test_stack_to_running_daemon(stack: Deployed, tmp_path: Path) -> None:
    # 1. The user data CloudFormation gave the launch template, run as cloud-init would.
    template_id = stack.physical_id("LaunchTemplate")
    (version,) = stack.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=template_id
    )["LaunchTemplateVersions"]
    user_data = tmp_path / "user-data.sh"
    user_data.write_bytes(base64.b64decode(version["LaunchTemplateData"]["UserData"]))
    root = tmp_path / "root"
    root.mkdir()
    for script in (user_data, root / "opt/voprd/bootstrap.sh"):  # then what its unit runs
        boot = subprocess.run(
            ["bash", str(script), "--wait", "--dry-run"],
            env={"PATH": "/usr/bin:/bin", "VOPRD_ROOT": str(root)},
            capture_output=True, text=True, timeout=60,
        )
        assert boot.returncode == 0, boot.stderr
    # 2. The unit's ExecStart with its EnvironmentFile.
    env = parse_environment_file((root / "etc/default/voprd").read_text())
    assert env["VOPRD_ARGS"] == "--seed 9000 --workers 2 --faults all"
    exec_start = next(
        line.split("=", 1)[1] for line in (root / "etc/systemd/system/voprd.service").read_text()
        .splitlines() if line.startswith("ExecStart=")
    )
    assert exec_start == "/opt/voprd/venv/bin/voprd daemon $VOPRD_ARGS"
    argv = [sys.executable, "-m", "voprd", "daemon", *env.pop("VOPRD_ARGS").split(),
            "-n", str(SEEDS)]
    env |= {
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",  # nothing there: off EC2
        "PYTHONUNBUFFERED": "1",
    }
    state = tmp_path / "state"
    state.mkdir()
    tmp_path.chmod(0o755)
    # 3. The daemon, in the unit's sandbox, against the stack's resources.
    proc = unit_sandbox.run(state, argv, 240, env=env)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    bucket = stack.outputs["BucketName"]
    keys = [o["Key"] for o in stack.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    # With FleetSize 1 the stack passes no run name: the daemon runs alone and keeps the guide's
    # layout (checkpoints/latest.json), with no lease, done or per-instance records.
    assert "VOPRD_RUN" not in env
    assert not [k for k in keys if k.startswith(("done/", "leases/", "checkpoints/instances/"))]
    checkpoint = json.loads(stack.client("s3").get_object(
        Bucket=bucket, Key="checkpoints/latest.json")["Body"].read())
    # SeedStart and VoprdArgs reached the daemon: seeds 9000..9011, the full fault set.
    assert checkpoint["fingerprint"]["first_seed"] == 9000
    assert (checkpoint["last_seed"], checkpoint["total_iterations"]) == (9000 + SEEDS - 1, SEEDS)
    assert checkpoint["watermark"] == 9000 + SEEDS
    streams = stack.client("logs").describe_log_streams(
        logGroupName=stack.outputs["LogGroup"]
    )["logStreams"]
    assert streams, "no log stream in the stack's log group"
    metrics = stack.client("cloudwatch").list_metrics(Namespace="VOPR")["Metrics"]
    assert "IterationsCompleted" in {m["MetricName"] for m in metrics}
