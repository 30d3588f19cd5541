"""One run of an external simulator: its own process group, a minimal environment, bounded output,
and nothing of it left behind when it is over.

The child's stdout and stderr share one pipe (so the last lines of a crash are in order with the
rest), its stdin is /dev/null, and it is the leader of a new process group. Output is read with
poll(2) together with a pidfd, so the run notices its process exiting even while a grandchild still
holds the pipe. When the process has exited (or voprd stops it: output past the per-seed bound,
all seeds reported but the process lingers), its whole group is SIGKILLed while the exited leader
is still unreaped (so the group id cannot have been reused), then the leader is reaped; a worker
process that owns its descendants (voprd.procs.claim_descendants) also sweeps its session and its
inherited orphans.
"""

from __future__ import annotations

import contextlib
import glob
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from voprd import procs
from voprd.targets.exec_command import child_environment
from voprd.targets.exec_protocol import LineSplitter

READ_CHUNK_BYTES = 64 * 1024
OUTPUT_BYTES_PER_SEED_MAX = 128 * 1024 * 1024
FINISH_GRACE_S = 5.0  # all seeds reported: how long the process may take to exit on its own
DRAIN_AFTER_EXIT_S = 2.0  # after exit, how long an escaped grandchild may hold the pipe open
POLL_FALLBACK_S = 0.1  # without pidfd (old kernels): how often to look for the exit
STATE_DIR_PREFIX = "voprd-exec-"


class StartFailed(Exception):
    """The program could not be started (gone, not executable, ...): the message says why."""


def remove_stale_state_dirs() -> None:
    """Remove the state directories of processes that are gone (a worker killed at a seed timeout
    cannot remove its own); the owner's pid is in the name."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{STATE_DIR_PREFIX}*-*")):
        owner = os.path.basename(path)[len(STATE_DIR_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not procs.is_running(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


class StateDir:
    """The VOPRD_STATE_DIR of a target's runs: one temporary directory, emptied before each run
    (one scandir when the binary left nothing; a fresh directory per run cost a few ms on ext4),
    removed when the target goes."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def fresh(self) -> str:
        """An empty directory for the next run."""
        if self._dir is not None and self._empty(self._dir.name):
            return self._dir.name
        if self._dir is not None:
            self._dir.cleanup()
        else:
            remove_stale_state_dirs()
        self._dir = tempfile.TemporaryDirectory(prefix=f"{STATE_DIR_PREFIX}{os.getpid()}-",
                                                ignore_cleanup_errors=True)
        return self._dir.name

    @staticmethod
    def _empty(path: str) -> bool:
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
        except OSError:
            return False  # gone, or left unremovable: start a new one
        return True

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class ExternalProcess:
    """Start it (argv, its VOPRD_STATE_DIR, the --exec-env names), iterate `lines()`, then
    `close()` (idempotent; also as a context manager).

    After `lines()` ends: `returncode`, and `stopped` says why voprd ended the process early
    ("output" past the per-seed bound, "finished" lingering after its last report, or None)."""

    def __init__(
        self,
        argv: Sequence[str],
        state_dir: str,
        env_names: Sequence[str] = (),
        *,
        echo: BinaryIO | None = None,
        output_bytes_per_seed_max: int = OUTPUT_BYTES_PER_SEED_MAX,
    ) -> None:
        try:
            self._proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=child_environment(state_dir, env_names),
                process_group=0, close_fds=True,
            )
        except OSError as exc:
            raise StartFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        assert self._proc.stdout is not None
        self._pipe = self._proc.stdout.fileno()
        self._pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(self._proc.pid)
        self._echo = echo
        self._bytes_max = output_bytes_per_seed_max
        self._bytes_since_report = 0
        self._finish_by: float | None = None
        self._exited = False
        self._group_killed = False
        self._closed = False
        self.stopped: str | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def seed_reported(self) -> None:
        """A seed was reported: the per-seed output budget starts again."""
        self._bytes_since_report = 0

    def finish_soon(self, grace_s: float = FINISH_GRACE_S) -> None:
        """Everything expected has arrived: let the process exit on its own, within `grace_s`."""
        if self._finish_by is None:
            self._finish_by = time.monotonic() + grace_s

    def lines(self) -> Iterator[tuple[bytes, bool]]:
        """Output lines (each cut at the line bound; the flag says it was cut) until the process
        has exited and its output is drained. Output past the per-seed bound stops the process."""
        splitter = LineSplitter()
        poller = select.poll()
        poller.register(self._pipe, select.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        pipe_open = True
        drain_by: float | None = None
        while pipe_open or not self._exited:
            deadline = drain_by if self._exited else self._finish_by
            timeout_s = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if self._pidfd is None and not self._exited:
                timeout_s = min(timeout_s or POLL_FALLBACK_S, POLL_FALLBACK_S)
            ready = poller.poll(None if timeout_s is None else timeout_s * 1000)
            for fd, _ in ready:
                if fd == self._pidfd:
                    poller.unregister(fd)
                    self._exited = True
                elif fd == self._pipe:
                    chunk = os.read(self._pipe, READ_CHUNK_BYTES)
                    if not chunk:
                        poller.unregister(fd)
                        pipe_open = False
                    elif self.stopped != "output":
                        yield from self._take(chunk, splitter)
            if self._pidfd is None and not self._exited:
                self._exited = self._has_exited()
            if self._exited and not self._group_killed:
                # The leader is a zombie until reaped: its group id cannot be reused yet.
                self._kill_group()
                drain_by = time.monotonic() + DRAIN_AFTER_EXIT_S
            if deadline is not None and time.monotonic() >= deadline:
                if self._exited:
                    break  # an escaped descendant holds the pipe: stop reading
                self.stopped = self.stopped or "finished"
                self._kill_group()
                self._finish_by = None
        yield from splitter.finish()
        self.returncode = self._proc.wait()

    def _take(self, chunk: bytes, splitter: LineSplitter) -> Iterator[tuple[bytes, bool]]:
        self._bytes_since_report += len(chunk)
        if self._bytes_since_report > self._bytes_max:
            self.stopped = "output"
            self._kill_group()
            return
        if self._echo is not None:
            try:
                self._echo.write(chunk)
                self._echo.flush()
            except BrokenPipeError:  # `voprd --once ... | head`: the verdict still counts
                self._echo = None
        yield from splitter.feed(chunk)

    def _has_exited(self) -> bool:
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _kill_group(self) -> None:
        procs.kill_group(self._proc.pid)
        self._group_killed = True

    def close(self) -> None:
        """Kill whatever is left of the run, reap it, remove its state directory."""
        if self._closed:
            return
        self._closed = True
        if self._proc.returncode is None:  # not reaped yet, so its group id is still its own
            self._kill_group()
            self.returncode = self._proc.wait()
        procs.sweep_descendants()
        if self._pidfd is not None:
            os.close(self._pidfd)
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def __enter__(self) -> ExternalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
