"""Train one SAE per submodule on the model's own activations (dictionary_learning).

Activations are collected with plain forward hooks (dictionary_learning's ActivationBuffer
targets the old nnsight API) over every non-padding token of a corpus.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..architectures import Submodule, resolve_path, submodules_for
from .language_model import encode_corpus


@torch.no_grad()
def collect_activations(model, tokenizer, sentences: list[str], batch_size: int = 256) -> dict:
    """{submodule name: (n_tokens, d_model) activations} over the corpus' real tokens."""
    subs = submodules_for(model.config)
    store: dict[str, list[torch.Tensor]] = {s.name: [] for s in subs}
    current_mask = {}

    def make_hook(sub: Submodule):
        def hook(_module, _inputs, output):
            x = output[0] if sub.output_is_tuple else output
            store[sub.name].append(x[current_mask["mask"]].float().clone())
        return hook

    handles = [resolve_path(model, s.module_path).register_forward_hook(make_hook(s)) for s in subs]
    try:
        ids, mask = encode_corpus(tokenizer, sentences)
        for start in range(0, len(ids), batch_size):
            m = mask[start:start + batch_size]
            width = int(m.sum(1).max())
            current_mask["mask"] = m[:, :width].bool()
            model(input_ids=ids[start:start + batch_size, :width], attention_mask=m[:, :width])
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(chunks) for name, chunks in store.items()}


def train_sae(activations: torch.Tensor, dict_size: int, l1_penalty: float, steps: int,
              batch_size: int = 1024, seed: int = 0, name: str = "sae", progress: bool = True,
              lm_name: str = "tiny-pythia"):
    """A Marks et al.-style ReLU AutoEncoder from dictionary_learning's StandardTrainer.

    Activations are scaled to unit mean squared norm per dimension while training, so one
    L1 penalty fits every submodule; the biases are scaled back afterwards, so the returned
    dictionary reads raw activations. Dead features are resampled every `steps // 6` steps.
    Returns (ae, trainer config).
    """
    from dictionary_learning.trainers.standard import StandardTrainer

    scale = float((activations.pow(2).sum(-1).mean() / activations.shape[1]).sqrt())
    trainer = StandardTrainer(steps=steps, activation_dim=activations.shape[1], dict_size=dict_size,
                              layer=0, lm_name=lm_name, lr=1e-3, l1_penalty=l1_penalty,
                              warmup_steps=max(1, steps // 20), sparsity_warmup_steps=max(1, steps // 5),
                              resample_steps=max(1, steps // 6), seed=seed, device="cpu",
                              submodule_name=name)
    generator = torch.Generator().manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every resampling
        for step in tqdm(range(steps), desc=f"SAE {name}", disable=None if progress else True, mininterval=2,
                         leave=False):
            batch = activations[torch.randint(0, len(activations), (batch_size,), generator=generator)]
            trainer.update(step, batch / scale)
    ae = trainer.ae
    ae.scale_biases(scale)
    config = {key: value for key, value in trainer.config.items() if key != "device"}
    config["activation_scale"] = scale
    return ae.eval().requires_grad_(False), config


def save_sae(ae, config: dict, root, model_name: str, sub: Submodule, dict_id: str = "0") -> Path:
    """Write `ae.pt` (state_dict) and `config.json` in Marks et al.'s layout."""
    folder = Path(root) / model_name / sub.dictionary_dirname / f"{dict_id}_{ae.dict_size}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in ae.state_dict().items()}, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": config}, indent=1) + "\n")
    return folder
