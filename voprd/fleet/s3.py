"""The S3 shell of fleet coordination: carries out the core's S3Ops with aiobotocore.

Conditional writes map to S3's If-None-Match: * (create only) and If-Match: ETag (replace or
delete only that version); 412 Precondition Failed and 409 ConditionalRequestConflict mean another
daemon won, 404 on If-Match means the object is gone.

Outages. Every call retries what may pass on its own (connection errors, timeouts, throttling,
5xx, expired credentials: `voprd.sinks.aws.clients.transient_error`) with capped, jittered
backoff, for as long as its caller lets it (callers bound a call with `asyncio.timeout` where a
deadline matters, as the lease renewal does; a claim waits for S3 as long as it takes). botocore's
own retries are off so that every attempt is seen here: a conditional write retried after an
attempt that may have been applied (its answer lost) and then refused with 412 is read back, and
counts as ours if the stored body is the one we sent (our bodies carry a unique token). Other
errors (access denied, 501 Not Implemented, a bad request) raise FleetS3Error at once. While calls
fail, `health()` says so (the daemon reports itself degraded).

Untrusted records. A GET reads at most the op's `bytes_max` (a larger object is `too_large`,
its body unread); a QuarantineOp copies the record aside under corrupt/ (CopySourceIfMatch: the
version that was judged), logs it once, and deletes it if asked.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import msgspec
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from voprd.fleet.core import (
    DeleteOp,
    GetOp,
    GetReply,
    ListOp,
    ListReply,
    ObjectInfo,
    PutOp,
    QuarantineOp,
    S3Op,
    S3Reply,
    WriteReply,
    quarantine_key,
)
from voprd.sinks.aws.clients import error_code, maybe_applied, transient_error
from voprd.sinks.outbox import Backoff

log = structlog.get_logger("voprd.fleet")

PROCEDURE_STEPS_MAX = 10_000  # bound on ops per procedure (core listings are bounded too)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
# Between attempts of one call during an outage: 0.2 s doubling to 5 s, jittered.
RETRY_BACKOFF = Backoff(base_s=0.2, cap_s=5.0)
QUARANTINE_LOGGED_MAX = 10_000  # (key, etag) pairs remembered so each is logged once
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

T = TypeVar("T")


class FleetS3Error(Exception):
    """S3 refused the call (not an outage), or the caller's deadline passed while it failed."""


def client_config() -> AioConfig:
    # One attempt per call: voprd.fleet.s3 retries (and sees every attempt) itself.
    return AioConfig(retries={"max_attempts": 1, "mode": "standard"},
                     connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)


def _server_now_s(metadata: dict[str, Any]) -> float:
    """S3's clock from the Date header (whole seconds); our own clock if a proxy dropped it."""
    date = metadata.get("HTTPHeaders", {}).get("date")
    if date:
        return email.utils.parsedate_to_datetime(date).timestamp()
    return time.time()


class StoreHealth(msgspec.Struct, kw_only=True):
    """How the bucket has been answering: `failing_since_mono` is set while calls fail."""

    failing_since_mono: float | None = None
    consecutive_failures: int = 0
    failures: int = 0
    last_error: str | None = None
    quarantined: int = 0  # records copied aside under corrupt/

    @property
    def ok(self) -> bool:
        return self.failing_since_mono is None


class S3Store:
    """One bucket, used through an open aiobotocore S3 client. `read_only` (voprd status --fleet)
    never writes: a QuarantineOp is only logged."""

    def __init__(self, client: Any, bucket: str, *, read_only: bool = False,
                 backoff: Backoff = RETRY_BACKOFF) -> None:
        self.client = client
        self.bucket = bucket
        self.read_only = read_only
        self.backoff = backoff
        self.requests: dict[str, int] = {"LIST": 0, "GET": 0, "PUT": 0, "DELETE": 0, "COPY": 0}
        self.health = StoreHealth()
        self._rng = random.Random(time.time_ns())  # jitter only
        self._quarantine_logged: set[tuple[str, str]] = set()

    # --- retries ----------------------------------------------------------------------------

    async def _call(self, what: str, attempt: Callable[[], Awaitable[T]],
                    ambiguous: list[bool] | None = None) -> T:
        """`attempt()` until it answers; transient errors are retried with backoff (forever:
        the caller bounds it). `ambiguous` gets True once an attempt may have been applied."""
        for failure in range(1, 2**62):
            try:
                result = await attempt()
            except ClientError as exc:
                if not transient_error(exc):
                    self._answered()
                    raise
                self._failed(what, exc)
                if ambiguous is not None:
                    ambiguous.append(True)
            except Exception as exc:
                if not transient_error(exc):
                    raise FleetS3Error(f"{what}: {exc!r}") from exc
                self._failed(what, exc)
                if ambiguous is not None and maybe_applied(exc):
                    ambiguous.append(True)
            else:
                self._answered()
                return result
            await asyncio.sleep(self.backoff.delay_s(failure, self._rng))
        raise AssertionError("unreachable")

    def _failed(self, what: str, exc: BaseException) -> None:
        health = self.health
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = f"{what}: {type(exc).__name__}: {exc}"[:500]
        if health.failing_since_mono is None:
            health.failing_since_mono = time.monotonic()
            log.warning("fleet_s3_unavailable", bucket=self.bucket, error=health.last_error,
                        msg="S3 calls of the fleet fail; retrying with backoff until S3 answers")

    def _answered(self) -> None:
        health = self.health
        if health.failing_since_mono is not None:
            log.info("fleet_s3_available", bucket=self.bucket,
                     outage_s=round(time.monotonic() - health.failing_since_mono, 3),
                     failed_attempts=health.consecutive_failures)
            health.failing_since_mono = None
        health.consecutive_failures = 0

    # --- operations -------------------------------------------------------------------------

    async def execute(self, op: S3Op) -> S3Reply:
        if isinstance(op, ListOp):
            return await self._list(op)
        if isinstance(op, GetOp):
            return await self.get(op.key, op.bytes_max)
        if isinstance(op, PutOp):
            return await self._put(op)
        if isinstance(op, QuarantineOp):
            return await self.quarantine(op)
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
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": op.prefix}
        if op.start_after:
            params["StartAfter"] = op.start_after
        if op.continuation:
            params["ContinuationToken"] = op.continuation

        async def attempt() -> Any:
            self.requests["LIST"] += 1
            return await self.client.list_objects_v2(**params)

        try:
            response = await self._call(f"list s3://{self.bucket}/{op.prefix}", attempt)
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

    async def get(self, key: str, bytes_max: int) -> GetReply:
        """The object, read up to `bytes_max` bytes (too_large past that); body None if absent."""

        async def attempt() -> GetReply:
            self.requests["GET"] += 1
            try:
                response = await self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in _MISSING_CODES:
                    return GetReply(body=None, server_now_s=_server_now_s(
                        exc.response.get("ResponseMetadata", {})))
                raise
            found = dict(etag=response["ETag"],
                         last_modified_s=response["LastModified"].timestamp(),
                         server_now_s=_server_now_s(response["ResponseMetadata"]))
            async with response["Body"] as stream:
                if int(response.get("ContentLength") or 0) > bytes_max:
                    return GetReply(body=None, too_large=True, **found)
                body: bytes = await stream.read(bytes_max + 1)
            if len(body) > bytes_max:
                return GetReply(body=None, too_large=True, **found)
            return GetReply(body=body, **found)

        try:
            return await self._call(f"get s3://{self.bucket}/{key}", attempt)
        except ClientError as exc:
            raise FleetS3Error(f"get s3://{self.bucket}/{key}: {exc}") from exc

    async def _put(self, op: PutOp) -> WriteReply:
        params: dict[str, Any] = {
            "Bucket": self.bucket, "Key": op.key, "Body": op.body,
            "ContentType": "application/json",
        }
        if op.if_none_match:
            params["IfNoneMatch"] = "*"
        if op.if_match is not None:
            params["IfMatch"] = op.if_match

        async def attempt() -> Any:
            self.requests["PUT"] += 1
            return await self.client.put_object(**params)

        ambiguous: list[bool] = []
        try:
            response = await self._call(f"put s3://{self.bucket}/{op.key}", attempt, ambiguous)
        except ClientError as exc:
            code = error_code(exc)
            conditional = op.if_none_match or op.if_match is not None
            if conditional and (code in _LOST_RACE_CODES or code in _MISSING_CODES):
                if ambiguous and code in _LOST_RACE_CODES:
                    # An earlier attempt may have won before its answer was lost.
                    current = await self.get(op.key, len(op.body))
                    if current.body == op.body:
                        return WriteReply(ok=True, etag=current.etag)
                return WriteReply(ok=False)
            raise FleetS3Error(f"put s3://{self.bucket}/{op.key}: {exc}") from exc
        return WriteReply(ok=True, etag=response["ETag"])

    async def _delete(self, op: DeleteOp) -> WriteReply:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": op.key}
        if op.if_match is not None:
            params["IfMatch"] = op.if_match

        async def attempt() -> Any:
            self.requests["DELETE"] += 1
            return await self.client.delete_object(**params)

        try:
            await self._call(f"delete s3://{self.bucket}/{op.key}", attempt)
        except ClientError as exc:
            code = error_code(exc)
            if code in _LOST_RACE_CODES or code in _MISSING_CODES:
                return WriteReply(ok=False)
            raise FleetS3Error(f"delete s3://{self.bucket}/{op.key}: {exc}") from exc
        return WriteReply(ok=True)

    async def quarantine(self, op: QuarantineOp) -> WriteReply:
        """Copy an unreadable record aside, log it once, and delete it if asked. ok: the record
        is out of the way (deleted), or was copied when no delete was asked for."""
        first = (op.key, op.etag) not in self._quarantine_logged
        if first:
            if len(self._quarantine_logged) >= QUARANTINE_LOGGED_MAX:
                self._quarantine_logged.clear()
            self._quarantine_logged.add((op.key, op.etag))
            self.health.quarantined += 1
        if self.read_only:
            if first:
                log.warning("fleet_record_unreadable", key=op.key, reason=op.reason,
                            bucket=self.bucket)
            return WriteReply(ok=False)
        if first:
            aside = quarantine_key(op.key, int(time.time()), secrets.token_hex(3))
            # A fresh name, written create-only like every voprd prefix but checkpoints/ and
            # leases/ (a bucket policy may require it).
            if op.body is not None:  # the very bytes that were judged
                params: dict[str, Any] = {"Bucket": self.bucket, "Key": aside, "Body": op.body,
                                          "IfNoneMatch": "*"}
                method, counter = self.client.put_object, "PUT"
            else:  # not read (too large): the version that was judged, server-side
                params = {"Bucket": self.bucket, "Key": aside, "IfNoneMatch": "*",
                          "CopySource": {"Bucket": self.bucket, "Key": op.key}}
                if op.etag:
                    params["CopySourceIfMatch"] = op.etag
                method, counter = self.client.copy_object, "COPY"

            async def attempt() -> Any:
                self.requests[counter] += 1
                return await method(**params)

            try:
                await self._call(f"copy s3://{self.bucket}/{op.key}", attempt)
            except ClientError as exc:
                if error_code(exc) not in _LOST_RACE_CODES | _MISSING_CODES:
                    raise FleetS3Error(f"copy s3://{self.bucket}/{op.key}: {exc}") from exc
                return WriteReply(ok=False)  # changed or gone meanwhile: judged again later
            log.warning("fleet_record_quarantined", key=op.key, reason=op.reason,
                        copied_to=f"s3://{self.bucket}/{aside}", deleted=op.delete,
                        msg=f"unreadable record s3://{self.bucket}/{op.key} copied aside and "
                            "ignored")
        if not op.delete:
            return WriteReply(ok=True)
        try:
            return await self._delete(DeleteOp(key=op.key, if_match=op.etag or None))
        except FleetS3Error as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and error_code(cause) == "NotImplemented"):
                raise
        # A store without conditional deletes (LocalStack answers 501): delete it outright. The
        # keys quarantined with delete (done/, alerts/, the spec) are create-only, so no sound
        # record can have replaced the unreadable one meanwhile.
        return await self._delete(DeleteOp(key=op.key))


def create_client(region: str | None = None) -> Any:
    """An aiobotocore S3 client context manager (honours AWS_ENDPOINT_URL and the credential
    chain); use as `async with create_client() as client: S3Store(client, bucket)`."""
    return get_session().create_client("s3", region_name=region, config=client_config())
