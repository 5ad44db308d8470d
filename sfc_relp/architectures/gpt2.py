"""GPT-2: sequential residual, LayerNorm, gelu_new MLP built from Conv1D, learned positions.

`embed` is `transformer.drop`'s output: wte(ids) + wpe(positions) (dropout is the identity in
eval mode). That sum, not `wte` alone, is what the residual stream starts from, so the edges
embed -> layer 0 are exact. SAEs trained on `hook_embed` (wte only) read a different place.
Attention and MLP outputs include their projections' biases (`c_proj`) and dropout (off).
"""

from __future__ import annotations

import torch

from . import register
from .base import Architecture


def _zero_queries(layer) -> None:
    c_attn = layer.attn.c_attn  # Conv1D: weight (d, 3d), columns q | k | v
    d = c_attn.weight.shape[0]
    with torch.no_grad():
        c_attn.weight[:, :d] = 0
        c_attn.bias[:d] = 0


GPT2 = register(Architecture(
    name="gpt2",
    model_types=("gpt2",),
    embed_path="transformer.drop",
    layers_path="transformer.h",
    attn_path="attn",
    mlp_path="mlp",
    final_norm_path="transformer.ln_f",
    norm_classes=("LayerNorm",),
    activation="act",
    zero_queries=_zero_queries,
    configs={"gpt2": dict(  # GPT-2 small
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=50256,
        eos_token_id=50256, tie_word_embeddings=True)},
    small=dict(n_embd=64, n_head=4, n_layer=2, n_inner=256),
    notes="Conv1D linear maps (the epsilon rule covers them); tied unembedding.",
))
