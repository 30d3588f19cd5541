"""The spot watcher against a fake IMDSv2 server over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
import structlog

from tests.aws_fixtures import free_port
from tests.fake_imds import FakeImds
from voprd.config import imds_endpoint
from voprd.service.spot import SpotNotice, SpotWatcher


async def test_fake_imds_requires_a_token(imds: FakeImds) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(imds.url + "/latest/meta-data/spot/instance-action") as answer:
            assert answer.status == 401
        async with session.put(imds.url + "/latest/api/token") as answer:
            assert answer.status == 400  # the TTL header is mandatory
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        async with session.put(imds.url + "/latest/api/token", headers=headers) as answer:
            token = await answer.text()
        headers = {"X-aws-ec2-metadata-token": token}
        async with session.get(
            imds.url + "/latest/meta-data/spot/instance-action", headers=headers
        ) as answer:
            assert answer.status == 404


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for a condition (polling); the deadline is generous, for a loaded machine."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def _watch_until_notice(imds: FakeImds, set_notice: str) -> tuple[SpotWatcher, SpotNotice]:
    seen: list[SpotNotice] = []
    watcher = SpotWatcher(seen.append, endpoint=imds.url, poll_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await until(lambda: watcher.polls >= 2 or task.done())
    assert not task.done() and watcher.state == "watching" and watcher.polls >= 2
    getattr(imds, set_notice)()
    notice = await asyncio.wait_for(task, timeout=10)
    assert notice is not None and seen == [notice]
    return watcher, notice


async def test_instance_action_notice(imds: FakeImds) -> None:
    watcher, notice = await _watch_until_notice(imds, "set_notice")
    assert notice.kind == "instance-action" and notice.action == "terminate"
    assert notice.time == imds.instance_action["time"]  # type: ignore[index]
    assert watcher.state == "noticed"
    # IMDSv2 only: every GET carried a token, none was refused.
    assert ("PUT", "/latest/api/token", 200) in imds.requests
    assert all(status != 401 for method, _, status in imds.requests if method == "GET")


async def test_rebalance_recommendation(imds: FakeImds) -> None:
    _, notice = await _watch_until_notice(imds, "set_rebalance")
    assert notice.kind == "rebalance"


async def test_token_refreshed_after_401(imds: FakeImds) -> None:
    seen: list[SpotNotice] = []
    watcher = SpotWatcher(seen.append, endpoint=imds.url, poll_interval_s=0.05)
    task = asyncio.create_task(watcher.run(asyncio.Event()))
    await until(lambda: watcher.polls >= 1)  # it has its first token
    imds.tokens.clear()  # e.g. the token expired
    await asyncio.sleep(0.2)
    imds.set_notice()
    assert await asyncio.wait_for(task, timeout=10) is not None
    assert sum(1 for method, _, status in imds.requests if method == "PUT") >= 2


async def test_stop_ends_the_watcher(imds: FakeImds) -> None:
    # A watcher that noticed `stop` only at its next poll would take 120 s; the bound is generous.
    watcher = SpotWatcher(lambda notice: None, endpoint=imds.url, poll_interval_s=120.0)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, timeout=30) is None
    assert watcher.state == "stopped"


async def test_off_ec2_one_clear_line_then_quiet() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    watcher = SpotWatcher(lambda notice: None, endpoint=endpoint, poll_interval_s=0.05)
    with structlog.testing.capture_logs() as logs:
        result = await asyncio.wait_for(watcher.run(asyncio.Event()), timeout=10)
        await asyncio.sleep(0.2)
    assert result is None and watcher.state == "off-ec2"
    assert [entry["event"] for entry in logs] == ["spot_watcher_off"]
    assert "not on EC2" in logs[0]["reason"] and endpoint in logs[0]["reason"]


def test_endpoint_variable() -> None:
    assert imds_endpoint({}) == "http://169.254.169.254"
    assert imds_endpoint({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9/"}) == (
        "http://127.0.0.1:9"
    )


def test_endpoint_mode_ipv6_as_botocore_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    """An IPv6-only instance (the stack's default network) reaches IMDS at fd00:ec2::254 only;
    the bootstrap sets the SDK's mode variable and the watcher must follow it as botocore's
    credential chain does (compared with botocore's own choice from the same variables)."""
    import botocore.session
    from botocore.utils import InstanceMetadataFetcher, resolve_imds_endpoint_mode

    for env, expected in [
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}, "http://[fd00:ec2::254]"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "ipv4"}, "http://169.254.169.254"),
        ({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6",  # an explicit endpoint wins
          "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9"}, "http://127.0.0.1:9"),
    ]:
        assert imds_endpoint(env) == expected
        with monkeypatch.context() as m:
            m.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
            for name, value in env.items():
                m.setenv(name, value)
            session = botocore.session.Session()
            # The config botocore's credential resolver hands its IMDS fetcher.
            fetcher = InstanceMetadataFetcher(config={
                "ec2_metadata_service_endpoint": session.get_config_variable(
                    "ec2_metadata_service_endpoint"),
                "ec2_metadata_service_endpoint_mode": resolve_imds_endpoint_mode(session),
            })
        assert fetcher.get_base_url().rstrip("/") == expected
    with pytest.raises(ValueError, match="IPv4 or IPv6"):
        imds_endpoint({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "v6"})
