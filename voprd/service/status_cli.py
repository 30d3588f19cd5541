"""`voprd status [--state-dir DIR]`: ask the running daemon for a status dump and print it.
`voprd status --fleet [--bucket B] [--run NAME]`: the fleet's progress from the S3 bucket."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from voprd.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, build_settings
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
    for recurring in status.bounds_recurring:
        lines.append(f"    recurring: {recurring.bound} in {recurring.seeds} of "
                     f"{recurring.config_seeds} seeds of {recurring.config} (seeds "
                     f"{recurring.first_seed}..{recurring.last_seed})")
    coverage = status.coverage
    if coverage is not None:
        paths = ", ".join(f"{path} {seeds}" for path, seeds in coverage.paths.items())
        lines.append(f"  coverage (seeds per path, of {coverage.seeds}): {paths or '-'}")
        if coverage.focus_seeds or coverage.focus_current:
            lines.append(f"    focus seeds: {coverage.focus_seeds} ({coverage.focus_failures} "
                         f"failed), toward {coverage.rarest or '-'} via "
                         f"{coverage.focus_current or '-'}")
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
    parser.add_argument("--fleet", action="store_true",
                        help="the fleet run's progress and instances, read from the bucket")
    parser.add_argument("--bucket", help="with --fleet: S3 bucket (default VOPRD_BUCKET/config)")
    parser.add_argument("--run", dest="run_name", help="with --fleet: run name (VOPRD_RUN)")
    parser.add_argument("--region", help="with --fleet: AWS region (AWS_REGION)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                        help=f"TOML settings file (default {DEFAULT_CONFIG_PATH})")
    args = parser.parse_args(list(argv))
    if args.fleet:
        return fleet_main(args, parser)
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


def fleet_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Bucket, run and region from the flags, else VOPRD_* / AWS_REGION, else the config file."""
    import asyncio

    from voprd.fleet.core import FleetError
    from voprd.fleet.runner import show_fleet_status
    from voprd.fleet.s3 import FleetS3Error

    flags = {k: v for k in ("bucket", "run_name", "region") if (v := getattr(args, k))}
    config: Path = args.config
    try:
        settings = build_settings(flags, file_text=config.read_text() if config.exists() else None,
                                  file_name=str(config))
    except ConfigError as exc:
        parser.error(str(exc))
    if not settings.bucket:
        parser.error("--fleet needs a bucket: --bucket, VOPRD_BUCKET or the config file")
    try:
        print(asyncio.run(show_fleet_status(settings.bucket, settings.run_name, settings.region,
                                            args.json)))
    except (FleetError, FleetS3Error, ValueError) as exc:
        print(f"voprd status --fleet: {exc}")
        return 1
    return 0
