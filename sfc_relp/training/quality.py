"""Quality of the bundle: task accuracy and, per SAE, FVE, L0, dead share, loss recovered."""

from __future__ import annotations

import torch

from ..architectures import resolve_path, submodules_for
from .language_model import accuracies, encode_corpus


@torch.no_grad()
def dictionary_quality(model, tokenizer, dictionaries: dict, sentences: list[str]) -> dict:
    """{submodule: {fve, l0, dead, loss_recovered}} on `sentences` (held out from SAE training).

    loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_sae replaces the
    submodule's output by the SAE reconstruction and CE_zero by zeros.
    """
    from .saes import collect_activations

    acts = collect_activations(model, tokenizer, sentences)
    ids, mask = encode_corpus(tokenizer, sentences)
    labels = ids.masked_fill(mask == 0, -100)
    clean_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    report = {}
    for sub in submodules_for(model.config):
        ae, x = dictionaries[sub.name], acts[sub.name]
        f = ae.encode(x)
        x_hat = ae.decode(f)
        fve = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        losses = {}
        for mode in ("sae", "zero"):
            def hook(_module, _inputs, output, mode=mode, sub=sub):
                h = output[0] if sub.output_is_tuple else output
                new = ae.decode(ae.encode(h)) if mode == "sae" else torch.zeros_like(h)
                return (new, *output[1:]) if sub.output_is_tuple else new
            handle = resolve_path(model, sub.module_path).register_forward_hook(hook)
            try:
                losses[mode] = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
            finally:
                handle.remove()
        recovered = (losses["zero"] - losses["sae"]) / (losses["zero"] - clean_loss)
        report[sub.name] = {"fve": round(float(fve), 4),
                            "l0": round(float((f != 0).sum(-1).float().mean()), 2),
                            "dead": round(float(((f != 0).sum(0) == 0).float().mean()), 4),
                            "loss_recovered": round(recovered, 4)}
    return report


def bundle_report(model, tokenizer, dictionaries: dict, sentences: list[str]) -> dict:
    """The `sfc-relp zoo report --json` object."""
    return {"accuracy": accuracies(model, tokenizer, "test"),
            "dictionaries": dictionary_quality(model, tokenizer, dictionaries, sentences)}
