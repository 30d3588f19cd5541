"""render_html(picture) -> one self-contained HTML page (inline CSS, JS and data; no network).

The static parts (header, configuration, verdict, explanation, fault table, notes) are rendered
here with every text escaped; the diagrams are drawn in the browser by `assets/report.js` from the
picture embedded as JSON. A Content-Security-Policy forbids the page any request at all.
"""

from __future__ import annotations

import html
from importlib import resources
from typing import Any

import msgspec

from voprd.report.model import ClientOp, FaultEvent, RunPicture

# Colour-blind-friendly palette (Okabe–Ito, extended) for message kinds, in sorted-kind order.
_PALETTE = (
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
    "#7f7f7f", "#8c564b", "#17becf", "#bcbd22", "#6e4bd8", "#1f3a93", "#393b79", "#e7969c",
)
_FAULT_COLORS = {
    "partition": "#e07b39",
    "crash": "#d62839",
    "pause": "#d9962b",
    "storage": "#8c564b",
    "clock": "#17becf",
    "network": "#9467bd",
    "gray": "#7f7f7f",
}
# Faults that make (part of) the cluster unavailable: shaded across the client timeline too.
_BAND_KINDS = ("partition", "crash", "pause")
# Operations of a long linearizable order listed before the rest is folded away.
PREFIX_SHOWN = 8
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)


def _asset(name: str) -> str:
    return resources.files("voprd.report").joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>`, `&` (so no `</script>` or
    `<!--`), and no U+2028/U+2029 (line terminators in older JS parsers)."""
    text = msgspec.json.encode(value).decode("utf-8")
    for raw, escaped in (
        ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
        ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def _e(value: object) -> str:
    # U+2028/2029 are harmless in HTML text but confuse editors and copy-paste: keep them visible.
    text = html.escape(str(value), quote=True)
    return text.replace("\u2028", "&#x2028;").replace("\u2029", "&#x2029;")


def _ms(time_us: int | None) -> str:
    if time_us is None:
        return "—"
    if abs(time_us) >= 1_000_000:
        return f"{time_us / 1_000_000:.3f} s"
    return f"{time_us / 1000:.3f} ms"


def _colors(kinds: list[str], fixed: dict[str, str]) -> dict[str, str]:
    colors: dict[str, str] = {}
    # Fault colours are reserved, so a message never looks like a fault.
    free = [c for c in _PALETTE if c not in _FAULT_COLORS.values()]
    for n, kind in enumerate(sorted(set(kinds))):
        colors[kind] = fixed.get(kind, free[n % len(free)])
    return colors


def _show(value: str | bool | None) -> str:
    return "∅" if value is None else msgspec.json.encode(value).decode("utf-8")


def describe_op(op: ClientOp) -> str:
    """One-line text of an operation, e.g. `put "x"`, `get → "ab"`, `cas "a"→"b" ✗`."""
    if op.op in ("get", "read"):
        return f"{op.op} → " + ("?" if op.outcome == "unknown" else _show(op.output))
    if op.op == "cas":
        mark = "?" if op.outcome == "unknown" else ("✓" if op.output else "✗")
        return f"cas {_show(op.expected)}→{_show(op.value)} {mark}"
    return f"{op.op} {_show(op.value)}"


def _op_span(op: ClientOp) -> str:
    end = "unknown" if op.return_us is None else _ms(op.return_us)
    return f"{_ms(op.call_us)} – {end}"


def _header(picture: RunPicture) -> str:
    verdict, config = picture.verdict, picture.config
    failed = verdict.status == "failed"
    badge = "FAILED" if failed else "PASSED"
    if failed:
        what = " · ".join(x for x in (verdict.kind, verdict.invariant) if x)
        badge += f": {what}" if what else ""
    title = picture.title or f"voprd seed {config.seed}"
    parts = [
        f'<h1>{_e(title)} <span class="badge {"failed" if failed else "ok"}" id="verdict">'
        f"{_e(badge)}</span></h1>"
    ]
    if verdict.message:
        parts.append(
            f'<pre class="verdict-message{"" if failed else " ok"}">{_e(verdict.message)}</pre>'
        )
    parts.append(
        '<div class="repro"><b>Reproduce:</b> '
        f'<code id="repro">{_e(picture.reproduce)}</code>'
        '<button id="copy-repro" type="button" title="copy to clipboard">copy</button></div>'
    )
    density = picture.density
    total_messages = sum(density.messages) if density else len(picture.messages)
    facts = [
        ("seed", str(config.seed)),
        ("simulated time", _ms(verdict.simulated_time_us)),
        ("events", str(verdict.events)),
        ("replicas", str(config.replica_count)),
        ("clients", str(config.client_count)),
        ("client ops", str(len(picture.ops))),
        ("messages", str(total_messages)),
        ("faults", str(len(picture.faults))),
        ("linearizability", picture.linearizability.verdict.replace("_", " ")),
    ]
    if verdict.failure_us is not None:
        facts.append(("failure at", _ms(verdict.failure_us)))
    if verdict.bounds_reached:
        facts.append(("bounds reached", ", ".join(verdict.bounds_reached)))
    parts.append(
        '<div class="summary">'
        + "".join(f"<div><b>{_e(k)}</b> {_e(v)}</div>" for k, v in facts)
        + "</div>"
    )
    rows = [
        ("target", config.target),
        ("faults", ", ".join(config.faults) or "none"),
        ("planted bugs", ", ".join(config.bugs) or "none"),
        ("max events", str(config.max_events)),
        ("trace hash", verdict.trace_hash or "—"),
        *sorted(config.drawn.items()),
    ]
    parts.append(
        '<details id="config"><summary>Configuration (options and what the seed drew)</summary>'
        '<table class="kv">'
        + "".join(f"<tr><td>{_e(k)}</td><td class=mono>{_e(v)}</td></tr>" for k, v in rows)
        + "</table></details>"
    )
    if verdict.fault_counts:
        parts.append(
            '<details id="fault-counts"><summary>Faults injected, per kind</summary>'
            '<table class="kv">'
            + "".join(f"<tr><td>{_e(k)}</td><td class=mono>{n}</td></tr>"
                      for k, n in verdict.fault_counts.items())
            + "</table></details>"
        )
    return "<header>" + "".join(parts) + "</header>"


def _notes(picture: RunPicture) -> str:
    items = "".join(f"<li>{_e(note)}</li>" for note in picture.notes)
    return f'<section class="notes" id="notes"><b>What is shown</b><ul>{items}</ul></section>'


def _linearizability(picture: RunPicture) -> str:
    lin = picture.linearizability
    ops = {op.id: op for op in picture.ops}
    parts = ['<section class="lin" id="linearizability"><h2>Linearizability</h2>']
    if lin.verdict == "linearizable":
        parts.append(f"<p>The history is linearizable ({_e(lin.model)} model).</p>")
    elif lin.verdict == "unknown":
        parts.append(
            "<p>The checker gave up (budget exhausted): the verdict is <b>unknown</b>.</p>"
        )
    elif lin.verdict == "not_checked":
        parts.append("<p>The history was not checked.</p>")
    if lin.message and not lin.explanations:
        parts.append(f'<pre class="verdict-message">{_e(lin.message)}</pre>')
    for explanation in lin.explanations:
        blocker = ops.get(explanation.blocker) if explanation.blocker is not None else None
        parts.append(
            f"<h3>key {_e(_show(explanation.key))}: not linearizable</h3>"
            f"<p>Longest linearizable order found ({len(explanation.prefix)} operations, "
            "numbered as in the timeline)"
            + (
                f", after which the value is <code>{_e(explanation.state_after_prefix)}</code>"
                if explanation.state_after_prefix is not None
                else ""
            )
            + (", then the operation that cannot be placed:" if blocker else ":")
            + "</p><ol>"
        )
        earlier = max(0, len(explanation.prefix) - PREFIX_SHOWN)
        for position, op_id in enumerate(explanation.prefix):
            op = ops.get(op_id)
            text = (
                f"{describe_op(op)} (process {op.process}, {_op_span(op)})"
                if op
                else "(not in the picture)"
            )
            if position == 0 and earlier:
                parts.append(
                    f'<li class="more"><details><summary>{earlier} earlier operations</summary>'
                    f'<ol class="earlier">'
                )
            parts.append(
                f'<li class="lin-op" value="{position + 1}" data-goto-op="{op_id}">'
                f"line {op_id}: {_e(text)}</li>"
            )
            if earlier and position == earlier - 1:
                parts.append("</ol></details></li>")
        witness = ops.get(explanation.witness) if explanation.witness is not None else None
        if blocker is not None:
            proves = " and is the witness" if witness is blocker else ""
            parts.append(
                f'<li class="lin-op blocker" data-goto-op="{blocker.id}">✗ line {blocker.id}: '
                f"{_e(describe_op(blocker))} (process {blocker.process}, "
                f"{_e(_op_span(blocker))}) cannot be placed{proves}</li>"
            )
        if witness is not None and witness is not blocker:
            parts.append(
                f'<li class="lin-op witness" data-goto-op="{witness.id}">witness: line '
                f"{witness.id}: {_e(describe_op(witness))} (process {witness.process}, "
                f"{_e(_op_span(witness))}) can then never be linearized</li>"
            )
        parts.append("</ol>")
    parts.append("</section>")
    return "".join(parts)


def _fault_row(fault: FaultEvent, picture: RunPicture, colors: dict[str, str]) -> str:
    names = ", ".join(
        picture.nodes[n].name if 0 <= n < len(picture.nodes) else str(n) for n in fault.nodes
    )
    end = _ms(fault.end_us) if fault.end_us is not None else (
        "still active at the end" if fault.open_ended else ""
    )
    swatch = f'<span class="swatch" style="background:{_e(colors[fault.kind])}"></span>'
    return (
        f'<tr class="fault-row" data-goto-fault="{fault.id}" data-fault-id="{fault.id}">'
        f"<td>{swatch}{_e(fault.kind)}</td><td>{_e(_ms(fault.start_us))}</td><td>{_e(end)}</td>"
        f"<td>{_e(names)}</td><td>{_e(fault.detail)}</td></tr>"
    )


def _fault_counts(picture: RunPicture) -> str:
    counts = picture.config.fault_counts
    if not counts:
        return ""
    items = " · ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
    return f'<p id="fault-counts"><b>Injected, by kind:</b> {_e(items)}</p>'


def _faults(picture: RunPicture, colors: dict[str, str]) -> str:
    if not picture.faults:
        return ('<section id="faults"><h2>Fault events</h2>' + _fault_counts(picture)
                + "<p>No faults were injected.</p></section>")
    rows = "".join(_fault_row(f, picture, colors) for f in picture.faults)
    return (
        '<section id="faults"><h2>Fault events</h2>' + _fault_counts(picture)
        + '<table class="faults"><thead><tr><th>kind</th>'
        "<th>start</th><th>end</th><th>nodes</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _legend(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{_e(c)}"></i>{_e(t)}</span>' for t, c in items)
        + "</div>"
    )


_DEFS = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f1f3f6"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="#c9ced8" stroke-width="2"/></pattern>'
    '<linearGradient id="fade-unknown" x1="0" x2="1" y1="0" y2="0">'
    '<stop offset="0" stop-color="#8b93a1"/><stop offset="0.6" stop-color="#8b93a1" '
    'stop-opacity="0.7"/><stop offset="1" stop-color="#8b93a1" stop-opacity="0.08"/>'
    "</linearGradient></defs></svg>"
)

_TOOLBAR = (
    '<div id="toolbar">'
    '<button id="zoom-out" type="button" title="zoom out (-)">−</button>'
    '<button id="zoom-in" type="button" title="zoom in (+)">+</button>'
    '<button id="pan-left" type="button" title="pan left (←)">◀</button>'
    '<button id="pan-right" type="button" title="pan right (→)">▶</button>'
    '<button id="view-all" type="button">whole run</button>'
    "{focus_button}"
    '<label><input type="checkbox" id="show-messages" checked> messages</label>'
    '<label><input type="checkbox" id="show-commits" checked> commits</label>'
    '<span class="readout" id="readout"></span>'
    '<span class="status" id="status"></span>'
    "</div>"
)


def render_html(picture: RunPicture) -> str:
    """The report page for `picture` (collapse it first for long runs: see `voprd.report`)."""
    message_colors = _colors([m.kind for m in picture.messages], {})
    fault_colors = _colors([f.kind for f in picture.faults], _FAULT_COLORS)
    meta = {
        "end_us": picture.end_us(),
        "message_colors": message_colors,
        "fault_colors": fault_colors,
        "band_kinds": list(_BAND_KINDS),
    }
    script = _asset("report.js")
    style = _asset("report.css")
    # The assets are ours; check anyway that they cannot end their own element early.
    assert "</script" not in script.lower() and "</style" not in style.lower()
    failed = picture.verdict.status == "failed"
    what = picture.verdict.invariant or picture.verdict.kind or ""
    title = f"voprd seed {picture.config.seed}: " + (f"FAILED {what}" if failed else "passed")
    focus_button = (
        '<button id="view-focus" type="button">around the failure</button>'
        if picture.focus is not None
        else ""
    )
    op_legend = _legend([
        ("ok", "#2f9e62"), ("cas not applied", "#d9962b"), ("unknown outcome", "#8b93a1"),
    ])
    if picture.linearizability.explanations:
        op_legend = op_legend.replace(
            "</div>",
            '<span><i style="background:#fff;border:2px solid #d62839"></i>'
            "in the explanation (numbered: longest linearizable order, ✗: cannot be placed)"
            '</span><span><i style="background:#fff;border:2px dashed #3d0a91"></i>'
            "witness: the read that can then never be linearized</span></div>",
        )
    message_legend = _legend(
        [(kind, color) for kind, color in message_colors.items()]
        + [(f"fault: {kind}", color) for kind, color in fault_colors.items()]
    )
    body = [
        _header(picture),
        _notes(picture),
        _DEFS,
        _TOOLBAR.replace("{focus_button}", focus_button),
        '<div id="timeline-box">',
        '<h2>Overview <span class="status">(drag to choose a time range; the brush is '
        "the current view)</span></h2>",
        '<svg id="overview" role="img" aria-label="overview of the whole run"></svg>',
        "<h2>Client operations per key</h2>",
        op_legend,
        '<div class="diagram" id="clients"><svg id="client-svg" role="img" '
        'aria-label="client operations per key"></svg></div>',
        _linearizability(picture),
        "<h2>Replicas: messages and events over time</h2>",
        message_legend,
        '<div class="legend"><span>✕ crash</span><span>▶ restart</span><span>❚❚ pause</span>'
        "<span>◆ view change</span><span>│ commit</span><span>× dropped message</span>"
        "<span>hatched: collapsed (not drawn individually)</span></div>",
        '<div class="diagram" id="replicas"><svg id="space-svg" role="img" '
        'aria-label="space-time diagram of the replicas"></svg></div>',
        "</div>",
        _faults(picture, fault_colors),
        '<aside id="details" class="empty">Hover over an operation, message, event or fault '
        "for details. Wheel to zoom, drag to pan.</aside>",
        "<noscript><p>The diagrams need JavaScript; the summary above does not.</p></noscript>",
        '<script type="application/json" id="run-data">'
        + embed_json({"picture": picture, "meta": meta})
        + "</script>",
        f"<script>{script}</script>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{style}</style></head>\n<body>"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
