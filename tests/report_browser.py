"""Load a page in a real headless Chromium and observe it over the DevTools protocol (CDP).

A minimal CDP client over aiohttp websockets: it collects console errors, uncaught exceptions,
log entries (CSP violations, failed loads) and every network request the page makes, evaluates
DOM probes after the page's scripts ran, and saves a screenshot.

Run directly to screenshot a report: `python -m tests.report_browser page.html out.png`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)
STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
RENDER_POLLS_MAX = 100


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    screenshot_bytes: int = 0


class _Cdp:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, result: PageResult) -> None:
        self.ws = ws
        self.result = result
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.loaded = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self.waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        errors = self.result.console_errors
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            errors.append("console: " + " ".join(str(a.get("value", a)) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + json.dumps(details)[:2000])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            self.result.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"CDP {method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"probe failed: {expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")


async def _devtools_port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    for _ in range(1000):
        line = (await proc.stderr.readline()).decode("utf-8", "replace")
        if not line:
            break
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if found:
            return int(found.group(1))
    raise RuntimeError("chromium did not report its DevTools port")


async def _drain(stream: asyncio.StreamReader | None) -> None:
    # Chromium blocks if nobody reads its stderr.
    if stream is None:
        return
    while await stream.read(65536):
        pass


async def _open(
    session: aiohttp.ClientSession, port: int, page: Path, probes: dict[str, str],
    screenshot: Path | None, width_px: int, height_px: int,
) -> PageResult:
    """Open `page` in a fresh tab of the running browser and observe it."""
    result = PageResult()
    async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
        target = await response.json(content_type=None)
    try:
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Cdp(ws, result)
            for domain in ("Runtime", "Log", "Page", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call(
                "Emulation.setDeviceMetricsOverride", width=width_px, height=height_px,
                deviceScaleFactor=1, mobile=False,
            )
            await cdp.call("Page.navigate", url=page.resolve().as_uri())
            await asyncio.wait_for(cdp.loaded.wait(), COMMAND_TIMEOUT_S)
            for _ in range(RENDER_POLLS_MAX):
                if await cdp.evaluate("document.body.getAttribute('data-rendered')"):
                    break
                await asyncio.sleep(0.05)
            for name, expression in probes.items():
                result.probes[name] = await cdp.evaluate(expression)
            if screenshot is not None:
                shot = await cdp.call("Page.captureScreenshot", format="png")
                data = base64.b64decode(shot["data"])
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(data)
                result.screenshot_bytes = len(data)
            # Let late errors (timers, animation frames) arrive before judging.
            await asyncio.sleep(0.2)
            cdp.reader.cancel()
    finally:
        async with session.get(f"http://127.0.0.1:{port}/json/close/{target['id']}") as response:
            await response.read()
    return result


async def load_pages(
    pages: list[tuple[Path, dict[str, str], Path | None]],
    width_px: int = 1400, height_px: int = 1000,
) -> list[PageResult]:
    """Open each (page, probes, screenshot) in its own tab of one headless Chromium: wait until
    the page's scripts rendered, evaluate the probes (name -> JS expression, may be a Promise),
    and save a screenshot of the viewport."""
    binary = chromium_path()
    assert binary is not None, "chromium is not installed"
    results: list[PageResult] = []
    with tempfile.TemporaryDirectory(prefix="voprd-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--window-size={width_px},{height_px}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        drain: asyncio.Task[None] | None = None
        try:
            port = await asyncio.wait_for(_devtools_port(proc), STARTUP_TIMEOUT_S)
            drain = asyncio.create_task(_drain(proc.stderr))
            async with aiohttp.ClientSession() as session:
                for page, probes, screenshot in pages:
                    results.append(await _open(
                        session, port, page, probes, screenshot, width_px, height_px
                    ))
        finally:
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            if drain is not None:
                drain.cancel()
    return results


async def load_page(
    page: Path, probes: dict[str, str], screenshot: Path | None = None,
    width_px: int = 1400, height_px: int = 1000,
) -> PageResult:
    """`load_pages` for one page."""
    return (await load_pages([(page, probes, screenshot)], width_px, height_px))[0]


if __name__ == "__main__":
    outcome = asyncio.run(load_page(
        Path(sys.argv[1]), {}, Path(sys.argv[2]),
        width_px=int(sys.argv[3]) if len(sys.argv) > 3 else 1400,
        height_px=int(sys.argv[4]) if len(sys.argv) > 4 else 1000,
    ))
    print(json.dumps({"errors": outcome.console_errors, "requests": outcome.requests}))
