"""`sfc-relp zoo train`: recreate a bundled model of one family and its SAEs from a seed.

One tiny model per family (`--arch gpt_neox|gpt2|qwen2|gemma2`: tiny-pythia, tiny-gpt2,
tiny-qwen2, tiny-gemma2), each with one SAE per circuit submodule that
`sfc_relp.architectures.submodules_for` names for it, saved in the model directory's own
`dictionaries/` folder (how bundled models ship them) unless a dictionary root is given. The
`full` budget is what ships (a few minutes on 2 cores); `mini` runs the same code end to end in
seconds for the test suite. Outputs are staged in temporary directories beside their targets
(same filesystem) and swapped in by renames: the previous bundle is renamed aside, the new one
renamed in, and on any failure the previous one is put back. Only directories this trainer
wrote (a manifest file marks them) are ever replaced, unless `force`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__
from ..architectures import submodules_for
from ..errors import UserError
from ..files import apply_umask, stage_dir, swap_in
from ..random_model import save_tokenizer
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


MANIFEST = "sfc-relp-bundle.json"  # written into every directory the trainer creates
_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", MANIFEST}
_SUBMODULE_DIR = re.compile(r"(embed|(attn|mlp|resid)_out_layer\d+)")


def _written_by_trainer(target: Path, kind: str) -> bool:
    """Whether `target` holds only what `zoo train` writes (its manifest, or for bundles made
    before the manifest existed, exactly the trainer's file layout)."""
    if (target / MANIFEST).is_file():
        return True
    entries = list(target.iterdir())
    if kind == "model":  # model files, and the model's own dictionaries/ folder
        return all((p.is_file() and p.name in _MODEL_FILES) or
                   (p.is_dir() and p.name == "dictionaries" and _written_by_trainer(p, "dictionaries"))
                   for p in entries)
    for sub in entries:
        if not (sub.is_dir() and _SUBMODULE_DIR.fullmatch(sub.name)):
            return False
        for variant in sub.iterdir():
            if not (variant.is_dir() and re.fullmatch(r"\w+_\d+", variant.name)
                    and {p.name for p in variant.iterdir()} <= {"ae.pt", "config.json"}):
                return False
    return True


def check_target(target, kind: str, force: bool = False) -> None:
    """UserError unless `target` is absent, empty, a previous bundle, or `force` is given."""
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"{target} exists and is not a directory; choose another path")
    if force or not any(target.iterdir()) or _written_by_trainer(target, kind):
        return
    raise UserError(f"{target} is not empty and was not written by `zoo train`; choose a new or "
                    "empty directory, or pass --force to replace it")


def _manifest(kind: str, name: str, budget: str, seed: int) -> str:
    return json.dumps({"written_by": "sfc-relp zoo train", "kind": kind, "name": name,
                       "budget": budget, "seed": seed, "tool_version": __version__}, indent=1) + "\n"


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
                 seed: int = 0, progress: bool = True, log=print, arch: str = "gpt_neox",
                 force: bool = False) -> dict:
    """Train tokenizer, LM and SAEs of family `arch`; save the model to `model_dir` and the SAEs
    in its own `dictionaries/` folder, or under `dictionary_root/name` when a root is given.

    Refuses (UserError, before training) a non-empty target that `zoo train` did not write,
    unless `force`.
    """
    if budget not in BUDGETS:
        raise UserError(f"unknown budget {budget!r}; choose {' or '.join(BUDGETS)}")
    settings = BUDGETS[budget]
    tokenizer = build_tokenizer(vocabulary_words())
    subs = circuit_submodules(tiny_config(arch, tokenizer), arch)  # fail before any training
    name = name or DEFAULT_NAMES[arch]
    model_dir = Path(model_dir)
    dict_dir = None if dictionary_root is None else Path(dictionary_root) / name
    check_target(model_dir, "model", force)
    if dict_dir is not None:
        if dict_dir.parent.exists() and not dict_dir.parent.is_dir():
            raise UserError(f"{dict_dir.parent} exists and is not a directory")
        check_target(dict_dir, "dictionaries", force)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    staged_model = stage_dir(model_dir)  # before training: an unwritable target fails fast
    staged_dicts = None
    try:
        if dict_dir is None:
            staged_dicts = staged_model / "dictionaries"
            staged_dicts.mkdir()
        else:
            staged_dicts = stage_dir(dict_dir)
        sentences = build_corpus(settings["n_sentences"], seed)
        log(f"corpus: {len(sentences)} sentences, vocabulary {len(tokenizer)}")
        model = train_language_model(tokenizer, sentences, settings["lm_steps"], settings["lm_batch"],
                                     seed=seed, progress=progress, arch=arch)
        log(f"{arch} language model trained in {time.time() - started:.0f}s")
        model.save_pretrained(staged_model)
        save_tokenizer(tokenizer, staged_model)
        (staged_model / MANIFEST).write_text(_manifest("model", name, budget, seed))
        acts = collect_activations(model, tokenizer, build_corpus(settings["sae_sentences"], seed + 1))
        for i, sub in enumerate(tqdm(subs, desc="SAEs", disable=None if progress else True)):
            ae, config = train_sae(acts[sub.name], settings["dict_size"], settings["l1_penalty"],
                                   settings["sae_steps"], settings["sae_batch"], seed + i,
                                   sub.name, progress, lm_name=name)
            written = save_sae(ae, config, staged_dicts, name, sub)
            os.replace(written.parent, staged_dicts / written.parent.name)
        (staged_dicts / name).rmdir()
        (staged_dicts / MANIFEST).write_text(_manifest("dictionaries", name, budget, seed))
        log(f"{len(subs)} SAEs trained, {time.time() - started:.0f}s in all")
        apply_umask(staged_model)
        pairs = [(staged_model, model_dir)]
        if dict_dir is not None:
            apply_umask(staged_dicts)
            pairs.append((staged_dicts, dict_dir))
        swap_in(pairs)
    finally:
        for staged in (staged_model, staged_dicts):
            if staged is not None and staged.exists():
                shutil.rmtree(staged)
    return {"model": str(model_dir), "dictionaries": str(dict_dir or model_dir / "dictionaries"),
            "seconds": round(time.time() - started, 1)}
