"""A moto S3 server on 127.0.0.1 for the fleet tests, reached over real HTTP.

moto checks an If-None-Match / If-Match precondition and then writes, in two steps, on a threaded
server: two simultaneous conditional writes could both pass. S3 evaluates them atomically. So
this server handles one request at a time, which gives moto S3's atomicity (it does not change
any response).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from tests.aws_fixtures import environ

# A request filter: given the WSGI environ, None to let moto answer, or (status line, XML body)
# to answer instead (as another S3 implementation would, e.g. LocalStack's 501 to a conditional
# DeleteObject).
Intercept = Callable[[dict[str, Any]], tuple[str, bytes] | None]


class _Serialised:
    def __init__(self, app: Any, intercept: Intercept | None = None) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.intercept = intercept

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.intercept is not None:
            answer = self.intercept(environ)
            if answer is not None:
                status, body = answer
                start_response(status, [("Content-Type", "application/xml"),
                                        ("Content-Length", str(len(body)))])
                return [body]
        with self.lock:
            return list(self.app(environ, start_response))


def s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


class AtomicMotoServer(ThreadedMotoServer):
    intercept: Intercept | None = None

    def _server_entry(self) -> None:
        app = _Serialised(DomainDispatcherApplication(create_backend_app), self.intercept)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@contextmanager
def moto_bucket(bucket: str = "voprd-fleet", intercept: Intercept | None = None
                ) -> Iterator[dict[str, str]]:
    """Start a server, create `bucket`; yield the environment a client process needs."""
    server = AtomicMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.intercept = intercept
    server.start()
    host, port = server.get_host_and_port()
    env = dict(AWS_ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    try:
        with environ(env):
            # moto's backends live in the process, shared by every server it starts: start clean.
            urllib.request.urlopen(
                urllib.request.Request(env["AWS_ENDPOINT_URL"] + "/moto-api/reset", method="POST")
            ).close()
            boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
            yield env
    finally:
        server.stop()
