"""One self-contained, offline HTML page for a circuit: graphviz SVG + the project's own script.

The page holds the circuit's SVG (laid out by graphviz's `dot`: one row per submodule in
forward order; a layered layout computed here when `dot` is missing, and for per-position
circuits, where positions are aligned columns), the circuit and feature summaries as JSON in a
`<script type="application/json">`, and `page/view.js` + `page/view.css` inlined. Nothing is
fetched: no CDN, no server, no external URL.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import networkx as nx

from .annotations import label_for
from .circuit import OUTPUT
from .errors import UserError
from .files import atomic_write
from .plotting import _colour

PAGE_DIR = Path(__file__).resolve().parent / "page"
ROW_GAP, COL_GAP, NODE_W, NODE_H = 90, 120, 104, 34


def forward_rows(graph: nx.DiGraph) -> list[str]:
    """Submodules present in the circuit, in forward order (embed first), then 'y'."""
    kind = {"embed": -1, "attn": 0, "mlp": 1, "resid": 2}

    def key(name):
        if name == "embed":
            return (-1, -1)
        prefix, _, layer = name.rpartition("_")
        return (int(layer) if layer.isdigit() else 10 ** 6, kind.get(prefix, 3))

    names = {d.get("submodule") for n, d in graph.nodes(data=True) if n != OUTPUT}
    return sorted(names, key=key) + ([OUTPUT] if OUTPUT in graph else [])


def _row_members(graph: nx.DiGraph, row: str) -> list[str]:
    members = [n for n, d in graph.nodes(data=True) if (OUTPUT if n == OUTPUT else d.get("submodule")) == row]
    return sorted(members, key=lambda n: (graph.nodes[n].get("position") or 0,
                                          graph.nodes[n].get("error", False),
                                          graph.nodes[n].get("feature") or 0))


def _node_label(node: str, data: dict, annotations) -> str:
    if node == OUTPUT:
        return "y (metric)"
    label = label_for(node, annotations) or node.split("@", 1)[0]
    return label if data.get("position") is None else f"{label}\npos {data['position']}"


def _styles(graph: nx.DiGraph):
    effects = [abs(d["effect"]) for n, d in graph.nodes(data=True) if d.get("effect") is not None]
    weights = [abs(d["weight"]) for _, _, d in graph.edges(data=True)]
    return max(effects, default=1.0) or 1.0, max(weights, default=1.0) or 1.0


def page_dot(graph: nx.DiGraph, order: list[str], annotations=None) -> str:
    """Graphviz source for the page: rows in forward order, stable ids node_i / edge_j."""
    import graphviz

    scale, max_weight = _styles(graph)
    index = {n: i for i, n in enumerate(order)}
    dot = graphviz.Digraph("circuit", graph_attr={
        "rankdir": "BT", "ranksep": "0.55", "nodesep": "0.12", "fontname": "Helvetica",
        "newrank": "true", "outputorder": "edgesfirst", "bgcolor": "transparent"},
        node_attr={"fontname": "Helvetica", "fontsize": "10", "style": "filled", "height": "0.3"})
    rows = forward_rows(graph)
    for r, row in enumerate(rows):
        with dot.subgraph(name=f"row_{r}") as sub:
            sub.attr(rank="same")
            sub.node(f"__row_{r}", row, shape="plaintext", style="", fontcolor="#666666",
                     id=f"rowlabel_{r}")
            for node in _row_members(graph, row):
                data = graph.nodes[node]
                if node == OUTPUT:
                    sub.node(node, "y (metric)", id=f"node_{index[node]}", shape="doubleoctagon",
                             fillcolor="#eeeeee")
                    continue
                error = bool(data.get("error"))
                sub.node(node, _node_label(node, data, annotations), id=f"node_{index[node]}",
                         fillcolor=_colour(data["effect"], scale),
                         shape="octagon" if error else "box",
                         style="filled,dashed,bold" if error else "filled,rounded")
        if r:
            dot.edge(f"__row_{r - 1}", f"__row_{r}", style="invis", weight="100")
    for j, (source, target, data) in enumerate(graph.edges(data=True)):
        width = 0.4 + 3.6 * abs(data["weight"]) / max_weight
        dot.edge(source, target, id=f"edge_{j}", penwidth=f"{width:.2f}", arrowsize="0.5",
                 color="#3060c0" if data["weight"] >= 0 else "#c03030")
    return dot.source


def _clean_svg(svg: str) -> str:
    """Inline-able SVG: no XML prolog, doctype, comments or namespace URLs."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)


def per_position(graph: nx.DiGraph) -> bool:
    """Whether the circuit has nodes per position (aggregation 'none')."""
    return any(d.get("position") is not None for _, d in graph.nodes(data=True))


def _slots(graph: nx.DiGraph, rows: list[str]) -> tuple[dict[str, int], dict[int, int]]:
    """({node: column}, {position: its first column}): columns by order within a row, or, per
    position, one block of columns per position (as wide as its busiest row)."""
    if not per_position(graph):
        return {n: c for row in rows for c, n in enumerate(_row_members(graph, row))}, {}
    cells: dict[tuple[str, int], list[str]] = {}
    for row in rows:
        for node in _row_members(graph, row):
            cells.setdefault((row, graph.nodes[node].get("position") or 0), []).append(node)
    positions = sorted({p for _, p in cells})
    starts, column = {}, 0
    for p in positions:
        starts[p] = column
        column += max(len(v) for (_, q), v in cells.items() if q == p)
    return {n: starts[p] + k for (_, p), members in cells.items() for k, n in enumerate(members)}, starts


def layered_svg(graph: nx.DiGraph, order: list[str], annotations=None) -> str:
    """A layered layout computed here: a row per submodule (embed at the bottom, y on top),
    columns by order within a row, or by position for per-position circuits."""
    scale, max_weight = _styles(graph)
    index = {n: i for i, n in enumerate(order)}
    rows = forward_rows(graph)
    slots, starts = _slots(graph, rows)
    width = (max(slots.values(), default=0) + 2) * COL_GAP
    top = 30 if starts else 0
    height = len(rows) * ROW_GAP + 20 + top
    where = {}
    parts = [f'<text x="{COL_GAP + c * COL_GAP}" y="18" text-anchor="middle" fill="#666" '
             f'font-size="11">pos {p}</text>' for p, c in starts.items()]
    for r, row in enumerate(rows):
        y = height - 40 - r * ROW_GAP
        parts.append(f'<text x="8" y="{y + 4}" fill="#666" font-size="11">{html.escape(row)}</text>')
        for node in _row_members(graph, row):
            where[node] = (COL_GAP + slots[node] * COL_GAP, y)
    for j, (source, target, data) in enumerate(graph.edges(data=True)):
        (x1, y1), (x2, y2) = where[source], where[target]
        w = 0.4 + 3.6 * abs(data["weight"]) / max_weight
        colour = "#3060c0" if data["weight"] >= 0 else "#c03030"
        parts.append(f'<g id="edge_{j}" class="edge"><title>{html.escape(source)}-&gt;{html.escape(target)}</title>'
                     f'<path fill="none" stroke="{colour}" stroke-width="{w:.2f}" '
                     f'd="M{x1},{y1 - NODE_H / 2} C{x1},{(y1 + y2) / 2} {x2},{(y1 + y2) / 2} {x2},{y2 + NODE_H / 2}"/></g>')
    for node in order:
        data = graph.nodes[node]
        x, y = where[node]
        fill = "#eeeeee" if node == OUTPUT else _colour(data["effect"], scale)
        dash = ' stroke-dasharray="4,2" stroke-width="2"' if data.get("error") else ""
        lines = _node_label(node, data, annotations).split("\n")
        text = "".join(f'<text text-anchor="middle" x="{x}" y="{y + 4 + 12 * (k - (len(lines) - 1) / 2):.1f}" '
                       f'font-size="10">{html.escape(line)}</text>' for k, line in enumerate(lines))
        parts.append(f'<g id="node_{index[node]}" class="node"><title>{html.escape(node)}</title>'
                     f'<rect x="{x - NODE_W / 2}" y="{y - NODE_H / 2}" width="{NODE_W}" height="{NODE_H}" '
                     f'rx="4" fill="{fill}" stroke="#333"{dash}/>{text}</g>')
    return (f'<svg width="{width}pt" height="{height}pt" viewBox="0 0 {width} {height}">'
            + "".join(parts) + "</svg>")


def circuit_svg(graph: nx.DiGraph, order: list[str], annotations=None) -> tuple[str, str]:
    """(svg, layout name): graphviz's `dot` when installed, else the layered layout computed
    here; per-position circuits always use the latter (positions as aligned columns)."""
    if per_position(graph):
        return layered_svg(graph, order, annotations), "rows by submodule, columns by position"
    if shutil.which("dot"):
        source = page_dot(graph, order, annotations)
        done = subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True)
        if done.returncode == 0:
            return _clean_svg(done.stdout), "graphviz dot"
    return layered_svg(graph, order, annotations), "layered (graphviz not installed)"


def _script_json(data) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' (so no '</script>' or '<!--')."""
    return (json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def page_data(graph: nx.DiGraph, order: list[str], features: dict | None, annotations) -> dict:
    """What the page script needs: nodes (by SVG index), edges, metadata, feature summaries."""
    index = {n: i for i, n in enumerate(order)}
    summaries = (features or {}).get("features", {})
    nodes = []
    for node in order:
        data = graph.nodes[node]
        key = node.split("@", 1)[0]
        nodes.append({"id": node, "label": label_for(node, annotations), "effect": data.get("effect"),
                      "submodule": data.get("submodule", OUTPUT), "error": bool(data.get("error")),
                      "position": data.get("position"), "feature": key if key in summaries else None})
    edges = [{"source": index[s], "target": index[t], "weight": d["weight"]}
             for s, t, d in graph.edges(data=True)]
    meta = {k: v for k, v in graph.graph.items() if k != "dictionary_fingerprints"}
    used = {n["feature"] for n in nodes if n["feature"]}
    return {"metadata": meta, "nodes": nodes, "edges": edges,
            "features": {k: v for k, v in summaries.items() if k in used},
            "features_metadata": {k: v for k, v in (features or {}).get("metadata", {}).items()
                                  if k != "dictionary_fingerprints"} if features else None}


def build_page(graph: nx.DiGraph, features: dict | None = None,
               annotations: dict[str, str] | None = None, title: str | None = None) -> str:
    """The whole page as one HTML string (see the module doc)."""
    if features is not None:
        from .features import check_compatible

        check_compatible(features, graph)
    order = [n for row in forward_rows(graph) for n in _row_members(graph, row)]
    svg, layout = circuit_svg(graph, order, annotations)
    data = page_data(graph, order, features, annotations)
    data["layout"] = layout
    meta = graph.graph
    title = title or f"{meta.get('model')} / {meta.get('dataset')} / {meta.get('method')} circuit"
    script = (PAGE_DIR / "view.js").read_text(encoding="utf-8")
    style = (PAGE_DIR / "view.css").read_text(encoding="utf-8")
    template = (PAGE_DIR / "view.html").read_text(encoding="utf-8")
    return (template.replace("{{TITLE}}", html.escape(title)).replace("{{STYLE}}", style)
            .replace("{{SVG}}", svg).replace("{{DATA}}", _script_json(data))
            .replace("{{SCRIPT}}", script.replace("</", "<\\/")))


def write_page(graph: nx.DiGraph, path, features: dict | None = None,
               annotations: dict[str, str] | None = None) -> Path:
    """Write the page atomically; a UserError for a path that is not an .html file."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {path} should end in .html")
    page = build_page(graph, features, annotations)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
