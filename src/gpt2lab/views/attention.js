/* gpt2lab attention view.
 *
 *   GPT2LabAttention.mount(element, data) -> api
 *
 * Builds the whole view inside `element` from the JSON written by gpt2lab/views/html.py: controls
 * (layer, head / all heads coloured / mean), the text as hoverable tokens, the attention matrix on a
 * canvas, a model view of every head, the head-statistics table and PNG export.
 *
 * No dependencies and no network. Token text is data: it reaches the page only through textContent,
 * element properties and canvas fillText, never through innerHTML, so a prompt holding markup shows
 * as text and never runs.
 *
 * Data layout (sparse): row r = (layer * H + head) * T + query owns keys[offsets[r] .. offsets[r+1]]
 * (positions, ascending) and weights[...] (uint8, weight * 255).
 */
window.GPT2LabAttention = window.GPT2LabAttention || (function () {
  "use strict";

  var INK = [8, 69, 148];      // darkest matrix colour (a weight of 1)
  var TO = [31, 119, 180];     // "attends to": blue
  var FROM = [230, 110, 0];    // "attended by": orange
  var SHARE_COLUMNS = { entropy: 1, sink: 1, prev_token: 1, self_token: 1, induction: 1 };

  function decode(b64, Type) {
    var bin = atob(b64), n = bin.length, bytes = new Uint8Array(n);
    for (var i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer, 0, n / Type.BYTES_PER_ELEMENT);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function headColour(h, H) {  // evenly spaced hues, fixed saturation/lightness -> [r, g, b]
    var hue = (h / Math.max(H, 1)) * 360, s = 0.75, l = 0.45;
    var c = (1 - Math.abs(2 * l - 1)) * s, x = c * (1 - Math.abs(((hue / 60) % 2) - 1)), m = l - c / 2, rgb;
    if (hue < 60) rgb = [c, x, 0]; else if (hue < 120) rgb = [x, c, 0]; else if (hue < 180) rgb = [0, c, x];
    else if (hue < 240) rgb = [0, x, c]; else if (hue < 300) rgb = [x, 0, c]; else rgb = [c, 0, x];
    return [Math.round((rgb[0] + m) * 255), Math.round((rgb[1] + m) * 255), Math.round((rgb[2] + m) * 255)];
  }

  function rgba(c, a) { return "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + a.toFixed(3) + ")"; }

  function cut(s, n) { return s.length <= n ? s : s.slice(0, n - 1) + "\u2026"; }

  function mount(root, data) {
    var started = (window.performance && performance.now) ? performance.now() : Date.now();
    var L = data.n_layer, H = data.n_head, T = data.T;
    var off = decode(data.offsets, Uint32Array);
    var keys = decode(data.keys, data.key_bytes === 4 ? Uint32Array : Uint16Array);
    var wts = decode(data.weights, Uint8Array);
    var colours = [];
    for (var hc = 0; hc < H; hc++) colours.push(headColour(hc, H));
    var state = { layer: data.layer || 0, head: data.head === undefined ? 0 : data.head, focus: -1, pinned: false };
    var api = { root: root, data: data, state: state, lastExport: null, drawCount: 0 };

    while (root.firstChild) root.removeChild(root.firstChild);
    if (document.body && document.body.getAttribute("data-g2l-page") === "1") document.title = data.title;

    // ---- data access ----------------------------------------------------------------------
    function rowIndex(l, h, i) { return (l * H + h) * T + i; }
    function heads() {
      if (state.head === "all" || state.head === "mean") { var a = []; for (var h = 0; h < H; h++) a.push(h); return a; }
      return [state.head];
    }
    // attention of query i over keys, summed over `hs` with `scale`, added into out (Float32Array T)
    function addRow(l, h, i, out, scale) {
      var r = rowIndex(l, h, i);
      for (var e = off[r], end = off[r + 1]; e < end; e++) out[keys[e]] += wts[e] * scale / 255;
    }
    function weightAt(l, h, i, j) {  // weight of key j in row i (0 when not kept)
      var r = rowIndex(l, h, i);
      for (var e = off[r], end = off[r + 1]; e < end; e++) { if (keys[e] === j) return wts[e] / 255; if (keys[e] > j) break; }
      return 0;
    }
    function rowOf(i, h) {  // (T) weights of query i: one head, or the mean of the selected heads
      var out = new Float32Array(T), hs = h === undefined ? heads() : [h];
      for (var k = 0; k < hs.length; k++) addRow(state.layer, hs[k], i, out, 1 / hs.length);
      return out;
    }
    function colOf(i, h) {  // (T) how much each query attends to key i
      var out = new Float32Array(T), hs = h === undefined ? heads() : [h];
      for (var k = 0; k < hs.length; k++)
        for (var j = i; j < T; j++) out[j] += weightAt(state.layer, hs[k], j, i) / hs.length;
      return out;
    }

    // ---- layout -------------------------------------------------------------------------------
    root.appendChild(el("h2", null, data.title));
    var sub = (T + " tokens \u00b7 " + L + " layers \u00d7 " + H + " heads \u00b7 " +
      (data.full_rows ? "every attention weight kept" : "the " + data.top_k + " heaviest keys kept per token") +
      " \u00b7 hover a token to see what it attends to (blue) and what attends to it (orange); click to pin");
    root.appendChild(el("div", "g2l-sub", sub));

    var controls = el("div", "g2l-controls");
    var layerLabel = el("label", null, "Layer "), layerSel = el("select", "g2l-layer");
    for (var l = 0; l < L; l++) { var o = el("option", null, "layer " + l); o.value = String(l); layerSel.appendChild(o); }
    layerLabel.appendChild(layerSel);
    var headLabel = el("label", null, "Head "), headSel = el("select", "g2l-head");
    for (var h = 0; h < H; h++) { var oh = el("option", null, "head " + h); oh.value = String(h); headSel.appendChild(oh); }
    var oAll = el("option", null, "all heads (coloured)"); oAll.value = "all"; headSel.appendChild(oAll);
    var oMean = el("option", null, "mean of heads"); oMean.value = "mean"; headSel.appendChild(oMean);
    headLabel.appendChild(headSel);
    var exportBtn = el("button", "g2l-export", "Export PNG");
    exportBtn.type = "button";
    exportBtn.title = "Save the attention matrix as a PNG image";
    var exportGridBtn = el("button", "g2l-export-grid", "Export model view PNG");
    exportGridBtn.type = "button";
    var legend = el("span", "g2l-legend");
    controls.appendChild(layerLabel); controls.appendChild(headLabel);
    controls.appendChild(exportBtn); controls.appendChild(exportGridBtn); controls.appendChild(legend);
    root.appendChild(controls);

    var main = el("div", "g2l-main");
    var textBox = el("div", "g2l-text");
    var spans = [];
    for (var t = 0; t < T; t++) {
      var sp = el("span", "g2l-tok", data.visible[t]);
      sp.setAttribute("data-i", String(t));
      sp.title = "#" + t + "  id " + data.ids[t] + "  " + JSON.stringify(data.tokens[t]);
      spans.push(sp);
      textBox.appendChild(sp);
      if (data.tokens[t].indexOf("\n") >= 0) textBox.appendChild(el("br"));
    }
    var matrixWrap = el("div", "g2l-matrix-wrap");
    var stack = el("div", "g2l-stack");
    var cell = Math.max(1, Math.min(32, Math.floor(640 / T)));
    var margin = cell >= 10 ? 100 : 0;  // room for token labels when cells are big enough to read
    var side = margin + T * cell;
    var canvas = el("canvas", "g2l-matrix"), overlay = el("canvas", "g2l-overlay");
    canvas.width = overlay.width = side;
    canvas.height = overlay.height = side;
    stack.appendChild(canvas); stack.appendChild(overlay);
    var info = el("div", "g2l-info", "Hover over a token or the matrix (rows: the token attending; columns: the token attended to).");
    matrixWrap.appendChild(stack); matrixWrap.appendChild(info);
    main.appendChild(textBox); main.appendChild(matrixWrap);
    root.appendChild(main);

    root.appendChild(el("h3", null, "Model view: every head (click one to select it)"));
    var grid = el("div", "g2l-grid");
    grid.style.gridTemplateColumns = "auto repeat(" + H + ", 68px)";
    root.appendChild(grid);

    root.appendChild(el("h3", null, "Head statistics (click a row to select the head; click a header to sort)"));
    var statsWrap = el("div", "g2l-stats-wrap");
    var table = el("table", "g2l-stats");
    statsWrap.appendChild(table);
    root.appendChild(statsWrap);
    if (data.stats.induction_period)
      root.appendChild(el("div", "g2l-note", "induction: measured on random tokens of period " + data.stats.induction_period +
        " repeated twice, not on this text; shares are means over query tokens 1..T-1."));

    // ---- the matrix ---------------------------------------------------------------------------
    var off2 = document.createElement("canvas");
    off2.width = T; off2.height = T;
    function drawMatrix() {
      var ctx2 = off2.getContext("2d"), img = ctx2.createImageData(T, T), px = img.data, n = T * T, i, e, end, j;
      var hs = heads(), all = state.head === "all";
      if (all) {  // each cell: the head colours blended by weight, as dark as the strongest head
        var sum = new Float32Array(n), mix = new Float32Array(n * 3), peak = new Float32Array(n);
        for (var k = 0; k < hs.length; k++) {
          var c = colours[hs[k]];
          for (i = 0; i < T; i++) {
            var r = rowIndex(state.layer, hs[k], i);
            for (e = off[r], end = off[r + 1]; e < end; e++) {
              var v = wts[e] / 255, q = i * T + keys[e];
              sum[q] += v; mix[3 * q] += v * c[0]; mix[3 * q + 1] += v * c[1]; mix[3 * q + 2] += v * c[2];
              if (v > peak[q]) peak[q] = v;
            }
          }
        }
        for (j = 0; j < n; j++) {
          var a = Math.sqrt(peak[j]), tot = sum[j] || 1;
          px[4 * j] = Math.round(255 + (mix[3 * j] / tot - 255) * a); px[4 * j + 1] = Math.round(255 + (mix[3 * j + 1] / tot - 255) * a);
          px[4 * j + 2] = Math.round(255 + (mix[3 * j + 2] / tot - 255) * a); px[4 * j + 3] = 255;
        }
      } else {
        var acc = new Float32Array(n);
        for (var k2 = 0; k2 < hs.length; k2++)
          for (i = 0; i < T; i++) {
            var r2 = rowIndex(state.layer, hs[k2], i);
            for (e = off[r2], end = off[r2 + 1]; e < end; e++) acc[i * T + keys[e]] += wts[e] / 255 / hs.length;
          }
        for (j = 0; j < n; j++) {
          var s = Math.sqrt(Math.min(1, acc[j]));  // sqrt: small weights stay visible
          px[4 * j] = Math.round(255 + (INK[0] - 255) * s); px[4 * j + 1] = Math.round(255 + (INK[1] - 255) * s);
          px[4 * j + 2] = Math.round(255 + (INK[2] - 255) * s); px[4 * j + 3] = 255;
        }
      }
      ctx2.putImageData(img, 0, 0);
      var ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, side, side);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off2, margin, margin, T * cell, T * cell);
      if (margin) {
        ctx.fillStyle = "#333"; ctx.font = Math.min(12, cell - 1) + "px monospace"; ctx.textBaseline = "middle";
        ctx.textAlign = "right";
        for (i = 0; i < T; i++) ctx.fillText(cut(data.visible[i], 12), margin - 4, margin + (i + 0.5) * cell);
        ctx.save(); ctx.translate(margin, margin); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left";
        for (i = 0; i < T; i++) ctx.fillText(cut(data.visible[i], 12), 4, (i + 0.5) * cell);
        ctx.restore();
        ctx.strokeStyle = "rgba(0,0,0,0.06)"; ctx.lineWidth = 1; ctx.beginPath();
        for (i = 0; i <= T; i++) {
          ctx.moveTo(margin + i * cell + 0.5, margin); ctx.lineTo(margin + i * cell + 0.5, side);
          ctx.moveTo(margin, margin + i * cell + 0.5); ctx.lineTo(side, margin + i * cell + 0.5);
        }
        ctx.stroke();
      }
      api.drawCount++;
      canvas.setAttribute("data-draws", String(api.drawCount));
    }

    function drawOverlay() {
      var ctx = overlay.getContext("2d"), f = state.focus;
      ctx.clearRect(0, 0, side, side);
      if (f < 0) return;
      var y = margin + f * cell, x = margin + f * cell, band = Math.max(cell, 3);
      ctx.fillStyle = "rgba(255, 200, 0, 0.28)";                 // the focused token's row: what it attends to
      ctx.fillRect(margin, y - (band - cell) / 2, T * cell, band);
      ctx.fillStyle = "rgba(230, 110, 0, 0.16)";                 // its column: what attends to it
      ctx.fillRect(x - (band - cell) / 2, margin, band, T * cell);
      ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
      ctx.strokeRect(margin + 1, y - (band - cell) / 2, T * cell - 2, band);
    }

    // ---- token colours and the info line -------------------------------------------------------
    function describe(list) {
      return list.map(function (p) { return p[0] + " " + cut(data.visible[p[0]], 14) + " " + p[1].toFixed(2); }).join("  \u00b7  ");
    }
    function topOf(arr, k) {
      var idx = [];
      for (var i = 0; i < arr.length; i++) if (arr[i] > 0) idx.push([i, arr[i]]);
      idx.sort(function (a, b) { return b[1] - a[1]; });
      return idx.slice(0, k);
    }
    function headName() { return state.head === "all" ? "all heads" : state.head === "mean" ? "mean of heads" : "head " + state.head; }

    function paintTokens() {
      var f = state.focus, j;
      for (j = 0; j < T; j++) {
        spans[j].classList.toggle("g2l-focus", j === f);
        spans[j].classList.toggle("g2l-pinned", j === f && state.pinned);
        spans[j].style.background = ""; spans[j].style.boxShadow = "";
      }
      if (f < 0) { info.textContent = "Hover over a token or the matrix (rows: the token attending; columns: the token attended to)."; return; }
      var to = rowOf(f), from = colOf(f);
      if (state.head === "all") {  // blend head colours by how much each head attends from f to j
        var per = [];
        for (var h = 0; h < H; h++) per.push(rowOf(f, h));
        for (j = 0; j <= f; j++) {
          var tot = 0, r = 0, g = 0, b = 0;
          for (var k = 0; k < H; k++) { var w = per[k][j]; tot += w; r += w * colours[k][0]; g += w * colours[k][1]; b += w * colours[k][2]; }
          if (tot > 0) spans[j].style.background = rgba([Math.round(r / tot), Math.round(g / tot), Math.round(b / tot)], Math.min(0.9, Math.sqrt(tot / H)));
        }
      } else {
        for (j = 0; j <= f; j++) if (to[j] > 0) spans[j].style.background = rgba(TO, Math.min(0.85, Math.sqrt(to[j])));
      }
      for (j = f; j < T; j++) if (from[j] > 0) spans[j].style.boxShadow = "inset 0 -4px 0 " + rgba(FROM, Math.min(1, 0.15 + Math.sqrt(from[j])));
      info.textContent = "token " + f + " " + data.visible[f] + "  (id " + data.ids[f] + ")  \u2014 layer " + state.layer + ", " + headName() +
        "\nattends to:   " + describe(topOf(to, 6)) + "\nattended by:  " + describe(topOf(from, 6));
    }

    function setFocus(i, pin) {
      if (pin !== undefined) state.pinned = pin;
      state.focus = i;
      drawOverlay();
      paintTokens();
    }

    // ---- model view ---------------------------------------------------------------------------
    var thumbs = [], S = Math.min(T, 64);
    var rowLab0 = el("div"); grid.appendChild(rowLab0);
    for (h = 0; h < H; h++) grid.appendChild(el("div", "g2l-rowlabel", "h" + h)).style.textAlign = "center";
    for (l = 0; l < L; l++) {
      grid.appendChild(el("div", "g2l-rowlabel", "L" + l));
      for (h = 0; h < H; h++) {
        var box = el("div", "g2l-thumb"), tc = el("canvas");
        tc.width = tc.height = S;
        var pool = new Float32Array(S * S);
        for (var i = 0; i < T; i++) {
          var r = rowIndex(l, h, i), bi = Math.floor(i * S / T) * S;
          for (var e = off[r], end = off[r + 1]; e < end; e++) {
            var q = bi + Math.floor(keys[e] * S / T), w = wts[e] / 255;
            if (w > pool[q]) pool[q] = w;  // max-pool: a sharp pattern survives the shrinking
          }
        }
        var tctx = tc.getContext("2d"), im = tctx.createImageData(S, S);
        for (var p = 0; p < S * S; p++) {
          var sv = Math.sqrt(pool[p]);
          im.data[4 * p] = Math.round(255 + (INK[0] - 255) * sv); im.data[4 * p + 1] = Math.round(255 + (INK[1] - 255) * sv);
          im.data[4 * p + 2] = Math.round(255 + (INK[2] - 255) * sv); im.data[4 * p + 3] = 255;
        }
        tctx.putImageData(im, 0, 0);
        box.appendChild(tc);
        box.title = "layer " + l + ", head " + h;
        box.setAttribute("data-layer", String(l)); box.setAttribute("data-head", String(h));
        (function (l2, h2) { box.addEventListener("click", function () { select(l2, h2); }); })(l, h);
        grid.appendChild(box);
        thumbs.push(box);
      }
    }

    // ---- statistics table ---------------------------------------------------------------------
    var cols = ["layer", "head"].concat(data.stats.columns, ["label"]);
    var rows = data.stats.rows.slice(), sortCol = -1, sortDir = 1, trs = [];
    function buildTable() {
      while (table.firstChild) table.removeChild(table.firstChild);
      var thead = el("thead"), hr = el("tr");
      cols.forEach(function (c, ci) {
        var th = el("th", null, c.replace("_", " ") + (ci === sortCol ? (sortDir > 0 ? " \u25b2" : " \u25bc") : ""));
        th.title = (data.stats.descriptions && data.stats.descriptions[c]) || c;
        th.addEventListener("click", function () {
          if (sortCol === ci) sortDir = -sortDir; else { sortCol = ci; sortDir = ci < 2 ? 1 : -1; }
          rows.sort(function (a, b) { return (a[ci] < b[ci] ? -1 : a[ci] > b[ci] ? 1 : 0) * sortDir; });
          buildTable();
        });
        hr.appendChild(th);
      });
      thead.appendChild(hr); table.appendChild(thead);
      var tbody = el("tbody");
      trs = [];
      rows.forEach(function (row) {
        var tr = el("tr");
        row.forEach(function (v, ci) {
          var c = cols[ci], td = el("td", c === "label" ? "g2l-label" : null, typeof v === "number" && ci >= 2 ? v.toFixed(3) : v);
          if (SHARE_COLUMNS[c] && typeof v === "number") td.style.background = rgba(TO, Math.max(0, Math.min(1, v)) * 0.4);
          tr.appendChild(td);
        });
        tr.setAttribute("data-layer", String(row[0])); tr.setAttribute("data-head", String(row[1]));
        tr.addEventListener("click", function () { select(row[0], row[1]); });
        tbody.appendChild(tr); trs.push(tr);
      });
      table.appendChild(tbody);
      markSelection();
    }

    // ---- selection ----------------------------------------------------------------------------
    function markSelection() {
      thumbs.forEach(function (b) {
        var bl = +b.getAttribute("data-layer"), bh = +b.getAttribute("data-head");
        b.classList.toggle("g2l-selected", bl === state.layer && bh === state.head);
        b.classList.toggle("g2l-inlayer", bl === state.layer && typeof state.head !== "number");
      });
      trs.forEach(function (tr) {
        tr.classList.toggle("g2l-selected", +tr.getAttribute("data-layer") === state.layer && +tr.getAttribute("data-head") === state.head);
      });
    }
    function paintLegend() {
      while (legend.firstChild) legend.removeChild(legend.firstChild);
      if (state.head === "all") {
        legend.appendChild(el("span", null, "heads:"));
        for (var h = 0; h < H; h++) {
          var item = el("span"), sw = el("span", "g2l-swatch");
          sw.style.background = rgba(colours[h], 1);
          item.appendChild(sw); item.appendChild(document.createTextNode(String(h)));
          legend.appendChild(item);
        }
      } else {
        var a = el("span"), s1 = el("span", "g2l-swatch"); s1.style.background = rgba(TO, 0.8);
        a.appendChild(s1); a.appendChild(document.createTextNode("attends to"));
        var b = el("span"), s2 = el("span", "g2l-swatch"); s2.style.background = rgba(FROM, 0.9);
        b.appendChild(s2); b.appendChild(document.createTextNode("attended by (underline)"));
        legend.appendChild(a); legend.appendChild(b);
        legend.appendChild(el("span", null, "\u00b7 matrix colour = \u221aweight"));
      }
    }
    function select(l, h) {
      state.layer = +l;
      state.head = (h === "all" || h === "mean") ? h : +h;
      layerSel.value = String(state.layer);
      headSel.value = String(state.head);
      drawMatrix(); drawOverlay(); paintTokens(); paintLegend(); markSelection();
    }

    // ---- export -------------------------------------------------------------------------------
    function download(canvasEl, name) {
      // a Blob URL, not a data: URL: Chrome refuses to navigate to long data: URLs
      canvasEl.toBlob(function (blob) {
        var url = URL.createObjectURL(blob), a = el("a");
        a.href = url; a.download = name; a.style.display = "none";
        root.appendChild(a); a.click(); root.removeChild(a);
        setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      }, "image/png");
    }
    function exportPNG() {
      var pad = 10, head = 30, out = el("canvas");
      var legendRow = state.head === "all" ? 24 : 0;  // the head colours, so the picture reads without the page
      out.width = Math.max(side, 420) + 2 * pad; out.height = side + head + 2 * pad + legendRow;
      var ctx = out.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, out.width, out.height);
      ctx.fillStyle = "#222"; ctx.font = "14px sans-serif"; ctx.textBaseline = "middle";
      ctx.fillText(cut((data.model ? data.model + ": " : "") + "layer " + state.layer + ", " + headName() + " (" + T + " tokens)", 90), pad, pad + head / 2);
      if (legendRow) {
        var lx = pad, ly = pad + head + side + 14;
        ctx.font = "12px sans-serif";
        for (var hh = 0; hh < H && lx < out.width - 40; hh++) {
          ctx.fillStyle = rgba(colours[hh], 1); ctx.fillRect(lx, ly - 5, 10, 10);
          ctx.fillStyle = "#222"; ctx.fillText("h" + hh, lx + 13, ly); lx += 44;
        }
      }
      ctx.drawImage(canvas, pad, pad + head);
      ctx.drawImage(overlay, pad, pad + head);
      api.lastExport = out.toDataURL("image/png");
      return out;
    }
    function exportGridPNG() {
      var cellPx = 64, gap = 4, lab = 30, out = el("canvas");
      out.width = lab + H * (cellPx + gap); out.height = lab + L * (cellPx + gap);
      var ctx = out.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, out.width, out.height);
      ctx.imageSmoothingEnabled = false; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
      ctx.textAlign = "center"; ctx.textBaseline = "middle";
      for (var h = 0; h < H; h++) ctx.fillText("h" + h, lab + h * (cellPx + gap) + cellPx / 2, lab / 2);
      for (var l = 0; l < L; l++) {
        ctx.fillText("L" + l, lab / 2, lab + l * (cellPx + gap) + cellPx / 2);
        for (h = 0; h < H; h++) ctx.drawImage(thumbs[l * H + h].firstChild, lab + h * (cellPx + gap), lab + l * (cellPx + gap), cellPx, cellPx);
      }
      api.lastExport = out.toDataURL("image/png");
      return out;
    }
    function headTag() { return typeof state.head === "number" ? "h" + state.head : state.head; }

    // ---- events -------------------------------------------------------------------------------
    layerSel.addEventListener("change", function () { select(layerSel.value, state.head); });
    headSel.addEventListener("change", function () { select(state.layer, headSel.value); });
    exportBtn.addEventListener("click", function () { download(exportPNG(), "attention-L" + state.layer + "-" + headTag() + ".png"); });
    exportGridBtn.addEventListener("click", function () { download(exportGridPNG(), "attention-all-heads.png"); });
    textBox.addEventListener("mouseover", function (ev) {
      var t = ev.target.closest ? ev.target.closest(".g2l-tok") : null;
      if (t && !state.pinned) setFocus(+t.getAttribute("data-i"));
    });
    textBox.addEventListener("mouseleave", function () { if (!state.pinned) setFocus(-1); });
    textBox.addEventListener("click", function (ev) {
      var t = ev.target.closest ? ev.target.closest(".g2l-tok") : null;
      if (!t) return;
      var i = +t.getAttribute("data-i");
      if (state.pinned && state.focus === i) setFocus(-1, false); else setFocus(i, true);
    });
    function cellAt(ev) {
      var rect = canvas.getBoundingClientRect(), sx = canvas.width / rect.width, sy = canvas.height / rect.height;
      var x = (ev.clientX - rect.left) * sx - margin, y = (ev.clientY - rect.top) * sy - margin;
      if (x < 0 || y < 0) return null;
      var i = Math.floor(y / cell), j = Math.floor(x / cell);
      return i < T && j < T ? [i, j] : null;
    }
    canvas.addEventListener("mousemove", function (ev) {
      var c = cellAt(ev);
      if (!c || state.pinned) return;
      setFocus(c[0]);
      var w = rowOf(c[0])[c[1]];
      info.textContent += "\nunder the pointer: " + c[0] + " " + cut(data.visible[c[0]], 14) + " \u2192 " + c[1] + " " +
        cut(data.visible[c[1]], 14) + ": " + (c[1] > c[0] ? "masked (the future)" : w.toFixed(3));
    });
    canvas.addEventListener("mouseleave", function () { if (!state.pinned) setFocus(-1); });
    canvas.addEventListener("click", function (ev) {
      var c = cellAt(ev);
      if (c) { if (state.pinned && state.focus === c[0]) setFocus(-1, false); else setFocus(c[0], true); }
    });

    api.select = select;
    api.setFocus = setFocus;
    api.exportPNG = function () { exportPNG(); return api.lastExport; };          // data: URL of the PNG
    api.exportGridPNG = function () { exportGridPNG(); return api.lastExport; };
    api.rowOf = rowOf;
    buildTable();
    select(state.layer, state.head);
    root.gpt2labAttention = api;
    api.mountMs = ((window.performance && performance.now) ? performance.now() : Date.now()) - started;
    root.setAttribute("data-ready", "1");
    return api;
  }

  return { mount: mount, version: 1 };
})();
