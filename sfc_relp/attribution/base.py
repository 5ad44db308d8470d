"""What every attribution backend shares: the task batch, the metric, node effects, and the
one call signature (captum's style): `Method(model, dictionaries, metric).attribute(batch)`.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UserError
from ..tracing import SplicedRun, run_spliced, tokenize

AGGREGATIONS = ("sum", "none")


@dataclass
class TaskBatch:
    """Clean and patch prompts (equal token lengths per example) with their answer ids."""

    clean: dict[str, torch.Tensor]
    patch: dict[str, torch.Tensor]
    clean_answer: torch.Tensor
    patch_answer: torch.Tensor

    @classmethod
    def from_rows(cls, tokenizer, rows, device="cpu") -> "TaskBatch":
        """From dataset rows (a dict of columns or a list of dicts) in Marks et al.'s schema."""
        if len(rows) == 0 or (isinstance(rows, dict) and not rows.get("clean_prefix")):
            raise UserError("a task batch needs at least one example; got none")
        if isinstance(rows, list):
            rows = {k: [r[k] for r in rows] for k in rows[0]}
        clean = tokenize(tokenizer, rows["clean_prefix"], device)
        patch = tokenize(tokenizer, rows["patch_prefix"], device)
        if clean["input_ids"].shape != patch["input_ids"].shape or \
                not torch.equal(clean["attention_mask"], patch["attention_mask"]):
            raise UserError("clean and patch prefixes must tokenize to equal lengths per example; "
                            "validate the dataset first (sfc_relp.datasets.validate)")

        def answer_ids(answers):
            ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
            bad = [a for a, i in zip(answers, ids) if len(i) != 1]
            if bad:
                raise UserError(f"answer {bad[0]!r} is not a single token; validate the dataset first")
            return torch.tensor([i[0] for i in ids], device=device)
        return cls(clean, patch, answer_ids(rows["clean_answer"]), answer_ids(rows["patch_answer"]))

    def __len__(self) -> int:
        return self.clean["input_ids"].shape[0]

    def repeat(self, n: int) -> "TaskBatch":
        """The batch tiled n times along the example axis (copy k at rows k*B..(k+1)*B-1)."""
        tile = lambda d: {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in d.items()}
        return TaskBatch(tile(self.clean), tile(self.patch), self.clean_answer.repeat(n),
                         self.patch_answer.repeat(n))


Metric = Callable[[torch.Tensor, TaskBatch], torch.Tensor]


def logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Per example: logit(patch answer) - logit(clean answer) at the last position, in at
    least float32 (bfloat16/float16 logits are cast up) and on the logits' device."""
    last = logits[:, -1]
    last = last.to(torch.promote_types(last.dtype, torch.float32))
    rows = torch.arange(last.shape[0], device=last.device)
    patch, clean = batch.patch_answer.to(last.device), batch.clean_answer.to(last.device)
    return last[rows, patch] - last[rows, clean]


@dataclass
class NodeEffects:
    """Effects on the metric of every feature and error node.

    aggregation 'none': features[s] is (batch, pos, width), errors[s] is (batch, pos).
    aggregation 'sum': summed over positions and averaged over examples: (width,) and ().
    `deltas` and `grads` keep what edges need: patch - clean values and the metric's
    gradient (or propagation coefficient) at each node, per (example, position).
    """

    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    aggregation: str = "none"

    def aggregate(self, aggregation: str) -> "NodeEffects":
        """Aggregated copy: 'sum' sums positions and averages examples; 'none' keeps both."""
        if aggregation not in AGGREGATIONS:
            raise UserError(f"unknown aggregation {aggregation!r}; use sum or none")
        if aggregation == self.aggregation or aggregation == "none":
            return self
        return NodeEffects({k: v.sum(1).mean(0) for k, v in self.features.items()},
                           {k: v.sum(1).mean(0) for k, v in self.errors.items()}, "sum")

    def total(self) -> float:
        """Sum over all nodes (summed over positions, averaged over examples)."""
        agg = self.aggregate("sum")
        return float(sum(v.sum() for v in agg.features.values()) +
                     sum(v.sum() for v in agg.errors.values()))


class Attribution(abc.ABC):
    """Base of every backend. Subclasses implement `node_effects` (per example and position)."""

    name = "base"

    def __init__(self, model, dictionaries: dict, metric: Metric = logit_diff):
        self.model = model
        self.dictionaries = dictionaries
        self.metric = metric

    def run(self, inputs, **options):
        """`run_spliced` on this method's model and dictionaries (overridable per call)."""
        dictionaries = options.pop("dictionaries", self.dictionaries)
        return run_spliced(self.model, dictionaries, inputs, **options)

    def attribute(self, batch: TaskBatch, aggregation: str = "sum") -> NodeEffects:
        """Effects of every node on the metric, aggregated as asked."""
        if aggregation not in AGGREGATIONS:
            raise UserError(f"unknown aggregation {aggregation!r}; use sum or none")
        return self.node_effects(batch).aggregate(aggregation)

    @abc.abstractmethod
    def node_effects(self, batch: TaskBatch) -> NodeEffects:
        """Effects per (example, position): features (B, T, width), errors (B, T)."""

    def edges(self, batch: TaskBatch, down_nodes: dict, up_nodes: dict | None = None,
              chunk: int = 64, batched: bool = True):
        """Edge weights into the listed downstream nodes ({submodule: ids, -1 = error}).

        One signature for every backend. `up_nodes` names the upstream nodes the caller keeps;
        gradient backends get every upstream column from the same backward pass and ignore
        it, exact path patching runs only those.
        """
        from .edges import compute_edges

        check_node_ids(down_nodes, self.dictionaries)
        with self.rules():
            clean, patch = self.clean_and_patch(batch)
            feature_grads, error_grads = self.coefficients(batch, clean, patch)
            return compute_edges(self.model, self.dictionaries, clean, patch, feature_grads,
                                 error_grads, down_nodes, chunk, batched)

    def coefficients(self, batch: TaskBatch, clean: SplicedRun, patch: SplicedRun) -> tuple[dict, dict]:
        """Per-node coefficient multiplying (patch - clean): the metric's gradient by default."""
        return self.gradients(clean, batch, retain_graph=True)

    def rules(self):
        """Context in which forward and backward run (LRP rules for RelP; nothing by default)."""
        return contextlib.nullcontext()

    # shared pieces
    def clean_and_patch(self, batch: TaskBatch, track_inputs: bool = False) -> tuple[SplicedRun, SplicedRun]:
        """The clean run (with grads) and the patch run (values only)."""
        clean = self.run(batch.clean, track_inputs=track_inputs)
        with torch.no_grad():
            patch = self.run(batch.patch, grad=False)
        return clean, patch

    def gradients(self, run: SplicedRun, batch: TaskBatch, retain_graph: bool = False) -> tuple[dict, dict]:
        """d metric / d node for every feature and error node of a run (one backward)."""
        names = list(run.nodes)
        value = self.metric(run.logits, batch).sum()
        grads = torch.autograd.grad(value, [run.nodes[n].features for n in names] +
                                    [run.nodes[n].error for n in names], retain_graph=retain_graph,
                                    allow_unused=True)
        fill = lambda g, t: torch.zeros_like(t) if g is None else g
        return ({n: fill(grads[i], run.nodes[n].features) for i, n in enumerate(names)},
                {n: fill(grads[i + len(names)], run.nodes[n].error) for i, n in enumerate(names)})


def check_node_ids(nodes: dict, dictionaries: dict) -> None:
    """UserError unless `nodes` maps known submodules to integer ids in [-1, width) (-1 = error)."""
    for name, ids in nodes.items():
        if name not in dictionaries:
            raise UserError(f"node ids given for unknown submodule {name!r}; known: {', '.join(dictionaries)}")
        ids = torch.as_tensor(ids)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
            raise UserError(f"node ids of {name} must be integers, got dtype {ids.dtype}")
        width = getattr(dictionaries[name], "dict_size", None)
        if ids.numel() and (int(ids.min()) < -1 or (width is not None and int(ids.max()) >= width)):
            raise UserError(f"node ids of {name} must lie in [-1, {width}) (-1 = error node), got "
                            f"{int(ids.min())}..{int(ids.max())}")


def linear_effects(clean: SplicedRun, patch: SplicedRun, feature_grads: dict,
                   error_grads: dict) -> NodeEffects:
    """(patch - clean) * coefficient for features; summed over d_model for errors. Computed in
    at least float32, so bfloat16/float16 runs lose no precision in the difference and sum."""
    features, errors = {}, {}
    for name, node in clean.nodes.items():
        up = lambda t: t.detach().to(torch.promote_types(t.dtype, torch.float32))
        features[name] = (up(patch.nodes[name].features) - up(node.features)) * up(feature_grads[name])
        errors[name] = ((up(patch.nodes[name].error) - up(node.error)) * up(error_grads[name])).sum(-1)
    return NodeEffects(features, errors, "none")
