"""A real moto server over HTTP on 127.0.0.1 for the AWS tests, plus boto3 helpers to read it back.

Session-scoped: one ThreadedMotoServer per test session on a free port; `moto_reset` empties its
state (POST /moto-api/reset) before each test. The environment points botocore at it through the
standard AWS_ENDPOINT_URL variable, exactly as the production code would be pointed at an emulator.
The server can be stopped and restarted on the same port (`MotoServer.restart`) for outage tests;
moto keeps its state in-process, so objects stored before the outage are still there after it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
BUCKET = "vopr-test-bucket"
LOG_GROUP = "/aws/ec2/vopr-simulation"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        assert self._server is None
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.stop()
        # Close the listening socket too: clients then see "connection refused" at once, as
        # when the endpoint is really gone, instead of connecting into a dead backlog.
        inner = getattr(self._server, "_server", None)
        if inner is not None:
            inner.server_close()
        self._server = None

    def restart(self) -> None:
        self.start()

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    # No shared config/credential files from the machine; no real IMDS lookups.
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set for the block, as it was (set or unset) afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        with environ({**AWS_ENV, "AWS_ENDPOINT_URL": server.url}):
            yield server
    finally:
        server.stop()


def boto(service: str) -> Any:
    """A plain boto3 client for reading back what the production code wrote."""
    return boto3.client(service, region_name=REGION, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


@dataclass
class AwsWorld:
    server: MotoServer
    bucket: str
    log_group: str
    topic_arn: str
    queue_url: str

    def env(self) -> dict[str, str]:
        return {**AWS_ENV, "AWS_ENDPOINT_URL": self.server.url}


@pytest.fixture
def aws(moto_server: MotoServer) -> AwsWorld:
    """Fresh moto state with the bucket (versioned), log group, topic and an SQS subscriber."""
    return make_world(moto_server)


def make_world(moto_server: MotoServer) -> AwsWorld:
    moto_server.reset()
    s3 = boto("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    boto("logs").create_log_group(logGroupName=LOG_GROUP)
    sns, sqs = boto("sns"), boto("sqs")
    topic_arn = sns.create_topic(Name="vopr-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="vopr-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "false"},
    )
    return AwsWorld(moto_server, BUCKET, LOG_GROUP, topic_arn, queue_url)


def sns_messages(world: AwsWorld, expected: int, wait_s: int = 1) -> list[dict[str, Any]]:
    """Every SNS notification delivered to the test queue (the SNS JSON envelopes)."""
    import json

    sqs = boto("sqs")
    messages: list[dict[str, Any]] = []
    for _ in range(20):  # bound on receive calls
        answer = sqs.receive_message(
            QueueUrl=world.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        )
        batch = answer.get("Messages", [])
        for message in batch:
            messages.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=world.queue_url, ReceiptHandle=message["ReceiptHandle"])
        if not batch and len(messages) >= expected:
            break
    return messages


def log_messages(world: AwsWorld) -> list[str]:
    logs = boto("logs")
    messages: list[str] = []
    for stream in logs.describe_log_streams(logGroupName=world.log_group)["logStreams"]:
        events = logs.get_log_events(
            logGroupName=world.log_group, logStreamName=stream["logStreamName"],
            startFromHead=True,
        )["events"]
        messages.extend(event["message"] for event in events)
    return messages


@pytest.fixture
def imds() -> Iterator[Any]:
    """A fake IMDSv2 server (tests/fake_imds.py) on a free loopback port."""
    from tests.fake_imds import FakeImds

    server = FakeImds().start()
    try:
        yield server
    finally:
        server.stop()


ROOT = Path(__file__).resolve().parent.parent


def daemon_env(world: AwsWorld, imds_url: str | None, **extra: str) -> dict[str, str]:
    """Environment for a real `python -m voprd` daemon against this moto server: the AWS backend
    configured through VOPRD_* variables, the spot watcher on `imds_url` (off when None)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOPRD_"))}
    env.update(AWS_ENV)
    env.update({
        "AWS_ENDPOINT_URL": world.server.url,
        "VOPRD_BUCKET": world.bucket,
        "VOPRD_SNS_TOPIC_ARN": world.topic_arn,
        "VOPRD_LOG_GROUP": world.log_group,
        "PYTHONPATH": str(ROOT),
    })
    env.pop("AWS_EC2_METADATA_DISABLED")
    if imds_url is None:
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    else:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds_url
    env.update(extra)
    return env


def latest_checkpoint_versions(world: AwsWorld) -> list[str]:
    """Version ids of checkpoints/latest.json (the test bucket is versioned), newest first."""
    answer = boto("s3").list_object_versions(Bucket=world.bucket, Prefix="checkpoints/latest.json")
    return [v["VersionId"] for v in answer.get("Versions", [])]


def wait_for_new_checkpoint(world: AwsWorld, versions_before: int, timeout_s: float,
                            poll_s: float) -> float | None:
    """Monotonic time at which latest.json got a version beyond `versions_before`, or None."""
    import time

    for _ in range(int(timeout_s / poll_s) + 1):
        if len(latest_checkpoint_versions(world)) > versions_before:
            return time.monotonic()
        time.sleep(poll_s)
    return None
