"""Linux process-tree helpers: who is in a session, who are my children, kill them all.

The exec target runs a team's binary in its own process group, and that binary may start children
of its own. These helpers make sure none of them outlives its seed: the worker kills the child's
group (and, when it leads its own session under the supervisor, every other process of it and every
orphan reparented to it), and the supervisor kills a worker's whole session when it kills or loses
the worker. /proc is read directly: the standard library has no "processes of session S".
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal

SWEEP_ROUNDS_MAX = 8  # a process forked while we scanned is caught by the next round
PR_SET_CHILD_SUBREAPER = 36
# Set in a daemon worker (claim_descendants): every other process of its session and every child
# it has once its own work is done are leftovers of an external run, to be killed.
_owns_descendants = False
_is_subreaper = False


def _stat_fields(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of `pid`, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = text[text.rfind(b")") + 2:].split()
    try:
        return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3])
    except (IndexError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has exited; only its entry is left)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_members(session_id: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `session_id`."""
    members = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[3] == session_id and fields[0] != "Z":
            members.append(pid)
    return members


def children_of_self() -> list[int]:
    """This process's children (any thread's), zombies included, from /proc/self/task/*/children
    (falls back to a /proc scan on kernels without it)."""
    paths = glob.glob("/proc/self/task/*/children")
    if paths:
        pids: set[int] = set()
        for path in paths:
            with contextlib.suppress(OSError), open(path) as handle:
                pids.update(int(word) for word in handle.read().split())
        return sorted(pids)
    me = os.getpid()
    return [pid for pid in _all_pids() if (fields := _stat_fields(pid)) and fields[1] == me]


def kill_group(pgid: int) -> None:
    """SIGKILL process group `pgid` (nothing if it is empty)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_session(session_id: int, spare: int | None = None) -> int:
    """SIGKILL every process of session `session_id` except `spare`; returns how many were sent
    the signal. Repeats the scan (bounded) so a process forked during one scan is caught."""
    killed = 0
    for _ in range(SWEEP_ROUNDS_MAX):
        members = [pid for pid in session_members(session_id) if pid != spare]
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def become_subreaper() -> bool:
    """Linux PR_SET_CHILD_SUBREAPER: orphans of our descendants (a daemonising grandchild) are
    reparented to us instead of init, so we can find and kill them. False if unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def kill_and_reap_children() -> int:
    """SIGKILL and reap every child of this process (for a subreaper: orphans it inherited), round
    after round, since a killed orphan's own children are reparented to us in turn. Only for a
    process whose children are all disposable (a daemon worker). Returns how many were reaped."""
    reaped = 0
    for _ in range(SWEEP_ROUNDS_MAX):
        children = children_of_self()
        if not children:
            break
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
                reaped += 1
    return reaped


def claim_descendants() -> None:
    """For a daemon worker (a session leader whose only children are external runs): become a
    subreaper and let sweep_descendants kill leftovers. Never call it in a process with children
    of its own to keep (a test runner, an interactive `voprd --once`)."""
    global _owns_descendants, _is_subreaper
    _owns_descendants = os.getsid(0) == os.getpid()
    _is_subreaper = _owns_descendants and become_subreaper()


def sweep_descendants() -> None:
    """After an external run whose process group was killed (in a worker that claimed its
    descendants): kill what left the group, so no grandchild outlives its seed, not even one that
    started a session of its own. As a subreaper the worker inherits every such orphan once its
    parent is dead, so killing its children round after round reaches them all (a few /proc reads);
    without that, every other process of its session is killed (a scan of /proc)."""
    if not _owns_descendants:
        return
    if not _is_subreaper:
        kill_session(os.getpid(), spare=os.getpid())
    kill_and_reap_children()
