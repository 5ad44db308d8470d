"""Nodes and tracing: one nnsight trace with every SAE spliced in, the forward unchanged.

At each submodule with output x: f = encode(x), x_hat = decode(f), error = x - x_hat, and
x_hat + error is written back, so logits equal the plain model's. For gradients the feature
tensor is a leaf (it feeds decode only) and the error is x - x_hat.detach(), so

- d out/d f = W_dec and d out/d error = I: node gradients are readable from both;
- d out/d x = I: a splice is transparent to everything upstream of it;
- `features_of_input` = encode(x) stays connected to x, the source for edge gradients.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable

import torch

from .architectures import Submodule, resolve_path, submodules_for

Edit = Callable[[Submodule, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]


@dataclass
class NodeValues:
    """The nodes of one submodule in one run, each (batch, position, width)."""

    features: torch.Tensor
    error: torch.Tensor
    input: torch.Tensor
    features_of_input: torch.Tensor | None = None


@dataclass
class SplicedRun:
    """What a spliced forward leaves behind: every submodule's nodes and the logits."""

    nodes: dict[str, NodeValues]
    logits: torch.Tensor


def tokenize(tokenizer, prompts: list[str], device="cpu") -> dict[str, torch.Tensor]:
    """Left-padded token ids, attention mask and matching position ids for `prompts`."""
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    mask = enc["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device)}


def model_submodules(model) -> list[Submodule]:
    """The circuit submodules of an nnsight-wrapped model, in forward order."""
    return submodules_for(model.config)


def run_spliced(model, dictionaries: dict, inputs: dict[str, torch.Tensor], *,
                edit: Edit | None = None, grad: bool = True,
                track_inputs: bool = False) -> SplicedRun:
    """Run `model` on tokenized `inputs` with the given SAEs spliced in.

    `edit(submodule, features, error)` may return replacement (features, error) for a
    submodule (patching, interpolation, ablation); the replacements become the node values.
    With `grad`, features are leaves that require grad and errors carry gradients; with
    `track_inputs`, `features_of_input` keeps encode(x) connected to upstream nodes.
    """
    subs = [s for s in model_submodules(model) if s.name in dictionaries]
    nodes: dict[str, NodeValues] = {}
    with torch.set_grad_enabled(grad), model.trace(dict(inputs)):
        for sub in subs:
            envoy = resolve_path(model, sub.module_path)
            out = envoy.output
            x = out[0] if sub.output_is_tuple else out
            ae = dictionaries[sub.name]
            connected = ae.encode(x)
            features = connected.detach().requires_grad_(grad)
            x_hat = ae.decode(features)  # the one decode of an unedited run
            error = x - x_hat.detach()
            if edit is not None:
                replaced = edit(sub, features.detach(), error)
                if replaced is not None:
                    features = replaced[0].detach().requires_grad_(grad)
                    error = replaced[1]
                    x_hat = ae.decode(features)
            if grad and not error.requires_grad:
                error.requires_grad_(True)
            new_x = x_hat + error
            envoy.output = (new_x, *out[1:]) if sub.output_is_tuple else new_x
            nodes[sub.name] = NodeValues(features, error, x, connected if track_inputs else None)
        logits = model.output.logits
        saved = _save((nodes, logits))
    gc.collect()
    return SplicedRun(*saved)


def _save(value):
    import nnsight

    return nnsight.save(value)
