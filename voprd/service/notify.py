"""systemd notification (`Type=notify`): datagrams to $NOTIFY_SOCKET, abstract `@` sockets included.

A few lines of our own rather than a dependency: the protocol is one `KEY=VALUE\\n...` datagram.
Outside systemd ($NOTIFY_SOCKET unset) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval_s: float | None = None
        if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and (
            not watchdog_pid or watchdog_pid == str(os.getpid())
        ):
            # Ping at half the timeout, as sd_watchdog_enabled(3) advises.
            self.watchdog_interval_s = int(watchdog_usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> bool:
        """Send `KEY=value` lines (keyword names upper-cased); False if it could not be sent."""
        if self._address is None:
            return False
        message = "".join(f"{key.upper()}={value}\n" for key, value in fields.items())
        try:
            if self._socket is None:
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                self._socket = socket.socket(socket.AF_UNIX, kind)
            self._socket.sendto(message.encode(), self._address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
