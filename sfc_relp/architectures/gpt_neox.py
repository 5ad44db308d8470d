"""GPT-NeoX (Pythia): parallel residual by default, LayerNorm, GELU MLP, no gate.

resid_l = resid_{l-1} + attention(ln_in(resid_{l-1})) + mlp(ln_post(resid_{l-1})) when
`use_parallel_residual` (every Pythia); otherwise sequential. `embed` is `embed_in`'s output,
which is the residual stream's start (no scale, no position embedding: rotary in attention).
"""

from __future__ import annotations

import torch

from . import register
from .base import Architecture


def _zero_queries(layer) -> None:
    qkv = layer.attention.query_key_value
    head = layer.attention.head_size
    rows = torch.arange(qkv.out_features) % (3 * head) < head  # per head: q, k, v rows
    with torch.no_grad():
        qkv.weight[rows] = 0
        qkv.bias[rows] = 0


GPT_NEOX = register(Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    embed_path="gpt_neox.embed_in",
    layers_path="gpt_neox.layers",
    attn_path="attention",
    mlp_path="mlp",
    final_norm_path="gpt_neox.final_layer_norm",
    norm_classes=("LayerNorm",),
    activation="act",
    parallel_residual=lambda config: bool(getattr(config, "use_parallel_residual", True)),
    zero_queries=_zero_queries,
    configs={"gpt_neox": dict(  # Pythia-70M(-deduped)
        vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
        intermediate_size=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
        max_position_embeddings=2048, tie_word_embeddings=False, hidden_act="gelu",
        layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0)},
    small=dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2),
))
