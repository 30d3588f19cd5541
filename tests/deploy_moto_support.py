"""Deploying deploy/cloudformation.yaml to a moto server over HTTP, as the guide's quick start
does with the awscli; shared by tests/test_deploy_moto.py and tests/test_deploy_e2e.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.deploy_support import TEMPLATE, VENV_BIN

# Not us-east-1: other suites in the same process use moto there (same default names).
REGION = "ca-central-1"
STACK = "voprd"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
STACK_WAIT_S_MAX = 60.0
# The two values every deploy of the default source needs (the guide's quick start computes them).
PUBLISHER_ARN = "arn:aws:iam::123456789012:user/publisher"
WHEEL_SHA256 = "0123456789abcdef" * 4
REQUIRED = {"ReleasePublisherArn": PUBLISHER_ARN, "VoprdWheelSha256": WHEEL_SHA256}


class Deployed:
    def __init__(self, endpoint: str, env: dict[str, str], region: str) -> None:
        self.endpoint = endpoint
        self.env = env
        self.region = region
        # moto leaves Outputs empty after `deploy`'s change set: the same values, from the
        # stack's resources (test_create_stack_fills_the_outputs checks the Outputs section).
        self.outputs = {
            "InstanceId": self.physical_id("Instance"),
            "BucketName": self.physical_id("Bucket"),
            "SnsTopic": self.physical_id("AlertTopic"),
            "LogGroup": self.physical_id("LogGroup"),
        }

    def client(self, service: str, region: str | None = None) -> Any:
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=region or self.region, **CREDENTIALS
        )

    def physical_id(self, logical_id: str) -> str:
        # (moto's DescribeStackResource fails; ListStackResources works)
        summaries = self.client("cloudformation").list_stack_resources(StackName=STACK)[
            "StackResourceSummaries"
        ]
        (physical,) = [
            s["PhysicalResourceId"] for s in summaries if s["LogicalResourceId"] == logical_id
        ]
        assert isinstance(physical, str) and physical
        return physical

    def aws(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The awscli, as the operator runs it, pointed at the emulator."""
        return subprocess.run(
            [str(VENV_BIN / "aws"), *args, "--endpoint-url", self.endpoint],
            env=self.env, capture_output=True, text=True, timeout=120,
        )


@contextlib.contextmanager
def deployed_stack(*parameter_overrides: str, region: str = REGION) -> Iterator[Deployed]:
    """A moto server with the stack deployed by `aws cloudformation deploy`, as in the guide.

    moto's state is per process, shared by every server it starts: each caller deploys to its
    own region so that stacks (and their per-region names) do not collide.

    With Network=public-ipv4: moto's CloudFormation cannot create the default ipv6-only
    network (AWS::EC2::VPCCidrBlock, EgressOnlyInternetGateway, GetAtt Vpc.Ipv6CidrBlocks);
    tests/test_deploy_template.py checks that network on the template's content instead.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        endpoint = f"http://{host}:{port}"
        # Clear what other test modules' servers left in moto's process-wide state (their log
        # group has this stack's name).
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        proc = subprocess.run(
            [
                str(VENV_BIN / "aws"), "cloudformation", "deploy", "--endpoint-url", endpoint,
                "--template-file", str(TEMPLATE), "--stack-name", STACK,
                "--capabilities", "CAPABILITY_NAMED_IAM",
                "--parameter-overrides", "Network=public-ipv4",
                *(f"{k}={v}" for k, v in REQUIRED.items()), *parameter_overrides,
            ],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Successfully created/updated stack - voprd" in proc.stdout
        stack = boto3.client(
            "cloudformation", endpoint_url=endpoint, region_name=region, **CREDENTIALS
        ).describe_stacks(StackName=STACK)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        yield Deployed(endpoint, env, region)
    finally:
        server.stop()


def create_stack(deployed: Deployed, region: str, *parameters: str) -> dict[str, Any]:
    """`aws cloudformation create-stack` (which, unlike `deploy` in moto, fills the Outputs),
    waited for until it is complete. Network=public-ipv4: see deployed_stack."""
    proc = deployed.aws(
        "cloudformation", "create-stack", "--region", region, "--stack-name", STACK,
        "--template-body", f"file://{TEMPLATE}", "--capabilities", "CAPABILITY_NAMED_IAM",
        "--parameters", "ParameterKey=AlertEmail,ParameterValue=ops@example.com",
        "ParameterKey=Network,ParameterValue=public-ipv4",
        *(f"ParameterKey={k},ParameterValue={v}" for k, v in REQUIRED.items()), *parameters,
    )
    assert proc.returncode == 0, proc.stderr
    cloudformation = deployed.client("cloudformation", region)
    deadline = time.monotonic() + STACK_WAIT_S_MAX
    while (stack := cloudformation.describe_stacks(StackName=STACK)["Stacks"][0])[
        "StackStatus"
    ].endswith("_IN_PROGRESS"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    result: dict[str, Any] = stack
    return result
