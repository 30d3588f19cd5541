"""Reports of real simulator runs, through `voprd --once --seed N [--bug B] --report F`, opened in
headless Chromium: a passing seed, a planted-bug linearizability failure, a liveness failure."""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tests.report_browser import PageResult, chromium_path, load_pages
from tests.test_report_browser import ARTIFACTS, PROBES
from tests.test_report_render import assert_self_contained, embedded_data
from voprd.options import RunOptions
from voprd.report import REPORT_BYTES_MAX, build_report
from voprd.report.collapse import focus_window
from voprd.report.from_sim import picture_for_seed
from voprd.report.model import RunPicture
from voprd.sim.run import simulate
from voprd.systems.vsr import VSR

ROOT = Path(__file__).resolve().parent.parent

SCAN_SEEDS_MAX = 80


@functools.cache
def first_seed(name: str) -> tuple[str, int, tuple[str, ...]]:
    """The first seed that shows `name` (so the tests follow changes to the simulator):
    `pass` a passing run of 3+ replicas with faults; `linearizability` a history the checker
    refutes under the backup_serves_reads bug; `liveness` a liveness failure."""
    bugs = {
        "pass": (),
        "linearizability": ("backup_serves_reads",),
        "liveness": ("client_session_reuse",),  # a restarted client's requests never finish
    }[name]
    for seed in range(SCAN_SEEDS_MAX):
        outcome = simulate(seed, RunOptions(bugs=bugs), VSR)
        result = outcome.result
        if name == "pass":
            found = result.status == "ok" and sum(outcome.fault_counts.values()) > 0
            found = found and "replicas=1 " not in outcome.environment
        elif name == "linearizability":
            found = result.invariant == "linearizability"
        else:
            found = result.kind == "liveness"
        if found:
            return name, seed, bugs
    raise AssertionError(f"no seed below {SCAN_SEEDS_MAX} shows {name}")


def run_cli(seed: int, bugs: tuple[str, ...], report: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "voprd", "--once", "--seed", str(seed)]
    for bug in bugs:
        args += ["--bug", bug]
    return subprocess.run(
        [*args, "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def picture_in(page: str) -> RunPicture:
    return msgspec.convert(embedded_data(page)["picture"], RunPicture)


class CliReport(msgspec.Struct, kw_only=True):
    returncode: int
    stderr: str
    path: Path
    page: str


@pytest.fixture(scope="module")
def cli_reports(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[CliReport, PageResult]]:
    """The three CLI reports, opened in one headless Chromium."""
    folder = tmp_path_factory.mktemp("sim-reports")
    reports: dict[str, CliReport] = {}
    for case in ("pass", "linearizability", "liveness"):
        name, seed, bugs = first_seed(case)
        path = folder / f"sim-{name}.html"
        proc = run_cli(seed, bugs, path)
        reports[name] = CliReport(
            returncode=proc.returncode, stderr=proc.stderr, path=path,
            page=path.read_text(encoding="utf-8") if path.exists() else "",
        )
    results = asyncio.run(load_pages([
        (r.path, PROBES, ARTIFACTS / f"report-{r.path.stem}.png") for r in reports.values()
    ]))
    return {name: (reports[name], result) for name, result in zip(reports, results, strict=True)}


@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (.ci/run installs it)")
@pytest.mark.parametrize("name", ["pass", "linearizability", "liveness"])
def test_cli_report_of_a_real_run_loads_in_chromium(
    name: str, cli_reports: dict[str, tuple[CliReport, PageResult]]
) -> None:
    proc, result = cli_reports[name]
    assert proc.returncode in (0, 1), proc.stderr
    assert f"report written to {proc.path}" in proc.stderr
    page = proc.page
    assert len(page.encode()) <= REPORT_BYTES_MAX
    assert_self_contained(page)
    picture = picture_in(page)
    assert result.console_errors == []
    assert len(result.requests) == 1
    probes = result.probes
    fault_ids = sorted(f.id for f in picture.faults)
    assert fault_ids, "every chosen seed injects faults"
    assert sorted(probes["fault_rows"]) == fault_ids
    assert sorted(set(probes["faults_whole_run"])) == fault_ids
    assert probes["messages_drawn"] > 0
    assert "client operation, line " in probes["hover"]
    if name == "pass":
        assert proc.returncode == 0
        assert probes["badge"] == "PASSED"
        assert picture.linearizability.verdict == "linearizable"
        assert probes["highlighted"] == []
    elif name == "linearizability":
        assert probes["badge"] == "FAILED: invariant · linearizability"
        lin = picture.linearizability
        assert lin.verdict == "not_linearizable" and lin.explanations
        blocker = lin.explanations[0].blocker
        assert blocker is not None
        # The blocker and the end of the longest order are in the initial (focused) view.
        assert blocker in probes["highlighted"]
        assert set(lin.explanations[0].prefix[-3:]) <= set(probes["highlighted"])
        assert probes["blockers"] == 1
        # The witness is marked, and the page numbers operations by line, as the CLI does.
        assert lin.explanations[0].witness in probes["witnesses"]
        section = page.split('id="linearizability"', 1)[1].split("</section>", 1)[0]
        assert f"✗ line {blocker}:" in section and "witness" in section
        assert not re.search(r"#\d", section)
        assert probes["label_overlaps"] == 0
    else:
        assert proc.returncode == 1
        assert probes["badge"] == "FAILED: liveness · liveness"
        assert picture.verdict.failure_us is not None
        assert any(m.label.startswith("liveness core") for m in picture.markers)
        assert "did not finish" in (picture.verdict.message or "")


@pytest.mark.parametrize("seed_bugs", ["liveness", 2, 5, 6, 16])
def test_picture_matches_the_run_it_reports(seed_bugs: str | int) -> None:
    if isinstance(seed_bugs, str):
        _name, seed, bugs = first_seed(seed_bugs)
    else:
        seed, bugs = seed_bugs, ()
    options = RunOptions(bugs=bugs)
    outcome = simulate(seed, options, VSR, record_trace=True)
    picture = picture_for_seed(seed, options, VSR)
    assert outcome.trace is not None
    trace = outcome.trace
    assert picture.verdict.trace_hash == outcome.result.trace_hash
    assert picture.verdict.status == outcome.result.status
    assert len(picture.ops) == len(outcome.history)
    assert [(o.call_us, o.return_us) for o in picture.ops] == [
        (h.call_us, h.return_us) for h in outcome.history
    ]
    kinds = ("crash", "deliver", "commit", "drop_down", "drop_loss", "drop_partition",
             "drop_capacity", "client_crash")
    count = {k: sum(e.kind == k for e in trace) for k in kinds}
    crashes = count["crash"] + count["client_crash"]  # servers' and clients'
    assert sum(f.kind == "crash" for f in picture.faults) == crashes
    assert sum(e.kind == "commit" for e in picture.node_events) == count["commit"]
    arrived = [m for m in picture.messages if m.deliver_us is not None]
    # Every arrival in the trace is a drawn message (delivered, or dropped at a down receiver),
    # and every drop at the sender is one too.
    assert len(arrived) == count["deliver"]
    dropped_down = [m for m in arrived if m.status == "dropped"]
    assert len(dropped_down) == count["drop_down"]
    dropped_at_send = [
        m for m in picture.messages if m.status == "dropped" and m.deliver_us is None
    ]
    assert len(dropped_at_send) == sum(count[k] for k in kinds[4:7])
    for message in picture.messages:
        assert 0 <= message.src < len(picture.nodes) and 0 <= message.dst < len(picture.nodes)
        assert message.deliver_us is None or message.deliver_us >= message.send_us


def test_report_is_deterministic_in_seed_and_options() -> None:
    _name, seed, bugs = first_seed("linearizability")
    first = build_report(seed, RunOptions(bugs=bugs))
    assert build_report(seed, RunOptions(bugs=bugs)) == first
    assert re.search(r'id="verdict">FAILED', first)


def test_reports_need_an_engine_target() -> None:
    with pytest.raises(ValueError, match="simulation-engine target"):
        build_report(1, RunOptions(target="exec", exec_cmd="true"))


@pytest.mark.soak
@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed (.ci/run installs it)")
@pytest.mark.parametrize("bug", ["", "backup_serves_reads", "rejoin_without_recovery"])
def test_many_seeds_load_without_errors(bug: str, tmp_path: Path) -> None:
    """Soak: reports of 40 seeds each, all loaded (with zoom, pan and hover) in one browser."""
    options = RunOptions(bugs=(bug,) if bug else ())
    pages: list[tuple[Path, dict[str, str], Path | None]] = []
    for seed in range(40):
        path = tmp_path / f"seed-{seed}.html"
        path.write_text(build_report(seed, options), encoding="utf-8")
        pages.append((path, PROBES, None))
    for (path, _probes, _shot), result in zip(pages, asyncio.run(load_pages(pages)), strict=True):
        assert result.console_errors == [], path.name
        assert len(result.requests) == 1, path.name


def failing_pictures(bug: str, invariant: str, seeds: range) -> list[RunPicture]:
    options = RunOptions(bugs=(bug,))
    return [picture_for_seed(seed, options, VSR) for seed in seeds
            if simulate(seed, options, VSR).result.invariant == invariant]


def test_the_initial_window_holds_what_a_durability_failure_names() -> None:
    """Seed 8's report used to open on 6 ms before the detection, far after the lost write's
    commit and the reply that acknowledged it: the window must hold everything the message names."""
    pictures = failing_pictures("commit_without_quorum", "durability", range(20))
    assert len(pictures) >= 3
    for picture in pictures:
        named = re.search(r"acknowledged op (\d+)", picture.verdict.message or "")
        assert named, picture.verdict.message
        op = named[1]
        focus = focus_window(picture)
        assert focus is not None and picture.verdict.failure_us is not None
        commit = min(e.time_us for e in picture.node_events
                     if e.kind == "commit" and e.detail.startswith(f"op={op} "))
        reply = min((m for m in picture.messages
                     if m.kind == "reply" and re.search(rf"\bop={op}\b", m.detail)),
                    key=lambda m: m.send_us)
        assert reply.deliver_us is not None
        acknowledged = [o for o in picture.ops if o.return_us == reply.deliver_us]
        assert len(acknowledged) == 1
        for moment in (commit, reply.send_us, reply.deliver_us, acknowledged[0].call_us,
                       picture.verdict.failure_us):
            assert focus.start_us <= moment <= focus.end_us, (picture.config.seed, moment, focus)


def test_the_witness_of_a_linearizability_failure_is_the_read_that_cannot_be_explained() -> None:
    pictures = failing_pictures("backup_serves_reads", "linearizability", range(30))
    assert len(pictures) >= 2
    for picture in pictures:
        ops = {op.id: op for op in picture.ops}
        focus = focus_window(picture)
        assert focus is not None
        explanations = picture.linearizability.explanations
        assert explanations
        for explanation in explanations:
            # The checker's message says which operation could never be linearized, if not the
            # blocker itself ("because afterwards line N ..."), per key.
            text = (picture.linearizability.message or "").split(f"key {explanation.key!r}")[1]
            text = text.split("\nkey ")[0]
            because = re.search(r"because afterwards line (\d+)", text)
            expected = int(because[1]) if because else explanation.blocker
            assert explanation.witness == expected, picture.config.seed
            witness = ops[explanation.witness]
            assert witness.op == "get", witness  # the stale read of this bug
            assert explanation.witness in picture.linearizability.highlighted_ops()
            assert focus.start_us <= witness.call_us <= focus.end_us
