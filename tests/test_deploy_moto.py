"""Deploy deploy/cloudformation.yaml to moto's server over HTTP with the awscli, as an operator
would, and check what it created through boto3.

moto's CloudFormation does not create AWS::CloudWatch::Alarm, AWS::SNS::Subscription,
AWS::SNS::TopicPolicy or AWS::S3::BucketPolicy (it logs "No Moto CloudFormation support"):
tests/test_deploy_template.py checks those resources in the template's own content instead.
"""

from __future__ import annotations

import ast
import base64
from collections.abc import Iterator

import pytest

from tests.deploy_moto_support import (
    AMI_PARAMETER,
    REGION,
    STACK,
    WHEEL_SHA256,
    Deployed,
    create_stack,
    deployed_stack,
)
from tests.deploy_support import TEMPLATE, embed_module


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    with deployed_stack(
        "AlertEmail=ops@example.com", "SeedStart=5000000",
        "VoprdArgs=--faults network,crash --workers 2", "LogRetentionDays=14",
    ) as stack:
        yield stack


def test_outputs_name_the_created_resources(deployed: Deployed) -> None:
    outputs = deployed.outputs
    assert outputs["BucketName"] == f"vopr-simulation-results-123456789012-{REGION}"
    assert outputs["LogGroup"] == "/aws/ec2/vopr-simulation"
    assert outputs["SnsTopic"].startswith(f"arn:aws:sns:{REGION}:123456789012:")
    assert outputs["InstanceId"].startswith("i-")
    dashboards = deployed.client("cloudwatch").list_dashboards()["DashboardEntries"]
    assert [d["DashboardName"] for d in dashboards] == ["voprd-voprd"]


def test_create_stack_fills_the_outputs(deployed: Deployed) -> None:
    # Another region: bucket and log group names are per account and region (one stack each).
    region = "us-west-2"
    stack = create_stack(deployed, region)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    # moto lists an output whose Condition is false too (AWS omits it; test_deploy_template
    # checks the conditions): FleetGroupName names no group here.
    assert [k for k in outputs if k != "FleetGroupName"] == [
        "InstanceId", "Mode", "BucketName", "SnsTopic", "LogGroup", "DashboardUrl"]
    assert outputs["Mode"].startswith("lone: one instance, no leases")
    assert outputs["BucketName"] == f"vopr-simulation-results-123456789012-{region}"
    assert outputs["DashboardUrl"] == (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        "#dashboards:name=voprd-voprd"
    )
    # The guide reads outputs with this query.
    query = deployed.aws(
        "cloudformation", "describe-stacks", "--region", region, "--stack-name", STACK,
        "--query", "Stacks[0].Outputs[?OutputKey=='BucketName'].OutputValue", "--output", "text",
    )
    assert query.stdout.strip() == outputs["BucketName"]


def test_bucket_created_encrypted(deployed: Deployed) -> None:
    # moto's AWS::S3::Bucket applies only BucketEncryption and Tags; versioning, the public
    # access block and the lifecycle rules are checked in the template (test_deploy_template).
    s3 = deployed.client("s3")
    bucket = deployed.outputs["BucketName"]
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    tags = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert {"Key": "Project", "Value": "voprd"} in tags


def test_topic_encrypted_and_log_group_retention(deployed: Deployed) -> None:
    attributes = deployed.client("sns").get_topic_attributes(
        TopicArn=deployed.outputs["SnsTopic"]
    )["Attributes"]
    key_id = deployed.physical_id("AlertKey")
    assert key_id in attributes["KmsMasterKeyId"]
    (group,) = deployed.client("logs").describe_log_groups(
        logGroupNamePrefix="/aws/ec2/vopr-simulation"
    )["logGroups"]
    assert group["logGroupName"] == "/aws/ec2/vopr-simulation"
    assert group["retentionInDays"] == 14


def test_role_policy_scoped_to_this_stack(deployed: Deployed) -> None:
    iam = deployed.client("iam")
    role_name = deployed.physical_id("InstanceRole")
    document = iam.get_role_policy(RoleName=role_name, PolicyName="voprd")["PolicyDocument"]
    if isinstance(document, str):
        # moto's CloudFormation stores the inline policy as the repr of a Python dict.
        document = ast.literal_eval(document)
    statements = {s["Sid"]: s for s in document["Statement"]}
    bucket_arn = f"arn:aws:s3:::{deployed.outputs['BucketName']}"
    assert statements["ListBucket"]["Resource"] == bucket_arn
    assert statements["ReadWriteDaemonKeys"]["Resource"] == [
        f"{bucket_arn}/{prefix}/*"
        for prefix in ("checkpoints", "failures", "leases", "done", "alerts", "corrupt")
    ]
    assert statements["PublishAlerts"]["Resource"] == deployed.outputs["SnsTopic"]
    # Everything the daemon's start-up check calls (voprd/sinks/aws/validate.py) is granted.
    assert set(statements["PublishAlerts"]["Action"]) == {"sns:Publish", "sns:GetTopicAttributes"}
    assert statements["CheckLogGroupAtStartup"]["Action"] == "logs:DescribeLogGroups"
    assert statements["ListBucket"]["Action"] == "s3:ListBucket"
    assert statements["WriteLogs"]["Resource"].startswith(
        f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/ec2/vopr-simulation"
    )
    assert statements["PutMetricsInVoprNamespace"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "VOPR"}
    }
    assert statements["DeleteSetAsideCheckpointsAndLeases"]["Resource"] == [
        f"{bucket_arn}/checkpoints/*", f"{bucket_arn}/leases/*", f"{bucket_arn}/done/*",
        f"{bucket_arn}/alerts/*",
    ]
    assert statements["CheckLogGroupAtStartup"]["Resource"] == (
        f"arn:aws:logs:{REGION}:123456789012:log-group:*"
    )
    assert statements["ReadReleases"]["Resource"] == f"{bucket_arn}/releases/*"
    assert statements["ReadReleases"]["Action"] == "s3:GetObject"
    for sid in ("ListBucket", "ReadWriteDaemonKeys", "ReadReleases",
                "DeleteSetAsideCheckpointsAndLeases"):
        assert statements[sid]["Condition"] == {
            "StringEquals": {"aws:ResourceAccount": "123456789012"}}, sid
    assert statements["SsmAgentRegisters"]["Resource"] == (
        f"arn:aws:ec2:{REGION}:123456789012:instance/*")
    assert len(statements) == 11
    # Session Manager through the inline statements: no managed policy on the role.
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    profile = iam.get_instance_profile(InstanceProfileName=deployed.physical_id("InstanceProfile"))
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [role_name]


def test_launch_template_and_instance(deployed: Deployed) -> None:
    ec2 = deployed.client("ec2")
    ami = deployed.client("ssm").get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    template_id = deployed.physical_id("LaunchTemplate")
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=template_id)[
        "LaunchTemplateVersions"
    ]
    data = version["LaunchTemplateData"]
    assert data["ImageId"] == ami  # resolved from the public SSM parameter
    assert data["InstanceType"] == "c7g.medium"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["VolumeSize"], ebs["VolumeType"], ebs["Encrypted"]) == (8, "gp3", True)
    spot = data["InstanceMarketOptions"]
    assert spot["MarketType"] == "spot"
    assert spot["SpotOptions"]["SpotInstanceType"] == "persistent"
    assert spot["SpotOptions"]["InstanceInterruptionBehavior"] == "stop"
    assert "MaxPrice" not in spot["SpotOptions"]  # empty SpotMaxPrice: on-demand cap
    user_data = base64.b64decode(data["UserData"]).decode()
    embed = embed_module()
    bootstrap = embed.embedded_text(TEMPLATE.parent / "bootstrap.sh")
    assert embed.extract(user_data, "VOPRD_BOOTSTRAP_SH") == bootstrap  # decoded
    stack_env = user_data.split("<<'VOPRD_STACK_ENV'\n", 1)[1].split("VOPRD_STACK_ENV\n", 1)[0]
    assert stack_env.splitlines() == [
        "VOPRD_SOURCE=bucket",  # the default: the wheel under releases/SHA256/
        f"VOPRD_WHEEL_SHA256={WHEEL_SHA256}",
        "VOPRD_EXTRA_ARGS=--faults network,crash --workers 2",
        "VOPRD_SEED_START=5000000",
        f"VOPRD_BUCKET={deployed.outputs['BucketName']}",
        f"VOPRD_SNS_TOPIC_ARN={deployed.outputs['SnsTopic']}",
        "VOPRD_LOG_GROUP=/aws/ec2/vopr-simulation",
        "VOPRD_RUN=",  # FleetSize 1: no run name, the daemon runs alone
        "VOPRD_NETWORK=public-ipv4",
        f"AWS_REGION={REGION}",
        "AWS_ACCOUNT_ID=123456789012",
    ]
    (reservation,) = ec2.describe_instances(InstanceIds=[deployed.outputs["InstanceId"]])[
        "Reservations"
    ]
    (instance,) = reservation["Instances"]
    assert instance["ImageId"] == ami
    assert instance["SubnetId"] == deployed.physical_id("SubnetA")
    group_id = deployed.physical_id("SecurityGroup")
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["IpPermissions"] == []  # no ingress
    # moto's AWS::EC2::SecurityGroup ignores SecurityGroupEgress (it keeps the default
    # allow-all rule); the HTTPS-only egress is checked in the template (test_deploy_template).


def test_fleet_size_three_is_a_spot_auto_scaling_group(deployed: Deployed) -> None:
    region = "eu-west-1"
    create_stack(
        deployed, region, "ParameterKey=FleetSize,ParameterValue=3",
        "ParameterKey=RunName,ParameterValue=nightly",
    )
    cloudformation = deployed.client("cloudformation", region)
    types = {r["LogicalResourceId"]: r["ResourceType"] for r in
             cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]}
    assert types["FleetGroup"] == "AWS::AutoScaling::AutoScalingGroup"
    assert "Instance" not in types  # FleetSize > 1: no single instance
    (group,) = deployed.client("autoscaling", region).describe_auto_scaling_groups()[
        "AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (3, 3, 3)
    # moto's CloudFormation drops CapacityRebalance and applies Fn::Select to a
    # CommaDelimitedList parameter as to a string (AWS splits it), so the three instance types
    # and capacity rebalancing are checked in the template (test_deploy_template) instead.
    policy = group["MixedInstancesPolicy"]
    assert len(policy["LaunchTemplate"]["Overrides"]) == 3
    assert len(group["Instances"]) == 3
    assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    # The launch template has no market options (the group asks for spot), and every
    # instance joins the run RunName.
    templates = deployed.client("ec2", region).describe_launch_templates()["LaunchTemplates"]
    (template_id,) = [t["LaunchTemplateId"] for t in templates]
    data = deployed.client("ec2", region).describe_launch_template_versions(
        LaunchTemplateId=template_id)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert "InstanceMarketOptions" not in data
    assert "VOPRD_RUN=nightly\n" in base64.b64decode(data["UserData"]).decode()
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cloudformation.describe_stacks(
        StackName=STACK)["Stacks"][0]["Outputs"]}
    assert outputs["Mode"] == "fleet: 3 instances share the run nightly through S3 leases"
