"""Real `python -m voprd` fleet daemons against one moto server (tests.fleet_moto) with SNS, SQS
and CloudWatch Logs, reached directly or through a cuttable proxy (tests.tcp_proxy)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3

from tests.fleet_moto import Intercept, moto_bucket
from voprd.config import DEFAULT_LOG_GROUP

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.targets_for_tests:Flaky"


@dataclass
class FleetWorld:
    env: dict[str, str]  # the AWS variables for the moto server, direct
    bucket: str
    topic_arn: str
    queue_url: str
    log_group: str = DEFAULT_LOG_GROUP

    @property
    def endpoint(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str) -> list[str]:
        s3 = self.client("s3")
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                  Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def body(self, key: str) -> bytes:
        data: bytes = self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def notifications(self, settle_s: float = 2.0) -> list[dict[str, Any]]:
        """Every SNS notification delivered so far (envelopes), once the queue stays empty."""
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        for _ in range(200):  # bound on receive calls
            answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                         WaitTimeSeconds=1)
            batch = answer.get("Messages", [])
            for message in batch:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url,
                                   ReceiptHandle=message["ReceiptHandle"])
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                break
        return found

    def log_events(self) -> list[dict[str, Any]]:
        """Every event the daemons sent to CloudWatch Logs, decoded."""
        logs = self.client("logs")
        events: list[dict[str, Any]] = []
        for stream in logs.describe_log_streams(logGroupName=self.log_group)["logStreams"]:
            answer = logs.get_log_events(logGroupName=self.log_group,
                                         logStreamName=stream["logStreamName"],
                                         startFromHead=True, limit=10_000)
            events += [json.loads(e["message"]) for e in answer["events"]]
        return events


@contextmanager
def fleet_world(bucket: str = "voprd-fleet", intercept: Intercept | None = None
                ) -> Iterator[FleetWorld]:
    """A moto server with the bucket, the log group and an SNS topic delivering to SQS."""
    with moto_bucket(bucket, intercept) as env:
        world = FleetWorld(env=env, bucket=bucket, topic_arn="", queue_url="")
        world.client("logs").create_log_group(logGroupName=world.log_group)
        sns, sqs = world.client("sns"), world.client("sqs")
        world.topic_arn = sns.create_topic(Name="voprd-alerts")["TopicArn"]
        world.queue_url = sqs.create_queue(QueueName="voprd-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=world.queue_url,
                                             AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=world.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        yield world


@dataclass
class Daemon:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> Daemon:
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        if self._out is not None:
            self._out.close()
        return code

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        if self._out is not None:
            self._out.close()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (all, or those with event `name`)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def fleet_daemon(world: FleetWorld, tmp_path: Path, name: str, run: str | None, *args: str,
                 endpoint: str | None = None, **knobs: str) -> Daemon:
    """A fleet daemon (`--run run`; None: a lone daemon) running Flaky with one worker;
    `endpoint` (a proxy) instead of the moto server; `knobs` are VOPRD_TEST_* settings and other
    environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOPRD_"))}
    env.update(world.env)
    env.update({
        "AWS_ENDPOINT_URL": endpoint or world.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        "VOPRD_BUCKET": world.bucket, "VOPRD_SNS_TOPIC_ARN": world.topic_arn,
        "VOPRD_LOG_GROUP": world.log_group, "VOPRD_INSTANCE": name,
        "VOPRD_STATE_DIR": str(tmp_path / name),
        "VOPRD_TEST_RUN_LOG": str(tmp_path / f"seeds-{name}.log"),
    })
    env.update(knobs)
    argv = [sys.executable, "-m", "voprd", "--target", TARGET, "--workers", "1",
            *(["--run", run] if run is not None else []), "--drain-timeout", "5", *args]
    return Daemon(name=name, argv=argv, env=env, log=tmp_path / f"out-{name}.log")


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.1)


def seeds_ran(tmp_path: Path, name: str) -> list[int]:
    path = tmp_path / f"seeds-{name}.log"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def failure_seed(run: str, key: str) -> int | None:
    """The seed of a fleet failure record key (failures/{run}/seed-{seed}.json), else None."""
    match = re.fullmatch(rf"failures/{re.escape(run)}/seed-(\d+)\.json", key)
    return int(match.group(1)) if match else None
