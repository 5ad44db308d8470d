"""Edge effects between connected submodules (Marks et al.'s `jvp`), batched.

weight(u -> d) = c_d . (d d / d u) . (u_patch - u_clean), summed over positions and averaged
over examples, where c_d is the downstream node's coefficient from the backend (gradient for
AtP, mean gradient for IG, LRP coefficient for RelP, whose rules stay active in the
backward) and the Jacobian is taken at the clean input. `embed` plays resid_{-1};
resid_last -> y is resid_last's node effect.

Which pairs are edges comes from the architecture record's residual topology, per layer l:

- parallel (GPT-NeoX): resid_{l-1} -> attn_l, mlp_l (through the module);
  resid_{l-1}, attn_l, mlp_l -> resid_l (the residual sum is the identity on each summand:
  the skip path alone).
- sequential (GPT-2, Llama/Qwen2/Mistral, Gemma-2): resid_{l-1} -> attn_l (through the
  module); attn_l -> mlp_l and resid_{l-1} -> mlp_l through the mid residual
  mid = resid_{l-1} + attn_l; resid_{l-1}, attn_l, mlp_l -> resid_l (skip path). The edge
  resid_{l-1} -> mlp_l is the *direct* one (Marks et al.'s convention): only the path through
  mid, not resid_{l-1} -> attn_l -> mid, which is the pair of edges resid_{l-1} -> attn_l ->
  mlp_l. Since mid enters the MLP's norm and attn_l enters mid with the identity, the
  gradient of mlp_l at attn_l's output is the gradient at mid, and serves both edges.
  (Gemma-2's attn_l is the post-attention norm's output, so this holds there too.)

Each pair carries `via`, where the upstream's output gradient is read: `up` itself for edges
through a module (at its error node: d out / d error = I), the name of the mid-residual
summand (attn_l) for the direct edge into mlp_l, or None for skip edges (at the downstream
input).

A submodule left without a dictionary (`missing="skip"`) is not in the graph: pairs touching
it are left out, so the graph lacks those edges (its effect passes through unattributed).

How it is computed: the downstream features are re-encoded through their own encoder rows
only (`sparse_encode`), all of one submodule's downstream nodes go through one batched
backward (`is_grads_batched`) to the gradient at the reading site, and that gradient meets
the upstream decoder only in the columns whose features changed between clean and patch
(the others have zero weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..architectures import architecture_for, submodules_for
from ..dictionaries import decoder_directions, sparse_encode


@dataclass
class EdgeEffects:
    """weights[(up, down)] is (len(down_nodes[down]), width(up) + 1): rows are the downstream
    nodes (feature indices, -1 = error), columns the upstream features then the error."""

    weights: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    down_nodes: dict[str, torch.Tensor] = field(default_factory=dict)
    to_output: dict[str, torch.Tensor] = field(default_factory=dict)  # resid_last -> y


def edge_pairs(config) -> list[tuple[str, str, str | None]]:
    """(upstream, downstream, via) for every edge of a model, from its residual topology.

    `via` is where the upstream's output gradient is read: a submodule's output (the
    upstream itself, or attn_l for the direct edge resid_{l-1} -> mlp_l of a sequential
    model) or None for a skip edge into resid_l.
    """
    sequential = architecture_for(config).residual(config) == "sequential"
    pairs = []
    for i in range(config.num_hidden_layers):
        up = "embed" if i == 0 else f"resid_{i - 1}"
        attn, mlp, resid = f"attn_{i}", f"mlp_{i}", f"resid_{i}"
        pairs.append((up, attn, up))
        if sequential:
            pairs += [(up, mlp, attn), (attn, mlp, attn)]
        else:
            pairs.append((up, mlp, up))
        pairs += [(up, resid, None), (attn, resid, None), (mlp, resid, None)]
    return pairs


def _feature_seeds(ids: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """(n, B, T, n) grad_outputs for `sparse_encode(..., ids)`: row k selects feature ids[k]."""
    n = len(ids)
    seeds = torch.zeros((n, *coefficients.shape[:-1], n), dtype=coefficients.dtype,
                        device=coefficients.device)
    rows = torch.arange(n, device=coefficients.device)
    seeds[rows, ..., rows] = coefficients[..., ids].movedim(-1, 0)
    return seeds


def _vjp(output, targets, seeds, batched: bool):
    """Vector-Jacobian products of `output` for a stack of seeds: one batched backward, or a loop."""
    if batched:
        return torch.autograd.grad(output, targets, grad_outputs=seeds, retain_graph=True,
                                   is_grads_batched=True)
    rows = [torch.autograd.grad(output, targets, grad_outputs=seed, retain_graph=True)
            for seed in seeds]
    return tuple(torch.stack([r[i] for r in rows]) for i in range(len(targets)))


def compute_edges(model, dictionaries, clean, patch, feature_grads: dict, error_grads: dict,
                  down_nodes: dict, chunk: int = 64, batched: bool = True) -> EdgeEffects:
    """Edge weights into every downstream node listed in `down_nodes` ({submodule: ids, -1 = error}).

    `clean` must come from `run_spliced` with grads and its graph alive.
    `batched=False` runs one backward per downstream node (the reference code's loop), kept
    for benchmarks and tests; results are equal.
    """
    n_examples = clean.logits.shape[0]
    result = EdgeEffects(down_nodes={k: torch.as_tensor(v, dtype=torch.long)
                                     for k, v in down_nodes.items()})
    upstream = _UpstreamDeltas(dictionaries, clean, patch)
    by_down: dict[str, list[tuple[str, str | None]]] = {}
    for up, down, via in edge_pairs(model.config):
        if up not in dictionaries or down not in dictionaries:
            continue
        by_down.setdefault(down, []).append((up, via))
    for down, ups in by_down.items():
        ids = result.down_nodes.get(down)
        if ids is None or len(ids) == 0:
            continue
        node, ae = clean.nodes[down], dictionaries[down]
        # where each upstream's output gradient is read: an error node (d out / d error = I)
        # for edges through a module, the downstream input for skip edges
        targets = [clean.nodes[via].error if via is not None else node.input for _, via in ups]
        rows = {up: [] for up, _ in ups}
        features = ids[ids >= 0]
        for start in range(0, len(features), chunk):
            part = features[start:start + chunk].to(node.input.device)
            source = sparse_encode(ae, node.input, part)
            grads = _vjp(source, targets, _feature_seeds(part, feature_grads[down]), batched)
            for (up, _), g_out in zip(ups, grads):
                rows[up].append(upstream.weights(up, g_out))
        if (ids < 0).any():
            error_source = node.input - ae.decode(ae.encode(node.input))
            grads = torch.autograd.grad(error_source, targets, grad_outputs=error_grads[down],
                                        retain_graph=True)
            for (up, _), g_out in zip(ups, grads):
                rows[up].append(upstream.weights(up, g_out.unsqueeze(0)))
        order = torch.cat([torch.nonzero(ids >= 0).flatten(), torch.nonzero(ids < 0).flatten()])
        for up, parts in rows.items():
            stacked = torch.cat(parts) / n_examples
            result.weights[(up, down)] = stacked[torch.argsort(order).to(stacked.device)]
    last = submodules_for(model.config)[-1].name
    if last not in dictionaries:
        return result
    d_f, d_e = upstream[last][:2]
    result.to_output[last] = torch.cat([
        (d_f * feature_grads[last]).sum((0, 1)),
        (d_e * error_grads[last]).sum((0, 1, 2)).view(1)]) / n_examples
    return result


class _UpstreamDeltas:
    """Patch - clean values of each node and the decoder columns of its changed features,
    computed on first use."""

    def __init__(self, dictionaries, clean, patch):
        self.dictionaries, self.clean, self.patch = dictionaries, clean, patch
        self.cache: dict[str, tuple] = {}

    def __getitem__(self, name: str) -> tuple:
        if name not in self.cache:
            node = self.clean.nodes[name]
            d_f = self.patch.nodes[name].features - node.features.detach()
            d_e = self.patch.nodes[name].error - node.error.detach()
            changed = torch.nonzero((d_f != 0).flatten(0, 1).any(0)).flatten()
            directions = decoder_directions(self.dictionaries[name], changed).detach().to(d_f.dtype)
            self.cache[name] = (d_f, d_e, changed, directions, d_f[..., changed])
        return self.cache[name]

    def weights(self, up: str, g_out: torch.Tensor) -> torch.Tensor:
        """(n, width + 1) edge weights from the gradient (n, B, T, d) at `up`'s output."""
        d_f, d_e, changed, directions, d_changed = self[up]
        out = torch.zeros(g_out.shape[0], d_f.shape[-1] + 1, dtype=g_out.dtype, device=g_out.device)
        out[:, changed] = ((g_out @ directions.T) * d_changed).sum((1, 2))
        out[:, -1] = (g_out * d_e).sum((1, 2, 3))
        return out
