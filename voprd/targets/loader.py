"""Resolve `--target` to a Target: `builtin`, `exec`, an entry point in group `voprd.targets`, or a
`module:attribute` import path. An attribute that is a class is instantiated with no arguments.

A target may also offer `run_batch(seeds, options) -> Iterator[SeedResult]` (BatchTarget): the
worker then hands it whole batches, and results may come in any order (the exec target does this).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.targets.base import Target

ENTRY_POINT_GROUP = "voprd.targets"


class TargetNotFound(LookupError):
    """`--target` names nothing loadable; the message says what was tried."""


@runtime_checkable
class BatchTarget(Protocol):
    name: str

    def run_batch(self, seeds: Sequence[int], options: RunOptions) -> Iterator[SeedResult]: ...


def _instantiate(obj: Any) -> Target:
    target = obj() if isinstance(obj, type) else obj
    if not callable(getattr(target, "run", None)):
        raise TargetNotFound(f"{obj!r} has no run(seed, options) method")
    return target  # type: ignore[no-any-return]


def load_target(spec: str, exec_cmd: str | None = None) -> Target:
    if spec == "exec":
        from voprd.targets.exec import ExecTarget

        if not exec_cmd:
            raise TargetNotFound("--target exec needs --exec CMD")
        return ExecTarget(exec_cmd)
    if spec == "builtin":
        try:
            module = importlib.import_module("voprd.targets.builtin")
        except ImportError as exc:
            raise TargetNotFound(f"builtin target not available: {exc}") from exc
        builtin: Any = module.BuiltinTarget
        return _instantiate(builtin)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TargetNotFound(
                f"cannot import {module_name!r} for --target {spec}: {exc}"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise TargetNotFound(f"{module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return _instantiate(obj)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
    if not found:
        names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | {"exec"})
        raise TargetNotFound(
            f"unknown target {spec!r}: not an entry point in group {ENTRY_POINT_GROUP!r} "
            f"({', '.join(names)}) nor a module:attribute path"
        )
    try:
        loaded = found[0].load()
    except (ImportError, AttributeError) as exc:
        raise TargetNotFound(
            f"entry point {spec!r} ({found[0].value}) does not load: {exc}"
        ) from exc
    return _instantiate(loaded)
