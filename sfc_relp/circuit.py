"""Circuits: thresholded node and edge effects as a `networkx.DiGraph`, saved as JSON.

Node ids are `"<submodule>/<feature>"`, `"<submodule>/err"` (with `"@<position>"` under
aggregation 'none') and `"y"` for the metric. Node attributes: submodule, layer, feature
(int, or None for an error node), error (bool), position (or None), effect. Edge attribute:
weight. Graph attributes: model, dictionaries, dataset, method, thresholds, number of
examples, tool version.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import networkx as nx
import torch
from tqdm import tqdm

from . import __version__, distributed
from .attribution import TaskBatch, get_method
from .attribution.base import NodeEffects
from .attribution.edges import EdgeEffects
from .errors import UserError, warn
from .files import atomic_write
from .placement import input_device

OUTPUT = "y"


def node_id(submodule: str, feature: int | None, position: int | None = None) -> str:
    """The id of a feature node, or of the error node for `feature` None or -1."""
    if feature is not None and (isinstance(feature, bool) or not isinstance(feature, int)
                                or feature < -1):
        raise UserError(f"feature id must be an integer >= 0 (or -1/None for the error node), "
                        f"got {feature!r} in {submodule}")
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
            ids = torch.cat([ids, torch.tensor([-1], device=ids.device)])
        chosen[name] = ids
    return chosen


def accumulate_effects(method, batches: list[TaskBatch], aggregation: str) -> NodeEffects:
    """Node effects over several batches, combined weighted by batch size (float64 sums).

    Under torch.distributed each rank takes its share of the batches and the sums are
    all-reduced, so every rank gets the single-process result.
    """
    total, count = None, 0
    mine = distributed.shard(batches)
    distributed.require_shards(len(batches))
    quiet = len(mine) < 2 or not distributed.is_writer()
    for batch in tqdm(mine, desc=f"{method.name} nodes", disable=True if quiet else None):
        effects = method.attribute(batch, aggregation)
        if aggregation == "none":  # per example: keep the mean over examples per position
            effects = NodeEffects({k: v.mean(0) for k, v in effects.features.items()},
                                  {k: v.mean(0) for k, v in effects.errors.items()}, "none")
        weight = len(batch)
        if total is None:
            dtype = torch.promote_types(next(iter(effects.features.values())).dtype, torch.float32)
            total = NodeEffects({k: v.double() * weight for k, v in effects.features.items()},
                                {k: v.double() * weight for k, v in effects.errors.items()}, effects.aggregation)
        else:
            for k in total.features:
                total.features[k] += effects.features[k].double() * weight
                total.errors[k] += effects.errors[k].double() * weight
        count += weight
    (features, errors), count = _combine([total.features, total.errors], count)
    return NodeEffects({k: (v / count).to(dtype) for k, v in features.items()},
                       {k: (v / count).to(dtype) for k, v in errors.items()}, total.aggregation)


def _combine(sums: list[dict], count: int) -> tuple[list[dict], float]:
    """Per-rank float64 sums and example count, summed over ranks (unchanged in one process)."""
    flat = [v for d in sums for v in d.values()] + [torch.tensor(float(count), dtype=torch.float64)]
    reduced = iter(distributed.all_reduce_sum(flat))
    out = [{k: next(reduced) for k in d} for d in sums]
    return out, next(reduced).item()


def accumulate_edges(method, batches: list[TaskBatch], down_nodes: dict) -> EdgeEffects:
    """Edge effects into `down_nodes` over several batches, weighted by batch size."""
    total, count = None, 0
    mine = distributed.shard(batches)
    distributed.require_shards(len(batches))
    quiet = len(mine) < 2 or not distributed.is_writer()
    for batch in tqdm(mine, desc=f"{method.name} edges", disable=True if quiet else None):
        edges = method.edges(batch, down_nodes, up_nodes=down_nodes)
        weight = len(batch)
        if total is None:
            total = edges
            dtype = torch.promote_types(next(iter(edges.to_output.values())).dtype, torch.float32)
            total.weights = {k: v.double() * weight for k, v in edges.weights.items()}
            total.to_output = {k: v.double() * weight for k, v in edges.to_output.items()}
        else:
            for k in total.weights:
                total.weights[k] += edges.weights[k].double() * weight
            for k in total.to_output:
                total.to_output[k] += edges.to_output[k].double() * weight
        count += weight
    (weights, to_output), count = _combine([total.weights, total.to_output], count)
    total.weights = {k: (v / count).to(dtype) for k, v in weights.items()}
    total.to_output = {k: (v / count).to(dtype) for k, v in to_output.items()}
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
        values, errors = values.cpu(), effects.errors[name].cpu()
        positions = [None] if effects.aggregation == "sum" else list(range(values.shape[0]))
        for t in positions:
            feats = values if t is None else values[t]
            err = errors if t is None else errors[t]
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
        weights = weights.cpu()
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
        weights = weights.cpu()
        width = weights.shape[0] - 1
        for col in torch.nonzero(weights.abs() > threshold).flatten().tolist():
            source = node_id(last, None if col == width else col)
            if source in graph:
                graph.add_edge(source, OUTPUT, weight=float(weights[col]))


def batches_of(tokenizer, dataset, batch_size: int, device="cpu") -> list[TaskBatch]:
    """TaskBatches of at most `batch_size` examples, in dataset order, on `device`.

    Warns once when prompts within a batch differ in length (IOI's templates do): they are
    left-padded, so positions are aligned at the end of the prompt.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if not rows:
        raise UserError("the dataset is empty; it needs at least one example")
    batches = [TaskBatch.from_rows(tokenizer, rows[i:i + batch_size], device)
               for i in range(0, len(rows), batch_size)]
    lengths = [b.clean["attention_mask"].sum(-1) for b in batches]
    if any(int(n.min()) != int(n.max()) for n in lengths):
        low, high = min(int(n.min()) for n in lengths), max(int(n.max()) for n in lengths)
        warn(f"prompt lengths differ within a batch ({low} to {high} tokens): prompts are "
             "left-padded, so positions are aligned at the end of the prompt")
    return batches


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
    batches = batches_of(model.tokenizer, dataset, batch_size, input_device(model))
    effects = accumulate_effects(attribution, batches, aggregation)
    edge_effects = None
    if edges and aggregation == "sum":
        down = select_nodes(effects, node_threshold)
        edge_effects = accumulate_edges(attribution, batches, down)
    meta = {"method": method, "n_examples": len(dataset), "edges_computed": edge_effects is not None,
            **(metadata or {})}
    graph = build_graph(effects, node_threshold, edge_effects, edge_threshold, **meta)
    if graph.number_of_nodes() == 1:
        warn(f"the circuit has no nodes: no effect exceeds the node threshold {node_threshold}; "
             "lower --node-threshold")
    return graph


# Settings that make two circuits of the same model and dataset different circuits.
SETTINGS = ("method", "node_threshold", "edge_threshold", "aggregation", "dtype", "seed", "neurons",
            "dictionaries", "dict_id", "n_examples_requested", "dataset", "split")


def circuit_json(graph: nx.DiGraph) -> str:
    """The node-link JSON text of a circuit."""
    return json.dumps(nx.node_link_data(graph, edges="links"), indent=1)


def save_circuit(graph: nx.DiGraph, path) -> Path:
    """Write node-link JSON atomically (temp file, then rename)."""
    text = circuit_json(graph)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def settings_conflict(path, settings: dict) -> str | None:
    """A description of how the circuit saved at `path` differs from `settings`, or None
    (no file there, or the same settings)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text()).get("graph", {})
    except (OSError, ValueError, AttributeError):
        return f"{path} exists and is not a circuit file"
    differ = [f"{key} {old.get(key)!r} -> {settings.get(key)!r}" for key in SETTINGS
              if key in settings and old.get(key) != settings.get(key)]
    return f"{path} holds a circuit with other settings ({'; '.join(differ)})" if differ else None


def load_circuit(path) -> nx.DiGraph:
    """A circuit saved by `save_circuit`; a UserError when missing or not a circuit file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"circuit file {path} does not exist")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("graph", {}), dict):
            raise TypeError(f"expected a JSON object with nodes and links, got {type(data).__name__}")
        graph = nx.node_link_graph(data, edges="links")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a circuit JSON file ({type(exc).__name__})") from None
    except (KeyError, TypeError, AttributeError, ValueError, nx.NetworkXError) as exc:
        raise UserError(f"{path} is not a node-link circuit file ({exc})") from None
    if "model" not in graph.graph or "method" not in graph.graph:
        raise UserError(f"{path} lacks circuit metadata (model, method); was it written by sfc-relp?")
    for node, data in graph.nodes(data=True):
        if node == OUTPUT:
            continue
        problem = _node_problem(data)
        if problem:
            raise UserError(f"{path}: node {node!r} {problem}")
    return graph


def _node_problem(data: dict) -> str | None:
    if not isinstance(data.get("submodule"), str):
        return "has no submodule name"
    if data.get("error"):
        return None
    feature = data.get("feature")
    if isinstance(feature, bool) or not isinstance(feature, int):
        return f"has feature {feature!r}; expected an integer >= 0 (or error: true)"
    if feature < 0:
        return f"has negative feature {feature}; expected an integer >= 0 (or error: true)"
    return None


def circuit_nodes(graph: nx.DiGraph, submodules, widths: dict | None = None) -> dict[str, tuple[set, bool]]:
    """{submodule: (kept feature ids, error kept)} from a circuit graph (positions ignored).

    `submodules` is a list of names or {name: dictionary}; with dictionaries (or `widths`)
    feature ids are checked against each dictionary's width. A node in a submodule the model
    does not have, or with a bad feature id, is a UserError.
    """
    if widths is None and isinstance(submodules, dict):
        widths = {k: getattr(v, "dict_size", None) for k, v in submodules.items()}
    kept = {name: (set(), False) for name in submodules}
    for node, data in graph.nodes(data=True):
        if node == OUTPUT:
            continue
        name = data.get("submodule")
        if name not in kept:
            raise UserError(f"circuit node {node!r} is in submodule {name!r}, which this model does "
                            f"not have (it has {', '.join(kept)})")
        problem = _node_problem(data)
        if problem:
            raise UserError(f"circuit node {node!r} {problem}")
        features, error = kept[name]
        if data.get("error"):
            kept[name] = (features, True)
            continue
        width = (widths or {}).get(name)
        if width is not None and data["feature"] >= width:
            raise UserError(f"circuit node {node!r} has feature {data['feature']}, but the {name} "
                            f"dictionary has only {width} features; use the dictionaries the "
                            "circuit was built with")
        features.add(data["feature"])
    for source, target in graph.edges():
        for node in (source, target):
            if node != OUTPUT and graph.nodes[node].get("submodule") not in kept:
                raise UserError(f"circuit edge {source!r} -> {target!r} refers to an unknown node")
    return kept
