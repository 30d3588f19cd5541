"""`voprd lincheck` end to end (real CLI in a subprocess) on Porcupine's public histories."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.check_support import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()
VERDICT = {"LIN": "linearizable", "NONLIN": "not_linearizable"}


def expected_rows() -> dict[str, tuple[int, str]]:
    with (DATA / "expected.csv").open() as handle:
        return {row["file"]: (int(row["ops"]), VERDICT[row["expected"]])
                for row in csv.DictReader(handle)}


def data_file(name: str) -> Path:
    folder = "etcd" if name.startswith("etcd") else "kv"
    return DATA / folder / name


def lincheck(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voprd", "lincheck", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


pytestmark = pytest.mark.skipif(
    not (DATA / "expected.csv").exists(), reason=f"shared data not found at {DATA}"
)


def test_every_shared_file_gets_its_expected_verdict() -> None:
    rows = expected_rows()
    assert len(rows) >= 56
    proc = lincheck("--json", *(data_file(name) for name in rows))
    assert proc.returncode == 1, proc.stderr  # some files are not linearizable
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["file"]).name for r in results] == list(rows)
    for result in results:
        ops, verdict = rows[Path(result["file"]).name]
        assert (result["verdict"], result["ops"]) == (verdict, ops), result
        assert set(result) == {"file", "verdict", "ops", "elapsed_ms", "explanation"}
        assert bool(result["explanation"]) == (verdict == "not_linearizable")


def test_all_linearizable_files_exit_zero_with_one_line_each() -> None:
    names = [name for name, (_ops, verdict) in expected_rows().items()
             if verdict == "linearizable"]
    proc = lincheck(*(data_file(name) for name in names))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(names)
    assert all(": linearizable (" in line for line in lines)


def test_refutation_explains_prefix_and_blocking_operation() -> None:
    proc = lincheck(data_file("c01-bad.txt"))
    assert proc.returncode == 1
    assert "not_linearizable" in proc.stdout
    assert "longest linearizable prefix found" in proc.stdout
    assert "then cannot linearize line" in proc.stdout


def test_c50_bad_is_refuted_quickly_despite_hard_keys() -> None:
    # Some keys of c50-bad take minutes to refute; fair scheduling must not wait for them.
    proc = lincheck("--json", "--budget-ms", "20000", data_file("c50-bad.txt"))
    result = json.loads(proc.stdout)
    assert result["verdict"] == "not_linearizable"
    assert result["elapsed_ms"] < 5000


def test_budget_exhaustion_is_unknown_and_exit_2() -> None:
    proc = lincheck("--json", "--budget-ms", "0.001", data_file("c50-ok.txt"))
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["verdict"] == "unknown"
    assert "budget" in result["explanation"]


def test_model_override_and_mismatch(tmp_path: Path) -> None:
    # An etcd log under the kv model has operations the kv model does not define: an error.
    proc = lincheck("--model", "kv", data_file("etcd_002.log"))
    assert proc.returncode == 2
    assert "not part of the kv model" in proc.stdout
    proc = lincheck("--model", "register", data_file("etcd_002.log"))
    assert proc.returncode == 0


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text(
        "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 0\t:ok\t:read\tbanana\n"
    )
    good = tmp_path / "empty.log"
    good.write_text("")
    proc = lincheck(good, bad)
    assert proc.returncode == 2
    assert f"{bad}:2:" in proc.stdout
    assert f"{good}: linearizable" in proc.stdout


def test_missing_file_is_an_error() -> None:
    proc = lincheck("/nonexistent/history.txt")
    assert proc.returncode == 2
    assert "error" in proc.stdout
