"""AWS settings: precedence (flags > env > file), region and endpoint variables, validation."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.aws_fixtures import AwsWorld, MotoServer
from voprd.config import DEFAULT_LOG_GROUP, ConfigError, Settings, build_settings
from voprd.sinks.aws.clients import AwsClients
from voprd.sinks.aws.validate import validate

FILE = """
bucket = "from-file"
sns_topic_arn = "arn:aws:sns:us-east-1:123456789012:file"
log_group = "/file/group"
namespace = "FileNS"
region = "eu-west-1"
"""


def test_file_only() -> None:
    settings = build_settings({}, env={}, file_text=FILE)
    assert settings.bucket == "from-file"
    assert settings.log_group == "/file/group"
    assert settings.namespace == "FileNS"
    assert settings.region == "eu-west-1"
    assert settings.backend == "aws"


def test_env_beats_file_and_flags_beat_env() -> None:
    env = {
        "VOPRD_BUCKET": "from-env", "VOPRD_LOG_GROUP": "/env/group", "AWS_REGION": "us-west-2",
        "VOPRD_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:env",
    }
    settings = build_settings({}, env=env, file_text=FILE)
    assert (settings.bucket, settings.log_group, settings.region) == (
        "from-env", "/env/group", "us-west-2",
    )
    assert settings.sns_topic_arn == "arn:aws:sns:us-east-1:123456789012:env"
    assert settings.namespace == "FileNS"  # not in env: the file still counts
    flags = {"bucket": "from-flag", "namespace": "FlagNS", "log_iterations": True}
    settings = build_settings(flags, env=env, file_text=FILE)
    assert (settings.bucket, settings.namespace, settings.log_group) == (
        "from-flag", "FlagNS", "/env/group",
    )
    assert settings.log_iterations is True


def test_region_variables() -> None:
    assert build_settings({}, env={"AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"
    both = {"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert build_settings({}, env=both).region == "us-east-2"
    assert build_settings({}, env={}).region is None


def test_backend_local_without_bucket_and_defaults() -> None:
    settings = build_settings({}, env={})
    assert settings.backend == "local"
    assert settings.log_group == DEFAULT_LOG_GROUP == "/aws/ec2/vopr-simulation"
    assert settings.namespace == "VOPR"
    assert settings.log_iterations is False and settings.metrics_instance_dimension is False


def test_unknown_file_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'bukket'"):
        build_settings({}, env={}, file_text='bukket = "x"')


def test_botocore_honours_endpoint_variable(moto_server: MotoServer) -> None:
    async def endpoint() -> str:
        async with AwsClients(Settings(bucket="b", region="us-east-1")) as clients:
            return str(clients.s3.meta.endpoint_url)

    assert os.environ["AWS_ENDPOINT_URL"] == moto_server.url
    assert asyncio.run(endpoint()) == moto_server.url


def test_validate_passes_on_good_settings(aws: AwsWorld) -> None:
    settings = Settings(
        bucket=aws.bucket, sns_topic_arn=aws.topic_arn, log_group=aws.log_group, region="us-east-1"
    )
    asyncio.run(validate(settings))


def test_validate_names_each_bad_setting(aws: AwsWorld) -> None:
    settings = Settings(
        bucket="no-such-bucket",
        sns_topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic",
        log_group="/no/such/group",
        region="us-east-1",
    )
    with pytest.raises(ConfigError) as caught:
        asyncio.run(validate(settings))
    lines = str(caught.value).splitlines()
    assert lines == [
        "--bucket / VOPRD_BUCKET: bucket 'no-such-bucket' does not exist",
        "--sns-topic-arn / VOPRD_SNS_TOPIC_ARN: topic "
        "'arn:aws:sns:us-east-1:123456789012:no-such-topic' does not exist",
        "--log-group / VOPRD_LOG_GROUP: log group '/no/such/group' does not exist",
    ]


def test_validate_reports_unreachable_endpoint(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.aws_fixtures import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match="AWS endpoint unreachable at AWS_ENDPOINT_URL="):
        asyncio.run(validate(Settings(bucket="b", region="us-east-1")))


@pytest.mark.parametrize(
    ("text", "name"),
    [("workers = -2", "workers"), ("seed_timeout_s = 0", "seed_timeout_s"),
     ("lease_seconds = 0", "lease_seconds"), ("iterations = -5", "iterations"),
     ("batch_size = -1", "batch_size"), ("seed_stride = 0", "seed_stride")],
)
def test_out_of_range_file_settings_are_refused_naming_the_setting(text: str, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        build_settings({}, env={}, file_text=text)


def test_dualstack_variable_gives_every_client_its_ipv6_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the stack's default IPv6-only network the bootstrap writes AWS_USE_DUALSTACK_ENDPOINT
    (tests/test_deploy_bootstrap.py): the clients the daemon makes here, and the boto3 client
    watchtower gets, must then resolve to the dual-stack names AWS lists for each service (AWS
    General Reference, "endpoints and quotas" of S3, SNS, CloudWatch, CloudWatch Logs); the
    plain *.amazonaws.com names of SNS, CloudWatch and Logs answer over IPv4 only."""
    from voprd.sinks.aws.backend import _logs_client

    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_USE_DUALSTACK_ENDPOINT", "true")

    async def endpoints() -> dict[str, str]:
        async with AwsClients(Settings(bucket="b", region="eu-north-1")) as clients:
            return {name: str(getattr(clients, name).meta.endpoint_url)
                    for name in ("s3", "sns", "cloudwatch", "logs")}

    assert asyncio.run(endpoints()) == {
        "s3": "https://s3.dualstack.eu-north-1.amazonaws.com",
        "sns": "https://sns.eu-north-1.api.aws",
        "cloudwatch": "https://monitoring.eu-north-1.api.aws",
        "logs": "https://logs.eu-north-1.api.aws",
    }
    assert _logs_client("eu-north-1").meta.endpoint_url == "https://logs.eu-north-1.api.aws"
    monkeypatch.setenv("AWS_USE_DUALSTACK_ENDPOINT", "false")  # the public-ipv4 network
    assert _logs_client("eu-north-1").meta.endpoint_url == "https://logs.eu-north-1.amazonaws.com"


def test_bad_metadata_endpoint_mode_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"):
        build_settings({}, env={"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "v6"})
    assert build_settings({}, env={"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}) is not None
