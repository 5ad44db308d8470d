"""SAE dictionaries: Marks et al.'s on-disk layout, dictionary_learning's classes, neurons.

Layout: `<root>/<model>/{embed,attn_out_layerN,mlp_out_layerN,resid_out_layerN}/<id>_<width>/`
holding `ae.pt` (a plain state_dict) and optionally `config.json`, whose `trainer.dict_class`
(or `dictionary.dict_class`) picks the class. Weights are read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .architectures import Submodule
from .errors import UserError

DEFAULT_ROOT = Path(os.environ.get("SFC_RELP_DICTIONARIES",
                                   Path(__file__).resolve().parent.parent / "dictionaries"))


def _classes() -> dict:
    from dictionary_learning.dictionary import (AutoEncoder, GatedAutoEncoder, IdentityDict,
                                                JumpReluAutoEncoder)
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {"AutoEncoder": AutoEncoder, "GatedAutoEncoder": GatedAutoEncoder,
            "JumpReluAutoEncoder": JumpReluAutoEncoder, "AutoEncoderTopK": AutoEncoderTopK,
            "BatchTopKSAE": BatchTopKSAE, "IdentityDict": IdentityDict}


def _dict_class_from_config(config: dict) -> str | None:
    for section in ("trainer", "dictionary"):
        if isinstance(config.get(section), dict) and "dict_class" in config[section]:
            return config[section]["dict_class"]
    return config.get("dict_class")


def _infer_dict_class(state: dict) -> str:
    if "W_enc" in state:
        return "JumpReluAutoEncoder"
    if "r_mag" in state:
        return "GatedAutoEncoder"
    if "k" in state:
        return "AutoEncoderTopK"
    return "AutoEncoder"


def _shapes(name: str, state: dict) -> tuple[int, int]:
    """(activation_dim, dict_size) from a state_dict of class `name`."""
    if name == "JumpReluAutoEncoder":
        return tuple(state["W_enc"].shape)
    dict_size, activation_dim = state["encoder.weight"].shape
    return activation_dim, dict_size


def load_dictionary(path, d_model: int | None = None, device="cpu", dtype=torch.float32):
    """One dictionary from a directory holding `ae.pt` (+ `config.json`) or from `ae.pt`."""
    path = Path(path)
    weights = path / "ae.pt" if path.is_dir() else path
    if not weights.is_file():
        raise UserError(f"no dictionary weights at {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"could not read {weights} as a weights-only state_dict "
                        f"({type(exc).__name__}); re-save it with torch.save(ae.state_dict())") from None
    if not isinstance(state, dict):
        raise UserError(f"{weights} holds a {type(state).__name__}, not a state_dict")
    config = {}
    config_file = weights.parent / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{config_file} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    class_name = _dict_class_from_config(config) or _infer_dict_class(state)
    classes = _classes()
    if class_name not in classes:
        raise UserError(f"{config_file}: dictionary class {class_name!r} is not supported "
                        f"(supported: {', '.join(classes)})")
    try:
        activation_dim, dict_size = _shapes(class_name, state)
    except KeyError as exc:
        raise UserError(f"{weights} lacks {exc.args[0]!r}, expected for a {class_name}") from None
    if d_model is not None and activation_dim != d_model:
        raise UserError(f"{weights}: dictionary width {activation_dim} (shape "
                        f"{activation_dim}x{dict_size}) does not fit the model's d_model {d_model}")
    cls = classes[class_name]
    if class_name in ("AutoEncoderTopK", "BatchTopKSAE"):
        k = int(state["k"]) if "k" in state else int(config.get("trainer", {}).get("k", 0))
        ae = cls(activation_dim, dict_size, k)
    else:
        ae = cls(activation_dim, dict_size)
    try:
        ae.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise UserError(f"{weights} does not match {class_name}: {first}") from None
    return ae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _pick_variant(subdir: Path, dict_id: str | None) -> Path | None:
    variants = sorted(p for p in subdir.iterdir() if (p / "ae.pt").is_file()) if subdir.is_dir() else []
    if dict_id is not None:
        variants = [p for p in variants if p.name == dict_id or p.name.split("_")[0] == dict_id]
    if not variants:
        return None
    if len(variants) > 1:
        names = ", ".join(p.name for p in variants)
        raise UserError(f"{subdir} holds several dictionaries ({names}); choose one with dict_id "
                        "(--dict-id)")
    return variants[0]


def load_dictionaries(root, model: str, submodules: list[Submodule], d_model: int,
                      dict_id: str | None = None, device="cpu", dtype=torch.float32) -> dict:
    """{submodule name: dictionary} for every submodule, from Marks et al.'s layout."""
    base = Path(root) / model
    if not base.is_dir():
        raise UserError(f"no dictionaries for model {model!r}: {base} does not exist; pass "
                        "--dictionaries ROOT (holding ROOT/<model>/...) or use neuron mode")
    found, missing = {}, []
    for sub in submodules:
        variant = _pick_variant(base / sub.dictionary_dirname, dict_id)
        if variant is None:
            missing.append(sub.name)
        else:
            found[sub.name] = variant
    if missing:
        raise UserError(f"no dictionary under {base} for: {', '.join(missing)} (expected "
                        f"{base}/<submodule dir>/<id>_<width>/ae.pt)")
    return {name: load_dictionary(path, d_model, device, dtype) for name, path in found.items()}


def neuron_dictionaries(submodules: list[Submodule], d_model: int, device="cpu") -> dict:
    """Identity dictionaries (one 'feature' per hidden unit), Marks et al.'s neuron baseline."""
    from dictionary_learning.dictionary import IdentityDict

    return {sub.name: IdentityDict(d_model).to(device) for sub in submodules}


def dictionaries_for(model, root=None, dict_id: str | None = None, neurons: bool = False) -> dict:
    """Dictionaries for every submodule of a loaded model: SAEs from `root`, or neurons."""
    from .architectures import submodules_for
    from .loading import hf_model, model_name

    config = model.config
    subs = submodules_for(config)
    dtype = next(hf_model(model).parameters()).dtype
    device = next(hf_model(model).parameters()).device
    if neurons:
        return {k: v.to(dtype=dtype) for k, v in
                neuron_dictionaries(subs, config.hidden_size, device).items()}
    return load_dictionaries(root or DEFAULT_ROOT, model_name(model), subs, config.hidden_size,
                             dict_id, device, dtype)


def decoder_directions(ae, ids: torch.Tensor) -> torch.Tensor:
    """(len(ids), d) decoder vectors of features `ids`: d decode(f) / d f_i (decoders are affine)."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    name = type(ae).__name__
    if name == "IdentityDict":
        return torch.eye(ae.activation_dim, device=ids.device)[ids]
    if name == "JumpReluAutoEncoder":
        return ae.W_dec[ids]
    if hasattr(ae, "decoder"):
        return ae.decoder.weight[:, ids].T
    basis = torch.zeros(len(ids), ae.dict_size)
    basis[torch.arange(len(ids)), ids] = 1
    return ae.decode(basis) - ae.decode(torch.zeros(1, ae.dict_size))


def sparse_encode(ae, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """encode(x)[..., ids], with a graph only through those features' encoder rows.

    Values equal the full encoding; gradients too (for TopK the membership of the top-k set is
    piecewise constant). Edges differentiate a few downstream features this way instead of
    pushing one-hot seeds through the whole width-F encoder.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    name = type(ae).__name__
    if name == "IdentityDict":
        return x[..., ids]
    if name == "AutoEncoder":
        return torch.relu((x - ae.bias) @ ae.encoder.weight[ids].T + ae.encoder.bias[ids])
    if name == "JumpReluAutoEncoder":
        x_in = x - ae.b_dec if ae.apply_b_dec_to_input else x
        pre = x_in @ ae.W_enc[:, ids] + ae.b_enc[ids]
        return torch.relu(pre * (pre > ae.threshold[ids]))
    if name == "GatedAutoEncoder":
        x_enc = (x - ae.decoder_bias) @ ae.encoder.weight[ids].T
        gate = (x_enc + ae.gate_bias[ids] > 0).to(x.dtype)
        return gate * torch.relu(ae.r_mag[ids].exp() * x_enc + ae.mag_bias[ids])
    if name in ("AutoEncoderTopK", "BatchTopKSAE"):
        active = (ae.encode(x.detach())[..., ids] != 0).to(x.dtype)
        return active * torch.relu((x - ae.b_dec) @ ae.encoder.weight[ids].T + ae.encoder.bias[ids])
    return ae.encode(x)[..., ids]
