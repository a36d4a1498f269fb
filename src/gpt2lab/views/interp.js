/* gpt2lab logit lens and activation patching views.
 *
 *   GPT2LabInterp.mount(element, data) -> api
 *
 * Builds the view inside `element` from the JSON written by gpt2lab/views/interp.py (data.kind is
 * "lens" or "patching"): a map of layers (output on top) by positions or heads as a table of cells,
 * hover a cell for its details, click to pin them.
 *
 * No dependencies and no network. Token text is data: it reaches the page only through textContent
 * and element properties, never as markup, so a prompt holding markup shows as text and never runs.
 */
window.GPT2LabInterp = window.GPT2LabInterp || (function () {
  "use strict";

  var INK = [8, 69, 148];                           // the lens: white to blue, colour ~ sqrt(p) (as attention.js)
  // patching: matplotlib's RdBu (as the PNG), from white at 0 out to either end; stops at |t| = 0, .2, .5, .8, 1
  var POS = [[247, 247, 247], [209, 229, 240], [104, 171, 208], [32, 101, 171], [5, 48, 97]];
  var NEG = [[247, 247, 247], [253, 219, 199], [229, 131, 104], [177, 24, 43], [103, 0, 31]];
  var STOPS = [0, 0.2, 0.5, 0.8, 1];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function percent(p) { return (p >= 0.001 ? (100 * p).toFixed(1) : (100 * p).toExponential(0)) + "%"; }  // never a bare 0.0%
  function cut(s, n) { return s.length <= n ? s : s.slice(0, n - 1) + "\u2026"; }
  function ramp(colours, t) {  // t in [0, 1] along the stops
    var i = 1;
    while (i < STOPS.length - 1 && t > STOPS[i]) i++;
    var f = (t - STOPS[i - 1]) / (STOPS[i] - STOPS[i - 1]), a = colours[i - 1], b = colours[i];
    return "rgb(" + Math.round(a[0] + (b[0] - a[0]) * f) + "," + Math.round(a[1] + (b[1] - a[1]) * f) + "," + Math.round(a[2] + (b[2] - a[2]) * f) + ")";
  }
  function mixWhite(c, t) {  // t in [0, 1]: 0 white, 1 the colour c
    return "rgb(" + Math.round(255 + (c[0] - 255) * t) + "," + Math.round(255 + (c[1] - 255) * t) + "," + Math.round(255 + (c[2] - 255) * t) + ")";
  }

  // text chips for one sequence; `marks` (optional) flags chips to highlight as differing
  function textLine(name, vis, raw, marks) {
    var line = el("div", "g2l-text"), chips = [];
    if (name) line.appendChild(el("span", "g2l-text-name", name));
    for (var i = 0; i < vis.length; i++) {
      var chip = el("span", "g2l-tok" + (marks && marks[i] ? " g2l-diff" : ""), vis[i]);
      chip.title = "#" + i + "  " + JSON.stringify(raw[i]);
      chip.setAttribute("data-i", String(i));
      line.appendChild(chip); chips.push(chip);
    }
    return { el: line, chips: chips };
  }

  // The map: rows drawn top to bottom from rows-1 down to 0, a header row of `top` labels (optional)
  // and a footer of `bottom` labels. cell(r, c) -> {text, colour, ink}; onFocus(r, c) shows details.
  function buildMap(o) {
    var wrap = el("div", "g2l-map-wrap"), table = el("table", "g2l-map" + (o.text ? "" : " g2l-dense"));
    var cols = [], cells = [], pinned = null;
    function labelRow(labels, cls, title) {
      var tr = el("tr"), corner = el("th", "g2l-rowlabel", title || "");
      tr.appendChild(corner);
      for (var c = 0; c < labels.length; c++) {
        var th = el("th", "g2l-col" + (cls && cls[c] ? " " + cls[c] : ""), o.text ? cut(labels[c], 9) : "");
        th.title = labels[c];
        tr.appendChild(th); cols.push(th);
      }
      return tr;
    }
    if (o.top) table.appendChild(labelRow(o.top, null, o.topTitle));
    for (var r = o.rows - 1; r >= 0; r--) {
      var tr = el("tr");
      tr.appendChild(el("th", "g2l-rowlabel", o.rowLabels[r]));
      for (var c = 0; c < o.cols; c++) {
        var look = o.cell(r, c), td = el("td", "g2l-cell", o.text ? look.text : "");
        td.style.background = look.colour;
        td.style.color = look.ink;
        td.setAttribute("data-r", String(r)); td.setAttribute("data-c", String(c));
        tr.appendChild(td); cells.push(td);
      }
      table.appendChild(tr);
    }
    table.appendChild(labelRow(o.bottom, o.bottomClass, o.bottomTitle));
    wrap.appendChild(table);

    function focus(r, c) {
      cols.forEach(function (th, k) { th.classList.toggle("g2l-focus", c !== null && k % o.cols === c); });
      o.onFocus(r, c);
    }
    function cellOf(ev) { var t = ev.target.closest ? ev.target.closest("td.g2l-cell") : null; return t; }
    table.addEventListener("mouseover", function (ev) {
      var td = cellOf(ev);
      if (td && !pinned) focus(+td.getAttribute("data-r"), +td.getAttribute("data-c"));
    });
    table.addEventListener("mouseleave", function () { if (!pinned) focus(null, null); });
    table.addEventListener("click", function (ev) {
      var td = cellOf(ev);
      if (!td) return;
      if (pinned) pinned.classList.remove("g2l-pinned");
      if (pinned === td) { pinned = null; return; }
      pinned = td; td.classList.add("g2l-pinned");
      focus(+td.getAttribute("data-r"), +td.getAttribute("data-c"));
    });
    return { el: wrap, cells: cells, focus: focus };
  }

  function legend(label, from, to, left, right) {
    var box = el("div", "g2l-legend"), ramp = el("span", "g2l-ramp");
    ramp.style.background = "linear-gradient(to right, " + from + ", " + to + ")";
    box.appendChild(el("span", null, label)); box.appendChild(el("span", null, left));
    box.appendChild(ramp); box.appendChild(el("span", null, right));
    return box;
  }

  // ---- logit lens ----------------------------------------------------------------------------
  function mountLens(root, d, api) {
    var T = d.T, k = d.k;
    function at(r, c, j) { var q = (r * T + c) * k + j; return [d.words[d.top[q]], d.probs[q]]; }
    var next = [];
    for (var i = 0; i < T; i++) next.push(i + 1 < T ? d.visible[i + 1] : "?");
    root.appendChild(el("div", "g2l-sub", T + " tokens \u00b7 " + (d.rows - 1) + " blocks \u00b7 each cell: the top next-token prediction " +
      "read from the stream after that many blocks (through ln_f and the unembedding) \u00b7 hover a cell for its top " + k + ", click to pin"));
    var text = textLine(null, d.visible, d.tokens);
    root.appendChild(text.el);
    var info = el("div", "g2l-info", "Hover over a cell.");
    var map = buildMap({
      rows: d.rows, cols: T, rowLabels: d.row_labels, text: d.cell_text,
      top: next, topTitle: "next \u2192", bottom: d.visible, bottomTitle: "input \u2192",
      cell: function (r, c) {
        var top = at(r, c, 0), s = Math.sqrt(top[1]);
        return { text: cut(top[0], 8), colour: mixWhite(INK, s), ink: s > 0.6 ? "#fff" : "#222" };
      },
      onFocus: function (r, c) {
        text.chips.forEach(function (chip, j) { chip.classList.toggle("g2l-focus", j === c); });
        api.focused = r === null ? null : [r, c];
        while (info.firstChild) info.removeChild(info.firstChild);
        if (r === null) { info.textContent = "Hover over a cell."; return; }
        var stage = r === 0 ? "the embeddings" : r === d.rows - 1 ? "the output (after all " + r + " blocks)" : "after " + r + " blocks (h." + r + ".resid_pre)";
        info.appendChild(el("div", null, "position " + c + " " + d.visible[c] + "  \u00b7  " + stage + "  \u00b7  next in the text: " + next[c]));
        var table = el("table", "g2l-topk");
        for (var j = 0; j < k; j++) {
          var p = at(r, c, j), tr = el("tr", p[0] === next[c] ? "g2l-actual" : null), bar = el("span", "g2l-bar");
          bar.style.width = Math.max(1, Math.round(p[1] * 200)) + "px";
          var barCell = el("td"); barCell.appendChild(bar);
          tr.appendChild(el("td", null, String(j + 1))); tr.appendChild(el("td", null, p[0]));
          tr.appendChild(el("td", null, percent(p[1]))); tr.appendChild(barCell);
          table.appendChild(tr);
        }
        info.appendChild(table);
      }
    });
    root.appendChild(map.el);
    root.appendChild(legend("top-1 probability", "#fff", mixWhite(INK, 1), "0", "1 (colour ~ \u221ap)"));
    root.appendChild(info);
    api.focus = map.focus;
    api.info = info;
  }

  // ---- activation patching -------------------------------------------------------------------
  function mountPatching(root, d, api) {
    var byPos = d.by === "position";
    function colour(v) { var t = Math.max(-1, Math.min(1, v / d.limit)); return ramp(t >= 0 ? POS : NEG, Math.abs(t)); }
    root.appendChild(el("div", "g2l-sub", "metric " + d.metric + ": clean " + d.clean_metric.toFixed(4) + ", corrupt " +
      d.corrupt_metric.toFixed(4) + " \u00b7 each cell: " + (d.estimated ? "an estimate from gradients (attribution patching) of " : "") +
      "the corrupt run with " + d.point + " of one layer " +
      (byPos ? "at one position" : "for one head (every position)") + " taken from the clean run \u00b7 hover a cell, click to pin"));
    var clean = textLine("clean", d.clean_visible, d.clean, d.differs), corrupt = textLine("corrupt", d.corrupt_visible, d.corrupt, d.differs);
    root.appendChild(clean.el); root.appendChild(corrupt.el);
    var heads = [];
    for (var h = 0; h < d.cols; h++) heads.push("h" + h);
    var rowLabels = [];
    for (var l = 0; l < d.rows; l++) rowLabels.push(String(l));
    var info = el("div", "g2l-info", "Hover over a cell.");
    var map = buildMap({
      rows: d.rows, cols: d.cols, rowLabels: rowLabels, text: d.cell_text,
      bottom: byPos ? d.clean_visible : heads, bottomTitle: byPos ? "position \u2192" : "head \u2192",
      bottomClass: byPos ? d.differs.map(function (x) { return x ? "g2l-diff" : ""; }) : null,
      cell: function (r, c) {
        var v = d.normalised[r][c];
        return { text: v.toFixed(2).replace("-0.00", "0.00"), colour: colour(v), ink: Math.abs(v / d.limit) > 0.55 ? "#fff" : "#222" };
      },
      onFocus: function (r, c) {
        [clean, corrupt].forEach(function (t) { t.chips.forEach(function (chip, j) { chip.classList.toggle("g2l-focus", byPos && j === c); }); });
        api.focused = r === null ? null : [r, c];
        if (r === null) { info.textContent = "Hover over a cell."; return; }
        var where = byPos ? "position " + c + " " + d.clean_visible[c] + (d.differs[c] ? " (corrupt: " + d.corrupt_visible[c] + ")" : "") : "head " + c;
        info.textContent = "layer " + r + ", " + where + "  \u00b7  h." + r + "." + d.point + " restored\n" +
          "metric " + (d.estimated ? "(estimated) " : "") + d.scores[r][c].toFixed(4) + "  \u00b7  normalised " + d.normalised[r][c].toFixed(3) + "  (0 = corrupt run, 1 = clean run)";
      }
    });
    root.appendChild(map.el);
    root.appendChild(legend("normalised", ramp(NEG, 1) + ", " + ramp(NEG, 0.5) + ", #f7f7f7, " + ramp(POS, 0.5), ramp(POS, 1), "\u2212" + d.limit.toFixed(2), "+" + d.limit.toFixed(2) + " (1 = clean)"));
    root.appendChild(info);
    api.focus = map.focus;
    api.info = info;
  }

  function mount(root, data) {
    var api = { root: root, data: data, focused: null };
    while (root.firstChild) root.removeChild(root.firstChild);
    if (document.body && document.body.getAttribute("data-g2l-page") === "1") document.title = data.title;
    root.appendChild(el("h2", null, data.title));
    if (data.kind === "lens") mountLens(root, data, api); else mountPatching(root, data, api);
    root.gpt2labInterp = api;
    root.setAttribute("data-ready", "1");
    return api;
  }

  return { mount: mount, version: 1 };
})();
