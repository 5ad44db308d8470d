"""Gemma-2: sequential residual with extra norms, gated GELU-tanh MLP, soft-capping.

mid = resid_{l-1} + post_attention_layernorm(self_attn(input_layernorm(resid_{l-1}))) and
resid_l = mid + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(mid))). The `attn_l`
and `mlp_l` nodes are the post-norms' outputs, so resid_l = resid_{l-1} + attn_l + mlp_l holds
exactly and the skip edges are identities, as in the other families.

`embed` is `embed_tokens`'s output, which `Gemma2TextScaledWordEmbedding` has already
multiplied by sqrt(hidden_size): the residual stream's start. (Gemma Scope's embedding SAEs
read the same scaled value.)

`Gemma2RMSNorm` computes in float32 and multiplies by (1 + weight); its LN-rule keeps both.
Attention logits are soft-capped (tanh(s / c) * c) before the mask and scaled by
query_pre_attn_scalar^-0.5; the AH attention function keeps both, exactly as eager. The final
logits are soft-capped too; LRP leaves that tanh as in the forward (plain gradient), so exact
conservation needs `final_logit_softcapping=None` (`linear_config`).
"""

from __future__ import annotations

from . import register
from .base import Architecture
from .llama import _zero_queries

GEMMA2 = register(Architecture(
    name="gemma2",
    model_types=("gemma2",),
    embed_path="model.embed_tokens",
    layers_path="model.layers",
    attn_path="post_attention_layernorm",
    mlp_path="post_feedforward_layernorm",
    attn_returns_tuple=False,
    final_norm_path="model.norm",
    norm_classes=("Gemma2RMSNorm",),
    mlp_module="mlp",
    activation="act_fn",
    gated_mlp_classes=("Gemma2MLP",),
    gated_product_input="down_proj",
    norm_rule="gemma_rms_norm",
    zero_queries=_zero_queries,
    linear_config={"final_logit_softcapping": None, "attn_logit_softcapping": None},
    configs={"gemma2": dict(  # Gemma-2-2B
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, max_position_embeddings=8192,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)},
    small=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4),
))
