"""Resolve `--target` to a Target: `builtin`, `exec`, an entry point (group `voprd.systems`, then
`voprd.targets`), or a `module:attribute` import path.

The object named may be a system (`voprd.sim.system.System`, or a subclass of it: instantiated
with no arguments), which runs in the simulation engine (`EngineTarget`) and gets everything the
builtin gets (traces, histories, reports, planted bugs, selftest); or a target: an object with
`run(seed, options) -> SeedResult` (a class is instantiated with no arguments).

A target may also offer `run_batch(seeds, options) -> Iterator[SeedResult]` (BatchTarget): the
worker then hands it whole batches, and results may come in any order (the exec target does this).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from voprd.events import SeedResult
from voprd.options import RunOptions
from voprd.sim.faults import check_cluster_shape
from voprd.sim.system import System
from voprd.sim.trace import KindTable
from voprd.targets.base import Target

SYSTEMS_GROUP = "voprd.systems"
ENTRY_POINT_GROUP = "voprd.targets"


class TargetNotFound(LookupError):
    """`--target` names nothing loadable; the message says what was tried."""


@runtime_checkable
class BatchTarget(Protocol):
    name: str

    def run_batch(self, seeds: Sequence[int], options: RunOptions) -> Iterator[SeedResult]: ...


def _construct(cls: type) -> Any:
    try:
        return cls()
    except Exception as exc:  # a plugin's constructor: any failure is the plugin's, reported
        raise TargetNotFound(f"{cls.__module__}.{cls.__qualname__}() failed: {exc!r}") from exc


def _instantiate(obj: Any) -> Target:
    target = _construct(obj) if isinstance(obj, type) else obj
    if not callable(getattr(target, "run", None)):
        raise TargetNotFound(
            f"{obj!r} is neither a voprd.sim.system.System nor a target with a "
            f"run(seed, options) method"
        )
    return target  # type: ignore[no-any-return]


def _as_system(obj: Any) -> System | None:
    if isinstance(obj, type) and issubclass(obj, System):
        obj = _construct(obj)
    if not isinstance(obj, System):
        return None
    # Refuse a description the engine cannot run, here rather than in every seed.
    try:
        KindTable(obj.trace_kinds)
        obj.linearizability_model()
        check_cluster_shape(tuple(obj.cluster_sizes), obj.core_size)
    except (ValueError, TypeError, AttributeError) as exc:
        raise TargetNotFound(f"system {obj.name!r} is not runnable: {exc}") from exc
    if not obj.message_names:
        raise TargetNotFound(f"system {obj.name!r} is not runnable: no message_names")
    return obj


def _import_path(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetNotFound(f"cannot import {module_name!r} for --target {spec}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not part or not hasattr(obj, part):
            raise TargetNotFound(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _entry_point(spec: str) -> Any:
    for group in (SYSTEMS_GROUP, ENTRY_POINT_GROUP):
        found = [ep for ep in entry_points(group=group) if ep.name == spec]
        if found:
            try:
                return found[0].load()
            except (ImportError, AttributeError) as exc:
                raise TargetNotFound(
                    f"entry point {spec!r} ({found[0].value}) does not load: {exc}"
                ) from exc
    groups = (SYSTEMS_GROUP, ENTRY_POINT_GROUP)
    names = sorted({ep.name for group in groups for ep in entry_points(group=group)} | {"exec"})
    raise TargetNotFound(
        f"unknown target {spec!r}: not an entry point in group {SYSTEMS_GROUP!r} or "
        f"{ENTRY_POINT_GROUP!r} ({', '.join(names)}) nor a module:attribute path"
    )


def _resolve(spec: str) -> Any:
    if spec == "builtin":
        try:
            module = importlib.import_module("voprd.targets.builtin")
        except ImportError as exc:
            raise TargetNotFound(f"builtin target not available: {exc}") from exc
        return module.BuiltinTarget
    return _import_path(spec) if ":" in spec else _entry_point(spec)


def load_target(spec: str, exec_cmd: str | None = None) -> Target:
    if spec == "exec":
        from voprd.targets.exec import ExecTarget

        if not exec_cmd:
            raise TargetNotFound("--target exec needs --exec CMD")
        return ExecTarget(exec_cmd)
    obj = _resolve(spec)
    system = _as_system(obj)
    if system is not None:
        from voprd.targets.engine import EngineTarget

        return EngineTarget(system, spec)
    return _instantiate(obj)


def load_system(spec: str) -> System:
    """The simulation-engine system `--target` names (`builtin`: the VSR). Raises TargetNotFound
    for anything else (an exec or plain target has no engine run to trace, report or plant bugs
    in)."""
    if spec == "exec":
        raise TargetNotFound("target 'exec' is an external binary, not a simulation-engine system")
    target = load_target(spec)
    system = getattr(target, "system", None)
    if not isinstance(system, System):
        raise TargetNotFound(
            f"target {spec!r} is not a simulation-engine system (voprd.sim.system.System)"
        )
    return system


def engine_system(spec: str) -> System | None:
    """`load_system(spec)`, or None when the target is not engine-backed (or does not load)."""
    try:
        return load_system(spec)
    except TargetNotFound:
        return None


def validate_bugs(spec: str, bugs: Sequence[str]) -> None:
    """Planted bugs are the chosen system's: raise ValueError for one it does not have, or for
    any with a target that is not engine-backed."""
    if not bugs:
        return
    try:
        system = load_system(spec)
    except TargetNotFound as exc:
        raise ValueError(f"planted bugs need a simulation-engine target: {exc}") from exc
    system.validate_bugs(bugs)


def list_bugs_main(spec: str) -> int:
    """`voprd --list-bugs [--target X]`: the planted bugs of the target's system."""
    try:
        system = load_system(spec)
    except TargetNotFound as exc:
        sys.stderr.write(f"voprd: error: argument --list-bugs: {exc}\n")
        return 2
    for name, description in system.bugs.items():
        sys.stdout.write(f"{name}  {description}\n")
    return 0
