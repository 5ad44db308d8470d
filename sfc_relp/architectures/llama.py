"""Llama-style decoders (Llama, Qwen2, Mistral): sequential residual, RMSNorm, gated SiLU MLP.

resid_l = mid + mlp(post_attention_layernorm(mid)), mid = resid_{l-1} + self_attn(input_layernorm(
resid_{l-1})); the MLP is down_proj(act_fn(gate_proj(x)) * up_proj(x)), whose product is the
input of `down_proj` (the Half-rule's site). Attention is grouped-query (num_key_value_heads,
`repeat_kv`); Qwen2 has q/k/v biases. `embed` is `embed_tokens`'s output (no scale).
"""

from __future__ import annotations

import torch

from . import register
from .base import Architecture


def _zero_queries(layer) -> None:
    q = layer.self_attn.q_proj
    with torch.no_grad():
        q.weight.zero_()
        if q.bias is not None:
            q.bias.zero_()


LLAMA = register(Architecture(
    name="llama",
    model_types=("llama", "qwen2", "mistral"),
    embed_path="model.embed_tokens",
    layers_path="model.layers",
    attn_path="self_attn",
    mlp_path="mlp",
    final_norm_path="model.norm",
    norm_classes=("LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"),
    activation="act_fn",
    gated_mlp_classes=("LlamaMLP", "Qwen2MLP", "MistralMLP"),
    gated_product_input="down_proj",
    norm_rule="rms_norm",
    zero_queries=_zero_queries,
))
