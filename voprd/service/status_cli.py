"""`voprd status [--state-dir DIR]`: ask the running daemon for a status dump and print it.
`voprd status --fleet [--bucket B] [--run NAME]`: which mode the bucket's daemons run in, and its
progress from the S3 bucket: with a run name (--run, VOPRD_RUN or run_name in the config file)
the fleet run's batches and instances; without one, the lone daemon's checkpoints/latest.json
(and the fleet runs the bucket holds, if any)."""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from voprd.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Settings,
    build_settings,
    read_config_file,
)
from voprd.core.records import Checkpoint, CheckpointInvalid, read_checkpoint
from voprd.events import StatusData
from voprd.sinks.factory import resolve_state_dir
from voprd.sinks.local import PID_FILE, STATUS_FILE
from voprd.text import one_line, terminal_safe

WAIT_S_MAX = 5.0
POLL_S = 0.05
STATE_FILE_BYTES_MAX = 4 * 1024 * 1024
UNIT = "voprd"
S3_WAIT_S_MAX = 30.0  # `status --fleet`: S3 calls are retried through outages until then
FLEET_RUNS_SHOWN_MAX = 1000


# `sudo voprd status` runs as root against files the daemon's user controls (and, under systemd,
# a process that may run a team's own simulator binary). Nothing in them may make it act for
# that user: state files are opened without following symbolic links, as regular files of
# bounded size; the pid is signalled only if it is the voprd unit's main process or a process
# of the state directory's owner (through a pidfd, so a recycled pid is never hit); and what is
# printed has no control characters or escape sequences (voprd.text.terminal_safe).


class UnsafeState(Exception):
    """A state file or pid that `voprd status` refuses to use (the message says why)."""


def open_state_file(state_dir: Path, name: str) -> int | None:
    """A read-only descriptor of STATE_DIR/name, or None if it does not exist. Refuses a
    symbolic link, and anything but a regular file (a FIFO would block, a device would lie)."""
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeState(f"{state_dir / name} is a symbolic link: not read") from None
        raise
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeState(f"{state_dir / name} is not a regular file: not read")
    return fd


def read_state_file(state_dir: Path, name: str) -> bytes | None:
    """The content of STATE_DIR/name (at most 4 MiB), or None if it does not exist."""
    fd = open_state_file(state_dir, name)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(STATE_FILE_BYTES_MAX + 1)
    if len(data) > STATE_FILE_BYTES_MAX:
        raise UnsafeState(f"{state_dir / name} is larger than 4 MiB: not read")
    return data


def state_file_mtime_ns(state_dir: Path, name: str) -> int:
    """The modification time of STATE_DIR/name itself (0 if absent; a link is not followed)."""
    try:
        return os.stat(state_dir / name, follow_symlinks=False).st_mtime_ns
    except FileNotFoundError:
        return 0


class LoneStatus(msgspec.Struct, kw_only=True):
    """`voprd status --fleet` without a run name: one daemon alone keeps the guide's layout."""

    mode: str = "lone"
    bucket: str
    checkpoint_key: str
    checkpoint: Checkpoint | None
    checkpoint_problem: str | None = None
    fleet_runs: list[str] = msgspec.field(default_factory=list)  # runs with a spec in the bucket


async def lone_status(bucket: str, region: str | None) -> LoneStatus:
    from voprd.fleet.core import list_all
    from voprd.fleet.s3 import S3Store, create_client
    from voprd.sinks.aws.backend import CHECKPOINT_BYTES_MAX, LATEST_KEY

    async with create_client(region) as client:
        store = S3Store(client, bucket, read_only=True)
        got = await store.get(LATEST_KEY, CHECKPOINT_BYTES_MAX)
        listing = await store.run(list_all("checkpoints/fleet/", ""))
    status = LoneStatus(bucket=bucket, checkpoint_key=LATEST_KEY, checkpoint=None)
    if got.too_large:
        status.checkpoint_problem = f"larger than {CHECKPOINT_BYTES_MAX} bytes"
    elif got.body is not None:
        try:
            status.checkpoint = read_checkpoint(got.body)
        except CheckpointInvalid as exc:
            status.checkpoint_problem = str(exc)
    status.fleet_runs = sorted({o.key.split("/")[2] for o in listing.objects
                                if o.key.endswith("/spec.json")})[:FLEET_RUNS_SHOWN_MAX]
    return status


def render_lone(status: LoneStatus) -> str:
    where = f"s3://{status.bucket}/{status.checkpoint_key}"
    lines = ["mode: lone (no run name: --run, VOPRD_RUN or run_name in the config file; a daemon "
             f"with this bucket runs alone and keeps {where})"]
    checkpoint = status.checkpoint
    if checkpoint is not None:
        lines.append(f"checkpoint: last seed {checkpoint.last_seed}, "
                     f"{checkpoint.total_iterations} seeds done, {checkpoint.total_failures} "
                     f"failed, updated {checkpoint.last_update}")
    elif status.checkpoint_problem:
        lines.append(f"checkpoint: unreadable ({status.checkpoint_problem})")
    else:
        lines.append("checkpoint: none yet")
    if status.fleet_runs:
        lines.append(f"fleet runs in this bucket: {', '.join(status.fleet_runs)} "
                     "(voprd status --fleet --run NAME)")
    return "\n".join(lines)


def daemon_pid(state_dir: Path) -> int | None:
    """The pid written by the daemon holding the state dir's lock, or None if none is running."""
    fd = open_state_file(state_dir, PID_FILE)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read(32).strip()
            return int(text) if text.isdigit() else None
        return None  # we got the lock: nobody holds it


def unit_main_pid(unit: str = UNIT) -> int | None:
    """`systemctl show -p MainPID --value UNIT`, or None without systemd or a running unit."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        proc = subprocess.run([systemctl, "show", "--property=MainPID", "--value", unit],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() and int(text) > 0 else None


def process_uids(pid: int) -> tuple[int, int, int] | None:
    """(real, effective, saved) uid of a process, from /proc; None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    real, effective, saved = (int(v) for v in line.split()[1:4])
                    return real, effective, saved
    except (OSError, ValueError):
        return None
    return None


def check_pid(pid: int, state_dir: Path) -> None:
    """Raises UnsafeState unless `pid` is the voprd unit's main process or runs, in every uid, as
    the owner of the state directory."""
    if pid <= 1:
        raise UnsafeState(f"{state_dir / PID_FILE} names pid {pid}: not signalled")
    if unit_main_pid() == pid:
        return
    owner = os.stat(state_dir).st_uid
    uids = process_uids(pid)
    if uids is None:
        if not Path("/proc/self/status").exists() and os.geteuid() != 0:
            return  # no /proc (not Linux); without privileges we can signal only our own
        raise UnsafeState(f"pid {pid} from {state_dir / PID_FILE} is not running "
                          "(or its owner cannot be read): not signalled")
    if set(uids) != {owner}:
        raise UnsafeState(
            f"pid {pid} from {state_dir / PID_FILE} is neither the {UNIT} unit's main process "
            f"nor a process of the state directory's owner (uid {owner}; it runs as uid "
            f"{uids[1]}): not signalled"
        )


def signal_daemon(pid: int, state_dir: Path) -> None:
    """SIGUSR1 to the daemon, once `check_pid` accepts it. Through a pidfd opened before the
    check: if the process ended and its pid was reused in between, the signal goes nowhere."""
    pidfd_open = getattr(os, "pidfd_open", None)
    try:
        pidfd = pidfd_open(pid) if pidfd_open is not None else None
    except ProcessLookupError:
        raise UnsafeState(f"pid {pid} from {state_dir / PID_FILE} is not running") from None
    except OSError:
        pidfd = None  # a kernel without pidfds (before Linux 5.3)
    try:
        check_pid(pid, state_dir)
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGUSR1)
        else:
            os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise UnsafeState(f"pid {pid} from {state_dir / PID_FILE} is not running") from None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def decode_status(data: bytes, path: Path) -> StatusData:
    try:
        return msgspec.json.decode(data, type=StatusData)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnsafeState(f"{path} does not decode ({one_line(str(exc), 200)})") from None


def render(status: StatusData) -> str:
    """The status dump for a terminal; every text field on its own line (see one_line)."""
    lines = [
        f"voprd pid {status.pid}: {one_line(status.state)}, up {status.uptime_s:.0f} s",
        f"  run: seeds {status.first_seed}.."
        f"{'' if status.end_seed is None else status.end_seed - 1}, watermark {status.watermark}",
        f"  seeds done: {status.seeds_done} ({status.seeds_done_this_start} since start, "
        f"{status.rate_per_s:g} seeds/s)",
        f"  failures: {status.total_failures}",
    ]
    for row in status.failures_by_fingerprint:
        lines.append(f"    {one_line(row.fingerprint)} {one_line(row.invariant)}: {row.count} "
                     f"(first seed {row.first_seed})")
    if status.bounds_reached:
        bounds = ", ".join(f"{one_line(name)} {count}"
                           for name, count in status.bounds_reached.items())
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
    lines.append(f"  last checkpoint: {one_line(str(status.last_checkpoint))}{age}")
    lines.insert(1, f"  mode: {one_line(status.mode)}, health {one_line(status.health)}"
                    + (f" ({one_line(status.health_detail)})" if status.health_detail else ""))
    if status.fleet is not None:
        fleet = status.fleet
        lines.append(f"  fleet run {one_line(fleet.run)} as {one_line(fleet.holder)}: watermark "
                     f"batch {fleet.watermark}, holding {fleet.batches_held or '-'}, recording "
                     f"{fleet.batches_recording or '-'}, S3 "
                     f"{'ok' if fleet.s3_healthy else 'FAILING ' + one_line(fleet.s3_detail)}, "
                     f"{fleet.records_quarantined} records quarantined")
    health = "healthy" if status.backend.healthy else "UNHEALTHY"
    backend = f"{one_line(status.backend.name)} {health} {one_line(status.backend.detail)}"
    lines.append(f"  backend: {backend}".rstrip())
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
    parser.add_argument("--run", dest="run_name",
                        help="with --fleet: the fleet run (VOPRD_RUN / the config's run_name); "
                             "without one, the bucket's lone daemon is shown")
    parser.add_argument("--region", help="with --fleet: AWS region (AWS_REGION)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                        help=f"TOML settings file (default {DEFAULT_CONFIG_PATH})")
    args = parser.parse_args(list(argv))
    if args.fleet:
        return fleet_main(args, parser)
    state_dir = resolve_state_dir(
        Settings(state_dir=args.state_dir or os.environ.get("VOPRD_STATE_DIR") or None)
    )
    try:
        return show_status(state_dir, args.json)
    except UnsafeState as exc:
        print(f"voprd status: {exc}")
        return 1
    except OSError as exc:
        print(f"voprd status: {state_dir}: {exc.strerror or exc}")
        return 1


def show_status(state_dir: Path, as_json: bool) -> int:
    def show(data: bytes) -> str:
        status = decode_status(data, state_dir / STATUS_FILE)
        text = msgspec.json.encode(status).decode() if as_json else render(status)
        return terminal_safe(text)

    pid = daemon_pid(state_dir)
    if pid is None:
        print(f"voprd status: no daemon is running on {state_dir}")
        last = read_state_file(state_dir, STATUS_FILE)
        if last is not None:
            print("last status written:")
            print(show(last))
        return 1
    before = state_file_mtime_ns(state_dir, STATUS_FILE)
    signal_daemon(pid, state_dir)
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        if state_file_mtime_ns(state_dir, STATUS_FILE) != before:
            data = read_state_file(state_dir, STATUS_FILE)
            if data is not None:
                print(show(data))
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
        settings = build_settings(flags, file_text=read_config_file(config, explicit=False),
                                  file_name=str(config))
    except ConfigError as exc:
        parser.error(str(exc))
    if not settings.bucket:
        parser.error("--fleet needs a bucket: --bucket, VOPRD_BUCKET or the config file")
    bucket, run, region = settings.bucket, settings.run_name, settings.region

    async def show() -> str:
        async with asyncio.timeout(S3_WAIT_S_MAX):
            if run is not None:
                return await show_fleet_status(bucket, run, region, args.json)
            lone = await lone_status(bucket, region)
            return msgspec.json.encode(lone).decode() if args.json else render_lone(lone)

    try:
        # What the bucket holds was written by instances (or whoever can write there): printed
        # without control characters or escape sequences.
        print(terminal_safe(asyncio.run(show())))
    except TimeoutError:
        print(f"voprd status --fleet: s3://{bucket} did not answer within {S3_WAIT_S_MAX:g} s")
        return 1
    except (FleetError, FleetS3Error, ValueError) as exc:
        print(f"voprd status --fleet: {one_line(str(exc))}")
        return 1
    return 0
