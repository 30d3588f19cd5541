"""The operator's guide, run: every `aws` command of docs/deploy.md ("Running voprd on AWS"), in the
guide's order and in one shell, against a stack in moto's server (over HTTP, the awscli pointed
at it by AWS_ENDPOINT_URL only; the commands are the guide's text, unedited).

tests/test_deploy_guide.py checks every command against the CLI's argument tables; this runs
them. The stack is made with `create-stack` (moto fills Outputs only then) and
Network=public-ipv4 (moto cannot create the IPv6 network), and the bucket holds a checkpoint
and a failure archive under the names the guide reads. The commands that cannot run here are
listed in SKIPPED with the reason; the test fails if the guide gains a command that is neither
run nor listed, or loses one that is listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy_moto_support import Deployed, create_stack, deployed_stack
from tests.deploy_support import VENV_BIN, logical_lines

REGION = "eu-central-1"  # its own: the bucket and log group names are per region

# Guide commands not run here, by their first words, and why.
SKIPPED = {
    "aws cloudformation deploy": "the quick start and updates deploy the ipv6-only network by "
    "default, which moto cannot create (test_deploy_moto deploys with the same command and "
    "Network=public-ipv4)",
    "aws logs tail": "AWS CLI version 2 only; the test extras have awscli 1 "
    "(test_deploy_guide checks its flags)",
    "aws ssm start-session": "needs the Session Manager plugin and a live agent",
    "aws ssm get-command-invocation": "takes COMMAND_ID, a placeholder for the id the previous "
    "command prints",
    "aws s3api get-object": "takes VERSION_ID, a placeholder for a version the previous "
    "command lists",
    "aws ec2 cancel-spot-instance-requests": "moto's instance from a launch template has no "
    "spot request id (the request id comes from describe-instances, which is run)",
    "aws cloudformation delete-stack": "moto refuses to delete this stack's VPC "
    "(DependencyViolation); the bucket deletion after it is run",
    "aws cloudformation wait": "follows delete-stack",
}
# The guide's variables block: run once, first, as the guide says.
SETUP_PREFIXES = ("STACK=", "out()", "BUCKET=$(", "INSTANCE=$(", "TOPIC=$(", "LOG_GROUP=$(",
                  'echo "bucket ')


def skip_reason(line: str) -> str | None:
    return next((why for prefix, why in SKIPPED.items() if line.startswith(prefix)), None)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Deployed, dict[str, str]]]:
    with deployed_stack("AlertEmail=ops@example.com") as deployed:
        created = create_stack(deployed, REGION)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in created["Outputs"]}
        yield deployed, outputs


def test_every_aws_command_of_the_guide_runs_against_the_stack(
    stack: tuple[Deployed, dict[str, str]], tmp_path: Path
) -> None:
    deployed, outputs = stack
    bucket, instance = outputs["BucketName"], outputs["InstanceId"]
    s3 = deployed.client("s3", REGION)
    # What the daemon would have written by now, under the names the guide reads.
    s3.put_object(Bucket=bucket, Key="checkpoints/latest.json",  # one instance runs alone
                  Body=json.dumps({"total_iterations": 7}).encode())
    s3.put_object(Bucket=bucket, Key="failures/seed-42042-1764000000.json",
                  Body=json.dumps({"seed": 42042}).encode())
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist/voprd-0.1.0-py3-none-any.whl").write_bytes(b"wheel")

    lines = logical_lines()
    setup = [line for line in lines if line.startswith(SETUP_PREFIXES)]
    assert len(setup) == len(SETUP_PREFIXES)
    steps = [line for line in lines
             if "aws " in line and not line.startswith(SETUP_PREFIXES)]
    ran = [line for line in steps if skip_reason(line) is None]
    skipped_prefixes = {p for p in SKIPPED if any(line.startswith(p) for line in steps)}
    assert skipped_prefixes == set(SKIPPED), "a skip no guide command needs any more"
    # The destroying section's bucket deletion needs its versions gone first (a python3 line);
    # the publish step needs the wheel's name and hash (the WHEEL= line).
    ran_all = [line for line in lines
               if line in ran or line.startswith(("python3 -c", "WHEEL=$("))]

    script = ["set -u", *setup]
    for index, line in enumerate(ran_all):
        script.append(f"{{ {line}\n}} > out.{index} 2> err.{index}; echo $? > rc.{index}")
    env = {
        **deployed.env, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": deployed.endpoint,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",  # aws (awscli) and python3 with boto3
    }
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"bucket {bucket}, instance {instance}, dashboard https://" in proc.stdout

    failed = []
    for index, line in enumerate(ran_all):
        rc = int((tmp_path / f"rc.{index}").read_text())
        if rc != 0:
            failed.append((rc, line, (tmp_path / f"err.{index}").read_text()[-500:]))
    assert not failed, "\n".join(f"{rc}: {line}\n{err}" for rc, line, err in failed)

    # A few outputs say the commands did what the guide says they do.
    def output_of(prefix: str) -> str:
        index = next(i for i, line in enumerate(ran_all) if line.startswith(prefix))
        return (tmp_path / f"out.{index}").read_text()

    assert json.loads(output_of("aws s3 cp \"s3://$BUCKET/checkpoints")) == {
        "total_iterations": 7}
    assert "seed-42042-1764000000.json" in output_of('aws s3 ls "s3://$BUCKET/failures/"')
    assert (tmp_path / "failures/seed-42042-1764000000.json").exists()  # aws s3 sync
    assert output_of("aws ec2 describe-instances --instance-ids").strip() in {
        "running", "pending", "stopped", "stopping"}
    assert (tmp_path / "vopr-metrics.json").exists() and (tmp_path / "vopr-logs.json").exists()
    # The quick start's upload put the wheel where the instance looks for it; the destroying
    # section then emptied and deleted the bucket.
    wheel = "voprd-0.1.0-py3-none-any.whl"
    sha256 = hashlib.sha256(b"wheel").hexdigest()
    assert output_of("WHEEL=$(").strip() == f"dist/{wheel} {sha256}"
    assert f"upload: dist/{wheel} to s3://{bucket}/releases/{sha256}/{wheel}" in output_of(
        'aws s3 cp "$WHEEL"')
    assert bucket not in {b["Name"] for b in deployed.client("s3", REGION).list_buckets()[
        "Buckets"]}
