"""`voprd status [--state-dir DIR]`: ask the running daemon for a status dump and print it."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from voprd.config import Settings
from voprd.events import StatusData
from voprd.sinks.factory import resolve_state_dir
from voprd.sinks.local import PID_FILE, STATUS_FILE

WAIT_S_MAX = 5.0
POLL_S = 0.05


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding the state dir's lock, or None if none is running."""
    path = state_dir / PID_FILE
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else None
        return None  # we got the lock: nobody holds it


def render(status: StatusData) -> str:
    lines = [
        f"voprd pid {status.pid}: {status.state}, up {status.uptime_s:.0f} s",
        f"  run: seeds {status.first_seed}.."
        f"{'' if status.end_seed is None else status.end_seed - 1}, watermark {status.watermark}",
        f"  seeds done: {status.seeds_done} ({status.seeds_done_this_start} since start, "
        f"{status.rate_per_s:g} seeds/s)",
        f"  failures: {status.total_failures}",
    ]
    for row in status.failures_by_fingerprint:
        lines.append(f"    {row.fingerprint} {row.invariant}: {row.count} (first seed "
                     f"{row.first_seed})")
    if status.bounds_reached:
        bounds = ", ".join(f"{name} {count}" for name, count in status.bounds_reached.items())
        lines.append(f"  seeds that reached a bound (since start): {bounds}")
    lines.append("  workers:")
    for worker in status.workers:
        doing = (f"seed {worker.seed} for {worker.running_s:.1f} s" if worker.seed is not None
                 else "idle")
        lines.append(f"    #{worker.index} pid {worker.pid}: {doing}, {worker.restarts} restarts")
    age_s = status.last_checkpoint_age_s
    age = "" if age_s is None else f" ({age_s:.1f} s ago)"
    lines.append(f"  last checkpoint: {status.last_checkpoint}{age}")
    health = "healthy" if status.backend.healthy else "UNHEALTHY"
    lines.append(f"  backend: {status.backend.name} {health} {status.backend.detail}".rstrip())
    if status.backend.outbox_pending or status.backend.dropped:
        lines.append(f"    outbox pending {status.backend.outbox_pending}, dropped "
                     f"{status.backend.dropped}")
    lines.append(f"  pending alerts: {status.pending_alerts}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="voprd status", description=__doc__)
    parser.add_argument("--state-dir", help="the daemon's state directory")
    parser.add_argument("--json", action="store_true", help="print the raw status JSON")
    args = parser.parse_args(list(argv))
    state_dir = resolve_state_dir(
        Settings(state_dir=args.state_dir or os.environ.get("VOPRD_STATE_DIR") or None)
    )
    status_path = state_dir / STATUS_FILE
    pid = daemon_pid(state_dir)
    if pid is None:
        print(f"voprd status: no daemon is running on {state_dir}")
        if status_path.exists():
            print("last status written:")
            print(render(msgspec.json.decode(status_path.read_bytes(), type=StatusData)))
        return 1
    before = status_path.stat().st_mtime_ns if status_path.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        if status_path.exists() and status_path.stat().st_mtime_ns != before:
            data = status_path.read_bytes()
            print(data.decode().strip() if args.json else
                  render(msgspec.json.decode(data, type=StatusData)))
            return 0
        time.sleep(POLL_S)
    print(f"voprd status: daemon pid {pid} did not answer within {WAIT_S_MAX:g} s")
    return 1
