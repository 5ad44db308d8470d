"""Random-weight models and SAEs in the real on-disk formats, for tests and benchmarks.

`PYTHIA_70M` is Pythia-70M's exact architecture; with the real GPT-NeoX tokenizer and
32768-wide AutoEncoders in Marks et al.'s layout this reproduces the published setting's
shapes and file formats without downloading anything.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .architectures import submodules_for

PYTHIA_70M = dict(
    vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
    intermediate_size=2048, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
    max_position_embeddings=2048, tie_word_embeddings=False, hidden_act="gelu",
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
)


def load_tokenizer_file(tokenizer_file):
    """A fast tokenizer from a `tokenizers` JSON file, with Pythia's special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def save_random_model(out_dir, tokenizer, seed: int = 0, **overrides) -> Path:
    """Save a random-weight GPT-NeoX model (Pythia-70M shape unless overridden) in HF format."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(**{**PYTHIA_70M, **overrides})
    model = GPTNeoXForCausalLM(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_random_dictionaries(root, model_name: str, config, width: int, seed: int = 0,
                             dict_id: str = "10") -> Path:
    """Random dictionary_learning AutoEncoders for every submodule, in Marks et al.'s layout."""
    import json

    from dictionary_learning.dictionary import AutoEncoder

    torch.manual_seed(seed)
    for sub in submodules_for(config):
        ae = AutoEncoder(config.hidden_size, width)
        folder = Path(root) / model_name / sub.dictionary_dirname / f"{dict_id}_{width}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(ae.state_dict(), folder / "ae.pt")
        (folder / "config.json").write_text(json.dumps({"trainer": {
            "dict_class": "AutoEncoder", "activation_dim": config.hidden_size,
            "dict_size": width, "submodule_name": sub.name}}, indent=1))
    return Path(root)
