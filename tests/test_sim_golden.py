"""The builtin VSR reproduces, bit for bit, the results recorded in `tests/golden/vsr_golden.jsonl`.

The file was generated (by `tests/golden/make_vsr_golden.py`) from the simulator before the
engine/system split of issue 12: the same PRNG draws in the same order and the same trace records
give the same trace hashes, histories and readable traces. Any difference is a behaviour change of
the reference system, never to be papered over by regenerating the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.golden.make_vsr_golden import entry
from voprd.options import FAULT_CLASSES, RunOptions

GOLDEN = Path(__file__).parent / "golden" / "vsr_golden.jsonl"
ROWS: list[dict[str, Any]] = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
CHUNKS = 8


def _options(row: dict[str, Any]) -> RunOptions:
    return RunOptions(
        faults=tuple(row["faults"]), bugs=tuple(row["bugs"]), max_events=row["max_events"]
    )


def test_the_golden_file_covers_faults_bugs_and_bounds() -> None:
    assert len(ROWS) >= 400
    every_class = len(FAULT_CLASSES)
    assert sum(not row["bugs"] and len(row["faults"]) == every_class for row in ROWS) >= 300
    assert {row["status"] for row in ROWS} == {"ok", "failed"}
    assert any(row["bounds_reached"] for row in ROWS)
    assert sum("verbose_trace_hash" in row for row in ROWS) >= 20


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_vsr_results_are_bit_identical_to_the_golden_file(chunk: int) -> None:
    mismatches = []
    for row in ROWS[chunk::CHUNKS]:
        got = entry(row["seed"], _options(row), "verbose_trace_hash" in row)
        if got != row:
            diff = {k: (row.get(k), got.get(k)) for k in sorted(row.keys() | got.keys())
                    if row.get(k) != got.get(k)}
            mismatches.append((row["seed"], row["faults"], row["bugs"], diff))
    assert not mismatches, mismatches[:3]
