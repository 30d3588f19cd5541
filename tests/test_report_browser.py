"""Reports in a real headless Chromium: the page loads without console errors or network requests,
the highlighted operations and the fault events are in the DOM, zoom/pan/hover work, and a
screenshot is saved to test-artifacts/report-*.png."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.report_browser import PageResult, chromium_path, load_pages
from tests.report_synth import synthetic_picture
from tests.test_report_render import HOSTILE, hostile_picture
from voprd.report import write_report
from voprd.report.model import (
    ClientOp,
    Linearizability,
    LinExplanation,
    Node,
    RunConfig,
    RunPicture,
    Verdict,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (.ci/run installs it)"
)

LABEL_OVERLAPS = """(() => {
    const svg = document.getElementById('client-svg');
    const box = e => e.getBBox();
    const meets = (a, b) => a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5
        && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5;
    const labels = Array.from(svg.querySelectorAll('.op .order'));
    const others = Array.from(svg.querySelectorAll('text, .op rect'));
    let overlaps = 0;
    for (const label of labels) {
        const own = label.parentNode.querySelector('rect');
        for (const other of others) {
            if (other === label || (other === own && label.classList.contains('inside'))) continue;
            if (other.tagName === 'text' && other.parentNode === label.parentNode
                && label.classList.contains('inside')) continue;  // its bar's text moved right
            if (meets(box(label), box(other))) overlaps++;
        }
    }
    return overlaps; })()"""

PROBES = {
    "title": "document.title",
    "pwned": "String(window.pwned)",
    "scripts": "document.querySelectorAll('script').length",
    "key_labels": "Array.from(document.querySelectorAll('#client-svg .lane-label'))"
    ".map(e => e.textContent)",
    "badge": "document.getElementById('verdict').textContent",
    "highlighted": "Array.from(document.querySelectorAll('#client-svg .op.highlighted'))"
    ".map(e => +e.getAttribute('data-op-id'))",
    "blockers": "document.querySelectorAll('#client-svg .op.blocker').length",
    "witnesses": "Array.from(document.querySelectorAll('#client-svg .op.witness'))"
    ".map(e => +e.getAttribute('data-op-id'))",
    "order_labels": "Array.from(document.querySelectorAll('#client-svg .op .order'))"
    ".map(e => e.textContent)",
    # Pairs of (order label, any other text or another operation's bar) whose boxes intersect.
    "label_overlaps": LABEL_OVERLAPS,
    "ops_drawn": "document.querySelectorAll('#client-svg .op').length",
    "client_faults": "Array.from(document.querySelectorAll('#client-svg .fault'))"
    ".map(e => +e.getAttribute('data-fault-id'))",
    "space_faults": "Array.from(document.querySelectorAll('#space-svg .fault'))"
    ".map(e => +e.getAttribute('data-fault-id'))",
    "fault_rows": "Array.from(document.querySelectorAll('tr.fault-row'))"
    ".map(e => +e.getAttribute('data-fault-id'))",
    "messages_drawn": "document.querySelectorAll('#space-svg .msg').length",
    "readout_before": "document.getElementById('readout').textContent",
    # Interactions: hover an operation, then zoom out to the whole run, then zoom with the wheel.
    "hover": """(() => {
        const op = document.querySelector('#client-svg .op');
        if (!op) return '';
        op.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
        return document.getElementById('details').textContent; })()""",
    "whole_run": """new Promise(resolve => {
        document.getElementById('view-all').click();
        requestAnimationFrame(() => requestAnimationFrame(() => resolve(
            document.getElementById('readout').textContent))); })""",
    "ops_whole_run": "document.querySelectorAll('#client-svg .op').length",
    "crashes_whole_run": "document.querySelectorAll('#space-svg .ev-crash').length",
    "collapsed_stretches": "document.querySelectorAll('#space-svg rect.collapsed').length"
    " ? 'collapsed' : 'none'",
    "faults_whole_run": "Array.from(document.querySelectorAll('#client-svg .fault'))"
    ".map(e => +e.getAttribute('data-fault-id'))",
    "wheel": """new Promise(resolve => {
        const box = document.getElementById('clients'), r = box.getBoundingClientRect();
        box.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, bubbles: true, cancelable: true,
            clientX: r.left + r.width * 0.6, clientY: r.top + 40}));
        requestAnimationFrame(() => requestAnimationFrame(() => resolve(
            document.getElementById('readout').textContent))); })""",
}


def empty_picture() -> RunPicture:
    """A run with nothing in it: the page must still load cleanly."""
    return RunPicture(
        config=RunConfig(seed=0), verdict=Verdict(status="ok"), reproduce="voprd --once --seed 0"
    )


def dense_picture() -> RunPicture:
    """Twelve explained operations of one client back to back, 8 ms each 1 ms apart, in a 10 s
    run: at the initial zoom a number left of each bar would lie on the bar before it."""
    ops = [ClientOp(id=line, process=0, key="k", op="get" if line == 12 else "put",
                    call_us=5_000_000 + 9_000 * line, return_us=5_008_000 + 9_000 * line,
                    value=None if line == 12 else f"{line},", output="3," if line == 12 else None)
           for line in range(1, 13)]
    return RunPicture(
        config=RunConfig(seed=7, replica_count=1, client_count=1),
        verdict=Verdict(status="failed", kind="invariant", invariant="linearizability",
                        failure_us=5_120_000, simulated_time_us=10_000_000),
        reproduce="voprd --once --seed 7 -v",
        nodes=[Node(name="r0"), Node(name="c0", kind="client")], ops=ops,
        linearizability=Linearizability(verdict="not_linearizable", explanations=[
            LinExplanation(key="k", prefix=list(range(1, 11)), blocker=11, witness=12)]),
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunPicture, PageResult]]:
    """Every synthetic report of this module, opened in one headless Chromium."""
    pictures = {
        "synthetic-pass": synthetic_picture(3, "pass"),
        "synthetic-linearizability": synthetic_picture(3, "linearizability"),
        "synthetic-liveness": synthetic_picture(3, "liveness"),
        "synthetic-large": synthetic_picture(
            5, "linearizability", ops_count=12_000, client_count=8, keys=tuple("abcdefgh")
        ),
        "synthetic-empty": empty_picture(),
        "synthetic-hostile": hostile_picture(),
        "synthetic-dense": dense_picture(),
    }
    folder = tmp_path_factory.mktemp("reports")
    specs: list[tuple[Path, dict[str, str], Path | None]] = []
    for name, picture in pictures.items():
        write_report(picture, folder / f"{name}.html")
        specs.append((folder / f"{name}.html", PROBES, ARTIFACTS / f"report-{name}.png"))
    results = asyncio.run(load_pages(specs))
    return {name: (pictures[name], result) for name, result in zip(pictures, results, strict=True)}


def assert_clean_load(result: PageResult, page_name: str) -> None:
    assert result.console_errors == []
    # The only request is the file itself: no scripts, fonts, images or favicon from anywhere.
    assert len(result.requests) == 1 and result.requests[0].endswith(f"/{page_name}.html")
    assert result.screenshot_bytes > 10_000


def assert_interactive(probes: dict[str, Any]) -> None:
    assert "client operation, line " in probes["hover"]
    assert probes["wheel"] != probes["whole_run"]  # the wheel zoomed in
    assert probes["ops_whole_run"] > 0


@pytest.mark.parametrize("scenario", ["pass", "linearizability", "liveness"])
def test_report_loads_cleanly_in_chromium(
    scenario: str, loaded: dict[str, tuple[RunPicture, PageResult]]
) -> None:
    picture, result = loaded[f"synthetic-{scenario}"]
    assert_clean_load(result, f"synthetic-{scenario}")
    probes = result.probes
    assert probes["title"].startswith(f"voprd seed {picture.config.seed}")
    fault_ids = sorted(f.id for f in picture.faults)
    assert sorted(probes["fault_rows"]) == fault_ids
    # The whole run is in view after "whole run": every fault is drawn in the client timeline.
    assert sorted(set(probes["faults_whole_run"])) == fault_ids
    assert probes["space_faults"], "fault events overlaid on the replica diagram"
    assert probes["messages_drawn"] > 0
    assert_interactive(probes)
    highlighted = picture.linearizability.highlighted_ops()
    assert probes["label_overlaps"] == 0
    if scenario == "linearizability":
        assert probes["badge"] == "FAILED: invariant · linearizability"
        assert sorted(probes["highlighted"]) == sorted(highlighted)
        assert probes["blockers"] == 1
    else:
        assert probes["highlighted"] == [] and highlighted == []
    if scenario == "liveness":
        assert probes["badge"] == "FAILED: liveness · liveness"
        assert probes["crashes_whole_run"] == 2  # one healed, one never healed
    if scenario == "pass":
        assert probes["badge"] == "PASSED"


def test_large_collapsed_report_loads_cleanly(
    loaded: dict[str, tuple[RunPicture, PageResult]]
) -> None:
    picture, result = loaded["synthetic-large"]
    assert_clean_load(result, "synthetic-large")
    assert sorted(result.probes["highlighted"]) == sorted(
        picture.linearizability.highlighted_ops()
    )
    assert_interactive(result.probes)
    assert "collapsed" in str(result.probes["collapsed_stretches"])


def test_empty_run_loads_cleanly(loaded: dict[str, tuple[RunPicture, PageResult]]) -> None:
    _picture, result = loaded["synthetic-empty"]
    assert result.console_errors == []
    assert result.probes["badge"] == "PASSED"
    assert result.probes["ops_drawn"] == 0 and result.probes["messages_drawn"] == 0


def test_hostile_text_is_shown_not_executed(
    loaded: dict[str, tuple[RunPicture, PageResult]]
) -> None:
    _picture, result = loaded["synthetic-hostile"]
    assert result.console_errors == []
    assert len(result.requests) == 1  # the injected <img src=x> would be a request
    assert result.probes["pwned"] == "undefined"
    assert result.probes["scripts"] == 2
    assert result.probes["title"].startswith("voprd seed 3")
    # The key is drawn as text, exactly as it is.
    assert result.probes["key_labels"] == ["key " + json.dumps(HOSTILE, ensure_ascii=False)]


def test_order_labels_never_overlap_and_the_witness_is_marked(
    loaded: dict[str, tuple[RunPicture, PageResult]]
) -> None:
    _picture, result = loaded["synthetic-dense"]
    assert result.console_errors == []
    probes = result.probes
    assert probes["label_overlaps"] == 0
    # Not vacuous: labels are drawn (some left out for lack of room, none on top of another).
    assert len(probes["order_labels"]) >= 3, probes["order_labels"]
    assert probes["witnesses"] == [12]
    assert sorted(probes["highlighted"]) == list(range(1, 13))
    for name in ("synthetic-linearizability", "synthetic-large"):
        assert loaded[name][1].probes["label_overlaps"] == 0, name
