"""Circuits: thresholded node and edge effects as a `networkx.DiGraph`, saved as JSON.

Node ids are `"<submodule>/<feature>"`, `"<submodule>/err"` (with `"@<position>"` under
aggregation 'none') and `"y"` for the metric. Node attributes: submodule, layer, feature
(int, or None for an error node), error (bool), position (or None), effect. Edge attribute:
weight. Graph attributes: model, dictionaries, dataset, method, thresholds, number of
examples, tool version.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import torch
from tqdm import tqdm

from . import __version__
from .attribution import TaskBatch, get_method
from .attribution.base import NodeEffects
from .attribution.edges import EdgeEffects
from .errors import UserError
from .files import atomic_write

OUTPUT = "y"


def node_id(submodule: str, feature: int | None, position: int | None = None) -> str:
    base = f"{submodule}/{'err' if feature is None or feature < 0 else feature}"
    return base if position is None else f"{base}@{position}"


def _layer(submodule: str) -> int:
    return -1 if submodule == "embed" else int(submodule.rsplit("_", 1)[1])


def select_nodes(effects: NodeEffects, threshold: float) -> dict[str, torch.Tensor]:
    """{submodule: feature ids with |effect| > threshold, -1 for the error} (aggregation 'sum')."""
    chosen = {}
    for name, values in effects.features.items():
        ids = torch.nonzero(values.abs() > threshold).flatten()
        if effects.errors[name].abs() > threshold:
            ids = torch.cat([ids, torch.tensor([-1])])
        chosen[name] = ids
    return chosen


def accumulate_effects(method, batches: list[TaskBatch], aggregation: str) -> NodeEffects:
    """Node effects over several batches, combined weighted by batch size."""
    total, count = None, 0
    for batch in tqdm(batches, desc=f"{method.name} nodes", disable=len(batches) < 2):
        effects = method.attribute(batch, aggregation)
        if aggregation == "none":  # per example: keep the mean over examples per position
            effects = NodeEffects({k: v.mean(0) for k, v in effects.features.items()},
                                  {k: v.mean(0) for k, v in effects.errors.items()}, "none")
        weight = len(batch)
        if total is None:
            total = NodeEffects({k: v * weight for k, v in effects.features.items()},
                                {k: v * weight for k, v in effects.errors.items()}, effects.aggregation)
        else:
            for k in total.features:
                total.features[k] += effects.features[k] * weight
                total.errors[k] += effects.errors[k] * weight
        count += weight
    return NodeEffects({k: v / count for k, v in total.features.items()},
                       {k: v / count for k, v in total.errors.items()}, total.aggregation)


def accumulate_edges(method, batches: list[TaskBatch], down_nodes: dict) -> EdgeEffects:
    """Edge effects into `down_nodes` over several batches, weighted by batch size."""
    total, count = None, 0
    for batch in tqdm(batches, desc=f"{method.name} edges", disable=len(batches) < 2):
        edges = method.edges(batch, down_nodes, up_nodes=down_nodes)
        weight = len(batch)
        if total is None:
            total = edges
            total.weights = {k: v * weight for k, v in edges.weights.items()}
            total.to_output = {k: v * weight for k, v in edges.to_output.items()}
        else:
            for k in total.weights:
                total.weights[k] += edges.weights[k] * weight
            for k in total.to_output:
                total.to_output[k] += edges.to_output[k] * weight
        count += weight
    total.weights = {k: v / count for k, v in total.weights.items()}
    total.to_output = {k: v / count for k, v in total.to_output.items()}
    return total


def build_graph(effects: NodeEffects, node_threshold: float, edges: EdgeEffects | None = None,
                edge_threshold: float = 0.0, **metadata) -> nx.DiGraph:
    """The circuit: nodes with |effect| > node_threshold, edges with |weight| > edge_threshold."""
    if node_threshold < 0 or edge_threshold < 0:
        raise UserError("thresholds must be non-negative")
    graph = nx.DiGraph(**metadata, node_threshold=node_threshold, edge_threshold=edge_threshold,
                       aggregation=effects.aggregation, tool_version=__version__)
    graph.add_node(OUTPUT, submodule=OUTPUT, layer=None, feature=None, error=False,
                   position=None, effect=None)
    for name, values in effects.features.items():
        positions = [None] if effects.aggregation == "sum" else list(range(values.shape[0]))
        for t in positions:
            feats = values if t is None else values[t]
            err = effects.errors[name] if t is None else effects.errors[name][t]
            for index in torch.nonzero(feats.abs() > node_threshold).flatten().tolist():
                graph.add_node(node_id(name, index, t), submodule=name, layer=_layer(name),
                               feature=index, error=False, position=t, effect=float(feats[index]))
            if abs(float(err)) > node_threshold:
                graph.add_node(node_id(name, None, t), submodule=name, layer=_layer(name),
                               feature=None, error=True, position=t, effect=float(err))
    if edges is not None:
        _add_edges(graph, edges, edge_threshold)
    return graph


def _add_edges(graph: nx.DiGraph, edges: EdgeEffects, threshold: float) -> None:
    for (up, down), weights in edges.weights.items():
        width = weights.shape[1] - 1
        for row, d in enumerate(edges.down_nodes[down].tolist()):
            target = node_id(down, d)
            if target not in graph:
                continue
            for col in torch.nonzero(weights[row].abs() > threshold).flatten().tolist():
                source = node_id(up, None if col == width else col)
                if source in graph:
                    graph.add_edge(source, target, weight=float(weights[row, col]))
    for last, weights in edges.to_output.items():
        width = weights.shape[0] - 1
        for col in torch.nonzero(weights.abs() > threshold).flatten().tolist():
            source = node_id(last, None if col == width else col)
            if source in graph:
                graph.add_edge(source, OUTPUT, weight=float(weights[col]))


def batches_of(tokenizer, dataset, batch_size: int) -> list[TaskBatch]:
    """TaskBatches of at most `batch_size` examples, in dataset order."""
    rows = dataset.to_list()
    return [TaskBatch.from_rows(tokenizer, rows[i:i + batch_size])
            for i in range(0, len(rows), batch_size)]


def discover_circuit(model, dictionaries, dataset, method: str = "relp", node_threshold: float = 0.1,
                     edge_threshold: float = 0.01, aggregation: str = "sum", batch_size: int = 32,
                     edges: bool = True, metadata: dict | None = None, **method_options) -> nx.DiGraph:
    """Node effects over `dataset`, thresholded; edges among the kept nodes.

    Edges are position-summed, so they are computed under aggregation 'sum' only; under 'none'
    the graph holds position-resolved nodes and `graph.graph["edges_computed"]` is False.
    """
    if node_threshold < 0 or edge_threshold < 0:
        raise UserError("thresholds must be non-negative")
    attribution = get_method(method, model, dictionaries, **method_options)
    batches = batches_of(model.tokenizer, dataset, batch_size)
    effects = accumulate_effects(attribution, batches, aggregation)
    edge_effects = None
    if edges and aggregation == "sum":
        down = select_nodes(effects, node_threshold)
        edge_effects = accumulate_edges(attribution, batches, down)
    meta = {"method": method, "n_examples": len(dataset), "edges_computed": edge_effects is not None,
            **(metadata or {})}
    return build_graph(effects, node_threshold, edge_effects, edge_threshold, **meta)


def save_circuit(graph: nx.DiGraph, path) -> Path:
    """Write node-link JSON atomically (temp file, then rename)."""
    data = nx.node_link_data(graph, edges="links")
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def load_circuit(path) -> nx.DiGraph:
    """A circuit saved by `save_circuit`; a UserError when missing or not a circuit file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"circuit file {path} does not exist")
    try:
        data = json.loads(path.read_text())
        graph = nx.node_link_graph(data, edges="links")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a circuit JSON file ({type(exc).__name__})") from None
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise UserError(f"{path} is not a node-link circuit file ({exc})") from None
    if "model" not in graph.graph or "method" not in graph.graph:
        raise UserError(f"{path} lacks circuit metadata (model, method); was it written by sfc-relp?")
    return graph


def circuit_nodes(graph: nx.DiGraph, submodules: list[str]) -> dict[str, tuple[set, bool]]:
    """{submodule: (kept feature ids, error kept)} from a circuit graph (positions ignored)."""
    kept = {name: (set(), False) for name in submodules}
    for _, data in graph.nodes(data=True):
        name = data.get("submodule")
        if name not in kept:
            continue
        features, error = kept[name]
        if data.get("error"):
            kept[name] = (features, True)
        else:
            features.add(int(data["feature"]))
    return kept
