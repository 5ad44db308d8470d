// The circuit page's own script (sfc-relp): pan/zoom, hover, click, threshold slider, search.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("circuit-data").textContent);
  var svg = document.querySelector("#graph svg");
  var graphBox = document.getElementById("graph");
  var panel = document.getElementById("panel");
  var tooltip = document.getElementById("tooltip");
  var slider = document.getElementById("threshold");
  var nodeEls = data.nodes.map(function (_, i) { return document.getElementById("node_" + i); });
  var edgeEls = data.edges.map(function (_, j) { return document.getElementById("edge_" + j); });
  var maxEffect = Math.max.apply(null, [0].concat(data.nodes.map(function (n) { return Math.abs(n.effect || 0); })));
  var maxWeight = Math.max.apply(null, [0].concat(data.edges.map(function (e) { return Math.abs(e.weight); })));
  var selected = null;

  function fmt(x) { return x === null || x === undefined ? "n/a" : Number(x).toPrecision(4); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  // header metadata
  var meta = data.metadata, metaBox = document.getElementById("meta");
  [["model", meta.model], ["dataset", meta.dataset], ["split", meta.split], ["method", meta.method],
   ["examples", meta.n_examples], ["aggregation", meta.aggregation], ["node threshold", meta.node_threshold],
   ["edge threshold", meta.edge_threshold], ["faithfulness", meta.faithfulness],
   ["completeness", meta.completeness], ["layout", data.layout],
   ["feature corpus", data.features_metadata ? data.features_metadata.corpus + " (" +
     data.features_metadata.n_documents + " docs)" : "none"]].forEach(function (kv) {
    if (kv[1] === undefined || kv[1] === null) { return; }
    var s = el("span"); s.appendChild(el("b", "", kv[0] + ": ")); s.appendChild(document.createTextNode(String(kv[1])));
    metaBox.appendChild(s);
  });

  // pan and zoom through the viewBox
  svg.removeAttribute("width"); svg.removeAttribute("height");
  var vb0 = svg.viewBox.baseVal, home = [vb0.x, vb0.y, vb0.width, vb0.height], view = home.slice();
  function setView(v) { view = v; svg.setAttribute("viewBox", v.join(" ")); }
  function toSvg(clientX, clientY) {
    var p = svg.createSVGPoint(); p.x = clientX; p.y = clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  graphBox.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var k = ev.deltaY > 0 ? 1.15 : 1 / 1.15, p = toSvg(ev.clientX, ev.clientY);
    setView([p.x - (p.x - view[0]) * k, p.y - (p.y - view[1]) * k, view[2] * k, view[3] * k]);
  }, { passive: false });
  var drag = null;
  graphBox.addEventListener("mousedown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, view: view.slice(), moved: false };
    graphBox.classList.add("dragging");
  });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    var r = svg.getBoundingClientRect(), s = Math.max(view[2] / r.width, view[3] / r.height);
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; }
    setView([drag.view[0] - dx * s, drag.view[1] - dy * s, view[2], view[3]]);
  });
  window.addEventListener("mouseup", function () {
    graphBox.classList.remove("dragging");
    setTimeout(function () { drag = null; }, 0);
  });
  document.getElementById("reset").addEventListener("click", function () { setView(home.slice()); });

  // hover
  function describe(n) {
    var s = n.id + (n.label ? " \u2014 " + n.label : "") + "\neffect " + fmt(n.effect);
    if (n.error) { s += " (SAE error node)"; }
    return s;
  }
  nodeEls.forEach(function (g, i) {
    if (!g) { return; }
    g.setAttribute("data-node", data.nodes[i].id);
    var title = g.querySelector("title");
    if (title) { title.textContent = describe(data.nodes[i]); }
    g.addEventListener("mouseenter", function () { tooltip.textContent = describe(data.nodes[i]); tooltip.hidden = false; });
    g.addEventListener("mousemove", function (ev) {
      tooltip.style.left = (ev.clientX + 14) + "px"; tooltip.style.top = (ev.clientY + 10) + "px";
    });
    g.addEventListener("mouseleave", function () { tooltip.hidden = true; });
    g.addEventListener("click", function (ev) {
      ev.stopPropagation();
      if (drag && drag.moved) { return; }
      select(i);
    });
  });
  edgeEls.forEach(function (g, j) {
    if (!g) { return; }
    var e = data.edges[j];
    g.setAttribute("data-edge", data.nodes[e.source].id + "->" + data.nodes[e.target].id);
    var title = g.querySelector("title");
    if (title) { title.textContent = data.nodes[e.source].id + " \u2192 " + data.nodes[e.target].id + ": " + fmt(e.weight); }
  });
  graphBox.addEventListener("click", function () { if (!drag || !drag.moved) { select(null); } });

  // click: contexts, logit lens, highlighted edges
  function tokenSpan(text, act, max, isMax) {
    var s = el("span", "tok" + (isMax ? " max" : ""), text);
    var a = max > 0 ? Math.max(0, act) / max : 0;
    s.style.background = "rgba(255, 140, 0, " + (0.85 * a).toFixed(3) + ")";
    s.title = fmt(act);
    return s;
  }
  function showPanel(i) {
    panel.innerHTML = "";
    if (i === null) { panel.appendChild(el("p", "hint", "Click a node for its top contexts.")); return; }
    var n = data.nodes[i];
    panel.appendChild(el("h2", "", n.id));
    if (n.label) { panel.appendChild(el("p", "label", n.label)); }
    panel.appendChild(el("p", "", "effect " + fmt(n.effect) + (n.error ? " \u2014 SAE error node" : "")));
    var f = n.feature ? data.features[n.feature] : null;
    if (!f) {
      panel.appendChild(el("p", "hint", n.error || n.id === "y" ? "No feature summary for this node." :
        "No feature summary: run `sfc-relp features` and pass --features."));
      return;
    }
    panel.appendChild(el("p", "", "density " + (100 * f.density).toFixed(3) + "% of tokens, max activation " + fmt(f.max_activation)));
    panel.appendChild(el("h3", "", "top contexts"));
    var box = el("div", "contexts");
    if (!f.contexts.length) { box.appendChild(el("p", "hint", "never active on the corpus")); }
    f.contexts.forEach(function (c) {
      var row = el("div", "context");
      row.appendChild(el("span", "value", fmt(c.activation)));
      c.tokens.forEach(function (t, k) { row.appendChild(tokenSpan(t, c.activations[k], f.max_activation, k === c.max_index)); });
      box.appendChild(row);
    });
    panel.appendChild(box);
    panel.appendChild(el("h3", "", "logit lens: promoted / suppressed"));
    var lists = el("div", "logits"), up = el("ol", "up"), down = el("ol", "down");
    f.promoted.forEach(function (p) { up.appendChild(el("li", "", JSON.stringify(p.token) + " " + fmt(p.logit))); });
    f.suppressed.forEach(function (p) { down.appendChild(el("li", "", JSON.stringify(p.token) + " " + fmt(p.logit))); });
    lists.appendChild(up); lists.appendChild(down); panel.appendChild(lists);
  }
  function select(i) {
    selected = i;
    nodeEls.forEach(function (g) { if (g) { g.classList.remove("selected", "lit"); } });
    edgeEls.forEach(function (g) { if (g) { g.classList.remove("lit"); } });
    svg.classList.toggle("focus", i !== null);
    if (i !== null) {
      nodeEls[i].classList.add("selected", "lit");
      data.edges.forEach(function (e, j) {
        if (e.source === i || e.target === i) {
          edgeEls[j].classList.add("lit");
          nodeEls[e.source].classList.add("lit"); nodeEls[e.target].classList.add("lit");
        }
      });
    }
    showPanel(i);
  }

  // threshold slider: a fraction of the largest |effect| (nodes) and |weight| (edges)
  function applyThreshold() {
    var frac = Number(slider.value) / 1000, tn = frac * maxEffect, te = frac * maxWeight;
    var shownNodes = 0, shownEdges = 0;
    var visible = data.nodes.map(function (n, i) {
      var keep = n.effect === null || n.effect === undefined || Math.abs(n.effect) >= tn;
      nodeEls[i].classList.toggle("filtered", !keep);
      if (keep) { shownNodes += 1; }
      return keep;
    });
    data.edges.forEach(function (e, j) {
      var keep = visible[e.source] && visible[e.target] && Math.abs(e.weight) >= te;
      edgeEls[j].classList.toggle("filtered", !keep);
      if (keep) { shownEdges += 1; }
    });
    document.getElementById("threshold-value").textContent = "|effect| \u2265 " + fmt(tn) + ", |weight| \u2265 " + fmt(te);
    document.getElementById("counts").textContent = shownNodes + " / " + data.nodes.length + " nodes, " +
      shownEdges + " / " + data.edges.length + " edges";
  }
  slider.addEventListener("input", applyThreshold);
  applyThreshold();

  // search: first node whose id or label contains the text; select it and centre on it
  var search = document.getElementById("search"), result = document.getElementById("search-result");
  function find() {
    var q = search.value.trim().toLowerCase();
    nodeEls.forEach(function (g) { if (g) { g.classList.remove("found"); } });
    if (!q) { result.textContent = ""; return; }
    var hit = -1;
    data.nodes.forEach(function (n, i) {
      if (hit < 0 && (n.id.toLowerCase().indexOf(q) >= 0 || (n.label || "").toLowerCase().indexOf(q) >= 0)) { hit = i; }
    });
    if (hit < 0) { result.textContent = "no match"; return; }
    result.textContent = data.nodes[hit].id;
    nodeEls[hit].classList.add("found");
    var r = nodeEls[hit].getBoundingClientRect(), c = toSvg(r.left + r.width / 2, r.top + r.height / 2);
    setView([c.x - view[2] / 2, c.y - view[3] / 2, view[2], view[3]]);
    select(hit);
  }
  search.addEventListener("change", find);
  search.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { find(); } });
  window.sfcRelpPage = { select: select, find: find, applyThreshold: applyThreshold };
}());
