"""deploy/cloudformation.yaml: linters, and the template's own content.

cfn-lint and checkov run here. The content tests cover what the moto deployment test cannot:
moto's CloudFormation skips AWS::CloudWatch::Alarm, AWS::SNS::Subscription,
AWS::SNS::TopicPolicy and AWS::S3::BucketPolicy, so those are checked in the template itself.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
    BOOTSTRAP,
    BOOTSTRAP_UNIT,
    DEPLOY,
    ROOT,
    TEMPLATE,
    UNIT,
    VENV_BIN,
    embed_module,
    resources_of_type,
    template,
    user_data_parts,
)

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def test_cfn_lint_reports_nothing() -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "cfn-lint"), "--regions", "us-east-1", "eu-west-1", "ap-southeast-2",
         "--", str(TEMPLATE)],
        capture_output=True, text=True, timeout=120,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def _checkov_skips_in_template() -> dict[str, str]:
    """check id -> written reason, over every resource's Metadata.checkov.skip."""
    skips: dict[str, str] = {}
    for name, resource in template()["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            reason = str(skip.get("comment", "")).strip()
            assert len(reason) >= 40, f"{name}: checkov skip {skip['id']} needs a written reason"
            skips[f"{skip['id']}@{name}"] = reason
    return skips


@pytest.mark.skipif(
    not CHECKOV.exists(), reason=".venv-checkov missing: .ci/run creates it from "
    "deploy/requirements-checkov.txt (checkov pins an old boto3, so it has its own venv)",
)
def test_checkov_no_failed_check_and_every_skip_is_used() -> None:
    proc = subprocess.run(
        [str(CHECKOV), "--skip-download", "--framework", "cloudformation", "--output", "json",
         "--file", str(TEMPLATE)],
        capture_output=True, text=True, timeout=240,
    )
    report: dict[str, Any] = json.loads(proc.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 25  # the template was really scanned
    skipped = {f"{c['check_id']}@{c['resource'].split('.')[-1]}" for c in results["skipped_checks"]}
    # A skip for a check that does not fire is noise that hides a future regression.
    assert skipped == set(_checkov_skips_in_template())
    assert proc.returncode == 0


def test_embedded_bootstrap_and_unit_equal_their_files() -> None:
    embed = embed_module()
    text = TEMPLATE.read_text()
    for delimiter, path in [("VOPRD_BOOTSTRAP_SH", BOOTSTRAP), ("VOPRD_UNIT", UNIT),
                            ("VOPRD_BOOTSTRAP_UNIT", BOOTSTRAP_UNIT)]:
        copy = embed.extract(text, delimiter)  # decoded (base64, gzip) as the instance does
        # The file without its whole-line comments (the 16 KiB limit), and nothing else.
        code = [line for line in path.read_text().splitlines()
                if not line.lstrip().startswith("#") or line.startswith("#!")
                or line.lstrip().startswith("# shellcheck ")]
        assert [line for line in copy.splitlines() if not line.startswith("# Comments left out")] \
            == code
        assert "# Comments left out (EC2's 16 KiB user data limit): deploy/" in copy
    assert embed.embed(text) == text, "stale template: run python3 deploy/embed_bootstrap.py"


def test_user_data_fits_the_ec2_limit() -> None:
    header, body = user_data_parts()
    assert isinstance(header, dict) and isinstance(body, str)
    text, variables = header["Fn::Sub"]
    assert variables == {"Run": {"Fn::If": ["IsSingleInstance", "", {"Ref": "RunName"}]}}
    longest = {"VoprdSource": "x" * 300, "VoprdArgs": "y" * 300, "SeedStart": "9" * 20,
               "Network": "public-ipv4", "Run": "r" * 128, "VoprdWheelSha256": "f" * 64}
    rendered = re.sub(r"\$\{([^}]+)\}", lambda m: longest.get(m[1], "z" * 120), text)
    size_bytes = len((rendered + body).encode())
    assert size_bytes < 16 * 1024, size_bytes  # EC2 rejects user data over 16 KiB (raw)


def test_parameters_and_outputs_are_the_documented_ones() -> None:
    params = template()["Parameters"]
    assert list(params) == [
        "AlertEmail", "InstanceType", "SpotMaxPrice", "LogRetentionDays", "VoprdSource",
        "VoprdWheelSha256", "ReleasePublisherArn", "VoprdArgs", "SeedStart", "RunName",
        "FleetSize", "FleetInstanceTypes", "Network", "LatestAmiId",
    ]
    assert params["VoprdSource"]["Default"] == "bucket"  # the wheel published to releases/
    assert params["VoprdWheelSha256"]["Default"] == ""
    assert "Default" not in params["ReleasePublisherArn"]  # required: who may publish
    assert params["Network"]["Default"] == "ipv6-only"  # no public IPv4 address to pay for
    assert params["Network"]["AllowedValues"] == ["ipv6-only", "public-ipv4"]
    assert "Default" not in params["AlertEmail"]
    assert params["InstanceType"]["Default"] == "c7g.medium"
    assert params["SpotMaxPrice"]["Default"] == ""
    assert params["LogRetentionDays"]["Default"] == 7
    assert params["SeedStart"]["Default"] == 0
    assert params["FleetSize"]["Default"] == 1 and params["FleetSize"]["MinValue"] == 1
    assert params["RunName"]["Default"] == "default"
    assert params["LatestAmiId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert params["LatestAmiId"]["Default"] == (
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    )
    assert list(template()["Outputs"]) == [
        "InstanceId", "FleetGroupName", "Mode", "BucketName", "SnsTopic", "LogGroup",
        "DashboardUrl",
    ]


def test_a_bucket_source_without_the_wheels_hash_is_refused_at_deploy() -> None:
    rule = template()["Rules"]["BucketSourceNeedsTheWheelsHash"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "VoprdSource"}, "bucket"]}
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "VoprdWheelSha256"}, ""]}]}


def test_lone_mode_for_one_instance_fleet_mode_for_more() -> None:
    """FleetSize 1: no run name reaches the instance (the daemon runs alone, the guide's
    checkpoints/latest.json); above 1 every instance joins RunName. The Mode output says which."""
    header, _ = user_data_parts()
    text, variables = header["Fn::Sub"]
    assert "VOPRD_RUN=${Run}\n" in text and "${RunName}" not in text
    assert variables["Run"] == {"Fn::If": ["IsSingleInstance", "", {"Ref": "RunName"}]}
    mode = template()["Outputs"]["Mode"]["Value"]["Fn::If"]
    assert mode[0] == "IsSingleInstance"
    assert mode[1].startswith("lone: one instance, no leases")
    assert mode[2]["Fn::Sub"].startswith("fleet: ${FleetSize} instances share the run ${RunName}")


@pytest.mark.parametrize(
    ("param", "value", "ok"),
    [
        ("VoprdSource", "bucket", True),
        ("VoprdSource", "https://example.com/r/voprd-0.1.0-py3-none-any.whl#sha256=" + "a" * 64,
         True),
        ("VoprdSource", "git+https://github.com/example/voprd.git@" + "0123456789" * 4, True),
        # Only pinned sources: no index name, no branch or tag, no URL without its hash.
        ("VoprdSource", "voprd==0.1.0", False),
        ("VoprdSource", "git+https://github.com/example/voprd.git@v0.1.0", False),
        ("VoprdSource", "git+https://github.com/example/voprd.git@" + "0" * 39, False),
        ("VoprdSource", "https://example.com/voprd-0.1.0-py3-none-any.whl", False),
        ("VoprdSource", "https://example.com/voprd.tar.gz#sha256=" + "a" * 64, False),
        ("VoprdSource", "http://example.com/voprd-0.1.0-py3-none-any.whl#sha256=" + "a" * 64,
         False),
        ("VoprdSource", "https://x/$(id).whl#sha256=" + "a" * 64, False),
        ("VoprdSource", "voprd; rm -rf /", False),
        ("VoprdSource", "$(curl x)", False),
        ("VoprdWheelSha256", "", True),
        ("VoprdWheelSha256", "0123456789abcdef" * 4, True),
        ("VoprdWheelSha256", "0123456789ABCDEF" * 4, False),
        ("VoprdWheelSha256", "abc", False),
        ("ReleasePublisherArn", "arn:aws:iam::123456789012:user/alice", True),
        ("ReleasePublisherArn", "arn:aws:iam::123456789012:role/ops/Deployer", True),
        ("ReleasePublisherArn", "arn:aws:iam::123456789012:root", True),
        ("ReleasePublisherArn", "arn:aws:sts::123456789012:assumed-role/Deployer/s", False),
        ("ReleasePublisherArn", "*", False),
        ("VoprdArgs", "--faults network,crash --workers 2 --seed-timeout 30", True),
        ("VoprdArgs", '--exec "a b"', False),
        ("VoprdArgs", "--x `id`", False),
        ("InstanceType", "c7g.medium", True),
        ("InstanceType", "m7gd.large", True),
        ("InstanceType", "c7i.large", False),
        ("SpotMaxPrice", "", True),
        ("SpotMaxPrice", "0.02", True),
        ("SpotMaxPrice", "cheap", False),
        ("AlertEmail", "ops@example.com", True),
        ("AlertEmail", "not an address", False),
    ],
)
def test_parameter_patterns_reject_shell_metacharacters(param: str, value: str, ok: bool) -> None:
    # The values reach pip, a heredoc and systemd: the patterns are what keeps them data.
    pattern = template()["Parameters"][param]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) == ok


def test_bucket_is_private_encrypted_versioned_with_lifecycle() -> None:
    bucket = template()["Resources"]["Bucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["BucketName"] == {
        "Fn::Sub": "vopr-simulation-results-${AWS::AccountId}-${AWS::Region}"
    }
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["failures-to-glacier"]["Prefix"] == "failures/"
    assert rules["failures-to-glacier"]["Transitions"] == [
        {"StorageClass": "GLACIER", "TransitionInDays": 90}
    ]
    assert rules["daily-checkpoints-expire"]["Prefix"] == "checkpoints/daily/"
    assert rules["daily-checkpoints-expire"]["ExpirationInDays"] == 30
    # Replaced versions expire only where they are worthless or recoverable; never under
    # failures/ or done/ (the archive an instance can only add to).
    expiring = {r.get("Prefix") for r in rules.values() if "NoncurrentVersionExpiration" in r}
    assert expiring == {"checkpoints/", "releases/", "leases/"}
    assert rules["checkpoint-versions-expire"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30}
    assert rules["abort-incomplete-uploads"] == {
        "Id": "abort-incomplete-uploads", "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}  # no prefix, no expiry
    for rule in rules.values():
        assert rule.get("Prefix") not in ("failures/", "done/") or (
            "NoncurrentVersionExpiration" not in rule and "ExpirationInDays" not in rule)


def bucket_policy() -> dict[str, dict[str, Any]]:
    # moto skips AWS::S3::BucketPolicy: checked here.
    (policy,) = resources_of_type("AWS::S3::BucketPolicy").values()
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_bucket_policy_denies_plain_http() -> None:
    statement = bucket_policy()["DenyInsecureTransport"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["Bucket", "Arn"]} in statement["Resource"]
    assert list(bucket_policy()) == [
        "DenyInsecureTransport", "OnlyThePublisherWritesReleases", "InstanceCreatesArchivesOnly",
        "InstanceNeverDeletesArchives", "InstanceNeverDeletesFailures"]
    assert all(s["Effect"] == "Deny" for s in bucket_policy().values())  # grants nothing


def test_only_the_release_publisher_writes_or_deletes_releases() -> None:
    statement = bucket_policy()["OnlyThePublisherWritesReleases"]
    assert statement["Principal"] == "*"
    assert sorted(statement["Action"]) == [
        "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"]
    assert statement["Resource"] == {"Fn::Sub": "${Bucket.Arn}/releases/*"}
    assert statement["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Ref": "ReleasePublisherArn"}}}


def test_the_instance_can_only_create_under_failures_and_done() -> None:
    """S3's s3:if-none-match condition key (AWS's conditional-writes docs): a PutObject by the
    instance role without `If-None-Match: *` is denied, so it can add records, never replace
    one; it deletes no failure record and no version of any record (a fleet may remove an
    unreadable done record after copying it aside: versioning keeps it). (moto enforces no
    bucket policy: the statements are checked.)"""
    archives = [{"Fn::Sub": "${Bucket.Arn}/failures/*"}, {"Fn::Sub": "${Bucket.Arn}/done/*"}]
    role = {"aws:PrincipalArn": {"Fn::GetAtt": ["InstanceRole", "Arn"]}}
    create_only = bucket_policy()["InstanceCreatesArchivesOnly"]
    assert (create_only["Principal"], create_only["Action"]) == ("*", "s3:PutObject")
    assert create_only["Resource"] == [*archives, {"Fn::Sub": "${Bucket.Arn}/alerts/*"}]
    assert create_only["Condition"] == {
        "ArnEquals": role, "StringNotEquals": {"s3:if-none-match": "*"}}
    no_version_delete = bucket_policy()["InstanceNeverDeletesArchives"]
    assert no_version_delete["Action"] == "s3:DeleteObjectVersion"
    assert no_version_delete["Resource"] == archives
    assert no_version_delete["Condition"] == {"ArnEquals": role}
    no_delete = bucket_policy()["InstanceNeverDeletesFailures"]
    assert no_delete["Action"] == "s3:DeleteObject" and no_delete["Resource"] == archives[0]
    assert no_delete["Condition"] == {"ArnEquals": role}
    assert not [rule for rule in template()["Resources"]["Bucket"]["Properties"][
        "LifecycleConfiguration"]["Rules"] if "NoncurrentVersionExpiration" in rule
        and rule.get("Prefix", rule.get("Filter", {}).get("Prefix", "")) in ("", "done/")]


def test_log_group_and_key_are_deleted_with_the_stack_and_the_bucket_kept() -> None:
    resources = template()["Resources"]
    for name in ("LogGroup", "AlertKey"):
        assert resources[name]["DeletionPolicy"] == "Delete", name
        assert resources[name]["UpdateReplacePolicy"] == "Delete", name
    assert resources["AlertKey"]["Properties"]["PendingWindowInDays"] == 7
    assert resources["Bucket"]["DeletionPolicy"] == "Retain"
    assert resources["Bucket"]["UpdateReplacePolicy"] == "Retain"


def test_topic_policy_allows_only_this_account_and_cloudwatch_alarms() -> None:
    # moto skips AWS::SNS::TopicPolicy and AWS::SNS::Subscription: checked here.
    (policy,) = resources_of_type("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    principals = [s["Principal"] for s in allows]
    assert principals == [
        {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
        {"Service": "cloudwatch.amazonaws.com"},
    ]
    alarms = allows[1]
    assert alarms["Action"] == "sns:Publish"
    assert alarms["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].endswith(
        ":${AWS::AccountId}:alarm:*"
    )
    (subscription,) = resources_of_type("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlertEmail"}
    topic = template()["Resources"]["AlertTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlertKey"}  # a customer key alarms can use
    key_statements = template()["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        and "kms:GenerateDataKey*" in s["Action"]
        for s in key_statements
    )


def test_alarms_failures_and_no_progress() -> None:
    # moto skips AWS::CloudWatch::Alarm: checked here.
    alarms = resources_of_type("AWS::CloudWatch::Alarm")
    failures = alarms["FailuresDetectedAlarm"]["Properties"]
    stalled = alarms["NoProgressAlarm"]["Properties"]
    assert len(alarms) == 2
    for alarm in (failures, stalled):
        assert alarm["Namespace"] == "VOPR"
        assert alarm["Statistic"] == "Sum"
        assert "Dimensions" not in alarm  # the daemon's metrics have no dimension
        assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
        assert alarm["OKActions"] == [{"Ref": "AlertTopic"}]
    assert (failures["MetricName"], failures["Period"], failures["EvaluationPeriods"]) == (
        "FailuresDetected", 60, 1,
    )
    assert (failures["ComparisonOperator"], failures["Threshold"]) == ("GreaterThanThreshold", 0)
    assert stalled["MetricName"] == "IterationsCompleted"
    assert stalled["Period"] * stalled["EvaluationPeriods"] == 15 * 60
    assert stalled["DatapointsToAlarm"] == stalled["EvaluationPeriods"]
    assert (stalled["ComparisonOperator"], stalled["Threshold"]) == ("LessThanThreshold", 1)
    assert stalled["TreatMissingData"] == "breaching"  # a dead daemon sends no data


def test_dashboard_shows_the_four_metrics() -> None:
    body = template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body.replace("${AWS::Region}", "us-east-1"))["widgets"]
    shown = {m[1] for w in widgets for m in w["properties"]["metrics"]}
    assert shown == {"IterationsCompleted", "FailuresDetected", "EventsSimulated", "SeedDuration"}
    assert all(m[0] == "VOPR" for w in widgets for m in w["properties"]["metrics"])


def test_instance_role_least_privilege() -> None:
    role = template()["Resources"]["InstanceRole"]["Properties"]
    (policy,) = role["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    # No managed policy: AmazonSSMManagedInstanceCore allowed ssm:GetParameter* on every
    # parameter of the region, documents, inventory, patching.
    assert "ManagedPolicyArns" not in role
    assert all(s["Effect"] == "Allow" for s in statements.values())
    star = [sid for sid, s in statements.items() if s["Resource"] == "*"]
    assert star == ["SessionManagerAndRunCommandChannels", "PutMetricsInVoprNamespace"]
    # Session Manager and Run Command: the agent's channels and registration, nothing more.
    assert statements["SsmAgentRegisters"]["Action"] == "ssm:UpdateInstanceInformation"
    assert statements["SsmAgentRegisters"]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"}
    assert sorted(statements["SessionManagerAndRunCommandChannels"]["Action"]) == sorted(
        [f"ssmmessages:{a}" for a in ("CreateControlChannel", "CreateDataChannel",
                                      "OpenControlChannel", "OpenDataChannel")]
        + [f"ec2messages:{a}" for a in ("AcknowledgeMessage", "DeleteMessage", "FailMessage",
                                        "GetEndpoint", "GetMessages", "SendReply")])
    assert not [a for s in statements.values() for a in _as_list(s["Action"])
                if a.startswith("ssm:") and a != "ssm:UpdateInstanceInformation"]
    # Every S3 statement pins the bucket's account (S3 ARNs name none).
    s3 = [sid for sid, s in statements.items()
          if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    assert s3 == ["ListBucket", "ReadWriteDaemonKeys", "ReadReleases",
                  "DeleteSetAsideCheckpointsAndLeases"]
    for sid in s3:
        assert statements[sid]["Condition"] == {
            "StringEquals": {"aws:ResourceAccount": {"Ref": "AWS::AccountId"}}}, sid
    metrics = statements["PutMetricsInVoprNamespace"]
    assert metrics["Action"] == "cloudwatch:PutMetricData"
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "VOPR"}}
    assert statements["WriteLogs"]["Resource"] == {"Fn::GetAtt": ["LogGroup", "Arn"]}
    assert statements["PublishAlerts"]["Resource"] == {"Ref": "AlertTopic"}
    keys = statements["ReadWriteDaemonKeys"]["Resource"]
    assert [k["Fn::Sub"] for k in keys] == [
        f"${{Bucket.Arn}}/{prefix}/*"
        for prefix in ("checkpoints", "failures", "leases", "done", "alerts", "corrupt")
    ]
    releases = statements["ReadReleases"]  # VoprdSource "bucket": read, never write
    assert (releases["Action"], releases["Resource"]) == (
        "s3:GetObject", {"Fn::Sub": "${Bucket.Arn}/releases/*"}
    )
    deletable = statements["DeleteSetAsideCheckpointsAndLeases"]
    assert deletable["Action"] == "s3:DeleteObject"
    assert [k["Fn::Sub"] for k in deletable["Resource"]] == [  # never failures/
        "${Bucket.Arn}/checkpoints/*", "${Bucket.Arn}/leases/*", "${Bucket.Arn}/done/*",
        "${Bucket.Arn}/alerts/*",
    ]
    assert statements["CheckLogGroupAtStartup"]["Action"] == "logs:DescribeLogGroups"
    actions = {a for s in statements.values() for a in _as_list(s["Action"])}
    assert not any(a.endswith("*") and not a.startswith("kms:GenerateDataKey") for a in actions)


def test_every_star_resource_is_commented() -> None:
    lines = TEMPLATE.read_text().splitlines()
    stars = [i for i, line in enumerate(lines) if re.search(r'Resource: "\*"', line)]
    assert stars
    for i in stars:
        context = lines[max(0, i - 3) : i]
        assert any(line.strip().startswith("#") for line in context), f"line {i + 1}: say why"


def test_launch_template_spot_imdsv2_encrypted_gp3() -> None:
    data = template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["ImageId"] == {"Ref": "LatestAmiId"}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["MetadataOptions"]["HttpProtocolIpv6"] == "enabled"  # IPv6-only subnets
    (disk,) = data["BlockDeviceMappings"]
    assert disk["Ebs"] == {
        "VolumeSize": 8, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True,
    }
    # The single instance (FleetSize 1) is a persistent spot request; the fleet's ASG asks for
    # spot itself and refuses a template with market options, hence the condition.
    condition, spot, fleet_value = data["InstanceMarketOptions"]["Fn::If"]
    assert condition == "IsSingleInstance" and fleet_value == {"Ref": "AWS::NoValue"}
    assert spot["MarketType"] == "spot"
    assert spot["SpotOptions"]["SpotInstanceType"] == "persistent"
    assert spot["SpotOptions"]["InstanceInterruptionBehavior"] == "stop"
    assert spot["SpotOptions"]["MaxPrice"] == {
        "Fn::If": ["HasSpotMaxPrice", {"Ref": "SpotMaxPrice"}, {"Ref": "AWS::NoValue"}]
    }
    groups = resources_of_type("AWS::EC2::SecurityGroup")
    assert [g.get("Properties", {}).get("SecurityGroupIngress") for g in groups.values()] == [None]
    (group,) = groups.values()
    egress = [(r["IpProtocol"], r["FromPort"], r["ToPort"], r.get("CidrIp") or r["CidrIpv6"])
              for r in group["Properties"]["SecurityGroupEgress"]]
    assert egress == [("tcp", 443, 443, "0.0.0.0/0"), ("tcp", 443, 443, "::/0")]
    (instance,) = resources_of_type("AWS::EC2::Instance").values()
    assert instance["Properties"]["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}
    assert instance["Condition"] == "IsSingleInstance"


def test_network_ipv6_only_has_no_public_ipv4_and_public_ipv4_keeps_the_old_layout() -> None:
    """moto's CloudFormation cannot create AWS::EC2::VPCCidrBlock or EgressOnlyInternetGateway
    nor answer GetAtt Vpc.Ipv6CidrBlocks, so the moto deployments (tests/test_deploy_moto.py,
    tests/test_deploy_e2e.py) use Network=public-ipv4; the default ipv6-only network is checked
    here, on the template's content (cfn-lint validates it against AWS's resource schemas)."""
    doc = template()
    resources = doc["Resources"]
    assert doc["Conditions"]["IsIpv6Only"] == {"Fn::Equals": [{"Ref": "Network"}, "ipv6-only"]}
    assert doc["Conditions"]["HasPublicIpv4"] == {
        "Fn::Equals": [{"Ref": "Network"}, "public-ipv4"]
    }
    by_condition: dict[str, set[str]] = {}
    for name, resource in resources.items():
        by_condition.setdefault(resource.get("Condition", "-"), set()).add(name)
    assert by_condition["IsIpv6Only"] == {
        "VpcIpv6Block", "EgressOnlyGateway", "Ipv6DefaultRoute", "Ipv6SubnetA", "Ipv6SubnetB",
        "Ipv6SubnetARoutes", "Ipv6SubnetBRoutes",
    }
    assert by_condition["HasPublicIpv4"] == {
        "InternetGateway", "GatewayAttachment", "DefaultRoute", "SubnetA", "SubnetB",
        "SubnetARoutes", "SubnetBRoutes",
    }
    assert resources["VpcIpv6Block"]["Properties"] == {
        "VpcId": {"Ref": "Vpc"}, "AmazonProvidedIpv6CidrBlock": True,
    }
    route = resources["Ipv6DefaultRoute"]["Properties"]
    assert route["DestinationIpv6CidrBlock"] == "::/0"
    assert route["EgressOnlyInternetGatewayId"] == {"Ref": "EgressOnlyGateway"}
    for index, name in enumerate(["Ipv6SubnetA", "Ipv6SubnetB"]):
        subnet = resources[name]
        props = subnet["Properties"]
        assert subnet["DependsOn"] == "VpcIpv6Block"  # the block exists before its /64s
        assert props["Ipv6Native"] is True and "CidrBlock" not in props
        assert "MapPublicIpOnLaunch" not in props  # no IPv4 address at all
        assert props["AssignIpv6AddressOnCreation"] is True and props["EnableDns64"] is False
        assert props["Ipv6CidrBlock"] == {"Fn::Select": [index, {"Fn::Cidr": [
            {"Fn::Select": [0, {"Fn::GetAtt": ["Vpc", "Ipv6CidrBlocks"]}]}, 2, 64]}]}
        assert props["PrivateDnsNameOptionsOnLaunch"]["HostnameType"] == "resource-name"
        assert resources[f"{name}Routes"]["Properties"]["SubnetId"] == {"Ref": name}
    for name in ("SubnetA", "SubnetB"):
        assert resources[name]["Properties"]["MapPublicIpOnLaunch"] is True
    # The instance (or the fleet) lands in the network's subnets, after its route exists.
    instance = resources["Instance"]
    assert instance["Properties"]["SubnetId"] == {
        "Fn::If": ["IsIpv6Only", {"Ref": "Ipv6SubnetA"}, {"Ref": "SubnetA"}]
    }
    assert instance["Metadata"]["voprd"]["RoutesFirst"] == {"Fn::If": [
        "IsIpv6Only", [{"Ref": "Ipv6DefaultRoute"}, {"Ref": "Ipv6SubnetARoutes"}],
        [{"Ref": "DefaultRoute"}, {"Ref": "SubnetARoutes"}]]}
    assert "DependsOn" not in instance
    group = resources["FleetGroup"]
    assert group["Properties"]["VPCZoneIdentifier"] == {"Fn::If": [
        "IsIpv6Only", [{"Ref": "Ipv6SubnetA"}, {"Ref": "Ipv6SubnetB"}],
        [{"Ref": "SubnetA"}, {"Ref": "SubnetB"}]]}
    assert "Ipv6DefaultRoute" in json.dumps(group["Metadata"])
    # The bootstrap learns the network (and so the SDK settings) from stack.env.
    assert "VOPRD_NETWORK=${Network}" in json.dumps(user_data_parts()[0])


def test_fleet_size_gives_a_spot_auto_scaling_group_on_the_same_run() -> None:
    doc = template()
    assert doc["Conditions"]["IsSingleInstance"] == {"Fn::Equals": [{"Ref": "FleetSize"}, 1]}
    assert doc["Conditions"]["IsFleet"] == {"Fn::Not": [{"Condition": "IsSingleInstance"}]}
    (group,) = resources_of_type("AWS::AutoScaling::AutoScalingGroup").values()
    assert group["Condition"] == "IsFleet"
    props = group["Properties"]
    for size in ("MinSize", "MaxSize", "DesiredCapacity"):
        assert props[size] == {"Ref": "FleetSize"}
    assert props["CapacityRebalance"] is True
    policy = props["MixedInstancesPolicy"]
    spread = policy["InstancesDistribution"]
    assert spread["OnDemandBaseCapacity"] == 0
    assert spread["OnDemandPercentageAboveBaseCapacity"] == 0  # all spot
    assert spread["SpotAllocationStrategy"] == "price-capacity-optimized"
    template_spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert template_spec["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}  # the same template
    types = [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]]
    assert types == [{"Fn::Select": [i, {"Ref": "FleetInstanceTypes"}]} for i in range(3)]
    assert len(doc["Parameters"]["FleetInstanceTypes"]["Default"].split(",")) == 3
    # Every instance of a fleet joins the same run: RunName reaches /etc/default/voprd.
    assert user_data_parts()[0]["Fn::Sub"][1]["Run"]["Fn::If"] == [
        "IsSingleInstance", "", {"Ref": "RunName"}]
    assert doc["Outputs"]["FleetGroupName"]["Condition"] == "IsFleet"
    assert doc["Outputs"]["InstanceId"]["Condition"] == "IsSingleInstance"
    rules = {r["Id"]: r for r in doc["Resources"]["Bucket"]["Properties"]
             ["LifecycleConfiguration"]["Rules"]}
    assert rules["fleet-lease-versions-expire"]["Prefix"] == "leases/"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_checkov_requirements_are_pinned() -> None:
    lines = [
        line for line in (DEPLOY / "requirements-checkov.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", x) for x in lines)


def test_template_fits_deploy_without_an_s3_bucket() -> None:
    # `aws cloudformation deploy` (the quick start) sends the template inline: at most 51,200
    # bytes; a larger one would need --s3-bucket, which the quick start has none of yet.
    size = len(TEMPLATE.read_bytes())
    assert size < 51_200, f"{size} bytes: shorten the template's comments (or the bootstrap's)"


def test_comment_stripping_keeps_heredoc_lines(tmp_path: Path) -> None:
    """The user data's copies leave out whole-line comments, but a '#' line inside a shell
    heredoc is data (here: what a file gets), and must stay."""
    embed = embed_module()
    script = embed.DEPLOY / "_embed_probe.sh"
    script.write_text(
        "#!/bin/bash\n# a comment\ncat > f <<'EOF'\n# data, not a comment\nEOF\n"
        "  # an indented comment\necho kept  # a trailing comment stays\n"
        "# shellcheck disable=SC2016\n"
    )
    try:
        copy = embed.embedded_text(script)
    finally:
        script.unlink()
    assert copy.splitlines() == [
        "#!/bin/bash",
        "# Comments left out (EC2's 16 KiB user data limit): deploy/_embed_probe.sh",
        "cat > f <<'EOF'",
        "# data, not a comment",
        "EOF",
        "echo kept  # a trailing comment stays",
        "# shellcheck disable=SC2016",
    ]
