"""Spot interruption watcher: polls the EC2 instance metadata service (IMDSv2) for notices.

IMDSv2: a session token from `PUT /latest/api/token` (header X-aws-ec2-metadata-token-ttl-seconds)
goes with every `GET` as X-aws-ec2-metadata-token. Every `poll_interval_s` (1 s) the watcher asks
for `/latest/meta-data/spot/instance-action` (404 until AWS schedules a stop or termination, then
`{"action": "terminate", "time": "..."}`) and `/latest/meta-data/events/recommendations/rebalance`
(404 until AWS recommends moving off the instance). Either calls `on_notice` once; the daemon then
drains (stop dispatching, final checkpoint to S3, flush logs/metrics/outbox, STOPPING=1, exit).

Off EC2 (nothing answers at the endpoint) the watcher logs one line saying so and stops polling.
The endpoint is the one botocore's credential chain uses (`voprd.config.imds_endpoint`):
`AWS_EC2_METADATA_SERVICE_ENDPOINT` when set, else by `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`
http://169.254.169.254 (IPv4, the default) or http://[fd00:ec2::254] (IPv6-only subnets).
A token that expires or is rejected (401) is fetched again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Literal

import aiohttp
import msgspec
import structlog

TOKEN_PATH = "/latest/api/token"
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
TOKEN_TTL_S = 21_600  # the IMDS maximum; the token is refreshed well before it expires
TOKEN_REFRESH_S = 3_600
POLL_INTERVAL_S = 1.0  # notice -> checkpoint in S3 under 2 s (BENCHMARKS.md)
REQUEST_TIMEOUT_S = 2.0
PROBE_ATTEMPTS_MAX = 3  # before concluding "not on EC2"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class SpotNotice(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["instance-action", "rebalance"]
    action: str  # terminate | stop | hibernate | rebalance
    time: str  # when AWS will act (instance-action) or noticed (rebalance), as IMDS says
    detected_monotonic_s: float


class _InstanceAction(msgspec.Struct):
    action: str
    time: str


class _Rebalance(msgspec.Struct):
    noticeTime: str


class ImdsUnavailable(Exception):
    """Nothing answers at the metadata endpoint (not on EC2, or IMDS disabled)."""


class ImdsClient:
    """A minimal IMDSv2 client on aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        self.session = session
        self.endpoint = endpoint
        self._token: str | None = None
        self._token_at_s = 0.0

    async def _fetch_token(self) -> str:
        try:
            async with self.session.put(
                self.endpoint + TOKEN_PATH, headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_S)}
            ) as answer:
                if answer.status != 200:
                    raise ImdsUnavailable(f"token request answered HTTP {answer.status}")
                token = await answer.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ImdsUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._token, self._token_at_s = token, time.monotonic()
        return token

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of a metadata GET; one token refresh on 401."""
        for _ in range(2):  # bound: the original try and one retry with a fresh token
            expired = time.monotonic() - self._token_at_s > TOKEN_REFRESH_S
            token = self._token if self._token and not expired else await self._fetch_token()
            try:
                async with self.session.get(
                    self.endpoint + path, headers={TOKEN_HEADER: token}
                ) as answer:
                    body = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ImdsUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if status != 401:
                return status, body
            self._token = None
        return 401, b""

    async def instance_id(self) -> str | None:
        status, body = await self.get(INSTANCE_ID_PATH)
        return body.decode().strip() if status == 200 and body else None


def parse_notice(kind: str, body: bytes, now_s: float) -> SpotNotice | None:
    """Decode a 200 answer; a body we do not understand still counts as a notice (be safe)."""
    if kind == "instance-action":
        try:
            action = msgspec.json.decode(body, type=_InstanceAction)
            return SpotNotice(kind="instance-action", action=action.action, time=action.time,
                              detected_monotonic_s=now_s)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return SpotNotice(kind="instance-action", action="unknown",
                              time=body.decode(errors="replace")[:200], detected_monotonic_s=now_s)
    try:
        rebalance = msgspec.json.decode(body, type=_Rebalance)
        notice_time = rebalance.noticeTime
    except (msgspec.DecodeError, msgspec.ValidationError):
        notice_time = body.decode(errors="replace")[:200]
    return SpotNotice(kind="rebalance", action="rebalance", time=notice_time,
                      detected_monotonic_s=now_s)


class SpotWatcher:
    """Polls IMDS until a notice (calls `on_notice` once, returns it) or until `stop` is set."""

    def __init__(
        self,
        on_notice: Callable[[SpotNotice], None],
        *,
        endpoint: str,
        poll_interval_s: float = POLL_INTERVAL_S,
        watch_rebalance: bool = True,
    ) -> None:
        assert poll_interval_s > 0
        self.on_notice = on_notice
        self.endpoint = endpoint
        self.poll_interval_s = poll_interval_s
        self.watch_rebalance = watch_rebalance
        self.state: Literal["starting", "watching", "off-ec2", "noticed", "stopped"] = "starting"
        self.notice: SpotNotice | None = None
        self.polls = 0
        self._log = structlog.get_logger("voprd.spot")

    async def run(self, stop: asyncio.Event) -> SpotNotice | None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = ImdsClient(session, self.endpoint)
            if not await self._probe(client, stop):
                return None
            paths = [("instance-action", INSTANCE_ACTION_PATH)]
            if self.watch_rebalance:
                paths.append(("rebalance", REBALANCE_PATH))
            self.state = "watching"
            while not stop.is_set():
                notice = await self._poll(client, paths)
                if notice is not None:
                    self.state, self.notice = "noticed", notice
                    self._log.warning(
                        "spot_interruption", kind=notice.kind, action=notice.action,
                        time=notice.time,
                    )
                    self.on_notice(notice)
                    return notice
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval_s)
                except TimeoutError:
                    continue
        self.state = "stopped"
        return None

    async def _probe(self, client: ImdsClient, stop: asyncio.Event) -> bool:
        last_error = ""
        for attempt in range(PROBE_ATTEMPTS_MAX):
            if stop.is_set():
                return False
            try:
                await client.get(INSTANCE_ACTION_PATH)
                return True
            except ImdsUnavailable as exc:
                last_error = str(exc)
            if attempt + 1 < PROBE_ATTEMPTS_MAX:
                await asyncio.sleep(0.5)
        self.state = "off-ec2"
        self._log.info(
            "spot_watcher_off", reason=f"no instance metadata service at {self.endpoint} "
            f"({last_error}); not on EC2, spot interruption notices will not be watched",
        )
        return False

    async def _poll(
        self, client: ImdsClient, paths: list[tuple[str, str]]
    ) -> SpotNotice | None:
        self.polls += 1
        for kind, path in paths:
            try:
                status, body = await client.get(path)
            except ImdsUnavailable as exc:
                # A transient IMDS hiccup on EC2: keep watching, say so at debug level only.
                self._log.debug("spot_poll_failed", path=path, error=str(exc))
                continue
            if status == 200:
                return parse_notice(kind, body, time.monotonic())
        return None


def watch_enabled(backend: str, env: Mapping[str, str]) -> bool:
    """Watch on the AWS backend, or wherever a metadata endpoint is configured explicitly;
    never when AWS_EC2_METADATA_DISABLED=true (botocore's switch)."""
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    return backend == "aws" or bool(env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"))


async def instance_id(endpoint: str, timeout_s: float = 1.0) -> str | None:
    """This instance's id from IMDS, or None off EC2 (within `timeout_s`)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await ImdsClient(session, endpoint).instance_id()
    except ImdsUnavailable:
        return None
