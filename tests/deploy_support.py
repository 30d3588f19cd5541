"""Shared helpers of the tests/test_deploy_*.py files: paths and the parsed template."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "cloudformation.yaml"
BOOTSTRAP = DEPLOY / "bootstrap.sh"
UNIT = DEPLOY / "systemd" / "voprd.service"
BOOTSTRAP_UNIT = DEPLOY / "systemd" / "voprd-bootstrap.service"
GUIDE = ROOT / "docs" / "deploy.md"


def guide_text() -> str:
    """The operator's guide: docs/deploy.md ("Running voprd on AWS")."""
    return GUIDE.read_text()
VENV_BIN = Path(sys.executable).parent


def shell_blocks() -> list[str]:
    """The guide's ```sh blocks."""
    return re.findall(r"```sh\n(.*?)```", guide_text(), flags=re.DOTALL)


def logical_lines() -> list[str]:
    """The guide's shell commands, one per line (continuations joined, comments left out)."""
    lines: list[str] = []
    for block in shell_blocks():
        lines.extend(block.replace("\\\n", " ").splitlines())
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@functools.cache
def template() -> dict[str, Any]:
    """The template as plain data, short-form tags (!Sub, !Ref) expanded by cfn-lint's decoder."""
    from cfnlint.decode import decode

    decoded, matches = decode(str(TEMPLATE))
    assert not matches, matches
    assert decoded is not None
    return dict(decoded)


def resources_of_type(type_name: str) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = template()["Resources"]
    return {name: r for name, r in resources.items() if r["Type"] == type_name}


@functools.cache
def load_script(name: str) -> ModuleType:
    """deploy/NAME.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def embed_module() -> ModuleType:
    """deploy/embed_bootstrap.py."""
    return load_script("embed_bootstrap")


def user_data_parts() -> list[Any]:
    """The Fn::Join parts of the launch template's user data: [Fn::Sub header, literal body]."""
    data = template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    joined = data["UserData"]["Fn::Base64"]["Fn::Join"]
    assert joined[0] == ""
    parts: list[Any] = joined[1]
    return parts
