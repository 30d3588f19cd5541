"""Run a command under deploy/systemd/voprd.service's sandbox, without a running systemd.

There is no systemd manager on CI (no `systemd-run`), so this emulates the unit's restrictions
with the same kernel mechanisms systemd uses, in three stages:

1. the caller (root) starts `unshare --mount` running stage "mounts": every mount read-only
   (ProtectSystem=strict), fresh tmpfs on /root, /home and /tmp, the state directory
   bind-mounted writable at /tmp/state (StateDirectory);
2. `setpriv`: an unprivileged user and group (DynamicUser), no supplementary groups, empty
   capability sets (CapabilityBoundingSet=, AmbientCapabilities=), NoNewPrivileges;
3. stage "seccomp": the unit's SystemCallFilter (groups expanded by `systemd-analyze
   syscall-filter`, errno EPERM), its RestrictAddressFamilies (EAFNOSUPPORT) and
   MemoryDenyWriteExecute, as seccomp filters (pyseccomp over libseccomp), then exec.

ProtectHome and PrivateTmp are emulated by empty tmpfs over /root, /home and /tmp, with this
machine's Python (pyenv, under /root) and the checkout mounted back read-only.
Not emulated: ProtectProc/ProcSubset, Protect{Kernel*,Clock,Hostname,ControlGroups},
PrivateDevices/IPC/Users, LockPersonality and RestrictNamespaces/Realtime/SUIDSGID
(systemd-analyze security scores those).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
SANDBOX_UID = 61_234  # like DynamicUser: a uid that owns nothing else on the machine
STATE_IN_SANDBOX = "/tmp/state"
SKIP_REMOUNT = ("/proc", "/sys", "/dev")  # API file systems stay as ProtectSystem leaves them
EMPTIED_DIRS = ("/root", "/home", "/tmp")


def _filter_groups() -> dict[str, list[str]]:
    """@group -> members (syscalls or @groups), from `systemd-analyze syscall-filter`."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    pending = list(names)
    for _ in range(100_000):  # bounded: groups nest only a few levels deep
        if not pending:
            return result
        name = pending.pop()
        if name.startswith("@"):
            pending.extend(groups[name])
        else:
            result.add(name)
    raise AssertionError("syscall group expansion did not terminate")


def spec_from_unit(unit_text: str) -> dict[str, Any]:
    """What stage 3 enforces, read from the unit file (so the test follows the unit)."""
    settings: dict[str, list[str]] = {}
    for raw in unit_text.splitlines():
        line = raw.strip()
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    groups = _filter_groups()
    allowed: set[str] = set()
    for index, value in enumerate(settings["SystemCallFilter"]):
        if value.startswith("~"):
            allowed -= _expand(value[1:].split(), groups)
        else:
            assert index == 0, "an allow list must come first"
            allowed |= _expand(value.split(), groups)
    families = settings["RestrictAddressFamilies"][0].split()
    return {
        "allowed_syscalls": sorted(allowed),
        "error_number": settings["SystemCallErrorNumber"][0],
        "address_families": [int(getattr(socket, f)) for f in families],
        "memory_deny_write_execute": settings["MemoryDenyWriteExecute"] == ["yes"],
    }


def command(state_dir: Path, spec: dict[str, Any], argv: list[str]) -> list[str]:
    """The full command line: unshare -> stage mounts -> setpriv -> stage seccomp -> argv."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    assert unshare and setpriv
    os.chown(state_dir, SANDBOX_UID, SANDBOX_UID)  # as systemd does for StateDirectory
    os.chmod(state_dir, 0o700)
    me = str(Path(__file__).resolve())
    return [
        unshare, "--mount", "--propagation", "private", "--",
        sys.executable, me, "mounts", str(state_dir), "--",
        setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        sys.executable, me, "seccomp", json.dumps(spec), "--", *argv,
    ]


def unavailable() -> str | None:
    """Why the sandbox cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespace, setpriv), as on CI"
    for tool in ("unshare", "setpriv", "mount", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} missing (.ci/run installs systemd)"
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so.2 missing
        return f"pyseccomp/libseccomp unavailable: {exc}"
    return None


def run(state: Path, argv: list[str], timeout_s: float,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """argv in the sandbox of the unit file, with `state` as its state directory."""
    spec = spec_from_unit((CHECKOUT / "deploy" / "systemd" / "voprd.service").read_text())
    base_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                "STATE_DIRECTORY": STATE_IN_SANDBOX}
    return subprocess.run(
        command(state, spec, argv), env={**base_env, **(env or {})},
        capture_output=True, text=True, timeout=timeout_s, cwd=CHECKOUT,
    )


def _bind(source_fd: int, target: str, *, writable: bool) -> None:
    os.makedirs(target, exist_ok=True)
    subprocess.run(
        ["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{source_fd}", target], check=True,
        pass_fds=(source_fd,),
    )
    mode = "rw" if writable else "ro"
    subprocess.run(["mount", "-o", f"remount,bind,{mode}", target], check=True)


def _stage_mounts(state_dir: str, rest: list[str]) -> None:
    # Paths that must stay visible under the emptied directories: this machine's Python
    # (pyenv under /root), the checkout and its venv (CI may clone under /tmp). On an
    # instance they live in /usr and /opt, which stay visible.
    keep = sorted({
        os.path.realpath(p)
        for p in (sys.base_prefix, sys.prefix, str(CHECKOUT))
        if os.path.realpath(p).startswith(EMPTIED_DIRS)
    })
    keep_fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in keep}
    state_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    mounts = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if not point.startswith(SKIP_REMOUNT):
                mounts.append(point)
    for point in mounts:  # ProtectSystem=strict
        subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True, check=False)
    for emptied in EMPTIED_DIRS:  # ProtectHome (as ProtectHome=tmpfs shows it), PrivateTmp
        if os.path.isdir(emptied):
            mode = "1777" if emptied == "/tmp" else "0755"
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode={mode}", "tmpfs", emptied],
                           check=True)
    for path, fd in keep_fds.items():
        _bind(fd, path, writable=False)
        os.close(fd)
    _bind(state_fd, STATE_IN_SANDBOX, writable=True)  # StateDirectory (a fixed path here)
    os.close(state_fd)
    os.execv(rest[0], rest)


def _stage_seccomp(spec_json: str, rest: list[str]) -> None:
    import pyseccomp as seccomp

    spec = json.loads(spec_json)
    error = getattr(errno, spec["error_number"])
    extra = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    allowed_families = set(spec["address_families"])
    for family in range(64):  # AF_MAX is below 64 on every kernel
        if family not in allowed_families:
            extra.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
                           seccomp.Arg(0, seccomp.EQ, family))
    if spec["memory_deny_write_execute"]:
        write_exec = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
        extra.add_rule(seccomp.ERRNO(errno.EPERM), "mmap",
                       seccomp.Arg(2, seccomp.MASKED_EQ, write_exec, write_exec))
        for name in ("mprotect", "pkey_mprotect"):
            extra.add_rule(seccomp.ERRNO(errno.EPERM), name,
                           seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        extra.add_rule(seccomp.ERRNO(errno.EPERM), "shmat",
                       seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))  # SHM_EXEC
    extra.load()
    # The allow list last: loading a filter is not on it.
    allow_list = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))
    for name in spec["allowed_syscalls"]:
        # Names that are no syscall on this architecture are skipped, as systemd does.
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            allow_list.add_rule(seccomp.ALLOW, name)
    allow_list.load()
    os.execv(rest[0], rest)


def main(argv: list[str]) -> None:
    stage, target = argv[0], argv[1]
    assert argv[2] == "--"
    rest = argv[3:]
    assert re.fullmatch(r"mounts|seccomp", stage)
    if stage == "mounts":
        _stage_mounts(target, rest)
    else:
        _stage_seccomp(target, rest)


if __name__ == "__main__":
    main(sys.argv[1:])
