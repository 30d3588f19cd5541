"""A loopback TCP proxy that can be cut: the outage every AWS endpoint suffers at once.

    with CuttableProxy(upstream_port) as proxy:       # clients use proxy.url
        proxy.cut()      # listener closed, every open connection reset: "connection refused"
        proxy.mend()     # listening again on the same port, forwarding as before
        proxy.blackhole()  # connections accepted but never answered: clients time out

Byte-level (it does not parse HTTP), one thread per direction per connection; only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType

CHUNK_BYTES = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dropped route or a dead peer looks to the client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class CuttableProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._mode = "forward"  # forward | blackhole
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttableProxy:
        self.mend()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.cut()

    def mend(self) -> None:
        """Listen (again, on the same port) and forward."""
        with self._lock:
            held = self._open if self._mode == "blackhole" else set()
            if held:
                self._open = set()
            self._mode = "forward"
            listening = self._listener is not None
        for sock in held:  # blackholed connections end now; clients reconnect
            _reset(sock)
        with self._lock:
            if listening:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and reset every connection: new ones are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_now, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in open_now:
            _reset(sock)

    def blackhole(self) -> None:
        """Keep accepting, but forward nothing (and reset what was open): requests hang."""
        with self._lock:
            self._mode = "blackhole"
            open_now, self._open = self._open, set()
        for sock in open_now:
            _reset(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            with self._lock:
                mode = self._mode
                self._open.add(client)
                self.connections += 1
            if mode == "blackhole":
                continue  # held open, never answered, until mended or cut
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([source], [], [], 1.0)
                if not readable:
                    if source.fileno() < 0:
                        return
                    continue
                data = source.recv(CHUNK_BYTES)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
        except (OSError, ValueError):
            _reset(source)
            _reset(sink)
        finally:
            with self._lock:
                self._open.discard(source)
