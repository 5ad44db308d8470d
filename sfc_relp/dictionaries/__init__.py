"""SAE dictionaries from the formats people publish them in, and neurons.

Per submodule a directory (or file) in one of: dictionary_learning (`ae.pt` + `config.json`),
SAELens (`cfg.json` + `sae_weights.safetensors`), sparsify (`cfg.json` + `sae.safetensors`),
Gemma Scope (`params.npz`), Llama Scope (`hyperparams.json` + `checkpoints/final.safetensors`);
the format is detected from the files present and each becomes an `SAE` (sae.py) with
encode, an affine decode, decoder directions and the encoding of selected features. Where
they live: Marks et al.'s layout, a directory of dictionaries naming their hook points, or a
mapping file (layout.py). A dictionary whose own
metadata names a hook point is checked against the submodule it is assigned to.
Submodules without a dictionary are an error, neurons (`missing="neurons"`) or left out of
the graph (`missing="skip"`; edges touching them are then absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..architectures import Submodule
from ..errors import UserError
from .hooks import check_assignment
from .layout import detect_format, from_directory, from_mapping, is_mapping
from .sae import SAE, Dictionary, DictionaryInfo, Neurons

DEFAULT_ROOT = Path(os.environ.get("SFC_RELP_DICTIONARIES",
                                   Path(__file__).resolve().parents[2] / "dictionaries"))
MISSING = ("error", "neurons", "skip")

__all__ = ["DEFAULT_ROOT", "MISSING", "SAE", "Dictionary", "DictionaryInfo", "Neurons",
           "as_dictionary", "decoder_directions", "describe", "dictionaries_for", "inspect_source",
           "load_dictionaries", "load_dictionary", "neuron_dictionaries", "sparse_encode"]


def load_dictionary(path, d_model: int | None = None, device="cpu", dtype=torch.float32,
                    submodule: str | None = None) -> Dictionary:
    """One dictionary from a directory (format detected) or an `ae.pt`/`params.npz` file.

    With `submodule`, a hook point named in the dictionary's own metadata must be that submodule.
    """
    fmt, where = detect_format(Path(path))
    ae = fmt.load(where, submodule)
    if submodule is not None:
        check_assignment(ae.info.hook, submodule, ae.info.path)
    if d_model is not None and ae.activation_dim != d_model:
        raise UserError(f"{ae.info.path}: dictionary input width {ae.activation_dim} (encoder shape "
                        f"{ae.activation_dim}x{ae.dict_size}) does not fit the model's d_model {d_model}")
    return ae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _locate(source, model: str, submodules: list[Submodule], dict_id: str | None) -> dict:
    if is_mapping(source):
        return from_mapping(source, submodules)
    return from_directory(source, model, submodules, dict_id)


def load_dictionaries(root, model: str, submodules: list[Submodule], d_model: int,
                      dict_id: str | None = None, device="cpu", dtype=torch.float32,
                      missing: str = "error") -> dict:
    """{submodule name: dictionary} from a directory or mapping file `root`.

    `missing`: "error" (default), "neurons" (identity dictionaries) or "skip" (left out).
    """
    if missing not in MISSING:
        raise UserError(f"unknown missing-dictionary policy {missing!r}; use {', '.join(MISSING)}")
    paths = _locate(root, model, submodules, dict_id)
    absent = [name for name, path in paths.items() if path is None]
    if absent and missing == "error":
        raise UserError(f"no dictionary under {root} for: {', '.join(absent)} (expected "
                        f"<root>/{model}/<submodule dir>/<id>_<width>/ or a mapping entry; "
                        "or pass --missing neurons|skip)")
    out = {}
    for sub in submodules:
        path = paths[sub.name]
        if path is not None:
            out[sub.name] = load_dictionary(path, d_model, device, dtype, submodule=sub.name)
        elif missing == "neurons":
            info = DictionaryInfo("neurons", "identity", notes=["no dictionary found"])
            out[sub.name] = Neurons(d_model, info).to(device=device, dtype=dtype)
    return out


def neuron_dictionaries(submodules: list[Submodule], d_model: int, device="cpu") -> dict:
    """Identity dictionaries (one 'feature' per hidden unit), Marks et al.'s neuron baseline."""
    return {sub.name: Neurons(d_model).to(device) for sub in submodules}


def _model_setting(model):
    from ..architectures import submodules_for
    from ..loading import hf_model, model_name

    parameter = next(hf_model(model).parameters())
    return submodules_for(model.config), model_name(model), parameter.device, parameter.dtype


def dictionaries_for(model, root=None, dict_id: str | None = None, neurons: bool = False,
                     missing: str = "error") -> dict:
    """Dictionaries for every submodule of a loaded model: SAEs from `root` (a directory or a
    mapping file), or neurons.

    Without `root`: the model directory's own `dictionaries/` folder (every bundled model ships
    its SAEs there, inside the package), otherwise `DEFAULT_ROOT/<model>` (the checkout's
    `dictionaries/` or `$SFC_RELP_DICTIONARIES`), the place for user dictionaries.
    """
    from ..loading import own_dictionaries_dir

    subs, name, device, dtype = _model_setting(model)
    d_model = model.config.hidden_size
    if neurons:
        return {k: v.to(dtype=dtype) for k, v in neuron_dictionaries(subs, d_model, device).items()}
    if root is None:
        root = own_dictionaries_dir(model) or DEFAULT_ROOT
    return load_dictionaries(root, name, subs, d_model, dict_id, device, dtype, missing)


def inspect_source(source, model: str, submodules: list[Submodule], d_model: int,
                   dict_id: str | None = None) -> list[tuple[str, Dictionary | None]]:
    """(submodule, dictionary or None) for each submodule, loading (and checking) each one."""
    paths = _locate(source, model, submodules, dict_id)
    return [(sub.name, None if paths[sub.name] is None else
             load_dictionary(paths[sub.name], d_model, submodule=sub.name)) for sub in submodules]


def describe(ae: Dictionary) -> dict:
    """format, class, width, sparsity (threshold or k), normalisation, path of a dictionary."""
    sparsity = ae.activation.describe() if isinstance(ae, SAE) else "identity"
    return {"format": ae.info.format, "class": ae.info.cls, "width": ae.dict_size,
            "sparsity": sparsity, "normalisation": ae.info.normalisation, "path": ae.info.path,
            "notes": list(ae.info.notes)}


def as_dictionary(ae) -> Dictionary:
    """`ae` itself, or an in-memory dictionary_learning module as a Dictionary sharing its tensors."""
    if isinstance(ae, Dictionary):
        return ae
    from . import dictionary_learning

    if type(ae).__name__ in dictionary_learning.CLASSES:
        return dictionary_learning.from_module(ae)
    raise TypeError(f"{type(ae).__name__} is not a dictionary; load one with load_dictionary")


def decoder_directions(ae, ids: torch.Tensor) -> torch.Tensor:
    """(len(ids), d) decoder vectors of features `ids`: d decode(f) / d f_i (decoders are affine)."""
    return as_dictionary(ae).directions(ids)


def sparse_encode(ae, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """encode(x)[..., ids], with a graph only through those features' encoder rows.

    Values equal the full encoding; gradients too (for TopK-like activations the membership
    of the kept set is piecewise constant). Edges differentiate a few downstream features
    this way instead of pushing one-hot seeds through the whole width-F encoder.
    """
    return as_dictionary(ae).encode_subset(x, ids)
