"""Random-weight models and SAEs in the real on-disk formats, for tests and benchmarks.

Any registered family at a real model's shapes (its architecture record's `configs`, e.g.
Pythia-70M, GPT-2 small, Qwen2-0.5B, Gemma-2-2B) or as a d_model-64 toy, with the vocabulary
of the tokenizer given (the real GPT-NeoX one offline). Model directories load with
transformers 4.x too: the tokenizer config names `PreTrainedTokenizerFast` with plain special
tokens, and config.json repeats rope_theta at top level. SAEs are dictionary_learning
AutoEncoders in Marks et al.'s layout; `calibrate_sparsity` shifts their encoder biases so
that about `l0` features fire per token, as in trained SAEs (a random encoder fires about
half of its features on every token).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from .architectures import architecture_for, submodules_for
from .architectures.gpt_neox import GPT_NEOX

PYTHIA_70M = GPT_NEOX.configs["gpt_neox"]
SPECIAL = "<|endoftext|>"


def load_tokenizer_file(tokenizer_file):
    """A fast tokenizer from a `tokenizers` JSON file, with Pythia's special tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token=SPECIAL,
                                   eos_token=SPECIAL, pad_token=SPECIAL)


def save_tokenizer(tokenizer, out_dir) -> None:
    """tokenizer.json plus a tokenizer_config.json that transformers 4.x and 5.x both read."""
    out_dir = Path(out_dir)
    tokenizer.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
               if getattr(tokenizer, k, None) is not None}
    # no token_type_ids: GPT-2 would add wte(token_type_ids) to its embeddings under 4.x
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 2048,
              "clean_up_tokenization_spaces": False, "model_input_names": ["input_ids", "attention_mask"],
              **special}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))


def random_config(model_type: str, tokenizer=None, small: bool = False, **overrides):
    """An HF config of `model_type` (a real model's shapes, or the family's toy), with the
    vocabulary and special token ids of `tokenizer` when given."""
    arch = architecture_for(SimpleNamespace(model_type=model_type))
    if tokenizer is not None:
        eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        vocab = -(-len(tokenizer) // 64) * 64
        overrides = {"vocab_size": vocab, "bos_token_id": eos, "eos_token_id": eos,
                     **({"pad_token_id": None} if "pad_token_id" in arch.configs[model_type] else {}),
                     **overrides}
    return arch.config(model_type, small=small, **overrides)


def _portable_config(model_dir: Path) -> None:
    """Repeat fields transformers 4.x reads at top level (rope_theta, torch_dtype)."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    path.write_text(json.dumps(config, indent=2))


def save_random_model(out_dir, tokenizer, seed: int = 0, model_type: str = "gpt_neox",
                      small: bool = False, **overrides) -> Path:
    """Save a random-weight model of `model_type` (Pythia-70M by default) in HF format."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if model_type == "gpt_neox":  # the tokenizer is Pythia's own: keep its exact config
        config = random_config(model_type, None, small, **overrides)
    else:
        config = random_config(model_type, tokenizer, small, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    _portable_config(out_dir)
    save_tokenizer(tokenizer, out_dir)
    return out_dir


def random_dictionaries(config, width: int, seed: int = 0) -> dict:
    """{submodule: random AutoEncoder} for every submodule of a model (not calibrated)."""
    from dictionary_learning.dictionary import AutoEncoder

    torch.manual_seed(seed)
    return {sub.name: AutoEncoder(config.hidden_size, width).eval().requires_grad_(False)
            for sub in submodules_for(config)}


def calibration_prompts(n_per_family: int = 4, seed: int = 0) -> list[str]:
    """A few prompts from every task template, for calibrating random SAEs."""
    from .datasets import generate
    from .templates import FAMILIES

    return [p for family in FAMILIES
            for p in generate(family, "train", n_per_family, seed)["clean_prefix"]]


@torch.no_grad()
def calibrate_sparsity(model, saes: dict, inputs: dict, l0: int = 64) -> dict[str, float]:
    """Shift each AutoEncoder's encoder bias so about `l0` features fire per token on
    `inputs` (tokenized prompts); returns the measured mean active count per token."""
    from .tracing import run_spliced

    run = run_spliced(model, saes, inputs, grad=False)
    mask = inputs["attention_mask"].bool()
    counts = {}
    for name, ae in saes.items():
        x = run.nodes[name].input[mask]
        pre = (x - ae.bias) @ ae.encoder.weight.T + ae.encoder.bias
        pick = torch.randperm(pre.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]
        shift = torch.quantile(pre.flatten()[pick].float(), 1 - l0 / ae.dict_size).to(pre.dtype)
        ae.encoder.bias -= shift
        counts[name] = float((pre > shift).sum(-1).float().mean())
    return counts


def write_dictionaries(root, model_name: str, config, saes: dict, dict_id: str = "10") -> Path:
    """AutoEncoders saved as `ae.pt` + `config.json` in Marks et al.'s layout."""
    for sub in submodules_for(config):
        ae = saes[sub.name]
        folder = Path(root) / model_name / sub.dictionary_dirname / f"{dict_id}_{ae.dict_size}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(ae.state_dict(), folder / "ae.pt")
        (folder / "config.json").write_text(json.dumps({"trainer": {
            "dict_class": "AutoEncoder", "activation_dim": config.hidden_size,
            "dict_size": ae.dict_size, "submodule_name": sub.name}}, indent=1))
    return Path(root)


def save_random_dictionaries(root, model_name: str, config, width: int, seed: int = 0,
                             dict_id: str = "10") -> Path:
    """Random (uncalibrated) AutoEncoders for every submodule, in Marks et al.'s layout."""
    return write_dictionaries(root, model_name, config, random_dictionaries(config, width, seed), dict_id)
