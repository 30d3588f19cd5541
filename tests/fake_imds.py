"""A fake EC2 instance metadata service (IMDSv2) on 127.0.0.1 for the spot tests and benchmark.

PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds returns a token; every GET needs
it (401 without or with a wrong one). spot/instance-action and the rebalance recommendation answer
404 until a notice is set. Runs in its own thread (http.server), so a daemon in another process
can poll it too; `set_notice` records when the notice was set, for latency measurements.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeImds:
    def __init__(self, instance_id: str = "i-0fake0spot0test0") -> None:
        self.instance_id = instance_id
        self.tokens: set[str] = set()
        self.instance_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.notice_set_monotonic_s: float | None = None
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeImds:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def set_notice(self, action: str = "terminate", in_s: int = 120) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + in_s))
        with self._lock:
            self.instance_action = {"action": action, "time": when}
            self.notice_set_monotonic_s = time.monotonic()

    def set_rebalance(self) -> None:
        with self._lock:
            self.rebalance = {"noticeTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self.notice_set_monotonic_s = time.monotonic()

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        with self._lock:
            if method == "PUT" and path == "/latest/api/token":
                ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return 400, b"missing or bad X-aws-ec2-metadata-token-ttl-seconds"
                token = secrets.token_urlsafe(24)
                self.tokens.add(token)
                return 200, token.encode()
            if method != "GET":
                return 405, b""
            if headers.get("x-aws-ec2-metadata-token") not in self.tokens:
                return 401, b""
            if path == "/latest/meta-data/instance-id":
                return 200, self.instance_id.encode()
            if path == "/latest/meta-data/spot/instance-action":
                if self.instance_action is None:
                    return 404, b"Not Found"
                return 200, json.dumps(self.instance_action).encode()
            if path == "/latest/meta-data/events/recommendations/rebalance":
                if self.rebalance is None:
                    return 404, b"Not Found"
                return 200, json.dumps(self.rebalance).encode()
            return 404, b"Not Found"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, body = imds._answer(self.command, self.path, headers)
                with imds._lock:
                    imds.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _serve
            do_PUT = _serve

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
