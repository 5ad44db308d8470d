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
    configs={
        "llama": dict(  # Llama-3.2-1B (without its long-context rope scaling)
            vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
            max_position_embeddings=131072, tie_word_embeddings=True, hidden_act="silu",
            bos_token_id=128000, eos_token_id=128001),
        "qwen2": dict(  # Qwen2-0.5B
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
            max_position_embeddings=131072, tie_word_embeddings=True, hidden_act="silu",
            bos_token_id=151643, eos_token_id=151643),
        "mistral": dict(  # Mistral-7B-v0.1
            vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=10000.0,
            max_position_embeddings=32768, sliding_window=4096, tie_word_embeddings=False,
            hidden_act="silu", bos_token_id=1, eos_token_id=2),
    },
    small=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16),
))
