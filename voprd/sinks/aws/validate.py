"""Start-up validation of the AWS settings: each problem named by its setting, before any seed.

A missing bucket, topic or log group, or a permission the instance role lacks, is reported once at
start-up as a `ConfigError` whose lines each begin with the flag and variable that set the value,
instead of surfacing later as a stack trace from a background send.
"""

from __future__ import annotations

import os

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from botocore.parsers import ResponseParserError

from voprd.config import ConfigError, Settings
from voprd.sinks.aws.clients import AwsClients, error_code

_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError", "403"})
_MISSING_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})


def _where() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    return f" at AWS_ENDPOINT_URL={endpoint}" if endpoint else ""


async def _check_bucket(clients: AwsClients, bucket: str) -> str | None:
    name = "--bucket / VOPRD_BUCKET"
    try:
        await clients.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = error_code(exc)
        if code in _MISSING_BUCKET:
            return f"{name}: bucket {bucket!r} does not exist"
        if code in _DENIED:
            return f"{name}: no permission to use bucket {bucket!r} (s3:ListBucket denied)"
        return f"{name}: bucket {bucket!r}: {code}: {exc}"
    return None


async def _check_topic(clients: AwsClients, topic_arn: str) -> str | None:
    name = "--sns-topic-arn / VOPRD_SNS_TOPIC_ARN"
    try:
        await clients.sns.get_topic_attributes(TopicArn=topic_arn)
    except ClientError as exc:
        code = error_code(exc)
        if code in ("NotFound", "NotFoundException", "InvalidParameter"):
            return f"{name}: topic {topic_arn!r} does not exist"
        if code in _DENIED:
            return f"{name}: no permission to use topic {topic_arn!r} ({code})"
        return f"{name}: topic {topic_arn!r}: {code}: {exc}"
    return None


async def _check_log_group(clients: AwsClients, log_group: str) -> str | None:
    name = "--log-group / VOPRD_LOG_GROUP"
    try:
        answer = await clients.logs.describe_log_groups(logGroupNamePrefix=log_group, limit=50)
    except ClientError as exc:
        code = error_code(exc)
        if code in _DENIED:
            return f"{name}: no permission to describe log group {log_group!r} ({code})"
        return f"{name}: log group {log_group!r}: {code}: {exc}"
    names = [group.get("logGroupName") for group in answer.get("logGroups", [])]
    if log_group not in names:
        return f"{name}: log group {log_group!r} does not exist"
    return None


async def validate(settings: Settings) -> None:
    """Raise ConfigError listing every problem with the AWS settings; return if all is well."""
    if settings.backend != "aws":
        return
    try:
        async with AwsClients(settings) as clients:
            await validate_with(clients, settings)
    except EndpointConnectionError as exc:
        raise ConfigError(f"AWS endpoint unreachable{_where()}: {exc}") from None


async def validate_with(clients: AwsClients, settings: Settings) -> None:
    """`validate` with clients the caller already opened (the backend reuses them)."""
    assert settings.bucket is not None
    try:
        problems = await _problems(clients, settings, settings.bucket)
    except ResponseParserError as exc:  # an answer botocore cannot read (an HTML 500 page)
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"AWS endpoint{_where()} answered a start-up check with an unreadable "
                          f"error ({first_line}); check --bucket, --sns-topic-arn and "
                          "--log-group") from None
    except NoCredentialsError as exc:
        raise ConfigError(f"AWS credentials: {exc}") from None
    except EndpointConnectionError as exc:
        raise ConfigError(f"AWS endpoint unreachable{_where()}: {exc}") from None
    except BotoCoreError as exc:
        raise ConfigError(f"AWS configuration: {exc}") from None
    if problems:
        raise ConfigError("\n".join(problems))


async def _problems(clients: AwsClients, settings: Settings, bucket: str) -> list[str]:
    if await clients.session.get_credentials() is None:
        raise ConfigError(
            "AWS credentials: none found (instance profile, AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
    found = [
        await _check_bucket(clients, bucket),
        await _check_topic(clients, settings.sns_topic_arn) if settings.sns_topic_arn else None,
        await _check_log_group(clients, settings.log_group),
    ]
    return [problem for problem in found if problem]
