"""The stack and the daemon end to end against LocalStack, a second emulator, for what moto cannot
show (marked `localstack`, run by .ci/run after the default suite: `pytest -m localstack`).

- deploy/cloudformation.yaml deploys with Network=public-ipv4 (the default ipv6-only network
  does not: LocalStack rejects `!Select [0, !GetAtt Vpc.Ipv6CidrBlocks]`), and what LocalStack
  really applies (bucket settings and policy, KMS key and its policy, topic, topic policy and
  subscription, IAM role, policy and profile, both alarms) is what the template says.
- The lone daemon with a planted bug, on the stack's bucket, topic and log group, archives and
  alerts every failure through LocalStack's S3 (which refuses conditional deletes), and the
  template's FailuresDetected alarm goes to ALARM and publishes to the topic (received through
  an SQS queue subscribed to it). moto never evaluates alarms.
- A fleet daemon (`--run NAME`) on LocalStack's S3 archives and alerts every failure although
  each lease release (a conditional delete) is refused.

The alarms are the template's, unchanged. FailuresDetected (1 x 60 s) is evaluated by LocalStack
when it is created and then every 60 s, looking back three periods, so a failing run reaches
ALARM within a minute of its metrics arriving: the test waits for that evaluation. NoProgress
(15 x 60 s, missing data breaching) is evaluated at creation and then every 15 minutes: its
creation-time evaluation with no data (ALARM) is what is checked.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_moto_support import REQUIRED
from tests.deploy_support import TEMPLATE, template
from tests.localstack_support import ACCOUNT, ROOT, LocalStack, require, running
from voprd.core.records import read_checkpoint, read_failure

pytestmark = pytest.mark.localstack

STACK = "voprd"
REGION = "us-east-1"
# The stack's required parameters (the release publisher, the pinned wheel) as the moto deploy
# tests give them, and the one network LocalStack can create.
PARAMETERS = {**REQUIRED, "Network": "public-ipv4", "AlertEmail": "ops@example.com"}
BUG = "commit_without_quorum"
# The lone daemon (no leases, the guide's checkpoints/latest.json) is the plain default of a
# daemon with a bucket and no run name (issue 13 item 1): no flag asks for it.
LONE_FLAGS: list[str] = []
DAEMON_TIMEOUT_S = 240.0  # bounds for a loaded machine, not targets
STACK_TIMEOUT_S = 300.0
ALARM_WAIT_S_MAX = 240.0  # one 60 s evaluation period, with room for load


@pytest.fixture(scope="module")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require()
    with running(tmp_path_factory.mktemp("localstack")) as server:
        yield server


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    server: LocalStack
    outputs: dict[str, str]
    physical: dict[str, str]  # logical id -> physical id
    statuses: dict[str, str]  # logical id -> resource status

    def client(self, service: str) -> Any:
        return self.server.client(service, REGION)


@pytest.fixture(scope="module")
def stack(localstack: LocalStack) -> Stack:
    """The template deployed as `aws cloudformation deploy` (the guide's command) does it: a
    change set, created, then executed; polled every second, where the awscli waits 30 s."""
    cloudformation = localstack.client("cloudformation", REGION)
    cloudformation.create_change_set(
        StackName=STACK, ChangeSetName="deploy", ChangeSetType="CREATE",
        TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
    )

    def change_set() -> dict[str, Any]:
        answer: dict[str, Any] = cloudformation.describe_change_set(
            StackName=STACK, ChangeSetName="deploy")
        return answer

    assert wait_for(lambda: change_set()["Status"] in ("CREATE_COMPLETE", "FAILED"),
                    STACK_TIMEOUT_S)
    assert change_set()["Status"] == "CREATE_COMPLETE", change_set().get("StatusReason")
    cloudformation.execute_change_set(StackName=STACK, ChangeSetName="deploy")

    def described() -> dict[str, Any]:
        answer: dict[str, Any] = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
        return answer

    assert wait_for(lambda: not described()["StackStatus"].endswith("_IN_PROGRESS"),
                    STACK_TIMEOUT_S)
    stack = described()
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    summaries = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    return Stack(
        server=localstack,
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        physical={s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries},
        statuses={s["LogicalResourceId"]: s["ResourceStatus"] for s in summaries},
    )


def condition_holds(name: str) -> bool:
    """The template's condition `name` with PARAMETERS (and FleetSize's default)."""
    parameters = {k: str(v.get("Default", "")) for k, v in template()["Parameters"].items()}
    parameters.update(PARAMETERS)

    def evaluate(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return parameters[value]
            if key == "Condition":
                return condition_holds(value)
            if key == "Fn::Equals":
                return str(evaluate(value[0])) == str(evaluate(value[1]))
            if key == "Fn::Not":
                return not evaluate(value[0])
            if key == "Fn::And":
                return all(evaluate(v) for v in value)
            if key == "Fn::Or":
                return any(evaluate(v) for v in value)
            raise AssertionError(f"condition function {key} not handled by this test")
        return node

    return bool(evaluate(template()["Conditions"][name]))


class Resolver:
    """Resolves Ref, Fn::Sub, Fn::GetAtt, Fn::If and Fn::Join in a template fragment to what
    AWS would make of it on this stack: the physical ids LocalStack reports and the attributes
    read back from its services."""

    def __init__(self, stack: Stack) -> None:
        self.refs: dict[str, str] = {
            **{k: str(v.get("Default", "")) for k, v in template()["Parameters"].items()},
            **PARAMETERS, **stack.physical,
            "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
            "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com",
        }
        key = stack.client("kms").describe_key(KeyId=stack.physical["AlertKey"])["KeyMetadata"]
        (group,) = stack.client("logs").describe_log_groups(
            logGroupNamePrefix=stack.physical["LogGroup"])["logGroups"]
        iam = stack.client("iam")
        self.attributes: dict[str, str] = {
            "Bucket.Arn": f"arn:aws:s3:::{stack.physical['Bucket']}",
            "AlertKey.Arn": key["Arn"],
            "LogGroup.Arn": group["arn"],
            "InstanceRole.Arn": iam.get_role(RoleName=stack.physical["InstanceRole"])["Role"][
                "Arn"],
            "InstanceProfile.Arn": iam.get_instance_profile(
                InstanceProfileName=stack.physical["InstanceProfile"])["InstanceProfile"]["Arn"],
        }

    def attribute(self, name: str) -> str:
        assert name in self.attributes, f"add {name} to Resolver.attributes"
        return self.attributes[name]

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self(item) for item in node if not _is_no_value(item)]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self.refs[value]
            if key == "Fn::GetAtt":
                return self.attribute(".".join(value) if isinstance(value, list) else value)
            if key == "Fn::Sub":
                text, extra = (value, {}) if isinstance(value, str) else value
                extra = {k: self(v) for k, v in extra.items()}
                return re.sub(r"\$\{([^}!]+)\}", lambda m: self._sub(m.group(1), extra), text)
            if key == "Fn::If":
                name, then, otherwise = value
                return self(then if condition_holds(name) else otherwise)
            if key == "Fn::Join":
                return value[0].join(str(self(part)) for part in value[1])
            assert not key.startswith("Fn::"), f"{key} not handled by this test"
        return {k: self(v) for k, v in node.items() if not _is_no_value(v)}

    def _sub(self, name: str, extra: dict[str, Any]) -> str:
        if name in extra:
            return str(extra[name])
        if name in self.refs:
            return self.refs[name]
        return self.attribute(name)


def _is_no_value(node: Any) -> bool:
    return isinstance(node, dict) and node.get("Ref") == "AWS::NoValue" and len(node) == 1


def properties(logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = template()["Resources"][logical_id]["Properties"]
    return props


def test_stack_deploys_with_public_ipv4_and_every_resource_is_created(stack: Stack) -> None:
    expected = {
        name for name, resource in template()["Resources"].items()
        if "Condition" not in resource or condition_holds(resource["Condition"])
    }
    assert set(stack.physical) == expected
    assert {name for name, status in stack.statuses.items() if status != "CREATE_COMPLETE"} == set()
    assert set(stack.outputs) >= {"InstanceId", "BucketName", "SnsTopic", "LogGroup"}
    assert stack.outputs["BucketName"] == stack.physical["Bucket"]
    assert stack.outputs["SnsTopic"] == stack.physical["AlertTopic"]
    # The public-ipv4 network: an internet gateway attached to the VPC, the default route to it.
    ec2 = stack.client("ec2")
    (gateway,) = ec2.describe_internet_gateways(
        InternetGatewayIds=[stack.physical["InternetGateway"]])["InternetGateways"]
    assert gateway["Attachments"][0]["VpcId"] == stack.physical["Vpc"]
    (table,) = ec2.describe_route_tables(
        RouteTableIds=[stack.physical["RouteTable"]])["RouteTables"]
    # (LocalStack lists the default route without its GatewayId.)
    assert "0.0.0.0/0" in [r.get("DestinationCidrBlock") for r in table["Routes"]]
    associated = {a.get("SubnetId") for a in table["Associations"]}
    for subnet in ("SubnetA", "SubnetB"):
        (described,) = ec2.describe_subnets(SubnetIds=[stack.physical[subnet]])["Subnets"]
        assert described["VpcId"] == stack.physical["Vpc"]
        assert described["CidrBlock"] == properties(subnet)["CidrBlock"]
        assert described["MapPublicIpOnLaunch"] is properties(subnet)["MapPublicIpOnLaunch"]
        assert stack.physical[subnet] in associated


def test_bucket_settings_and_policy_are_the_templates(stack: Stack) -> None:
    # Not applied by LocalStack (see module doc): LifecycleConfiguration, and BucketKeyEnabled
    # (reported false). tests/test_deploy_template.py checks those in the template.
    s3, bucket, want = stack.client("s3"), stack.physical["Bucket"], properties("Bucket")
    resolve = Resolver(stack)
    assert bucket == resolve(want["BucketName"])
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
        "Rules"]
    (want_rule,) = want["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ApplyServerSideEncryptionByDefault"] == want_rule["ServerSideEncryptionByDefault"]
    versioning = s3.get_bucket_versioning(Bucket=bucket)
    assert versioning["Status"] == want["VersioningConfiguration"]["Status"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == want["PublicAccessBlockConfiguration"]
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert ownership == want["OwnershipControls"]
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert all(tag in tags for tag in want["Tags"])
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy == resolve(properties("BucketPolicy")["PolicyDocument"])


def test_alert_key_topic_and_subscription_are_the_templates(stack: Stack) -> None:
    resolve = Resolver(stack)
    kms, key_id = stack.client("kms"), stack.physical["AlertKey"]
    key = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert key["Enabled"] and key["Description"] == properties("AlertKey")["Description"]
    rotation = kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"]
    assert rotation == properties("AlertKey")["EnableKeyRotation"]
    key_policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert key_policy == resolve(properties("AlertKey")["KeyPolicy"])

    sns, topic = stack.client("sns"), stack.physical["AlertTopic"]
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attributes["KmsMasterKeyId"] == resolve(properties("AlertTopic")["KmsMasterKeyId"])
    assert attributes["DisplayName"] == properties("AlertTopic")["DisplayName"]
    assert json.loads(attributes["Policy"]) == resolve(
        properties("AlertTopicPolicy")["PolicyDocument"])
    assert properties("AlertTopicPolicy")["Topics"] == [{"Ref": "AlertTopic"}]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [
        (properties("AlertSubscription")["Protocol"], PARAMETERS["AlertEmail"])]


def test_instance_role_policy_and_profile_are_the_templates(stack: Stack) -> None:
    resolve = Resolver(stack)
    iam, role_name, want = stack.client("iam"), stack.physical["InstanceRole"], properties(
        "InstanceRole")
    role = iam.get_role(RoleName=role_name)["Role"]
    assert role["AssumeRolePolicyDocument"] == resolve(want["AssumeRolePolicyDocument"])
    attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert sorted(p["PolicyArn"] for p in attached) == sorted(
        resolve(want.get("ManagedPolicyArns", [])))
    inline = {
        name: iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    }
    assert inline == {p["PolicyName"]: resolve(p["PolicyDocument"]) for p in want["Policies"]}
    profile = iam.get_instance_profile(InstanceProfileName=stack.physical["InstanceProfile"])
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [role_name]


ALARM_FIELDS = (
    "AlarmName", "AlarmDescription", "Namespace", "MetricName", "Statistic", "Period",
    "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
    "TreatMissingData", "AlarmActions", "OKActions",
)


def test_alarms_are_the_templates_and_no_progress_alarms_without_data(stack: Stack) -> None:
    resolve = Resolver(stack)
    alarms = {a["AlarmName"]: a for a in stack.client("cloudwatch").describe_alarms()[
        "MetricAlarms"]}
    wanted = {name: resolve(r["Properties"]) for name, r in template()["Resources"].items()
              if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert sorted(alarms) == sorted(w["AlarmName"] for w in wanted.values())
    for want in wanted.values():
        alarm = alarms[want["AlarmName"]]
        assert {f: alarm.get(f) for f in ALARM_FIELDS} == {
            f: float(want[f]) if f == "Threshold" else want.get(f) for f in ALARM_FIELDS}
        assert alarm.get("Dimensions", []) == want.get("Dimensions", [])
    # Evaluated at creation with no data yet: missing data breaching makes NoProgress ALARM (a
    # daemon that never starts is noticed); not breaching leaves FailuresDetected OK.
    failures = resolve(properties("FailuresDetectedAlarm")["AlarmName"])
    no_progress = resolve(properties("NoProgressAlarm")["AlarmName"])
    assert wait_for(lambda: alarm_state(stack, no_progress) == "ALARM", 60.0)
    assert wait_for(lambda: alarm_state(stack, failures) == "OK", 60.0)


def alarm_state(stack: Stack, name: str) -> str:
    (alarm,) = stack.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return str(alarm["StateValue"])


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


# ------------------------------------------------------------------ the daemon


def subscribe_queue(server: LocalStack, region: str, topic_arn: str, name: str) -> str:
    """An SQS queue subscribed to the topic (the SNS JSON envelope, not raw delivery)."""
    sqs = server.client("sqs", region)
    queue_url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    server.client("sns", region).subscribe(TopicArn=topic_arn, Protocol="sqs",
                                           Endpoint=queue_arn)
    return queue_url


class Inbox:
    """Every SNS notification delivered to one queue, in arrival order."""

    def __init__(self, server: LocalStack, region: str, queue_url: str) -> None:
        self.sqs = server.client("sqs", region)
        self.queue_url = queue_url
        self.notifications: list[dict[str, Any]] = []

    def receive(self, wait_s: int) -> int:
        batch = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
        ).get("Messages", [])
        for message in batch:
            self.notifications.append(json.loads(message["Body"]))
            self.sqs.delete_message(QueueUrl=self.queue_url,
                                    ReceiptHandle=message["ReceiptHandle"])
        return len(batch)

    def daemon_alerts_for(self, failures: int, timeout_s: float = 120.0) -> list[str]:
        """The daemon's alerts once they account for `failures` failures (or the time is up),
        and whatever else arrives until the queue stays empty for a long poll."""
        deadline = time.monotonic() + timeout_s
        while alert_count(self.daemon_alerts()) < failures and time.monotonic() < deadline:
            self.receive(wait_s=2)
        while self.receive(wait_s=2):
            pass
        return self.daemon_alerts()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            for notification in self.notifications:
                if predicate(notification):
                    return notification
            if time.monotonic() > deadline:
                return None
            self.receive(wait_s=5)

    def daemon_alerts(self) -> list[str]:
        return [n["Message"] for n in self.notifications
                if str(n.get("Subject", "")).startswith("VOPR: ")]


def run_daemon(server: LocalStack, region: str, resources: dict[str, str], state_dir: Path,
               *args: str) -> subprocess.CompletedProcess[str]:
    """A real `python -m voprd` daemon, the builtin system with a planted bug, to its end."""
    env = server.client_env(region)
    env.update({
        "AWS_EC2_METADATA_DISABLED": "true",
        "VOPRD_BUCKET": resources["bucket"], "VOPRD_SNS_TOPIC_ARN": resources["topic"],
        "VOPRD_LOG_GROUP": resources["log_group"], "VOPRD_INSTANCE": resources["instance"],
        "PYTHONPATH": str(ROOT),
    })
    return subprocess.run(
        [sys.executable, "-m", "voprd", "--workers", "2", "--bug", BUG, "--seed", "0",
         "--state-dir", str(state_dir), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=DAEMON_TIMEOUT_S,
    )


def archived(server: LocalStack, region: str, bucket: str) -> dict[int, list[tuple[str, Any]]]:
    """The failure records under failures/ with their keys, by seed (a list: a seed archived
    twice shows)."""
    s3 = server.client("s3", region)
    records: dict[int, list[tuple[str, Any]]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="failures/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".json"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                record = read_failure(body)
                assert f"seed-{record.seed}" in item["Key"], item["Key"]
                records.setdefault(record.seed, []).append((item["Key"], record))
    return records


REPEAT_LINE = re.compile(r"\(fingerprint (?P<fp>\w+), first seed \d+\): (?P<n>\d+) repeat\(s\)")
SEED_LINE = re.compile(r"^Seed: (\d+)$", re.MULTILINE)


def alert_count(alerts: list[str]) -> int:
    """Failures the alerts account for: each alerted seed, plus each counted repeat."""
    return sum(len(SEED_LINE.findall(text)) + sum(int(m["n"]) for m in REPEAT_LINE.finditer(text))
               for text in alerts)


def check_every_failure_archived(failed: list[int],
                                 records: dict[int, list[tuple[str, Any]]]) -> None:
    """Each failed seed archived exactly once, with its reproducing command."""
    assert failed, "the planted bug found nothing: the test would prove nothing"
    assert sorted(records) == sorted(failed), "failure records do not match the failed seeds"
    assert all(len(copies) == 1 for copies in records.values()), "a failure archived twice"
    for seed, ((_, record),) in records.items():
        assert f"--seed {seed} " in record.reproduce + " " and f"--bug {BUG}" in record.reproduce


def check_every_failure_alerted(
    failed: list[int], records: dict[int, list[tuple[str, Any]]], alerts: list[str]
) -> None:
    """Each fingerprint alerted once, on a seed of its own, and every other failure counted as
    a repeat in an alert or a digest."""
    fingerprint = {seed: record.fingerprint for seed, ((_, record),) in records.items()}
    alerted = [int(seed) for text in alerts for seed in SEED_LINE.findall(text)]
    fingerprints = set(fingerprint.values())
    assert len(alerted) == len(set(alerted)) == len(fingerprints), (alerted, fingerprints)
    assert {fingerprint[seed] for seed in alerted} == fingerprints
    repeats = [m for text in alerts for m in REPEAT_LINE.finditer(text)]
    assert sum(int(m["n"]) for m in repeats) == len(failed) - len(alerted)
    assert {m["fp"] for m in repeats} <= fingerprints


def log_events(server: LocalStack, region: str, group: str, stream: str) -> list[Any]:
    """The daemon's structured events in its CloudWatch Logs stream, oldest first."""
    logs, events, token = server.client("logs", region), [], None
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True,
                                   **({"nextToken": token} if token else {}))
        events += [json.loads(event["message"]) for event in page["events"]]
        if not page["events"] or page["nextForwardToken"] == token:
            return events
        token = page["nextForwardToken"]


def metric_sum(server: LocalStack, region: str, name: str) -> float:
    now = _dt.datetime.now(_dt.UTC)
    answer = server.client("cloudwatch", region).get_metric_statistics(
        Namespace="VOPR", MetricName=name, StartTime=now - _dt.timedelta(hours=1),
        EndTime=now + _dt.timedelta(minutes=5), Period=60, Statistics=["Sum"],
    )
    return float(sum(point["Sum"] for point in answer["Datapoints"]))


@pytest.mark.timeout(600)
def test_lone_daemon_on_the_stack_archives_alerts_and_trips_the_failures_alarm(
    stack: Stack, tmp_path: Path
) -> None:
    resolve = Resolver(stack)
    alarm_name = resolve(properties("FailuresDetectedAlarm")["AlarmName"])
    assert wait_for(lambda: alarm_state(stack, alarm_name) == "OK", 60.0)
    topic, bucket = stack.outputs["SnsTopic"], stack.outputs["BucketName"]
    inbox = Inbox(stack.server, REGION, subscribe_queue(stack.server, REGION, topic, "inbox"))
    resources = {"bucket": bucket, "topic": topic, "log_group": stack.outputs["LogGroup"],
                 "instance": "i-lone"}

    first = run_daemon(stack.server, REGION, resources, tmp_path / "a", *LONE_FLAGS, "-n", "60")
    assert first.returncode == 1, first.stderr[-3000:]  # a bounded run with failures exits 1
    # A fresh instance (empty state directory) continues the run from the bucket alone.
    second = run_daemon(stack.server, REGION, resources, tmp_path / "b", *LONE_FLAGS, "-n", "90")
    assert second.returncode == 1, second.stderr[-3000:]

    s3 = stack.client("s3")
    checkpoint = read_checkpoint(
        s3.get_object(Bucket=bucket, Key="checkpoints/latest.json")["Body"].read())
    assert (checkpoint.total_iterations, checkpoint.watermark) == (90, 90)
    failed = sorted(checkpoint.failed_seeds)
    assert checkpoint.total_failures == len(failed)
    assert any(seed < 60 for seed in failed) and any(seed >= 60 for seed in failed)
    # The bucket's default encryption applies to what the daemon writes.
    head = s3.head_object(Bucket=bucket, Key="checkpoints/latest.json")
    assert head["ServerSideEncryption"] == "AES256"
    records = archived(stack.server, REGION, bucket)
    # The guide's layout: failures/seed-N-TS.json.
    for seed, copies in records.items():
        assert [key for key, record in copies] == [
            f"failures/seed-{seed}-{record.unix_ts}.json" for key, record in copies]
    check_every_failure_archived(failed, records)
    check_every_failure_alerted(failed, records, inbox.daemon_alerts_for(len(failed)))
    assert metric_sum(stack.server, REGION, "IterationsCompleted") == 90.0
    assert metric_sum(stack.server, REGION, "FailuresDetected") == float(len(failed))
    events = log_events(stack.server, REGION, resources["log_group"], resources["instance"])
    assert sorted(e["seed"] for e in events if e["event"] == "seed_failed") == failed

    # The template's alarm sees the failures and publishes its state change to the topic.
    message = inbox.wait_for(
        lambda n: n.get("Subject", "").startswith("ALARM: ") and json.loads(n["Message"]).get(
            "AlarmName") == alarm_name, ALARM_WAIT_S_MAX)
    assert message is not None, f"no ALARM notification; state {alarm_state(stack, alarm_name)}"
    alarm = json.loads(message["Message"])
    assert (alarm["NewStateValue"], alarm["OldStateValue"]) == ("ALARM", "OK")
    assert alarm["Trigger"]["MetricName"] == "FailuresDetected"
    assert alarm["Trigger"]["Namespace"] == "VOPR"
    (described,) = stack.client("cloudwatch").describe_alarms(AlarmNames=[alarm_name])[
        "MetricAlarms"]
    assert described["StateValue"] == "ALARM"
    datapoints = json.loads(described["StateReasonData"])["recentDatapoints"]
    assert any(value > 0 for value in datapoints) and sum(datapoints) <= len(failed)


FLEET_REGION = "eu-west-1"  # its own metrics: the stack's FailuresDetected alarm sees none


def fleet_world(server: LocalStack, region: str) -> tuple[dict[str, str], Inbox]:
    """A bucket (versioned, as the stack's), a topic with a queue subscribed, a log group."""
    bucket = "vopr-fleet-test"
    s3 = server.client("s3", region)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    topic = server.client("sns", region).create_topic(Name="vopr-alerts")["TopicArn"]
    server.client("logs", region).create_log_group(logGroupName="/aws/ec2/vopr-simulation")
    inbox = Inbox(server, region, subscribe_queue(server, region, topic, "fleet-inbox"))
    resources = {"bucket": bucket, "topic": topic, "log_group": "/aws/ec2/vopr-simulation",
                 "instance": "i-fleet"}
    return resources, inbox


def test_fleet_daemon_archives_and_alerts_every_failure_when_lease_deletes_are_refused(
    localstack: LocalStack, tmp_path: Path
) -> None:
    resources, inbox = fleet_world(localstack, FLEET_REGION)
    s3 = localstack.client("s3", FLEET_REGION)
    # LocalStack's S3 refuses a conditional delete, as the fleet's lease release sends it.
    s3.put_object(Bucket=resources["bucket"], Key="probe", Body=b"x")
    etag = s3.head_object(Bucket=resources["bucket"], Key="probe")["ETag"]
    with pytest.raises(s3.exceptions.ClientError, match="NotImplemented"):
        s3.delete_object(Bucket=resources["bucket"], Key="probe", IfMatch=etag)
    s3.delete_object(Bucket=resources["bucket"], Key="probe")

    run = run_daemon(localstack, FLEET_REGION, resources, tmp_path / "state",
                     "--run", "ls-fleet", "--batch-size", "20", "-n", "100")
    done = [json.loads(s3.get_object(Bucket=resources["bucket"], Key=item["Key"])["Body"].read())
            for item in s3.list_objects_v2(Bucket=resources["bucket"], Prefix="done/ls-fleet/")
            .get("Contents", [])]
    assert sorted(record["seed_first"] for record in done) == list(range(0, 100, 20))
    failed = sorted(seed for record in done for seed in record["failed_seeds"])
    records = archived(localstack, FLEET_REGION, resources["bucket"])
    check_every_failure_archived(failed, records)
    check_every_failure_alerted(failed, records, inbox.daemon_alerts_for(len(failed)))
    # docs/fleet.md: a fleet daemon exits 0 once every batch is done; the failures are in done/
    # and failures/.
    assert run.returncode == 0, run.stderr[-3000:]
    assert metric_sum(localstack, FLEET_REGION, "IterationsCompleted") == 100.0
    assert metric_sum(localstack, FLEET_REGION, "FailuresDetected") == float(len(failed))
