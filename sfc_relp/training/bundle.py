"""`sfc-relp zoo train`: recreate a bundled model of one family and its SAEs from a seed.

One tiny model per family (`--arch gpt_neox|gpt2|qwen2|gemma2`: tiny-pythia, tiny-gpt2,
tiny-qwen2, tiny-gemma2), each with one SAE per circuit submodule that
`sfc_relp.architectures.submodules_for` names for it. The `full` budget is what ships (a few
minutes on 2 cores); `mini` runs the same code end to end in seconds for the test suite.
Outputs are written to temporary directories and renamed into place, so an interrupted run
never leaves a half-written bundle.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..architectures import submodules_for
from ..errors import UserError
from .corpus import build_corpus, vocabulary_words
from .language_model import DEFAULT_NAMES, tiny_config, train_language_model
from .saes import collect_activations, save_sae, train_sae
from .tokenizer import build_tokenizer

BUDGETS = {
    "full": dict(n_sentences=100_000, lm_steps=2500, lm_batch=64, sae_sentences=30_000,
                 dict_size=256, l1_penalty=0.1, sae_steps=2400, sae_batch=1024),
    "mini": dict(n_sentences=400, lm_steps=10, lm_batch=16, sae_sentences=100,
                 dict_size=64, l1_penalty=0.1, sae_steps=12, sae_batch=128),
}
REPORT_SEED = 10_000  # corpus seed for quality measurements, apart from training seeds


def _replace_dir(built: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)


def circuit_submodules(config, arch: str) -> list:
    """`submodules_for(config)`, or a UserError saying the family's architecture record is missing."""
    try:
        return submodules_for(config)
    except UserError:
        raise UserError(
            f"cannot train a {arch} model yet: sfc_relp.architectures has no architecture record for "
            f"model type {config.model_type!r} (which module is embed/attn/mlp/resid), so its SAEs "
            "cannot be placed; add the record, then re-run `sfc-relp zoo train`") from None


def train_bundle(model_dir, dictionary_root=None, name: str | None = None, budget: str = "full",
                 seed: int = 0, progress: bool = True, log=print, arch: str = "gpt_neox") -> dict:
    """Train tokenizer, LM and SAEs of family `arch`; save the model to `model_dir` and the SAEs
    in its own `dictionaries/` folder (how bundled models ship them), or under `dictionary_root/name`."""
    settings = BUDGETS[budget]
    tokenizer = build_tokenizer(vocabulary_words())
    subs = circuit_submodules(tiny_config(arch, tokenizer), arch)  # fail before any training
    name = name or DEFAULT_NAMES[arch]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    model_dir = Path(model_dir)
    sentences = build_corpus(settings["n_sentences"], seed)
    log(f"corpus: {len(sentences)} sentences, vocabulary {len(tokenizer)}")
    model = train_language_model(tokenizer, sentences, settings["lm_steps"], settings["lm_batch"],
                                 seed=seed, progress=progress, arch=arch)
    log(f"{arch} language model trained in {time.time() - started:.0f}s")

    with tempfile.TemporaryDirectory(dir=model_dir.parent if model_dir.parent.exists() else None) as tmp:
        staged = Path(tmp) / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        acts = collect_activations(model, tokenizer, build_corpus(settings["sae_sentences"], seed + 1))
        staged_dicts = Path(tmp) / "dictionaries"
        for i, sub in enumerate(subs):
            ae, config = train_sae(acts[sub.name], settings["dict_size"], settings["l1_penalty"],
                                   settings["sae_steps"], settings["sae_batch"], seed + i,
                                   sub.name, progress, lm_name=name)
            save_sae(ae, config, staged_dicts, name, sub)
        log(f"{len(subs)} SAEs trained, {time.time() - started:.0f}s in all")
        if dictionary_root is None:
            (staged_dicts / name).rename(staged / "dictionaries")
            dictionaries = model_dir / "dictionaries"
        else:
            dictionaries = Path(dictionary_root) / name
            _replace_dir(staged_dicts / name, dictionaries)
        _replace_dir(staged, model_dir)
    return {"model": str(model_dir), "dictionaries": str(dictionaries),
            "seconds": round(time.time() - started, 1)}
