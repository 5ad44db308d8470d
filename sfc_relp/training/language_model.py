"""Train a bundled LM of one family on the synthetic corpus, and measure its tasks.

Every family gets a tiny config of comparable size (d_model 64, 6 layers, 4 heads, MLP width
256) that keeps what distinguishes the real models: GPT-NeoX's parallel residual and partial
rotary (Pythia), GPT-2's learned positions and tied embeddings, Qwen2's RMSNorm, gated SiLU MLP
and grouped-query attention, Gemma2's gated GELU MLP, sandwich norms and logit soft-capping.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..datasets import generate
from ..errors import UserError
from ..templates import FAMILIES
from ..tracing import tokenize

# Pythia-70M's architecture (parallel residual, partial rotary, GELU, untied embeddings),
# narrower so model and 19 SAEs stay a few MB.
TINY_PYTHIA = dict(
    hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256,
    rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
    tie_word_embeddings=False, hidden_act="gelu", max_position_embeddings=64,
    layer_norm_eps=1e-5, attention_dropout=0.0, hidden_dropout=0.0,
)


TINY_CONFIGS = {
    "gpt_neox": ("GPTNeoXConfig", TINY_PYTHIA),
    "gpt2": ("GPT2Config", dict(
        n_embd=64, n_layer=6, n_head=4, n_inner=256, n_positions=64, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", dict(
        hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, hidden_act="silu", max_position_embeddings=64, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_dropout=0.0)),
    "gemma2": ("Gemma2Config", dict(
        hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, query_pre_attn_scalar=16, intermediate_size=256,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=64, rms_norm_eps=1e-6,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=True,
        attention_dropout=0.0)),
}
DEFAULT_NAMES = {"gpt_neox": "tiny-pythia", "gpt2": "tiny-gpt2", "qwen2": "tiny-qwen2",
                 "gemma2": "tiny-gemma2"}


def tiny_config(arch: str, tokenizer, **overrides):
    """The HF config of family `arch`'s tiny model for `tokenizer`'s vocabulary."""
    import transformers

    if arch not in TINY_CONFIGS:
        raise UserError(f"unknown architecture {arch!r}; choose from {', '.join(TINY_CONFIGS)}")
    class_name, settings = TINY_CONFIGS[arch]
    config = getattr(transformers, class_name)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **{**settings, **overrides})
    if arch == "gemma2":  # soft-capping of attention logits needs eager attention
        config._attn_implementation = "eager"
    return config


def build_model(config):
    """A freshly initialised causal LM for `config` (seed torch first for reproducibility)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


def encode_corpus(tokenizer, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids and attention mask for the whole corpus."""
    tokenizer.padding_side = "right"
    enc = tokenizer(sentences, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def train_language_model(tokenizer, sentences: list[str], steps: int, batch_size: int = 64,
                         lr: float = 3e-3, seed: int = 0, progress: bool = True,
                         arch: str = "gpt_neox", **overrides):
    """A causal LM of family `arch` trained from scratch with AdamW and a cosine schedule."""
    config = tiny_config(arch, tokenizer, **overrides)
    torch.manual_seed(seed)
    model = build_model(config)
    model.train()
    ids, mask = encode_corpus(tokenizer, sentences)
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup)
                                                 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="training LM", disable=None if progress else True, mininterval=2)
    for step in bar:
        batch = torch.randint(0, len(ids), (batch_size,), generator=generator)
        width = int(mask[batch].sum(1).max())
        out = model(input_ids=ids[batch, :width], attention_mask=mask[batch, :width],
                    labels=labels[batch, :width])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{out.loss.item():.3f}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def task_accuracy(model, tokenizer, family: str, split: str = "test", n: int = 256,
                  batch_size: int = 128) -> float:
    """Share of prompts where logit(clean answer) > logit(patch answer) at the last position."""
    data = generate(family, split, n)
    correct = 0
    for start in range(0, len(data), batch_size):
        rows = data[start:start + batch_size]
        logits = model(**tokenize(tokenizer, rows["clean_prefix"])).logits[:, -1]
        clean = torch.tensor([tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in rows["clean_answer"]])
        patch = torch.tensor([tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in rows["patch_answer"]])
        picked = logits.gather(1, torch.stack([clean, patch], 1))
        correct += int((picked[:, 0] > picked[:, 1]).sum())
    return correct / len(data)


def accuracies(model, tokenizer, split: str = "test") -> dict[str, float]:
    return {family: task_accuracy(model, tokenizer, family, split) for family in FAMILIES}
