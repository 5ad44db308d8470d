"""Faithfulness and completeness of a circuit under ablation (Wang et al. 2023; Marks et al.).

F(C) = (m(C) - m(empty)) / (m(M) - m(empty)): m(M) is the full model, m(empty) has every
ablatable node ablated, m(C) keeps only the circuit's nodes. Completeness is F of the
complement M \\ C. Ablation replaces a node by its per-position mean over the evaluation
batch's patch prompts (default), by zero, or by the value in another example's patch prompt
(resample, seeded per batch). Embed and the first third of the layers are left intact by default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    if intact_layers < 0 or intact_layers >= config.num_hidden_layers:
        raise UserError(f"intact layers must be in 0..{config.num_hidden_layers - 1} for a model with "
                        f"{config.num_hidden_layers} layers, got {intact_layers}")
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


@dataclass
class Baseline:
    """What every circuit evaluated on one dataset shares: per batch of this rank's share, the
    ablation values (from the patch run) and the full model's metric. Computed once, reused
    across circuits (the sweep evaluates one circuit per method and threshold)."""

    ablation: str
    seed: int
    batches: list = field(default_factory=list)  # (TaskBatch, ablation values)
    full: torch.Tensor | float = 0.0  # metric summed over this rank's examples (float64)
    count: int = 0
    empty: dict = field(default_factory=dict)  # (names, error policy) -> metric sum, cached


def baseline_runs(model, dictionaries, dataset, ablation: str = "mean", batch_size: int = 32,
                  metric=logit_diff, seed: int = 0) -> Baseline:
    """The full and patch runs of every batch of `dataset` (this rank's whole batches under
    torchrun), reduced to what evaluation needs; resample ablation is seeded per batch, so the
    values equal the single-process ones."""
    if ablation not in ABLATIONS:
        raise UserError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")
    base = Baseline(ablation, seed)
    batches = batches_of(model.tokenizer, dataset, batch_size, input_device(model))
    distributed.require_shards(len(batches))
    for index, batch in distributed.shard(list(enumerate(batches))):
        with torch.no_grad():
            patch = run_spliced(model, dictionaries, batch.patch, grad=False)
            full = run_spliced(model, dictionaries, batch.clean, grad=False)
        generator = torch.Generator().manual_seed(seed + index)
        base.batches.append((batch, _ablation_values(patch, ablation, generator)))
        base.full = base.full + metric(full.logits, batch).double().sum()
        base.count += len(batch)
        del patch, full
    return base


def evaluate_circuit(model, dictionaries, dataset, circuit: dict, ablation: str = "mean",
                     error_policy: str = "outside", intact_layers: int | None = None,
                     batch_size: int = 32, metric=logit_diff, seed: int = 0,
                     baseline: Baseline | None = None) -> Evaluation:
    """Faithfulness and completeness of `circuit` ({submodule: (feature ids, error kept)}).

    `baseline` (from `baseline_runs` with the same dataset, ablation, metric and seed) skips
    recomputing the full and patch runs; results are the same.
    """
    if ablation not in ABLATIONS:
        raise UserError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")
    if baseline is not None and (baseline.ablation, baseline.seed) != (ablation, seed):
        raise UserError(f"the baseline was computed for ablation {baseline.ablation!r}, seed "
                        f"{baseline.seed}, not {ablation!r}, {seed}")
    if error_policy not in ERROR_POLICIES:
        raise UserError(f"unknown error policy {error_policy!r}; use one of {', '.join(ERROR_POLICIES)}")
    ablatable = ablatable_submodules(model.config, intact_layers)
    names = [n for n in ablatable if n in dictionaries]  # submodules skipped (--missing skip) stay intact
    if not names:
        raise UserError(f"no dictionary for any ablatable submodule ({', '.join(ablatable)}); "
                        "pass dictionaries (or --neurons)")
    widths = {name: dictionaries[name].dict_size for name in names}
    for name, (features, _) in circuit.items():
        bad = [i for i in features if isinstance(i, bool) or not isinstance(i, int) or i < 0
               or (name in widths and i >= widths[name])]
        if bad:
            raise UserError(f"circuit feature {bad[0]!r} of {name} is not an id in "
                            f"[0, {widths.get(name, '?')})")
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
    if baseline is None:
        baseline = baseline_runs(model, dictionaries, dataset, ablation, batch_size, metric, seed)
    in_circuit, complement = masks(False), masks(True)
    sums = {"circuit": 0.0, "complement": 0.0}  # float64 sums over this rank's examples
    for batch, ablated in baseline.batches:
        for key, kept in (("circuit", in_circuit), ("complement", complement)):
            sums[key] = sums[key] + _metric_with_kept(model, dictionaries, batch, kept, ablated, metric)
    empty_key = (tuple(names), error_policy)
    if empty_key not in baseline.empty:
        baseline.empty[empty_key] = sum(_metric_with_kept(model, dictionaries, batch, empty, ablated, metric)
                                        for batch, ablated in baseline.batches)
    keys = ("full", "empty", "circuit", "complement")
    local = {"full": baseline.full, "empty": baseline.empty[empty_key], **sums}
    reduced = distributed.all_reduce_sum([torch.as_tensor(local[k], dtype=torch.float64).reshape(1).cpu()
                                          for k in keys] +
                                         [torch.tensor([float(baseline.count)], dtype=torch.float64)])
    totals, count = {k: v.item() for k, v in zip(keys, reduced)}, reduced[-1].item()
    m = {k: v / count for k, v in totals.items()}
    span = m["full"] - m["empty"]
    if abs(span) < 1e-9:
        raise UserError("ablating every node leaves the metric unchanged; faithfulness is undefined "
                        "(try fewer intact layers or another ablation)")
    n_nodes = sum(len(f) + int(e) for f, e in circuit.values())
    return Evaluation((m["circuit"] - m["empty"]) / span, (m["complement"] - m["empty"]) / span,
                      n_nodes, m["full"], m["empty"], m["circuit"], m["complement"])
