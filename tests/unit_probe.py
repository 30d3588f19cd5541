"""What voprd's daemon does at the operating-system level, run inside the unit's sandbox
(tests/unit_sandbox.py) by tests/test_deploy_sandbox.py: prints one JSON object of results.

Each check exercises a facility the daemon relies on (uvloop, worker processes by fork and by
spawn, resource limits, sd_notify's unix datagram socket, TCP over IPv4/IPv6, durable atomic
writes in the state directory, signals) or confirms a restriction is in force.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import mmap
import multiprocessing
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

STATE = Path(sys.argv[1])
results: dict[str, Any] = {}


def _square_with_memory_limit(n: int) -> int:
    # A worker sets its own address-space limit, as --worker-memory-mb does.
    limit_bytes = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return n * n


def workers() -> None:
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            results[f"pool_{method}"] = pool.map(_square_with_memory_limit, range(4))


def durable_write() -> None:
    tmp = STATE / "checkpoint.json.tmp"
    with open(tmp, "w") as f:
        f.write('{"last_seed": 1}')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, STATE / "checkpoint.json")
    dir_fd = os.open(STATE, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dir_fd)
    os.close(dir_fd)
    results["durable_write"] = (STATE / "checkpoint.json").read_text()


def denied(action: Any) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "allowed"


async def event_loop_work() -> None:
    loop = asyncio.get_running_loop()
    results["loop"] = type(loop).__module__
    # sd_notify: a datagram to a unix socket.
    path = str(STATE / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.sendto(b"READY=1\nSTATUS=probe", path)
    results["sd_notify"] = receiver.recv(64).decode()
    # TCP, as aiobotocore and the metadata client use it.
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readline())
            await w.drain()
            w.close()

        try:
            server = await asyncio.start_server(echo, host, 0, family=family)
        except OSError as exc:
            results[f"tcp_{family.name}"] = f"no {host} here: {exc.strerror}"
            continue
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"ping\n")
        results[f"tcp_{family.name}"] = (await reader.readline()).decode().strip()
        writer.close()
        server.close()
        await server.wait_closed()
    # Signals (SIGTERM drain, SIGUSR1 status) through the loop.
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, got.set)
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(got.wait(), 5)
    results["signal"] = "SIGUSR1"
    # Worker processes from the loop's executor, as the supervisor might.
    await loop.run_in_executor(None, workers)


def main() -> None:
    import aiobotocore.session  # noqa: F401  (imports as the daemon does)
    import msgspec
    import structlog  # noqa: F401
    import uvloop

    results["msgspec"] = msgspec.json.decode(msgspec.json.encode({"a": [1, 2]}))
    uvloop.run(event_loop_work())
    durable_write()
    results["cpus"] = len(os.sched_getaffinity(0))
    results["uid"] = os.getuid()
    # Restrictions in force:
    results["write_venv"] = denied(lambda: (Path(sys.executable).parent / "x").write_text("x"))
    results["netlink"] = denied(
        lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    )
    results["packet"] = denied(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    write_exec = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    results["mmap_wx"] = denied(lambda: mmap.mmap(-1, 4096, prot=write_exec))
    libc = ctypes.CDLL(None, use_errno=True)
    ptrace_traceme = 0
    rc = libc.ptrace(ptrace_traceme, 0, None, None)  # @debug is not on the allow list
    results["ptrace"] = "allowed" if rc == 0 else errno.errorcode[ctypes.get_errno()]
    with open("/proc/self/status") as status:
        results["seccomp_mode"] = next(
            line.split()[1] for line in status if line.startswith("Seccomp:")
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
