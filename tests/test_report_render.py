"""The report page without a browser: escaping, self-containment, collapsing and the size bound."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import msgspec
import pytest

from tests.report_synth import synthetic_picture
from voprd.report import REPORT_BYTES_MAX, report_html, write_report
from voprd.report.collapse import Limits, collapse, focus_window
from voprd.report.model import ClientOp, FaultEvent, LinExplanation, RunPicture
from voprd.report.render import embed_json, render_html

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
HOSTILE = (
    "</script><script>window.pwned=1</script><!-- \u2028\u2029 & \"q\" <b>bold</b>"
    "<img src=x onerror=\"window.pwned=2\"><svg onload=\"window.pwned=3\">"
)


def embedded_data(page: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page, re.S)
    assert found is not None
    data: dict[str, object] = json.loads(found.group(1))
    return data


class _References(HTMLParser):
    """Every URL-bearing attribute and every CSS text (style elements and attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "formaction", "poster", "data", "xlink:href"):
                self.urls.append(value or "")
            elif name == "style":
                self.css.append(value or "")
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


def assert_self_contained(page: str) -> None:
    # No reference to anything outside the file: no remote or relative src/href, no @import,
    # no url() except fragment and data: URLs. The only URL literal is the SVG namespace.
    urls = re.findall(r"https?://[^\s\"'<>)]+", page)
    assert set(urls) <= {SVG_NAMESPACE}, set(urls) - {SVG_NAMESPACE}
    refs = _References()
    refs.feed(page)
    for ref in refs.urls:
        assert ref.startswith(("#", "data:")), ref
    css = "\n".join(refs.css)
    assert refs.css and "@import" not in css
    for ref in re.findall(r"url\(\s*['\"]?([^'\")]*)", css):
        assert ref.startswith(("#", "data:")), ref
    # The CSP that makes the browser enforce it (quotes HTML-escaped in the attribute).
    assert 'Content-Security-Policy" content="default-src &#x27;none&#x27;;' in page


def hostile_picture() -> RunPicture:
    picture = synthetic_picture(3, "linearizability")
    ops = [
        msgspec.structs.replace(op, key=HOSTILE, value=HOSTILE if op.value is not None else None)
        for op in picture.ops
    ]
    lin = msgspec.structs.replace(
        picture.linearizability,
        explanations=[
            msgspec.structs.replace(e, key=HOSTILE, state_after_prefix=HOSTILE)
            for e in picture.linearizability.explanations
        ],
    )
    faults = [*picture.faults, FaultEvent(id=99, kind=HOSTILE, start_us=5, detail=HOSTILE)]
    return msgspec.structs.replace(
        picture, ops=ops, linearizability=lin, faults=faults, title=HOSTILE,
        verdict=msgspec.structs.replace(picture.verdict, message=HOSTILE),
        reproduce="voprd --once --seed 3 --bug '" + HOSTILE + "'",
    )


def test_text_from_the_run_cannot_inject_markup() -> None:
    picture = hostile_picture()
    page = report_html(picture)
    # Exactly our own two script elements and one style element, however hostile the data.
    assert page.count("<script") == 2
    assert page.count("</script>") == 2
    assert "<script>window.pwned" not in page and "<img" not in page
    assert "<b>bold</b>" not in page
    assert "\u2028" not in page and "\u2029" not in page
    assert "&lt;/script&gt;&lt;script&gt;window.pwned" in page  # escaped in the static HTML
    data = embedded_data(page)
    embedded = msgspec.convert(data["picture"], RunPicture)
    assert embedded.title == HOSTILE
    assert {op.key for op in embedded.ops} == {HOSTILE}
    assert embedded.verdict.message == HOSTILE
    assert_self_contained(page)


def test_embed_json_round_trips_every_troublesome_character() -> None:
    value = {"s": "</SCRIPT> <!-- --> & \u2028 \u2029 \u00e9 \U0001f600 \\ \""}
    text = embed_json(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


@pytest.mark.parametrize("scenario", ["pass", "linearizability", "liveness"])
def test_report_is_self_contained_and_shows_the_verdict(scenario: str) -> None:
    picture = synthetic_picture(11, scenario)  # type: ignore[arg-type]
    page = report_html(picture)
    assert_self_contained(page)
    assert picture.reproduce.replace("'", "&#x27;") in page
    badge = re.search(r'id="verdict">([^<]*)<', page)
    assert badge is not None
    if scenario == "pass":
        assert badge.group(1) == "PASSED"
    else:
        assert badge.group(1).startswith("FAILED")
        assert (picture.verdict.invariant or "") in badge.group(1)
    assert len(re.findall(r'class="fault-row"', page)) == len(picture.faults)
    data = embedded_data(page)
    assert msgspec.convert(data["picture"], RunPicture).ops == picture.ops


def test_explanation_lists_the_longest_order_then_the_blocker() -> None:
    picture = synthetic_picture(3, "linearizability")
    page = report_html(picture)
    explanation = picture.linearizability.explanations[0]
    items = re.findall(r'<li class="lin-op[^"]*"[^>]* data-goto-op="(\d+)"', page)
    listed = [int(x) for x in items]
    assert listed == [*explanation.prefix, explanation.blocker]
    assert "cannot be placed" in page


def test_small_run_is_not_collapsed() -> None:
    picture = synthetic_picture(3, "pass")
    collapsed = collapse(picture, Limits())
    assert collapsed.messages == picture.messages
    assert collapsed.node_events == picture.node_events
    assert collapsed.ops == picture.ops
    assert collapsed.notes == ["Nothing was collapsed: every event of the run is drawn."]
    assert collapsed.density is not None
    assert sum(collapsed.density.messages) == len(picture.messages)
    assert sum(collapsed.density.collapsed_messages) == 0


def test_collapse_keeps_the_failure_in_full_and_counts_the_rest() -> None:
    picture = synthetic_picture(5, "linearizability", ops_count=3_000, client_count=6)
    limits = Limits(messages_max=2_000, commits_max=500, ops_max=800)
    collapsed = collapse(picture, limits)
    focus = focus_window(picture)
    assert focus is not None and collapsed.focus == focus
    highlighted = set(picture.linearizability.highlighted_ops())
    assert highlighted <= {op.id for op in collapsed.ops}
    assert len(collapsed.ops) <= limits.ops_max
    assert len(collapsed.messages) == limits.messages_max
    in_focus = [m for m in picture.messages if focus.start_us <= m.send_us <= focus.end_us]
    kept = set(map(msgspec.json.encode, collapsed.messages))
    if len(in_focus) <= limits.messages_max * limits.focus_share:
        assert all(msgspec.json.encode(m) in kept for m in in_focus)
    # The earliest and the latest messages are kept too; the middle is counted, not drawn.
    first = min(picture.messages, key=lambda m: m.send_us)
    last = max(picture.messages, key=lambda m: m.send_us)
    assert msgspec.json.encode(first) in kept and msgspec.json.encode(last) in kept
    density = collapsed.density
    assert density is not None
    assert sum(density.messages) == len(picture.messages)
    assert sum(density.collapsed_messages) == len(picture.messages) - len(collapsed.messages)
    commits = sum(e.kind == "commit" for e in picture.node_events)
    assert sum(density.commits) == commits
    assert any(f"of {len(picture.messages)} messages are drawn" in n for n in collapsed.notes)
    assert any("client operations are shown" in n for n in collapsed.notes)


def test_long_values_are_shortened_and_said_so() -> None:
    picture = synthetic_picture(3, "pass")
    long_value = "v" * 5_000
    ops = [msgspec.structs.replace(picture.ops[0], value=long_value), *picture.ops[1:]]
    collapsed = collapse(msgspec.structs.replace(picture, ops=ops), Limits(text_chars_max=100))
    value = collapsed.ops[0].value
    assert isinstance(value, str) and len(value) < 200 and "more characters" in value
    assert any("shortened" in note for note in collapsed.notes)


def test_large_run_stays_under_the_size_bound(tmp_path: Path) -> None:
    picture = synthetic_picture(
        5, "linearizability", ops_count=30_000, client_count=8, keys=tuple("abcdefghij")
    )
    assert len(picture.messages) > 200_000
    uncollapsed = len(
        render_html(collapse(picture, Limits(messages_max=10**9, ops_max=10**9,
                                             commits_max=10**9))).encode()
    )
    assert uncollapsed > REPORT_BYTES_MAX  # the bound is doing work here
    size = write_report(picture, tmp_path / "large.html")
    assert size <= REPORT_BYTES_MAX
    assert (tmp_path / "large.html").stat().st_size == size
    page = (tmp_path / "large.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "messages are drawn individually" in page


def test_a_tighter_bound_shrinks_the_limits_until_it_fits() -> None:
    picture = synthetic_picture(5, "pass", ops_count=6_000, client_count=6)
    page = report_html(picture, bytes_max=400_000)
    assert len(page.encode()) <= 400_000
    embedded = msgspec.convert(embedded_data(page)["picture"], RunPicture)
    assert len(embedded.messages) < len(picture.messages)
    with pytest.raises(ValueError, match="does not fit"):
        report_html(picture, bytes_max=1_000)


def test_highlighted_ops_are_unique_and_in_explanation_order() -> None:
    picture = synthetic_picture(3, "linearizability")
    lin = picture.linearizability
    extra = LinExplanation(key="other", prefix=[lin.explanations[0].prefix[0], 1000], blocker=7)
    lin2 = msgspec.structs.replace(lin, explanations=[*lin.explanations, extra])
    expected = [*lin.explanations[0].prefix, lin.explanations[0].blocker, 1000, 7]
    assert lin2.highlighted_ops() == expected


def test_unknown_ops_render_as_open_ended() -> None:
    picture = synthetic_picture(3, "liveness")
    unknown = [op for op in picture.ops if op.outcome == "unknown"]
    assert unknown, "the liveness scenario leaves requests pending"
    assert all(isinstance(op, ClientOp) and op.return_us is None for op in unknown)
    data = embedded_data(render_html(collapse(picture, Limits())))
    ops = data["picture"]["ops"]  # type: ignore[index]
    # return_us is omitted (null) for unknown outcomes; the page's script restores the default.
    assert sum("return_us" not in op for op in ops) == len(unknown)


@pytest.mark.parametrize("snippet", [
    '<script src="https://cdn.example/x.js"></script>',
    '<link rel="stylesheet" href="style.css">',
    "<style>@import 'x.css';</style>",
    "<style>body { background: url(//example.org/a.png) }</style>",
    '<div style="background: url(a.png)"></div>',
    '<img src="x.png">',
])
def test_the_self_containment_check_catches_external_references(snippet: str) -> None:
    page = report_html(synthetic_picture(3, "pass"))
    assert_self_contained(page)
    with pytest.raises(AssertionError):
        assert_self_contained(page.replace("<body>", "<body>" + snippet, 1))
