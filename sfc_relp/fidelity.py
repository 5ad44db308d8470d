"""How close each method comes to activation patching (the seed paper's Table 5).

Component level: for every resid/attn/mlp output, the effect of patching that whole output
at one position (exact), against each method's estimate summed over hidden dimensions
(neurons as the dictionary, so no SAE is involved). Pearson correlation over (layer x
position) cells, either of prompt-averaged effects or of per-prompt cells (padding excluded).
SAE-node level: correlation over every feature and error node of the SAEs, prompt-averaged.
"""

from __future__ import annotations

import torch

from . import distributed
from .architectures import submodules_for
from .attribution import TaskBatch, get_method
from .dictionaries import neuron_dictionaries
from .tracing import run_spliced

COMPONENTS = ("resid", "attn", "mlp")


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _components(model, kinds) -> list:
    return [s for s in submodules_for(model.config) if s.kind in kinds]


def exact_component_effects(model, batch: TaskBatch, kinds=COMPONENTS, chunk: int = 32) -> dict:
    """{submodule: (B, T) effect of patching its whole output at each position}."""
    subs = _components(model, kinds)
    neurons = neuron_dictionaries(subs, model.config.hidden_size)
    with torch.no_grad():
        patch = run_spliced(model, neurons, batch.patch, grad=False)
        clean_metric = get_method("atp", model, neurons).metric(
            run_spliced(model, neurons, batch.clean, grad=False).logits, batch)
    n, positions = len(batch), batch.clean["input_ids"].shape[1]
    jobs = [(s.name, t) for s in subs for t in range(positions)]
    effects = {s.name: torch.zeros(n, positions, device=clean_metric.device) for s in subs}
    for start in range(0, len(jobs), chunk):
        group = jobs[start:start + chunk]

        def edit(sub, features, error, group=group):
            mine = [(c, t) for c, (name, t) in enumerate(group) if name == sub.name]
            if not mine:
                return None
            features = features.clone()
            for copy, t in mine:
                features[copy * n:(copy + 1) * n, t] = patch.nodes[sub.name].features[:, t]
            return features, error
        tiled = batch.repeat(len(group))
        with torch.no_grad():
            run = run_spliced(model, neurons, tiled.clean, edit=edit, grad=False)
            metric = get_method("atp", model, neurons).metric(run.logits, tiled)
        values = (metric - clean_metric.repeat(len(group))).view(len(group), n)
        for (name, t), value in zip(group, values):
            effects[name][:, t] = value
    return effects


def estimated_component_effects(method: str, model, batch: TaskBatch, kinds=COMPONENTS) -> dict:
    """{submodule: (B, T) the method's estimate, summed over hidden dimensions}."""
    subs = _components(model, kinds)
    neurons = neuron_dictionaries(subs, model.config.hidden_size)
    effects = get_method(method, model, neurons).attribute(batch, "none")
    return {name: values.sum(-1).detach() for name, values in effects.features.items()}


def component_fidelity(model, batch: TaskBatch, methods=("atp", "relp", "ig"),
                       kinds=COMPONENTS) -> dict:
    """{method: {component: {"prompt_averaged": pcc, "per_prompt": pcc}}}."""
    mine = distributed.shard_batch(batch)  # data parallel: per-prompt effects gathered
    gathered = lambda effects: {k: distributed.gather_rows(v, len(batch)) for k, v in effects.items()}
    exact = gathered(exact_component_effects(model, mine, kinds))
    mask = batch.clean["attention_mask"].bool()
    out = {}
    for method in methods:
        estimate = gathered(estimated_component_effects(method, model, mine, kinds))
        out[method] = {}
        for kind in kinds:
            names = [s.name for s in _components(model, (kind,))]
            e = torch.stack([exact[n] for n in names], 1)  # (B, L, T)
            m = torch.stack([estimate[n] for n in names], 1)
            cells = mask.unsqueeze(1).expand_as(e)
            counts = mask.sum(0).clamp_min(1)
            averaged = lambda v: (v * mask.unsqueeze(1)).sum(0) / counts
            out[method][kind] = {"prompt_averaged": pearson(averaged(m), averaged(e)),
                                 "per_prompt": pearson(m[cells], e[cells])}
    return out


def node_fidelity(model, dictionaries, batch: TaskBatch, methods=("atp", "relp", "ig")) -> dict:
    """{method: pcc} over every SAE feature and error node (sum over positions, prompt-averaged)."""
    flat = lambda eff: torch.cat([torch.cat([eff.features[k].flatten(), eff.errors[k].view(1)])
                                  for k in eff.features])
    mine = distributed.shard_batch(batch)  # data parallel: prompt means combined over ranks
    mean = lambda name: distributed.mean_over_ranks(
        flat(get_method(name, model, dictionaries).attribute(mine, "sum")), len(mine), len(batch))
    exact = mean("exact")
    return {method: pearson(mean(method), exact) for method in methods}
