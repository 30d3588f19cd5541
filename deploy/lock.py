#!/usr/bin/env python3
"""Lock what the EC2 instance installs, with hashes: `.venv/bin/python deploy/lock.py`.

Writes three pip requirement files into the voprd package, so every wheel carries the lock of
its own dependencies (the bootstrap reads them out of the wheel whose sha256 the stack pins):
- voprd/lock/instance-runtime.txt: exactly what `pip install .` installs on the instance
  (Amazon Linux 2023 arm64: Linux aarch64, glibc 2.34, CPython 3.11), each at one version
  with the sha256 of the one wheel pip picks there. The bootstrap installs it with
  `--require-hashes --only-binary=:all:`, then the voprd wheel with `--no-deps`.
- voprd/lock/instance-pip.txt: pip itself, which the bootstrap installs before anything else.
- voprd/lock/instance-build.txt: the build backend of pyproject.toml's [build-system]
  (setuptools, wheel), which a git source builds its wheel with (`--no-build-isolation`: no
  unhashed download).

Why a script of ours and not pip-compile or uv: the lock must be for the instance's platform
(msgspec, uvloop, aiohttp, multidict, yarl, frozenlist, propcache and wrapt ship one wheel per
platform), from a x86_64 machine that reaches only PyPI. pip-tools resolves for the machine it
runs on; uv could resolve for another platform but would be a 20 MB binary dependency of the
test extras. pip's own resolver does it: `pip install --dry-run --report` with `--platform`,
`--python-version`, `--implementation`, `--abi` and `--only-binary=:all:` answers "what would
pip install there", with the index's sha256 of each chosen wheel, reading only metadata.
Markers are evaluated by pip for this machine: the script refuses a lock in which any
requirement's marker evaluates differently for the instance.

`--check` (offline, run by tests/test_deploy_lock.py): the locks were made from the current
pyproject.toml (a digest of its dependencies and build requirements is in each header), pin
every direct dependency at pyproject's version, and have one well-formed sha256 per package.
`--check --online`: resolves again against PyPI with the lock's versions as constraints and
requires the same packages, versions and hashes: the lock is exactly what pip installs there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = "voprd/lock"  # in the project (and so in the wheel)
RUNTIME_LOCK = f"{LOCK_DIR}/instance-runtime.txt"
PIP_LOCK = f"{LOCK_DIR}/instance-pip.txt"
BUILD_LOCK = f"{LOCK_DIR}/instance-build.txt"
INDEX = "https://pypi.org/simple"
# The instance: Amazon Linux 2023 (glibc 2.34) on Graviton, its python3.11 package.
PYTHON = "3.11"
GLIBC_MINORS = (34, 28, 27, 26, 24, 17)
PLATFORMS = (*(f"manylinux_2_{minor}_aarch64" for minor in GLIBC_MINORS), "manylinux2014_aarch64")
TARGET_MARKERS = {
    "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "aarch64", "platform_python_implementation": "CPython",
    "implementation_name": "cpython", "python_version": PYTHON,
}
TARGET = f"Linux aarch64 (glibc 2.34, manylinux wheels), CPython {PYTHON}: Amazon Linux 2023 arm64"
COMMAND = ".venv/bin/python deploy/lock.py"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")


@dataclass(frozen=True, order=True)
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    sha256: str
    filename: str = ""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject(root: Path = ROOT) -> dict[str, Any]:
    return tomllib.loads((root / "pyproject.toml").read_text())


def locks(root: Path = ROOT) -> list[tuple[str, str, list[str]]]:
    """(lock file in the project, what it holds, the requirements it is made from)."""
    data = pyproject(root)
    return [
        (RUNTIME_LOCK, "voprd's runtime dependencies on the instance",
         list(data["project"]["dependencies"])),
        (PIP_LOCK, "pip on the instance (installed first)", ["pip"]),
        (BUILD_LOCK, "voprd's build backend on the instance (git sources only)",
         list(data["build-system"]["requires"])),
    ]


def digest(requirements: list[str]) -> str:
    text = "\n".join(sorted(" ".join(r.split()) for r in requirements)) + "\n" + TARGET
    return hashlib.sha256(text.encode()).hexdigest()


def pip_report(requirements: list[str], constraints: str | None = None) -> dict[str, Any]:
    """pip's answer to "what would `pip install REQUIREMENTS` install on the instance"."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check",
            "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "--index-url", INDEX, "--only-binary=:all:", "--python-version", PYTHON,
            "--implementation", "cp", "--abi", f"cp{PYTHON.replace('.', '')}",
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            "--target", str(Path(tmp) / "target"),
        ]
        if constraints is not None:
            (Path(tmp) / "constraints.txt").write_text(constraints)
            command += ["--constraint", str(Path(tmp) / "constraints.txt")]
        proc = subprocess.run([*command, *requirements], capture_output=True, text=True,
                              timeout=900, check=False, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"deploy/lock.py: pip could not resolve for the instance:\n"
                             f"{proc.stderr.strip()}")
        result: dict[str, Any] = json.loads(report.read_text())
        return result


def pins_of(report: dict[str, Any], skip: str | None = None) -> list[Pin]:
    """The wheels of a pip report (less `skip`), after checking that no requirement's marker
    evaluates differently on the instance than on this machine (pip evaluated it here)."""
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement
    except ImportError:  # pip's own copy
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    here = dict(report["environment"])
    there = {**here, **TARGET_MARKERS}
    pins = []
    for item in report["install"]:
        meta = item["metadata"]
        for text in meta.get("requires_dist") or []:
            marker: Marker | None = Requirement(text).marker
            for extra in [*(item.get("requested_extras") or []), ""]:
                if marker is not None and (marker.evaluate({**here, "extra": extra})
                                           != marker.evaluate({**there, "extra": extra})):
                    raise SystemExit(f"deploy/lock.py: {meta['name']} requires {text!r}, which "
                                     "differs between this machine and the instance: resolve "
                                     "on an aarch64 machine")
        if skip is not None and normalise(meta["name"]) == skip:
            continue
        info = item["download_info"]
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        assert sha256, f"no sha256 from the index for {meta['name']}"
        pins.append(Pin(normalise(meta["name"]), meta["version"], sha256,
                        info["url"].rsplit("/", 1)[-1]))
    return sorted(pins)


def render(pins: list[Pin], what: str, requirements: list[str]) -> str:
    lines = [
        f"# {what}",
        f"# For: {TARGET}.",
        f"# Generated by `{COMMAND}` from pyproject.toml; do not edit (tests/test_deploy_lock.py).",
        f"# inputs-sha256: {digest(requirements)}",
    ]
    for pin in pins:
        lines += [f"{pin.name}=={pin.version} \\", f"    --hash=sha256:{pin.sha256}",
                  f"    # {pin.filename}"]
    return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[str | None, list[Pin]]:
    """(inputs-sha256 of the header, the pins) of a lock file written by render()."""
    header = re.search(r"^# inputs-sha256: ([0-9a-f]{64})$", text, flags=re.MULTILINE)
    pins = []
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        pin, hashes = PIN.match(entry), HASH.findall(entry)
        if pin is None or len(hashes) != 1:
            raise ValueError(f"not one pinned version with one sha256 hash: {entry!r}")
        pins.append(Pin(normalise(pin[1]), pin[2], hashes[0]))
    return (header[1] if header else None), pins


def generate(root: Path = ROOT) -> None:
    (root / LOCK_DIR).mkdir(exist_ok=True)
    for path, what, requirements in locks(root):
        # The runtime lock resolves the project itself: exactly `pip install .`, less voprd.
        if path == RUNTIME_LOCK:
            pins = pins_of(pip_report([str(root)]), skip="voprd")
        else:
            pins = pins_of(pip_report(requirements))
        (root / path).write_text(render(pins, what, requirements))
        print(f"wrote {path}")


def problems(root: Path = ROOT) -> list[str]:
    """What is wrong with the locks, offline (empty: they match pyproject.toml)."""
    found = []
    for path, _, requirements in locks(root):
        if not (root / path).exists():
            found.append(f"{path} is missing: run `{COMMAND}`")
            continue
        try:
            header, pins = parse((root / path).read_text())
        except ValueError as exc:
            found.append(f"{path}: {exc}")
            continue
        if header != digest(requirements):
            found.append(f"{path} was not made from this pyproject.toml "
                         f"(its dependencies changed): run `{COMMAND}`")
        names = [pin.name for pin in pins]
        if len(set(names)) != len(names):
            found.append(f"{path}: a package is pinned twice")
        locked = {pin.name: pin.version for pin in pins}
        for requirement in requirements:
            pinned = PIN.match(requirement.replace(" ", ""))
            name = normalise(pinned[1] if pinned else re.split(r"[<>=!~;\[ ]", requirement)[0])
            if name not in locked:
                found.append(f"{path} lacks {name} ({requirement})")
            elif pinned and locked[name] != pinned[2]:
                found.append(f"{path} has {name}=={locked[name]}, "
                             f"pyproject.toml {requirement}")
    return found


def online_problems(root: Path = ROOT) -> list[str]:
    """Resolve `pip install .` for the instance again, with the lock's versions as constraints:
    the same packages, versions and wheel hashes, or the differences."""
    _, pins = parse((root / RUNTIME_LOCK).read_text())
    constraints = "".join(f"{pin.name}=={pin.version}\n" for pin in pins)
    fresh = pins_of(pip_report([str(root)], constraints), skip="voprd")
    want = {(p.name, p.version, p.sha256) for p in pins}
    got = {(p.name, p.version, p.sha256) for p in fresh}
    return [f"only in the lock: {x}" for x in sorted(want - got)] + [
        f"pip installs, the lock lacks: {x}" for x in sorted(got - want)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the locks (offline)")
    parser.add_argument("--online", action="store_true",
                        help="with --check: also resolve against PyPI and compare")
    args = parser.parse_args(argv)
    if not args.check:
        generate()
        return 0
    found = problems() + (online_problems() if args.online else [])
    for problem in found:
        print(f"deploy/lock.py: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
