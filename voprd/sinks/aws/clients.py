"""aiobotocore clients for the AWS backend, configured once.

Endpoints: botocore itself honours `AWS_ENDPOINT_URL` (and per-service `AWS_ENDPOINT_URL_S3`
etc.) and `AWS_EC2_METADATA_SERVICE_ENDPOINT` for the credential chain, so we pass no endpoint
here; tests/test_aws_config.py checks that a client built here really points at the variable.
Retries: botocore's own retries are kept short because the outbox retries with backoff.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    MetadataRetrievalError,
    NoCredentialsError,
    ResponseStreamingError,
)

from voprd.config import ConfigError, Settings

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
BOTOCORE_ATTEMPTS_MAX = 2


def client_config() -> AioConfig:
    return AioConfig(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": BOTOCORE_ATTEMPTS_MAX, "mode": "standard"},
    )


def region_of(settings: Settings, session: AioSession) -> str:
    """The region: settings (flags/env/file), else the shared AWS config; named if missing."""
    region = settings.region or session.get_config_variable("region")
    if not region:
        raise ConfigError(
            "AWS_REGION / AWS_DEFAULT_REGION: no AWS region configured (set AWS_REGION, or "
            "'region' in the voprd TOML file)"
        )
    return str(region)


class AwsClients:
    """The S3, SNS, CloudWatch and CloudWatch Logs clients, entered and closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = get_session()
        self.region = region_of(settings, self.session)
        self._stack = contextlib.AsyncExitStack()
        self.s3: Any = None
        self.sns: Any = None
        self.cloudwatch: Any = None
        self.logs: Any = None

    async def __aenter__(self) -> AwsClients:
        config = client_config()
        make = self.session.create_client
        self.s3 = await self._stack.enter_async_context(
            make("s3", region_name=self.region, config=config)
        )
        self.sns = await self._stack.enter_async_context(
            make("sns", region_name=self.region, config=config)
        )
        self.cloudwatch = await self._stack.enter_async_context(
            make("cloudwatch", region_name=self.region, config=config)
        )
        self.logs = await self._stack.enter_async_context(
            make("logs", region_name=self.region, config=config)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call (`NoSuchKey`, `PreconditionFailed`, ...), or its HTTP
    status when the answer had no body to carry one (a HEAD request's 404)."""
    error: dict[str, Any] = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code", status))


# Error codes of answers that say "not now" (throttling, timeouts) rather than "never".
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "SlowDown", "RequestTimeout", "RequestTimeoutException",
    "ProvisionedThroughputExceededException", "LimitExceededException",
})
# Credentials that expired (an instance role's are renewed by the metadata service).
EXPIRED_CREDENTIAL_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "RequestTimeTooSkewed",
})
_TRANSIENT_BOTOCORE = (
    ConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError,
    NoCredentialsError, CredentialRetrievalError, MetadataRetrievalError,
)
# Failures before the request left this machine: it cannot have been applied.
_NOT_SENT = (EndpointConnectionError, ConnectTimeoutError)


def transient_error(exc: BaseException) -> bool:
    """Worth retrying with backoff: connection errors, timeouts, throttling, 5xx (not 501 Not
    Implemented: that is a refusal), expired credentials. Anything else (access denied, a bad
    request, our own bug) is not."""
    import aiohttp

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = error_code(exc)
        if code == "NotImplemented" or status == 501:
            return False
        return (status >= 500 or status in (408, 429) or code in THROTTLING_CODES
                or code in EXPIRED_CREDENTIAL_CODES)
    if isinstance(exc, BotoCoreError):
        return isinstance(exc, _TRANSIENT_BOTOCORE)
    return isinstance(exc, OSError | TimeoutError | aiohttp.ClientError)


def maybe_applied(exc: BaseException) -> bool:
    """Could the failed request have reached AWS and been applied (its answer lost)?"""
    return not isinstance(exc, _NOT_SENT)
