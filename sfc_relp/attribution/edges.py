"""Edge effects between connected submodules (Marks et al.'s `jvp`), batched.

weight(u -> d) = c_d . (d d / d u) . (u_patch - u_clean), summed over positions and averaged
over examples, where c_d is the downstream node's coefficient from the backend (gradient for
AtP, mean gradient for IG, LRP coefficient for RelP, whose rules stay active in the
backward) and the Jacobian is taken at the clean input.

Edges for GPT-NeoX's parallel residual, per layer l (embed plays resid_{-1}):
resid_{l-1} -> attn_l, mlp_l (through the module: batched vector-Jacobian products) and
resid_{l-1}, attn_l, mlp_l -> resid_l (the residual sum is the identity on each summand, so
only resid_l's encoder Jacobian is differentiated and the skip path stays alone); resid_last
-> y is resid_last's node effect. All downstream nodes of one submodule share one batched
backward (`is_grads_batched`), not one pass each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..architectures import submodules_for
from ..errors import UserError


@dataclass
class EdgeEffects:
    """weights[(up, down)] is (len(down_nodes[down]), width(up) + 1): rows are the downstream
    nodes (feature indices, -1 = error), columns the upstream features then the error."""

    weights: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    down_nodes: dict[str, torch.Tensor] = field(default_factory=dict)
    to_output: dict[str, torch.Tensor] = field(default_factory=dict)  # resid_last -> y


def edge_pairs(config) -> list[tuple[str, str, bool]]:
    """(upstream, downstream, through_module) for a parallel-residual GPT-NeoX config."""
    if not getattr(config, "use_parallel_residual", False):
        raise UserError("edges are implemented for parallel-residual models (Pythia) only")
    pairs = []
    for i in range(config.num_hidden_layers):
        up = "embed" if i == 0 else f"resid_{i - 1}"
        pairs += [(up, f"attn_{i}", True), (up, f"mlp_{i}", True), (up, f"resid_{i}", False),
                  (f"attn_{i}", f"resid_{i}", False), (f"mlp_{i}", f"resid_{i}", False)]
    return pairs


def _seeds(node_ids: torch.Tensor, feature_grad: torch.Tensor, error_grad: torch.Tensor):
    """Batched grad_outputs: one row per downstream node (feature i: one-hot * its coefficient)."""
    n = len(node_ids)
    f_seed = torch.zeros((n, *feature_grad.shape), dtype=feature_grad.dtype)
    e_seed = torch.zeros((n, *error_grad.shape), dtype=error_grad.dtype)
    for row, index in enumerate(node_ids.tolist()):
        if index < 0:
            e_seed[row] = error_grad
        else:
            f_seed[row, ..., index] = feature_grad[..., index]
    return f_seed, e_seed


def compute_edges(model, dictionaries, clean, patch, feature_grads: dict, error_grads: dict,
                  down_nodes: dict[str, torch.Tensor], chunk: int = 32,
                  batched: bool = True) -> EdgeEffects:
    """Edge weights into every downstream node listed in `down_nodes` ({submodule: ids, -1 = error}).

    `clean` must come from `run_spliced(..., track_inputs=True)` with its graph alive.
    `batched=False` runs one backward per downstream node (the reference code's loop), kept
    for benchmarks and tests; results are the same.
    """
    n_examples = clean.logits.shape[0]
    result = EdgeEffects(down_nodes={k: torch.as_tensor(v) for k, v in down_nodes.items()})
    deltas = {name: (patch.nodes[name].features - node.features.detach(),
                     patch.nodes[name].error - node.error.detach())
              for name, node in clean.nodes.items()}
    by_down: dict[str, list[tuple[str, bool]]] = {}
    for up, down, through in edge_pairs(model.config):
        by_down.setdefault(down, []).append((up, through))
    for down, ups in by_down.items():
        ids = result.down_nodes.get(down)
        if ids is None or len(ids) == 0:
            continue
        node = clean.nodes[down]
        ae = dictionaries[down]
        outputs = [node.features_of_input, node.input - ae.decode(node.features_of_input)]
        rows_per_up = {up: [] for up, _ in ups}
        for start in range(0, len(ids), chunk):
            f_seed, e_seed = _seeds(ids[start:start + chunk], feature_grads[down], error_grads[down])
            through_ups = [up for up, through in ups if through]
            inputs = [node.input]
            for up in through_ups:
                inputs += [clean.nodes[up].features, clean.nodes[up].error]
            grads = _vjp(outputs, inputs, f_seed, e_seed, batched)
            g_input = grads[0]
            for k, up in enumerate(through_ups):
                g_f, g_e = grads[1 + 2 * k], grads[2 + 2 * k]
                rows_per_up[up].append(_weights(g_f, g_e, deltas[up]))
            for up, through in ups:
                if not through:  # identity into the residual sum: chain through the decoder
                    w_dec = dictionaries[up].decoder.weight if hasattr(dictionaries[up], "decoder") else None
                    g_f = g_input @ w_dec if w_dec is not None else g_input
                    rows_per_up[up].append(_weights(g_f, g_input, deltas[up]))
        for up, rows in rows_per_up.items():
            result.weights[(up, down)] = torch.cat(rows) / n_examples
    last = submodules_for(model.config)[-1].name
    result.to_output[last] = torch.cat([
        (deltas[last][0] * feature_grads[last]).sum((0, 1)),
        (deltas[last][1] * error_grads[last]).sum((0, 1, 2)).view(1)]) / n_examples
    return result


def _vjp(outputs, inputs, f_seed, e_seed, batched: bool):
    """Vector-Jacobian products for a stack of seeds: one batched backward, or a loop."""
    if batched:
        return torch.autograd.grad(outputs, inputs, grad_outputs=[f_seed, e_seed],
                                   retain_graph=True, is_grads_batched=True, allow_unused=True)
    rows = [torch.autograd.grad(outputs, inputs, grad_outputs=[f_seed[k], e_seed[k]],
                                retain_graph=True, allow_unused=True) for k in range(len(f_seed))]
    return tuple(None if rows[0][i] is None else torch.stack([r[i] for r in rows])
                 for i in range(len(inputs)))


def _weights(g_f, g_e, delta) -> torch.Tensor:
    """(n, width + 1): sum over examples and positions of coefficient * delta."""
    d_f, d_e = delta
    n = g_e.shape[0]
    zeros = lambda shape: torch.zeros(shape, dtype=d_e.dtype)
    feature_part = (g_f * d_f).sum((1, 2)) if g_f is not None else zeros((n, d_f.shape[-1]))
    error_part = (g_e * d_e).sum((1, 2, 3)) if g_e is not None else zeros((n,))
    return torch.cat([feature_part, error_part.view(n, 1)], dim=1)
