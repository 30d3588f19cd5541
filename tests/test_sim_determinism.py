"""Same seed -> identical trace hash and event count, across processes and PYTHONHASHSEED."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_support import TARGET
from voprd.options import RunOptions
from voprd.sim.faults import FAULT_KIND_CLASS
from voprd.sim.run import run_seed, simulate
from voprd.systems.vsr import VSR
from voprd.targets.loader import load_system

ROOT = Path(__file__).resolve().parent.parent
SEEDS = range(0, 16)
# Every engine system: the builtin VSR and the example plugin (examples/ is on the path: conftest).
TARGETS = ("builtin", TARGET)

_SCRIPT = """
import json, sys
from voprd.options import RunOptions
from voprd.sim.faults import FAULT_KIND_CLASS
from voprd.sim.run import run_seed
from voprd.targets.loader import load_system
system = load_system(sys.argv[3])
out = {}
for seed in range(int(sys.argv[1]), int(sys.argv[2])):
    result, _ = run_seed(seed, RunOptions(target=sys.argv[3]), system)
    out[seed] = [result.trace_hash, result.events, result.status]
print(json.dumps(out))
"""


def _run_in_process(hash_seed: str, target: str) -> dict[str, list[object]]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(SEEDS.start), str(SEEDS.stop), target],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    result: dict[str, list[object]] = json.loads(proc.stdout)
    return result


@pytest.mark.usefixtures("examples_path")
@pytest.mark.parametrize("target", TARGETS)
def test_two_processes_with_different_hash_seeds_agree(target: str) -> None:
    first = _run_in_process("1", target)
    second = _run_in_process("4242", target)
    assert first == second
    assert len(first) == len(SEEDS)
    assert len({tuple(v) for v in first.values()}) == len(SEEDS)
    # And they agree with this process (a third PYTHONHASHSEED).
    system = load_system(target)
    for seed in SEEDS[:4]:
        result, _ = run_seed(seed, RunOptions(target=target), system)
        assert [result.trace_hash, result.events, result.status] == first[str(seed)]


def test_the_determinism_seeds_exercise_the_disk_faults() -> None:
    """The seeds compared across processes above run with every fault class, the disk class
    included: its faults really happen in them (and use their own PRNG stream)."""
    kinds: set[str] = set()
    for seed in SEEDS:
        kinds |= set(simulate(seed, RunOptions(), VSR).fault_counts)
    disk_kinds = {kind for kind in kinds if FAULT_KIND_CLASS[kind] == "disk"}
    assert len(disk_kinds) >= 5, disk_kinds


def test_different_seeds_give_different_traces() -> None:
    hashes = {run_seed(seed, RunOptions(), VSR)[0].trace_hash for seed in SEEDS}
    assert len(hashes) == len(SEEDS)


def test_recording_a_trace_does_not_change_the_hash() -> None:
    for seed in (1, 2):
        plain, none = run_seed(seed, RunOptions(), VSR)
        traced, trace = run_seed(seed, RunOptions(), VSR, record_trace=True)
        assert none is None and trace
        assert plain.trace_hash == traced.trace_hash and plain.events == traced.events


def test_history_is_recorded_with_call_and_return_times() -> None:
    outcome = simulate(5, RunOptions(faults=()), VSR)
    assert outcome.result.status == "ok"
    assert outcome.history
    for op in outcome.history:
        assert op.return_us is None or op.return_us >= op.call_us
        if op.op == "cas" and op.return_us is not None:
            assert isinstance(op.output, bool)
        if op.op == "get" and op.return_us is not None:
            assert isinstance(op.output, str)
    # Each process has at most one operation open at a time.
    by_process: dict[int, list[tuple[int, int | None]]] = {}
    for op in outcome.history:
        by_process.setdefault(op.process, []).append((op.call_us, op.return_us))
    for ops in by_process.values():
        for (_, ret), (call, _) in itertools.pairwise(ops):
            assert ret is not None and ret <= call


def test_check_determinism_passes_for_the_simulator() -> None:
    result, _ = run_seed(3, RunOptions(check_determinism=True), VSR)
    assert result.status == "ok", result.message


def test_max_events_bound_is_reported() -> None:
    result, _ = run_seed(3, RunOptions(max_events=200), VSR)
    assert result.events == 200
    assert result.bounds_reached == ["safety_events_limit", "max_events"]
    # Reached in the liveness phase, the bound is the verdict.
    assert (result.status, result.kind, result.invariant) == ("failed", "liveness", "liveness")


def test_the_seeds_checked_across_processes_exercise_the_later_fault_families() -> None:
    """The cross-process comparison above covers the later faults: its seeds inject them all."""
    kinds: set[str] = set()
    for seed in SEEDS:
        kinds |= set(simulate(seed, RunOptions(), VSR).fault_counts)
    for kind in ("replay", "corrupt", "slow_disk", "slow_link", "slow_node", "clock_jump",
                 "clock_drift", "client_crash", "client_restart", "pause"):
        assert kind in kinds, kind
    partitions: list[str] = []
    held = 0
    for seed in SEEDS:
        trace = run_seed(seed, RunOptions(), VSR, record_trace=True)[1]
        assert trace is not None
        partitions += [e.detail for e in trace if e.kind == "partition"]
        held += sum(e.kind == "hold" for e in trace)  # messages a frozen replica got late
    assert any("bridge" in d for d in partitions) and any("servers" in d for d in partitions)
    assert held > 0


_FOCUS_SCRIPT = """
import json
from voprd.options import RunOptions
from voprd.sim.faults import SWARM_FAMILIES, focus_seed
from voprd.sim.run import run_seed
from voprd.systems.vsr import VSR
out = {}
for family in SWARM_FAMILIES:
    result, _ = run_seed(focus_seed(family, 5), RunOptions(), VSR)
    out[family] = [result.trace_hash, result.events, result.config, result.coverage]
print(json.dumps(out))
"""


def test_focus_seeds_and_coverage_agree_across_hash_seeds() -> None:
    outputs = [
        json.loads(subprocess.run(
            [sys.executable, "-c", _FOCUS_SCRIPT], cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed), capture_output=True, text=True,
            check=True,
        ).stdout)
        for hash_seed in ("3", "977")
    ]
    assert outputs[0] == outputs[1]
    assert all(coverage for _, _, _, coverage in outputs[0].values())
