"""The hashed locks the instance installs from (voprd/lock/, written by `deploy/lock.py`).

Offline: each lock was made from the current pyproject.toml, pins every direct dependency at its
version, has one sha256 per package, and each runtime wheel is one the instance can install
(Linux aarch64, CPython 3.11). Drift: a changed dependency list is caught. Online (PyPI, the only
index reachable here, as on the instance): pip's resolver for the instance's platform, given the
lock's versions, installs exactly the lock's packages with exactly its hashes; and the build lock
installs with --require-hashes and builds voprd's wheel, which carries the locks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from tests.deploy_support import ROOT, load_script

lock = load_script("lock")


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError:
        return False
    return True


needs_pypi = pytest.mark.skipif(not pypi_reachable(), reason="PyPI is not reachable")


def instance_tags() -> set[Tag]:
    platforms = list(lock.PLATFORMS)
    return {*cpython_tags((3, 11), abis=["cp311"], platforms=platforms),
            *compatible_tags((3, 11), "cp311", platforms)}


def test_locks_match_pyproject() -> None:
    assert lock.problems() == []
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/lock.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_each_runtime_wheel_is_for_the_instance_and_hashed_once() -> None:
    text = (ROOT / lock.RUNTIME_LOCK).read_text()
    _, pins = lock.parse(text)
    wheels = [line.strip()[2:] for line in text.splitlines() if line.startswith("    # ")]
    assert len(wheels) == len(pins) >= 20
    tags = instance_tags()
    platform_specific = []
    for pin, wheel in zip(pins, wheels, strict=True):
        name, version, _, wheel_tags = parse_wheel_filename(wheel)
        assert (name, str(version)) == (pin.name, pin.version)
        assert wheel_tags & tags, f"{wheel} does not install on the instance"
        assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0
        if not any(tag.platform == "any" for tag in wheel_tags):
            assert all("aarch64" in tag.platform for tag in wheel_tags), wheel
            platform_specific.append(pin.name)
    # The compiled ones are locked for aarch64, not for this machine.
    assert {"msgspec", "uvloop", "aiohttp", "multidict", "yarl"} <= set(platform_specific)
    assert "voprd" not in {pin.name for pin in pins}


def test_drift_from_pyproject_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "voprd" / "lock", tmp_path / "voprd" / "lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject)
    assert lock.problems(tmp_path) == []
    (tmp_path / "pyproject.toml").write_text(
        pyproject.replace('"msgspec==0.22.0",', '"msgspec==0.22.0",\n    "tomli-w==1.2.0",', 1))
    found = lock.problems(tmp_path)
    assert any("was not made from this pyproject.toml" in p and "deploy/lock.py" in p
               for p in found), found
    assert any("lacks tomli-w" in p for p in found), found
    (tmp_path / "pyproject.toml").write_text(pyproject.replace("uvloop==0.23.0", "uvloop==0.22.1"))
    assert any("has uvloop==0.23.0, pyproject.toml uvloop==0.22.1" in p
               for p in lock.problems(tmp_path))
    runtime = tmp_path / lock.RUNTIME_LOCK
    runtime.write_text(runtime.read_text().replace("--hash=sha256:", "--hash=md5:", 1))
    assert any("one sha256 hash" in p for p in lock.problems(tmp_path))


@needs_pypi
def test_lock_is_exactly_what_pip_installs_on_the_instance() -> None:
    assert lock.online_problems() == []


@needs_pypi
def test_pip_and_build_locks_install_with_require_hashes_and_build_the_wheel(
    tmp_path: Path,
) -> None:
    """What a git source does on the instance: pip from its lock, the build backend from its
    lock, then `pip wheel --no-build-isolation` (these wheels are pure Python: they install
    here too). The wheel carries the locks the bootstrap reads out of it."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "--isolated",
           "--disable-pip-version-check"]
    for name in (lock.PIP_LOCK, lock.BUILD_LOCK):
        proc = subprocess.run([*pip, "install", "--quiet", "--require-hashes",
                               "--only-binary=:all:", "-r", str(ROOT / name)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    _, (pip_pin,) = lock.parse((ROOT / lock.PIP_LOCK).read_text())
    version = subprocess.run([*pip, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith(f"pip {pip_pin.version} ")
    source = tmp_path / "checkout"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv*", ".git", "dist", "build", "*.egg-info", "__pycache__", ".*cache"))
    proc = subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("voprd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {lock.RUNTIME_LOCK, lock.PIP_LOCK, lock.BUILD_LOCK} <= names
    # A hash that does not match is refused by pip in this mode.
    bad = tmp_path / "bad.txt"
    bad.write_text((ROOT / lock.PIP_LOCK).read_text().replace(pip_pin.sha256, "0" * 64))
    proc = subprocess.run([*pip, "install", "--quiet", "--force-reinstall", "--require-hashes",
                           "--only-binary=:all:", "-r", str(bad)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in proc.stderr
