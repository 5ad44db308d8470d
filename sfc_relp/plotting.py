"""Pictures: circuit diagrams with graphviz (Marks et al.'s layout) and the sweep plot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import networkx as nx

from .circuit import OUTPUT
from .errors import UserError, warn
from .files import StagedFiles, atomic_write

DOT_TIMEOUT_S = 600


def _colour(effect: float, scale: float) -> str:
    """Blue for positive effects, red for negative, deeper with |effect| / scale."""
    strength = min(1.0, abs(effect) / scale) if scale > 0 else 0.0
    fade = int(255 * (1 - 0.85 * strength))
    return f"#{fade:02x}{fade:02x}ff" if effect >= 0 else f"#ff{fade:02x}{fade:02x}"


def to_dot(graph: nx.DiGraph, annotations: dict[str, str] | None = None) -> str:
    """Graphviz source: one row per submodule (embed at the bottom, y on top); `annotations`
    ({node id: label}) replace ids as node labels."""
    import graphviz

    from .annotations import label_for

    dot = graphviz.Digraph("circuit", graph_attr={
        "rankdir": "BT", "ranksep": "0.6", "nodesep": "0.15", "fontname": "Helvetica",
        "label": f"{graph.graph.get('model')} / {graph.graph.get('dataset')} / "
                 f"{graph.graph.get('method')} (T_N={graph.graph.get('node_threshold')}, "
                 f"T_E={graph.graph.get('edge_threshold')})", "labelloc": "t"},
        node_attr={"fontname": "Helvetica", "fontsize": "10", "style": "filled"})
    effects = [abs(d["effect"]) for _, d in graph.nodes(data=True) if d.get("effect") is not None]
    scale = max(effects, default=1.0)
    weights = [abs(d["weight"]) for _, _, d in graph.edges(data=True)]
    max_weight = max(weights, default=1.0) or 1.0
    rows: dict[str, list] = {}
    for node, data in graph.nodes(data=True):
        rows.setdefault(data.get("submodule", OUTPUT), []).append((node, data))
    for submodule, members in rows.items():
        with dot.subgraph(name=f"row_{submodule}") as row:
            row.attr(rank="same")
            for node, data in sorted(members, key=lambda item: str(item[0])):
                if node == OUTPUT:
                    row.node(node, "y (metric)", shape="doubleoctagon", fillcolor="#eeeeee")
                    continue
                label = label_for(node, annotations) or node.split("@", 1)[0]
                if data.get("position") is not None:
                    label += f"\npos {data['position']}"
                row.node(node, label, fillcolor=_colour(data["effect"], scale),
                         shape="triangle" if data.get("error") else "box",
                         style="filled,dashed" if data.get("error") else "filled")
    for source, target, data in graph.edges(data=True):
        width = 0.4 + 3.6 * abs(data["weight"]) / max_weight
        dot.edge(source, target, penwidth=f"{width:.2f}",
                 color="#3060c0" if data["weight"] >= 0 else "#c03030")
    return dot.source


def _render(dot_file: str, fmt: str, out: str) -> None:
    """`dot -T<fmt>`; a missing, failing or hung graphviz is a UserError."""
    try:
        subprocess.run(["dot", f"-T{fmt}", dot_file, "-o", out], check=True, capture_output=True,
                       timeout=DOT_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        detail = " ".join((exc.stderr or b"").decode(errors="replace").split())[:200]
        raise UserError(f"graphviz `dot -T{fmt}` failed (exit {exc.returncode}): "
                        f"{detail or 'no message'}") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"graphviz `dot -T{fmt}` did not finish in {DOT_TIMEOUT_S}s; "
                        "raise the thresholds for a smaller circuit") from None
    except OSError as exc:
        raise UserError(f"could not run graphviz `dot`: {exc.strerror}") from None


def draw_circuit(graph: nx.DiGraph, stem, annotations: dict[str, str] | None = None,
                 staged: StagedFiles | None = None) -> list[Path]:
    """Write `stem.dot`, and `stem.svg`, `stem.png` when graphviz's `dot` is installed (a
    warning says so when it is not). svg and png are rendered from the staged `.dot`; all
    files are renamed into place together (by `staged.commit()` when a run passes its own
    StagedFiles, then the return value lists the final paths to be)."""
    stem = Path(stem)
    if staged is None:
        with StagedFiles(stem.parent) as own:
            draw_circuit(graph, stem, annotations, own)
            return own.commit()
    source = to_dot(graph, annotations)
    dot_tmp = staged.path(f"{stem.name}.dot")
    Path(dot_tmp).write_text(source)
    written = [stem.parent / f"{stem.name}.dot"]
    if not shutil.which("dot"):
        warn("graphviz `dot` not found: wrote the .dot file only (install graphviz for svg/png)")
        return written
    for fmt in ("svg", "png"):
        _render(dot_tmp, fmt, staged.path(f"{stem.name}.{fmt}"))
        written.append(stem.parent / f"{stem.name}.{fmt}")
    return written


def plot_sweep(rows: list[dict], path, title: str = "", atomic: bool = True) -> Path:
    """Faithfulness (and completeness, dashed) against number of nodes, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["n_nodes"], r["faithfulness"], r["completeness"]) for r in rows
                        if r["method"] == method and r["n_nodes"] > 0)
        if not points:
            continue
        n, faith, comp = zip(*points)
        line, = ax.plot(n, faith, marker="o", label=f"{method} faithfulness")
        ax.plot(n, comp, linestyle="--", color=line.get_color(), alpha=0.6,
                label=f"{method} completeness")
    ax.set_xscale("log")
    ax.set_xlabel("nodes in circuit")
    ax.set_ylabel("faithfulness / completeness")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        if atomic:
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
        else:
            fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
