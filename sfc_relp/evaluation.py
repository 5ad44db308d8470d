"""Faithfulness and completeness of a circuit under ablation (Wang et al. 2023; Marks et al.).

F(C) = (m(C) - m(empty)) / (m(M) - m(empty)): m(M) is the full model, m(empty) has every
ablatable node ablated, m(C) keeps only the circuit's nodes. Completeness is F of the
complement M \\ C. Ablation replaces a node by its per-position mean over the evaluation
batch's patch prompts (default), by zero, or by the value in another example's patch prompt
(resample, seeded per batch). Embed and the first third of the layers are left intact by default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .architectures import submodules_for
from .attribution import logit_diff
from . import distributed
from .circuit import batches_of
from .errors import UserError
from .placement import input_device, module_device
from .tracing import run_spliced

ABLATIONS = ("mean", "zero", "resample")
ERROR_POLICIES = ("outside", "always", "never")


@dataclass
class Evaluation:
    faithfulness: float
    completeness: float
    n_nodes: int
    m_full: float
    m_empty: float
    m_circuit: float
    m_complement: float

    def as_dict(self) -> dict:
        return asdict(self)


def ablatable_submodules(config, intact_layers: int | None = None) -> list[str]:
    """Submodules that may be ablated: not embed, not the first `intact_layers` layers
    (default: a third of the layers, as Marks et al.)."""
    if intact_layers is None:
        intact_layers = config.num_hidden_layers // 3
    return [s.name for s in submodules_for(config) if s.kind != "embed" and s.layer >= intact_layers]


def _ablation_values(patch, ablation: str, generator: torch.Generator) -> dict:
    values = {}
    for name, node in patch.nodes.items():
        if ablation == "mean":
            f = node.features.mean(0, keepdim=True).expand_as(node.features)
            e = node.error.mean(0, keepdim=True).expand_as(node.error)
        elif ablation == "zero":
            f, e = torch.zeros_like(node.features), torch.zeros_like(node.error)
        else:
            order = torch.randperm(node.features.shape[0], generator=generator)
            f, e = node.features[order], node.error[order]
        values[name] = (f, e)
    return values


def _metric_with_kept(model, dictionaries, batch, kept: dict, ablated: dict, metric) -> torch.Tensor:
    """Summed metric (float64, on the logits' device) with every ablatable node outside `kept`
    replaced by its ablation value."""
    def edit(sub, features, error):
        if sub.name not in kept:
            return None
        keep_features, keep_error = kept[sub.name]
        f_abl, e_abl = ablated[sub.name]
        features = torch.where(keep_features.to(features.device), features, f_abl)
        error = error if keep_error else e_abl
        return features, error
    with torch.no_grad():
        run = run_spliced(model, dictionaries, batch.clean, edit=edit, grad=False)
    return metric(run.logits, batch).double().sum()


def evaluate_circuit(model, dictionaries, dataset, circuit: dict, ablation: str = "mean",
                     error_policy: str = "outside", intact_layers: int | None = None,
                     batch_size: int = 32, metric=logit_diff, seed: int = 0) -> Evaluation:
    """Faithfulness and completeness of `circuit` ({submodule: (feature ids, error kept)})."""
    if ablation not in ABLATIONS:
        raise UserError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")
    if error_policy not in ERROR_POLICIES:
        raise UserError(f"unknown error policy {error_policy!r}; use one of {', '.join(ERROR_POLICIES)}")
    names = ablatable_submodules(model.config, intact_layers)
    widths = {name: dictionaries[name].dict_size for name in names}
    devices = {name: module_device(dictionaries[name], input_device(model)) for name in names}

    def masks(complement: bool) -> dict:
        out = {}
        for name in names:
            features, error = circuit.get(name, (set(), False))
            keep = torch.zeros(widths[name], dtype=torch.bool, device=devices[name])
            if features:
                keep[torch.tensor(sorted(features), device=devices[name])] = True
            if complement:
                keep, error = ~keep, not error
            if error_policy == "always":
                error = False
            elif error_policy == "never":
                error = True
            out[name] = (keep, error)
        return out
    empty = {name: (torch.zeros(widths[name], dtype=torch.bool, device=devices[name]), error_policy == "never")
             for name in names}
    in_circuit, complement = masks(False), masks(True)
    batches = batches_of(model.tokenizer, dataset, batch_size, input_device(model))
    distributed.require_shards(len(batches))
    totals = {}  # full, empty, circuit, complement: float64 sums on the logits' device
    count = 0
    # whole batches per rank, so the per-batch ablation values equal the single-process ones
    for index, batch in distributed.shard(list(enumerate(batches))):
        with torch.no_grad():
            patch = run_spliced(model, dictionaries, batch.patch, grad=False)
            full = run_spliced(model, dictionaries, batch.clean, grad=False)
        ablated = _ablation_values(patch, ablation, torch.Generator().manual_seed(seed + index))
        sums = {"full": metric(full.logits, batch).double().sum()}
        for key, kept in (("empty", empty), ("circuit", in_circuit), ("complement", complement)):
            sums[key] = _metric_with_kept(model, dictionaries, batch, kept, ablated, metric)
        totals = {k: totals.get(k, 0) + v for k, v in sums.items()}
        count += len(batch)
    keys = ("full", "empty", "circuit", "complement")
    reduced = distributed.all_reduce_sum([totals[k].reshape(1) for k in keys] +
                                         [torch.tensor([float(count)], dtype=torch.float64)])
    totals, count = {k: v.item() for k, v in zip(keys, reduced)}, reduced[-1].item()
    m = {k: v / count for k, v in totals.items()}
    span = m["full"] - m["empty"]
    if abs(span) < 1e-9:
        raise UserError("ablating every node leaves the metric unchanged; faithfulness is undefined "
                        "(try fewer intact layers or another ablation)")
    n_nodes = sum(len(f) + int(e) for f, e in circuit.values())
    return Evaluation((m["circuit"] - m["empty"]) / span, (m["complement"] - m["empty"]) / span,
                      n_nodes, m["full"], m["empty"], m["circuit"], m["complement"])
