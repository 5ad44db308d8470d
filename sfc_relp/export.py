"""Export a circuit as attribution-graph JSON (circuit-tracer / Neuronpedia), and read it back.

Mapping of this project's node ids to theirs (`node_id = "{layer}_{feature}_{ctx_idx}"`):

| ours | layer | feature | ctx_idx | feature_type |
| --- | --- | --- | --- | --- |
| `<sub>/<f>[@<pos>]` | forward index of `<sub>` (embed 0, attn_0 1, mlp_0 2, resid_0 3, ...) | f | pos (0 when summed over positions) | `cross layer transcoder` |
| `<sub>/err[@<pos>]` | as above | -1 | as above | `mlp reconstruction error` |
| `y` (the metric) | number of submodules (above every feature) | 0 | 0 | `logit` |

Every submodule gets its own layer so Neuronpedia draws one row per submodule in forward
order. `metadata.info.submodules` lists the submodules by layer index, and
`metadata.info.sfc_relp_node_ids` maps each exported node_id to ours, so the import is
checkable both ways. Node `influence` is the node's effect (signed; Neuronpedia sizes by it),
`clerp` its annotation label.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx

from . import __version__
from .annotations import label_for
from .circuit import OUTPUT
from .errors import UserError
from .files import atomic_write

FEATURE, ERROR, LOGIT = "cross layer transcoder", "mlp reconstruction error", "logit"
REQUIRED_METADATA = ("slug", "scan", "prompt_tokens", "prompt")
REQUIRED_NODE = ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp")
REQUIRED_LINK = ("source", "target", "weight")


def _submodules(graph: nx.DiGraph) -> list[str]:
    """The circuit's submodules in forward order (embed, then attn/mlp/resid per layer)."""
    order = {"embed": -1, "attn": 0, "mlp": 1, "resid": 2}
    names = {d["submodule"] for n, d in graph.nodes(data=True) if n != OUTPUT}
    n_layers = 1 + max((int(n.rsplit("_", 1)[1]) for n in names if n != "embed"), default=-1)
    n_layers = max(n_layers, int(graph.graph.get("n_layers") or 0))
    subs = ["embed"] + [f"{k}_{i}" for i in range(n_layers) for k in ("attn", "mlp", "resid")]
    unknown = sorted(names - set(subs), key=lambda n: order.get(n.split("_")[0], 9))
    return subs + unknown


def to_neuronpedia(graph: nx.DiGraph, annotations: dict[str, str] | None = None,
                   slug: str | None = None, features: dict | None = None) -> dict:
    """Attribution-graph JSON for `graph` (see the module doc for the id mapping)."""
    subs = _submodules(graph)
    layer_of = {name: i for i, name in enumerate(subs)}
    meta = graph.graph
    ids, nodes = {}, []
    for node, data in graph.nodes(data=True):
        if node == OUTPUT:
            layer, feature, ctx, kind = len(subs), 0, 0, LOGIT
        else:
            layer, ctx = layer_of[data["submodule"]], data.get("position") or 0
            feature, kind = (-1, ERROR) if data.get("error") else (int(data["feature"]), FEATURE)
        their = f"{layer}_{feature}_{ctx}"
        ids[node] = their
        entry = {"node_id": their, "feature": feature, "layer": str(layer), "ctx_idx": ctx,
                 "feature_type": kind, "jsNodeId": their,
                 "clerp": label_for(node, annotations) or ("y (metric)" if node == OUTPUT else ""),
                 "influence": data.get("effect"), "activation": None}
        summary = (features or {}).get(node.split("@", 1)[0])
        if summary:
            entry["activation"] = summary.get("max_activation")
        nodes.append(entry)
    links = [{"source": ids[s], "target": ids[t], "weight": d["weight"]}
             for s, t, d in graph.edges(data=True)]
    positions = sorted({n["ctx_idx"] for n in nodes})
    slug = slug or re.sub(r"[^a-z0-9-]+", "-", f"{meta.get('model')}-{meta.get('dataset')}-"
                                                  f"{meta.get('method')}".lower()).strip("-")
    prompt = (f"{meta.get('dataset')} ({meta.get('n_examples')} examples, "
              f"{'per position' if meta.get('aggregation') == 'none' else 'summed over positions'})")
    return {
        "metadata": {
            "slug": slug, "scan": meta.get("model"), "prompt": prompt,
            "prompt_tokens": [f"pos {p}" for p in range(max(positions) + 1)],
            "node_threshold": meta.get("node_threshold"),
            "info": {"creator_name": "sfc-relp", "generator": {"name": "sfc-relp",
                                                               "version": __version__},
                     "method": meta.get("method"), "dataset": meta.get("dataset"),
                     "edge_threshold": meta.get("edge_threshold"),
                     "aggregation": meta.get("aggregation"), "submodules": subs,
                     "sfc_relp_node_ids": {ids[n]: n for n in graph.nodes}}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                    "sg_pos": ""},
        "nodes": nodes, "links": links}


def validate_neuronpedia(data: dict) -> None:
    """A UserError naming the first missing required field of the attribution-graph schema."""
    if not isinstance(data, dict):
        raise UserError("an attribution graph is a JSON object")
    for key in ("metadata", "nodes", "links"):
        if key not in data:
            raise UserError(f"attribution graph lacks {key!r}")
    for key in REQUIRED_METADATA:
        if key not in data["metadata"]:
            raise UserError(f"attribution graph metadata lacks {key!r}")
    seen = set()
    for node in data["nodes"]:
        missing = [k for k in REQUIRED_NODE if k not in node]
        if missing:
            raise UserError(f"node {node.get('node_id')!r} lacks {', '.join(missing)}")
        if node["node_id"] in seen:
            raise UserError(f"node_id {node['node_id']!r} appears twice")
        seen.add(node["node_id"])
    for link in data["links"]:
        missing = [k for k in REQUIRED_LINK if k not in link]
        if missing:
            raise UserError(f"link {link} lacks {', '.join(missing)}")
        if link["source"] not in seen or link["target"] not in seen:
            raise UserError(f"link {link['source']} -> {link['target']} names an unknown node")


def from_neuronpedia(data: dict) -> nx.DiGraph:
    """A circuit graph back from an export: node ids decoded from layer/feature/ctx_idx."""
    validate_neuronpedia(data)
    info = data["metadata"].get("info") or {}
    subs = info.get("submodules")
    if not subs:
        raise UserError("this attribution graph was not written by sfc-relp (no info.submodules)")
    per_position = info.get("aggregation") == "none"
    graph = nx.DiGraph(model=data["metadata"]["scan"], method=info.get("method"),
                       dataset=info.get("dataset"), node_threshold=data["metadata"].get("node_threshold"),
                       edge_threshold=info.get("edge_threshold"), aggregation=info.get("aggregation"))
    ours = {}
    for node in data["nodes"]:
        layer = int(node["layer"])
        if node["feature_type"] == LOGIT:
            name = OUTPUT
            attrs = dict(submodule=OUTPUT, layer=None, feature=None, error=False, position=None)
        else:
            sub = subs[layer]
            error = node["feature_type"] == ERROR
            position = node["ctx_idx"] if per_position else None
            name = f"{sub}/{'err' if error else node['feature']}"
            name += "" if position is None else f"@{position}"
            attrs = dict(submodule=sub, layer=-1 if sub == "embed" else int(sub.rsplit("_", 1)[1]),
                         feature=None if error else int(node["feature"]), error=error, position=position)
        ours[node["node_id"]] = name
        graph.add_node(name, effect=node.get("influence"), **attrs)
    for link in data["links"]:
        graph.add_edge(ours[link["source"]], ours[link["target"]], weight=link["weight"])
    return graph


def save_neuronpedia(data: dict, path) -> Path:
    """Write the attribution-graph JSON atomically."""
    validate_neuronpedia(data)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data)))
