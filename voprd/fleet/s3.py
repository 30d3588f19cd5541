"""The S3 shell of fleet coordination: carries out the core's S3Ops with aiobotocore.

Conditional writes map to S3's If-None-Match: * (create only) and If-Match: ETag (replace or
delete only that version); 412 Precondition Failed and 409 ConditionalRequestConflict mean another
daemon won, 404 on If-Match means the object is gone. Throttling and 5xx are retried by botocore's
standard retry mode (bounded attempts, backoff with jitter); a retried conditional write whose first
attempt succeeded comes back as 412, so a 412 after a retry is checked by reading the object back
(our body carries a unique token).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import structlog
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from voprd.fleet.core import (
    DeleteOp,
    GetOp,
    GetReply,
    ListOp,
    ListReply,
    ObjectInfo,
    PutOp,
    S3Op,
    S3Reply,
    WriteReply,
)
from voprd.sinks.aws.clients import error_code

log = structlog.get_logger("voprd.fleet")

S3_ATTEMPTS_MAX = 5  # botocore standard mode: 1 try + 4 retries on throttling / 5xx / timeouts
PROCEDURE_STEPS_MAX = 10_000  # bound on ops per procedure (core listings are bounded too)
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

T = TypeVar("T")


class FleetS3Error(Exception):
    """S3 did not answer usefully after the bounded retries."""


def client_config() -> Config:
    return Config(
        retries={"max_attempts": S3_ATTEMPTS_MAX, "mode": "standard"},
        connect_timeout=5, read_timeout=10,
    )


def _server_now_s(metadata: dict[str, Any]) -> float:
    """S3's clock from the Date header (whole seconds); our own clock if a proxy dropped it."""
    date = metadata.get("HTTPHeaders", {}).get("date")
    if date:
        return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


class S3Store:
    """One bucket, used through an open aiobotocore S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.requests: dict[str, int] = {"LIST": 0, "GET": 0, "PUT": 0, "DELETE": 0}

    async def execute(self, op: S3Op) -> S3Reply:
        if isinstance(op, ListOp):
            return await self._list(op)
        if isinstance(op, GetOp):
            return await self.get(op.key)
        if isinstance(op, PutOp):
            return await self._put(op)
        return await self._delete(op)

    async def run(
        self,
        procedure: Generator[S3Op, S3Reply, T],
        before_send: Callable[[S3Op], None] | None = None,
    ) -> T:
        """Drive a core procedure to its result; `before_send` sees each op as it goes out."""
        reply: S3Reply | None = None
        for _step in range(PROCEDURE_STEPS_MAX):
            try:
                op = procedure.send(reply) if reply is not None else next(procedure)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if before_send is not None:
                before_send(op)
            reply = await self.execute(op)
        raise AssertionError("procedure exceeded PROCEDURE_STEPS_MAX")

    async def _list(self, op: ListOp) -> ListReply:
        self.requests["LIST"] += 1
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": op.prefix}
        if op.start_after:
            params["StartAfter"] = op.start_after
        if op.continuation:
            params["ContinuationToken"] = op.continuation
        try:
            response = await self.client.list_objects_v2(**params)
        except ClientError as exc:
            raise FleetS3Error(f"list s3://{self.bucket}/{op.prefix}: {exc}") from exc
        objects = [
            ObjectInfo(key=item["Key"], etag=item["ETag"],
                       last_modified_s=item["LastModified"].timestamp())
            for item in response.get("Contents", [])
        ]
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return ListReply(objects=objects, next_continuation=token,
                         server_now_s=_server_now_s(response["ResponseMetadata"]))

    async def get(self, key: str) -> GetReply:
        self.requests["GET"] += 1
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                body: bytes = await stream.read()
        except ClientError as exc:
            if error_code(exc) in _MISSING_CODES:
                return GetReply(body=None, server_now_s=_server_now_s(
                    exc.response.get("ResponseMetadata", {})))
            raise FleetS3Error(f"get s3://{self.bucket}/{key}: {exc}") from exc
        return GetReply(
            body=body, etag=response["ETag"],
            last_modified_s=response["LastModified"].timestamp(),
            server_now_s=_server_now_s(response["ResponseMetadata"]),
        )

    async def _put(self, op: PutOp) -> WriteReply:
        self.requests["PUT"] += 1
        params: dict[str, Any] = {
            "Bucket": self.bucket, "Key": op.key, "Body": op.body,
            "ContentType": "application/json",
        }
        if op.if_none_match:
            params["IfNoneMatch"] = "*"
        if op.if_match is not None:
            params["IfMatch"] = op.if_match
        try:
            response = await self.client.put_object(**params)
        except ClientError as exc:
            code = error_code(exc)
            conditional = op.if_none_match or op.if_match is not None
            if conditional and (code in _LOST_RACE_CODES or code in _MISSING_CODES):
                retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                if retried and code in _LOST_RACE_CODES:
                    # Our first attempt may have won before its reply was lost.
                    current = await self.get(op.key)
                    if current.body == op.body:
                        return WriteReply(ok=True, etag=current.etag)
                return WriteReply(ok=False)
            raise FleetS3Error(f"put s3://{self.bucket}/{op.key}: {exc}") from exc
        return WriteReply(ok=True, etag=response["ETag"])

    async def _delete(self, op: DeleteOp) -> WriteReply:
        self.requests["DELETE"] += 1
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": op.key}
        if op.if_match is not None:
            params["IfMatch"] = op.if_match
        try:
            await self.client.delete_object(**params)
        except ClientError as exc:
            code = error_code(exc)
            if code in _LOST_RACE_CODES or code in _MISSING_CODES:
                return WriteReply(ok=False)
            raise FleetS3Error(f"delete s3://{self.bucket}/{op.key}: {exc}") from exc
        return WriteReply(ok=True)


def create_client(region: str | None = None) -> Any:
    """An aiobotocore S3 client context manager (honours AWS_ENDPOINT_URL and the credential
    chain); use as `async with create_client() as client: S3Store(client, bucket)`."""
    return get_session().create_client("s3", region_name=region, config=client_config())
