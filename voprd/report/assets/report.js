// voprd run report: draws the client timeline, the replica space-time diagram and the overview
// strip from the JSON embedded in the page. No network, no dependencies; text goes into the DOM
// only through textContent/setAttribute, never as markup.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("run-data").textContent);
  var P = D.picture, META = D.meta;
  // ClientOp and FaultEvent are encoded with omit_defaults: restore the defaults (model.py).
  P.ops.forEach(function (op) {
    if (op.return_us === undefined) op.return_us = null;
    if (op.value === undefined) op.value = null;
    if (op.expected === undefined) op.expected = null;
    if (op.output === undefined) op.output = null;
    if (op.outcome === undefined) op.outcome = "ok";
  });
  P.faults.forEach(function (f) {
    if (f.end_us === undefined) f.end_us = null;
    if (f.open_ended === undefined) f.open_ended = false;
    if (f.nodes === undefined) f.nodes = [];
    if (f.detail === undefined) f.detail = "";
  });
  var NS = "http://www.w3.org/2000/svg";
  var END = Math.max(META.end_us, 1);
  var LABEL_W = 150, PAD_R = 14, AXIS_H = 20, FAULT_H = 26, ROW_H = 17, KEY_GAP = 10;
  var MAX_DRAW_MESSAGES = 4000, MAX_DRAW_COMMITS = 3000, MAX_DRAW_OPS = 6000;
  var MIN_SPAN_US = 20;
  var view = { t0: 0, t1: END };
  var show = { messages: true, commits: true };
  var W = 800;

  // ---- helpers -------------------------------------------------------------------------------
  function svgEl(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(e);
    return e;
  }
  function svgText(parent, x, y, s, cls) {
    var t = svgEl("text", { x: x, y: y }, parent);
    if (cls) t.setAttribute("class", cls);
    t.textContent = s;
    return t;
  }
  function svgTitle(parent, s) { svgEl("title", {}, parent).textContent = s; }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmt(us) {
    if (us === null || us === undefined) return "—";
    if (Math.abs(us) >= 1e6) return (us / 1e6).toFixed(3) + " s";
    return (us / 1000).toFixed(3) + " ms";
  }
  function cls(s) { return String(s).toLowerCase().replace(/[^a-z0-9_-]/g, "_"); }
  function X(t) { return LABEL_W + (t - view.t0) * (W - LABEL_W - PAD_R) / (view.t1 - view.t0); }
  function T(px) { return view.t0 + (px - LABEL_W) * (view.t1 - view.t0) / (W - LABEL_W - PAD_R); }
  function cx(x) { return Math.max(LABEL_W - 6, Math.min(W + 6, x)); }
  function color(map, key, fallback) {
    return Object.prototype.hasOwnProperty.call(map, key) ? map[key] : fallback;
  }
  function nodeName(i) { return P.nodes[i] ? P.nodes[i].name : "node " + i; }
  function show_value(v) { return v === null || v === undefined ? "∅" : JSON.stringify(v); }
  function describeOp(op) {
    if (op.op === "get" || op.op === "read") {
      return op.op + " → " + (op.outcome === "unknown" ? "?" : show_value(op.output));
    }
    if (op.op === "cas") {
      return "cas " + show_value(op.expected) + "→" + show_value(op.value) +
        (op.outcome === "unknown" ? " ?" : op.output ? " ✓" : " ✗");
    }
    return op.op + " " + show_value(op.value);
  }

  // ---- client timeline layout (computed once, independent of the view) ---------------------
  var highlight = {}, blockers = {}, witnesses = {}, failingKeys = {};
  P.linearizability.explanations.forEach(function (ex) {
    failingKeys[ex.key] = true;
    ex.prefix.forEach(function (id, pos) { highlight[id] = String(pos + 1); });
    if (ex.blocker !== null && ex.blocker !== undefined) { highlight[ex.blocker] = "✗"; blockers[ex.blocker] = true; }
    // The witness: the read that can never be linearized (labelled "witness" where there is room;
    // its dashed outline marks it in any case).
    if (ex.witness !== null && ex.witness !== undefined) {
      witnesses[ex.witness] = true;
      if (!blockers[ex.witness]) highlight[ex.witness] = "witness";
    }
  });
  var LABEL_CHAR_PX = 7;  // an upper bound on a label character's width (11px bold digits)
  function labelWidth(s) { return s.length * LABEL_CHAR_PX + 2; }
  function opTitle(op) {
    var what = witnesses[op.id] ? "witness (can never be linearized): " :
      blockers[op.id] ? "cannot be placed: " : "linearized " + highlight[op.id] + ": ";
    return "line " + op.id + ", " + what + describeOp(op);
  }
  var drawEnd = new Array(P.ops.length), opRow = new Array(P.ops.length);
  (function () {
    var byProcess = {};
    P.ops.forEach(function (op, i) { (byProcess[op.process] = byProcess[op.process] || []).push(i); });
    Object.keys(byProcess).forEach(function (p) {
      var list = byProcess[p].sort(function (a, b) { return P.ops[a].call_us - P.ops[b].call_us || a - b; });
      list.forEach(function (i, n) {
        var op = P.ops[i];
        if (op.return_us !== null && op.return_us !== undefined) { drawEnd[i] = op.return_us; return; }
        // Unknown outcome: open-ended; drawn fading until the client's next call (or the end).
        drawEnd[i] = n + 1 < list.length ? Math.max(P.ops[list[n + 1]].call_us, op.call_us) : END;
      });
    });
  })();
  var keyOrder = [], keyRows = {}, keyOps = {};
  P.ops.forEach(function (op, i) {
    if (!Object.prototype.hasOwnProperty.call(keyOps, op.key)) { keyOps[op.key] = []; keyOrder.push(op.key); }
    keyOps[op.key].push(i);
  });
  keyOrder.sort(function (a, b) {
    var fa = failingKeys[a] ? 0 : 1, fb = failingKeys[b] ? 0 : 1;
    return fa - fb || (a < b ? -1 : a > b ? 1 : 0);
  });
  keyOrder.forEach(function (key) {
    var rows = [];
    keyOps[key].sort(function (a, b) { return P.ops[a].call_us - P.ops[b].call_us || a - b; });
    keyOps[key].forEach(function (i) {
      var call = P.ops[i].call_us, r = 0;
      while (r < rows.length && rows[r] >= call) r++;
      rows[r] = drawEnd[i];
      opRow[i] = r;
    });
    keyRows[key] = Math.max(1, rows.length);
  });

  // ---- shared overlays -------------------------------------------------------------------------
  var faultKinds = Object.keys(META.fault_colors);
  function faultColor(f) { return color(META.fault_colors, f.kind, "#777"); }
  function faultEnd(f) { return f.end_us !== null && f.end_us !== undefined ? f.end_us : (f.open_ended ? END : f.start_us); }
  function inView(a, b) { return b >= view.t0 && a <= view.t1; }
  function clipDefs(svg, id, height) {
    var defs = svgEl("defs", {}, svg), cp = svgEl("clipPath", { id: id }, defs);
    svgEl("rect", { x: LABEL_W, y: 0, width: Math.max(0, W - LABEL_W - PAD_R), height: height }, cp);
    return svgEl("g", { "clip-path": "url(#" + id + ")" }, svg);
  }
  function axis(svg, height) {
    var g = svgEl("g", { "class": "axis" }, svg);
    var span = view.t1 - view.t0, raw = span / Math.max(1, (W - LABEL_W) / 110);
    var p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1)))), step = p;
    [1, 2, 5, 10].some(function (m) { step = m * p; return step >= raw; });
    var n = 0;
    for (var t = Math.ceil(view.t0 / step) * step; t <= view.t1 && n < 100; t += step, n++) {
      var x = X(t);
      svgEl("line", { x1: x, x2: x, y1: AXIS_H - 4, y2: height }, g);
      svgText(g, x + 2, 12, fmt(t));
    }
  }
  function focusBand(g, height) {
    if (!P.focus) return;
    svgEl("rect", { "class": "focus-band", x: cx(X(P.focus.start_us)), y: 0,
      width: Math.max(0, cx(X(P.focus.end_us)) - cx(X(P.focus.start_us))), height: height }, g);
  }
  // Run-wide moments (phase changes): a dotted line with its label in the fault track.
  function markerLines(g, height) {
    (P.markers || []).forEach(function (m) {
      if (!inView(m.time_us, m.time_us)) return;
      var x = X(m.time_us), mg = svgEl("g", { "class": "marker" }, g);
      svgEl("line", { x1: x, x2: x, y1: AXIS_H, y2: height, stroke: "#5d6778", "stroke-width": 1, "stroke-dasharray": "1 3" }, mg);
      svgText(mg, x + 3, AXIS_H + FAULT_H - 2, m.label).setAttribute("fill", "#5d6778");
      svgTitle(mg, m.label + " at " + fmt(m.time_us));
    });
  }
  function failureLine(g, height) {
    if (P.verdict.failure_us === null || P.verdict.failure_us === undefined) return;
    var x = X(P.verdict.failure_us);
    svgEl("line", { "class": "failure-line", x1: x, x2: x, y1: AXIS_H, y2: height }, g);
    svgText(g, x + 3, AXIS_H + FAULT_H + 10, "failure detected", "failure-label").setAttribute("fill", "#d62839");
  }
  // Interval faults as faint bands over the plot (all lanes or the given lane ranges), and every
  // fault as a mark in the fault track at the top, which is what hover and the tests look for.
  function faultOverlay(g, height, laneRange) {
    var track = svgEl("g", { "class": "fault-track" }, g);
    P.faults.forEach(function (f, i) {
      var end = faultEnd(f);
      if (!inView(f.start_us, end)) return;
      var c = faultColor(f), x0 = cx(X(f.start_us)), x1 = cx(X(end));
      // Only faults that make (part of) the cluster unavailable get a band; the others (clock
      // skew lasts the whole run) would only tint everything.
      if (end > f.start_us && META.band_kinds.indexOf(f.kind) >= 0) {
        var ranges = laneRange ? laneRange(f) : [[AXIS_H + FAULT_H, height]];
        ranges.forEach(function (r) {
          svgEl("rect", { "class": "fault-band", x: x0, y: r[0], width: Math.max(1, x1 - x0), height: r[1] - r[0], fill: c }, g);
        });
      }
      // One row per fault kind (the order of the legend), so a long fault never hides others.
      var row = Math.max(0, Math.min(faultKinds.indexOf(f.kind), 5));
      var y = AXIS_H + 1 + row * 4;
      var mark = svgEl("g", { "class": "fault fault-mark hit fault-" + cls(f.kind), "data-t": "fault", "data-i": i, "data-fault-id": f.id }, track);
      if (end > f.start_us) {
        svgEl("rect", { x: x0, y: y, width: Math.max(2, x1 - x0), height: 3.5, fill: c }, mark);
      } else {
        svgEl("rect", { x: x0 - 1.5, y: y - 1, width: 3, height: 5.5, fill: c }, mark);
      }
      svgEl("line", { x1: x0, x2: x0, y1: y, y2: height, stroke: c, "stroke-width": 1, "stroke-dasharray": "2 3" }, mark);
      svgTitle(mark, f.kind + " " + fmt(f.start_us) + (end > f.start_us ? " – " + fmt(end) : "") + (f.detail ? " · " + f.detail : ""));
    });
  }

  // ---- client timeline ---------------------------------------------------------------------------
  function renderClients() {
    var svg = document.getElementById("client-svg");
    clear(svg);
    var top = AXIS_H + FAULT_H, y = top, keyY = {};
    keyOrder.forEach(function (key) { keyY[key] = y; y += keyRows[key] * ROW_H + KEY_GAP; });
    var height = Math.max(y, top + 30);
    svg.setAttribute("width", W); svg.setAttribute("height", height);
    if (!keyOrder.length) { svgText(svg, 10, top + 16, "No client operations were recorded."); return; }
    keyOrder.forEach(function (key, n) {
      svgEl("rect", { x: 0, y: keyY[key] - 3, width: W, height: keyRows[key] * ROW_H + 6,
        fill: failingKeys[key] ? "#fdf0f1" : (n % 2 ? "#fafbfc" : "#ffffff") }, svg);
      var label = svgText(svg, 6, keyY[key] + 12, "key " + JSON.stringify(key), "lane-label");
      if (failingKeys[key]) label.setAttribute("fill", "#d62839");
      svgText(svg, 6, keyY[key] + 25, keyOps[key].length + " ops", "muted").setAttribute("fill", "#5d6778");
    });
    var g = clipDefs(svg, "clip-clients", height);
    focusBand(g, height);
    faultOverlay(g, height, null);
    var visible = [];
    P.ops.forEach(function (op, i) { if (inView(op.call_us, drawEnd[i]) || highlight[op.id]) visible.push(i); });
    var stride = visible.length > MAX_DRAW_OPS ? Math.ceil(visible.length / MAX_DRAW_OPS) : 1;
    var drawn = 0;
    // Labels never overlap: each row of each key keeps the right edge of what is drawn in it, in
    // call order; a number goes left of its bar if that space is free, else inside the bar's
    // start if it is wide enough (its text moves right), else it is left out (zoom in to see it;
    // the tooltip, the details panel and the Linearizability list always have it).
    var rowRight = {};
    visible.sort(function (a, b) { return P.ops[a].call_us - P.ops[b].call_us || a - b; });
    visible.forEach(function (i, n) {
      var op = P.ops[i];
      if (stride > 1 && n % stride && !highlight[op.id]) return;
      drawn++;
      var x0 = cx(X(op.call_us)), x1 = cx(X(drawEnd[i])), w = Math.max(2, x1 - x0);
      var yy = keyY[op.key] + opRow[i] * ROW_H, row = op.key + "\u0000" + opRow[i];
      var right = Object.prototype.hasOwnProperty.call(rowRight, row) ? rowRight[row] : LABEL_W;
      var c = "op hit " + op.outcome + (highlight[op.id] ? " highlighted" : "") + (blockers[op.id] ? " blocker" : "") + (witnesses[op.id] ? " witness" : "");
      var og = svgEl("g", { "class": c, "data-t": "op", "data-i": i, "data-op-id": op.id }, g);
      svgEl("rect", { x: x0, y: yy, width: w, height: ROW_H - 4, rx: 2 }, og);
      var textX = x0 + 3;
      if (highlight[op.id]) {
        var mark = highlight[op.id], lw = labelWidth(mark);
        if (x0 - 3 - lw >= right + 1) {
          svgText(og, x0 - 3 - lw, yy + ROW_H - 7, mark, "order");
        } else if (x1 - Math.max(x0, LABEL_W) >= lw + 2) {  // inside the visible part of the bar
          svgText(og, Math.max(x0, LABEL_W) + 2, yy + ROW_H - 7, mark, "order inside");
          textX = Math.max(x0, LABEL_W) + 2 + lw + 2;
        }
        svgTitle(og, opTitle(op));
      }
      var room = Math.floor((x1 - textX - 3) / 6);
      if (w > 46 && room >= 3) {
        var label = describeOp(op);
        if (label.length > room) label = label.slice(0, Math.max(1, room - 1)) + "…";
        svgText(og, textX, yy + ROW_H - 8, label);
      }
      rowRight[row] = Math.max(right, x1);
    });
    markerLines(g, height);
    failureLine(g, height);
    axis(svg, height);
    return stride > 1 ? "client operations: drawing " + drawn + " of " + visible.length + " in view (zoom in for all)" : "";
  }

  // ---- replica space-time diagram ------------------------------------------------------------
  function renderSpace() {
    var svg = document.getElementById("space-svg");
    clear(svg);
    var top = AXIS_H + FAULT_H + 8, laneY = [], y = top;
    P.nodes.forEach(function (node, i) { var h = node.kind === "client" ? 24 : 38; laneY[i] = y + h / 2; y += h; });
    var height = Math.max(y + 8, top + 30);
    svg.setAttribute("width", W); svg.setAttribute("height", height);
    P.nodes.forEach(function (node, i) {
      var t = svgText(svg, 6, laneY[i] + 4, node.name, node.kind === "client" ? "" : "lane-label");
      t.setAttribute("fill", node.kind === "client" ? "#5d6778" : "#1d2430");
      svgEl("line", { x1: LABEL_W, x2: W - PAD_R, y1: laneY[i], y2: laneY[i], stroke: node.kind === "client" ? "#e3e6ec" : "#c3c9d4", "stroke-width": node.kind === "client" ? 1 : 1.5 }, svg);
    });
    var g = clipDefs(svg, "clip-space", height);
    focusBand(g, height);
    // Collapsed stretches: adjacent density buckets with messages not drawn individually.
    var den = P.density, status = [];
    if (den) {
      var run = null;
      var flush = function () {
        if (!run) return;
        var x0 = cx(X(run.a)), x1 = cx(X(run.b));
        var r = svgEl("rect", { "class": "collapsed hit", x: x0, y: top - 4, width: Math.max(1, x1 - x0), height: height - top, "data-t": "collapsed", "data-a": run.a, "data-b": run.b, "data-n": run.n }, g);
        svgTitle(r, run.n + " messages collapsed in " + fmt(run.a) + " – " + fmt(run.b));
        run = null;
      };
      for (var b = 0; b < den.collapsed_messages.length; b++) {
        var a0 = den.start_us + b * den.bucket_us, a1 = a0 + den.bucket_us;
        if (den.collapsed_messages[b] > 0 && inView(a0, a1)) {
          if (run && run.b === a0) { run.b = a1; run.n += den.collapsed_messages[b]; }
          else { flush(); run = { a: a0, b: a1, n: den.collapsed_messages[b] }; }
        } else { flush(); }
      }
      flush();
    }
    var laneRange = function (f) {
      if (!f.nodes || !f.nodes.length) return [[top - 4, height]];
      return f.nodes.filter(function (n) { return laneY[n] !== undefined; }).map(function (n) { return [laneY[n] - 13, laneY[n] + 13]; });
    };
    faultOverlay(g, height, laneRange);
    if (show.messages) {
      var visible = [];
      P.messages.forEach(function (m, i) {
        var end = m[1] !== null ? m[1] : (m[5] === "in_flight" ? END : m[0]);
        if (inView(m[0], end)) visible.push(i);
      });
      var stride = visible.length > MAX_DRAW_MESSAGES ? Math.ceil(visible.length / MAX_DRAW_MESSAGES) : 1;
      var mg = svgEl("g", { "class": "messages" }, g);
      visible.forEach(function (i, n) {
        if (n % stride) return;
        var m = P.messages[i], c = color(META.message_colors, m[4], "#888");
        var x0 = X(m[0]), y0 = laneY[m[2]], y1 = laneY[m[3]], x1;
        if (y0 === undefined || y1 === undefined) return;
        if (m[5] === "dropped") { x1 = x0 + 26; y1 = y0 + (y1 - y0) * 0.35; }
        else if (m[1] === null) { x1 = W; }
        else { x1 = X(m[1]); }
        var line = svgEl("line", { "class": "msg hit " + cls(m[5]), x1: x0, y1: y0, x2: x1, y2: y1, stroke: c, "data-t": "msg", "data-i": i }, mg);
        if (m[5] === "dropped") {
          var d = svgText(mg, x1 - 3, y1 + 4, "×"); d.setAttribute("fill", "#d62839"); d.setAttribute("font-weight", "700");
        } else if (m[1] !== null) {
          svgEl("circle", { cx: x1, cy: y1, r: 1.8, fill: c }, mg);
        }
        return line;
      });
      if (stride > 1) status.push("messages: drawing every " + stride + "th of " + visible.length + " in view (zoom in for all)");
    }
    var eg = svgEl("g", { "class": "node-events" }, g), commits = 0, commitStride = 1;
    if (show.commits) {
      P.node_events.forEach(function (e) { if (e[2] === "commit" && inView(e[0], e[0])) commits++; });
      commitStride = commits > MAX_DRAW_COMMITS ? Math.ceil(commits / MAX_DRAW_COMMITS) : 1;
      if (commitStride > 1) status.push("commits: drawing every " + commitStride + "th of " + commits + " in view");
    }
    var commitN = 0, lastLabelX = {};
    P.node_events.forEach(function (e, i) {
      if (!inView(e[0], e[0]) || laneY[e[1]] === undefined) return;
      if (e[2] === "commit") { if (!show.commits || (commitN++ % commitStride)) return; }
      var x = X(e[0]), yy = laneY[e[1]];
      var ev = svgEl("g", { "class": "ev hit ev-" + cls(e[2]), "data-t": "ev", "data-i": i }, eg);
      switch (e[2]) {
        case "crash":
          svgEl("path", { d: "M" + (x - 6) + " " + (yy - 6) + "L" + (x + 6) + " " + (yy + 6) + "M" + (x + 6) + " " + (yy - 6) + "L" + (x - 6) + " " + (yy + 6), stroke: "#d62839", "stroke-width": 3 }, ev);
          break;
        case "restart": case "recovered":
          svgEl("path", { d: "M" + (x - 4) + " " + (yy - 7) + "L" + (x + 7) + " " + yy + "L" + (x - 4) + " " + (yy + 7) + "Z", fill: "#2f9e62" }, ev);
          break;
        case "pause": case "resume":
          svgEl("rect", { x: x - 5, y: yy - 7, width: 3.5, height: 14, fill: "#d9962b" }, ev);
          if (e[2] === "pause") svgEl("rect", { x: x + 1.5, y: yy - 7, width: 3.5, height: 14, fill: "#d9962b" }, ev);
          break;
        case "view_change":
          svgEl("path", { d: "M" + x + " " + (yy - 8) + "L" + (x + 7) + " " + yy + "L" + x + " " + (yy + 8) + "L" + (x - 7) + " " + yy + "Z", fill: "#6e4bd8" }, ev);
          // Label only where it does not overlap the previous label on this lane.
          if (x > (lastLabelX[e[1]] === undefined ? -1e9 : lastLabelX[e[1]]) + 70) {
            lastLabelX[e[1]] = x;
            svgText(ev, x + 8, yy - 8, (e[3] || "view change").split(/[,(]/)[0]).setAttribute("fill", "#6e4bd8");
          }
          break;
        case "commit":
          svgEl("line", { x1: x, x2: x, y1: yy - 9, y2: yy + 9, stroke: "#4a78c2", "stroke-width": 1.4 }, ev);
          break;
        default:
          svgEl("circle", { cx: x, cy: yy, r: P.nodes[e[1]].kind === "client" ? 2.5 : 4, fill: "#5d6778" }, ev);
      }
      svgTitle(ev, nodeName(e[1]) + ": " + e[2] + " at " + fmt(e[0]) + (e[3] ? " · " + e[3] : ""));
    });
    markerLines(g, height);
    failureLine(g, height);
    axis(svg, height);
    return status.join("; ");
  }

  // ---- overview strip (the whole run; drag to choose the view) --------------------------------
  var OV_H = 58;
  function OX(t) { return LABEL_W + t * (W - LABEL_W - PAD_R) / END; }
  function OT(px) { return (px - LABEL_W) * END / (W - LABEL_W - PAD_R); }
  function renderOverview() {
    var svg = document.getElementById("overview");
    clear(svg);
    svg.setAttribute("width", W); svg.setAttribute("height", OV_H);
    svgText(svg, 6, 16, "whole run", "lane-label");
    svgText(svg, 6, 32, fmt(0) + " – " + fmt(END)).setAttribute("fill", "#5d6778");
    if (P.focus) svgEl("rect", { "class": "focus-band", x: OX(P.focus.start_us), y: 0, width: Math.max(2, OX(P.focus.end_us) - OX(P.focus.start_us)), height: OV_H }, svg);
    var den = P.density;
    if (den && den.messages.length) {
      var max = 1;
      den.messages.forEach(function (v, b) { max = Math.max(max, v + den.commits[b]); });
      var bw = Math.max(1, OX(den.bucket_us) - OX(0));
      den.messages.forEach(function (v, b) {
        var t = den.start_us + b * den.bucket_us, h = (OV_H - 14) * Math.sqrt(v / max);
        if (v) svgEl("rect", { x: OX(t), y: OV_H - 2 - h, width: bw, height: h, fill: den.collapsed_messages[b] ? "#aab3c2" : "#7f9cc8" }, svg);
        var hd = (OV_H - 14) * Math.sqrt(den.dropped[b] / max);
        if (den.dropped[b]) svgEl("rect", { x: OX(t), y: OV_H - 2 - hd, width: bw, height: hd, fill: "#e0707c" }, svg);
      });
    }
    P.faults.forEach(function (f) {
      var x0 = OX(f.start_us), x1 = OX(faultEnd(f)), row = Math.min(faultKinds.indexOf(f.kind), 5);
      svgEl("rect", { x: x0, y: 1 + row * 4, width: Math.max(2, x1 - x0), height: 3, fill: faultColor(f) }, svg);
    });
    P.ops.forEach(function (op) {
      if (!highlight[op.id]) return;
      svgEl("rect", { x: OX(op.call_us), y: 25, width: 2, height: 7, fill: "#d62839" }, svg);
    });
    if (P.verdict.failure_us !== null && P.verdict.failure_us !== undefined) {
      var fx = OX(P.verdict.failure_us);
      svgEl("line", { "class": "failure-line", x1: fx, x2: fx, y1: 0, y2: OV_H }, svg);
    }
    svgEl("rect", { id: "brush", x: OX(Math.max(0, view.t0)), y: 0.5, width: Math.max(3, OX(Math.min(END, view.t1)) - OX(Math.max(0, view.t0))), height: OV_H - 1, fill: "rgba(110,75,216,.10)", stroke: "#6e4bd8", "stroke-width": 1.5 }, svg);
  }

  // ---- view changes ----------------------------------------------------------------------------
  var pending = false;
  function render() {
    pending = false;
    W = Math.max(480, document.getElementById("timeline-box").clientWidth - 2);
    renderOverview();
    var s1 = renderClients(), s2 = renderSpace();
    document.getElementById("readout").textContent =
      "showing " + fmt(Math.max(0, view.t0)) + " – " + fmt(Math.min(END, view.t1)) + " (" + fmt(view.t1 - view.t0) + ")";
    document.getElementById("status").textContent = [s1, s2].filter(Boolean).join("; ");
    document.body.setAttribute("data-rendered", "1");
  }
  function schedule() { if (!pending) { pending = true; window.requestAnimationFrame(render); } }
  function setView(t0, t1) {
    var span = Math.min(Math.max(t1 - t0, MIN_SPAN_US), END * 1.05);
    var mid = (t0 + t1) / 2;
    t0 = mid - span / 2; t1 = mid + span / 2;
    var slack = END * 0.025;
    if (t0 < -slack) { t1 += -slack - t0; t0 = -slack; }
    if (t1 > END + slack) { t0 -= t1 - END - slack; t1 = END + slack; }
    view.t0 = t0; view.t1 = t1;
    schedule();
  }
  function zoom(factor, at) {
    if (at === undefined) at = (view.t0 + view.t1) / 2;
    setView(at - (at - view.t0) * factor, at + (view.t1 - at) * factor);
  }
  function pan(fraction) { var d = (view.t1 - view.t0) * fraction; setView(view.t0 + d, view.t1 + d); }
  function showWindow(a, b) { var pad = Math.max((b - a) * 0.3, MIN_SPAN_US); setView(a - pad, b + pad); }
  function showAll() { setView(-END * 0.01, END * 1.01); }
  function showFocus() { if (P.focus) showWindow(P.focus.start_us, P.focus.end_us); else showAll(); }

  function onClick(id, f) { var e = document.getElementById(id); if (e) e.addEventListener("click", f); }
  onClick("zoom-in", function () { zoom(1 / 1.6); });
  onClick("zoom-out", function () { zoom(1.6); });
  onClick("pan-left", function () { pan(-0.4); });
  onClick("pan-right", function () { pan(0.4); });
  onClick("view-all", showAll);
  onClick("view-focus", showFocus);
  onClick("copy-repro", function () {
    var text = document.getElementById("repro").textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(function () {});
  });
  ["messages", "commits"].forEach(function (name) {
    var box = document.getElementById("show-" + name);
    if (box) box.addEventListener("change", function () { show[name] = box.checked; schedule(); });
  });

  // Wheel zooms around the pointer, drag pans, in both diagrams.
  Array.prototype.forEach.call(document.querySelectorAll(".diagram"), function (box) {
    box.addEventListener("wheel", function (ev) {
      var rect = box.getBoundingClientRect(), px = ev.clientX - rect.left;
      if (px < LABEL_W) return;
      ev.preventDefault();
      zoom(ev.deltaY > 0 ? 1.25 : 0.8, T(px));
    }, { passive: false });
    box.addEventListener("mousedown", function (ev) {
      if (ev.button !== 0) return;
      var startX = ev.clientX, t0 = view.t0, t1 = view.t1;
      box.classList.add("dragging");
      function move(e) {
        var dt = (e.clientX - startX) * (t1 - t0) / (W - LABEL_W - PAD_R);
        setView(t0 - dt, t1 - dt);
      }
      function up() { box.classList.remove("dragging"); window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up); }
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });
  });
  (function () {
    var ov = document.getElementById("overview");
    ov.addEventListener("mousedown", function (ev) {
      var rect = ov.getBoundingClientRect(), startX = ev.clientX - rect.left, startT = OT(startX);
      var inside = startT >= view.t0 && startT <= view.t1, t0 = view.t0, t1 = view.t1, moved = false;
      function move(e) {
        var x = e.clientX - rect.left;
        if (Math.abs(x - startX) < 3 && !moved) return;
        moved = true;
        if (inside) { var dt = OT(x) - startT; setView(t0 + dt, t1 + dt); }
        else { setView(Math.min(startT, OT(x)), Math.max(startT, OT(x))); }
      }
      function up() {
        window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up);
        if (!moved) { var span = view.t1 - view.t0; setView(startT - span / 2, startT + span / 2); }
      }
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    });
  })();
  document.addEventListener("keydown", function (ev) {
    if (ev.target && /INPUT|TEXTAREA/.test(ev.target.tagName)) return;
    if (ev.key === "+" || ev.key === "=") zoom(1 / 1.6);
    else if (ev.key === "-") zoom(1.6);
    else if (ev.key === "ArrowLeft") pan(-0.25);
    else if (ev.key === "ArrowRight") pan(0.25);
  });

  // ---- details panel -------------------------------------------------------------------------
  var details = document.getElementById("details");
  function detailRows(title, rows) {
    clear(details);
    details.classList.remove("empty");
    var h = document.createElement("h3"); h.textContent = title; details.appendChild(h);
    var table = document.createElement("table"); table.className = "kv";
    rows.forEach(function (r) {
      if (r[1] === undefined) return;
      var tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
      a.textContent = r[0]; b.textContent = r[1]; tr.appendChild(a); tr.appendChild(b); table.appendChild(tr);
    });
    details.appendChild(table);
  }
  function describe(kind, i, target) {
    if (kind === "op") {
      var op = P.ops[i];
      detailRows("client operation, line " + op.id, [
        ["operation", describeOp(op)], ["key", JSON.stringify(op.key)], ["process", String(op.process)],
        ["call", fmt(op.call_us)],
        ["return", op.return_us === null || op.return_us === undefined ? "unknown (may take effect any time after the call, or never)" : fmt(op.return_us)],
        ["duration", op.return_us === null || op.return_us === undefined ? undefined : fmt(op.return_us - op.call_us)],
        ["outcome", op.outcome],
        ["explanation", witnesses[op.id] ? "the witness: once the blocked operation must come before it, this " + op.op + " can never be linearized" + (blockers[op.id] ? " (it is itself the operation that cannot be placed)" : "") : highlight[op.id] ? (blockers[op.id] ? "cannot be placed after the longest linearizable order" : "position " + highlight[op.id] + " in the longest linearizable order") : undefined]
      ]);
    } else if (kind === "msg") {
      var m = P.messages[i];
      detailRows(m[4] + " " + nodeName(m[2]) + " → " + nodeName(m[3]), [
        ["sent", fmt(m[0])], ["delivered", m[1] === null ? undefined : fmt(m[1])],
        ["latency", m[1] === null ? undefined : fmt(m[1] - m[0])], ["status", m[5]], ["detail", m[6] || undefined]
      ]);
    } else if (kind === "ev") {
      var e = P.node_events[i];
      detailRows(nodeName(e[1]) + ": " + e[2], [["time", fmt(e[0])], ["detail", e[3] || undefined]]);
    } else if (kind === "fault") {
      var f = P.faults[i];
      detailRows("fault: " + f.kind, [
        ["start", fmt(f.start_us)], ["end", f.end_us !== null && f.end_us !== undefined ? fmt(f.end_us) : (f.open_ended ? "still active at the end" : undefined)],
        ["nodes", f.nodes && f.nodes.length ? f.nodes.map(nodeName).join(", ") : undefined], ["detail", f.detail || undefined]
      ]);
    } else if (kind === "collapsed") {
      detailRows("collapsed stretch", [
        ["from", fmt(+target.getAttribute("data-a"))], ["to", fmt(+target.getAttribute("data-b"))],
        ["messages not drawn", target.getAttribute("data-n")], ["why", "far from the failure; see the notes at the top"]
      ]);
    }
  }
  document.addEventListener("mouseover", function (ev) {
    var target = ev.target && ev.target.closest ? ev.target.closest("[data-t]") : null;
    if (target) describe(target.getAttribute("data-t"), +target.getAttribute("data-i"), target);
  });
  // Clicking an operation in the explanation or a fault in the table zooms to it.
  document.addEventListener("click", function (ev) {
    var item = ev.target && ev.target.closest ? ev.target.closest("[data-goto-op],[data-goto-fault]") : null;
    if (!item) return;
    if (item.hasAttribute("data-goto-op")) {
      var id = +item.getAttribute("data-goto-op");
      for (var i = 0; i < P.ops.length; i++) {
        if (P.ops[i].id === id) { showWindow(P.ops[i].call_us, drawEnd[i]); describe("op", i, null); break; }
      }
    } else {
      var fi = +item.getAttribute("data-goto-fault");
      for (var j = 0; j < P.faults.length; j++) {
        if (P.faults[j].id === fi) { showWindow(P.faults[j].start_us, faultEnd(P.faults[j])); describe("fault", j, null); break; }
      }
    }
    document.getElementById("timeline-box").scrollIntoView({ block: "start" });
  });
  window.addEventListener("resize", schedule);

  if (P.focus) { showFocus(); } else { showAll(); }
  render();
})();
