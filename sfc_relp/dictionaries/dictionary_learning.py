"""dictionary_learning (saprmarks): `ae.pt` (a state_dict) + optional `config.json`.

`config.json`'s `trainer.dict_class` (or `dictionary.dict_class`) names the class; without it
the class is inferred from the keys. Normalisation is folded into the saved weights.

| class | encode | decode |
|---|---|---|
| AutoEncoder | relu(enc(x - bias)) | dec(f) + bias |
| GatedAutoEncoder | (enc(x - decoder_bias) + gate_bias > 0) * relu(exp(r_mag) enc(.) + mag_bias) | dec(f) + decoder_bias |
| JumpReluAutoEncoder | relu(pre) * (pre > threshold), pre = x W_enc + b_enc | f W_dec + b_dec |
| AutoEncoderTopK | top-k of relu(enc(x - b_dec)) | dec(f) + b_dec |
| BatchTopKSAE | relu(enc(x - b_dec)) kept where > threshold (its inference mode) | dec(f) + b_dec |
| MatryoshkaBatchTopKSAE | relu((x - b_dec) W_enc + b_enc) kept where > threshold | f W_dec + b_dec |

A threshold kept where `relu(pre) > t` is JumpReLU with threshold max(t, 0).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .files import check_shape, read_json, read_state_dict, require
from .sae import SAE, DictionaryInfo, Gated, JumpReLU, Neurons, ReLU, TopK

NAME = "dictionary_learning"
FILES = "ae.pt (+ config.json)"

_KEYS = {
    "AutoEncoder": ("bias", "encoder.weight", "encoder.bias", "decoder.weight"),
    "GatedAutoEncoder": ("decoder_bias", "encoder.weight", "r_mag", "gate_bias", "mag_bias",
                         "decoder.weight"),
    "JumpReluAutoEncoder": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "AutoEncoderTopK": ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"),
    "BatchTopKSAE": ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "threshold"),
    "MatryoshkaBatchTopKSAE": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
}
CLASSES = tuple(_KEYS) + ("IdentityDict",)


def detect(folder: Path) -> bool:
    return (folder / "ae.pt").is_file()


def dict_class(config: dict) -> str | None:
    """The class a dictionary_learning config names, if any."""
    for section in ("trainer", "dictionary"):
        if isinstance(config.get(section), dict) and "dict_class" in config[section]:
            return config[section]["dict_class"]
    return config.get("dict_class")


def infer_class(state: dict) -> str:
    if "group_sizes" in state:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in state:
        return "JumpReluAutoEncoder"
    if "r_mag" in state:
        return "GatedAutoEncoder"
    if "k" in state:
        return "AutoEncoderTopK"
    return "AutoEncoder"


def config_hook(config: dict) -> str | None:
    """The submodule the config's `trainer.submodule_name` names, when written in a known
    spelling (our names, TransformerLens hooks, HF module paths); free-form names give None."""
    from .hooks import submodule_for_hook

    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    name = trainer.get("submodule_name")
    if not isinstance(name, str):
        return None
    try:
        submodule_for_hook(name, "config")
    except UserError:
        return None
    return name


def hook(folder: Path) -> str | None:
    """The hook point the folder's config names, without reading weights."""
    config = folder / "config.json"
    return config_hook(read_json(config)) if config.is_file() else None


def load(folder: Path, submodule: str | None = None) -> SAE:
    weights = folder / "ae.pt" if folder.is_dir() else folder
    if not weights.is_file():
        raise UserError(f"no dictionary weights at {weights}")
    config_file = weights.parent / "config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    state = read_state_dict(weights)
    class_name = dict_class(config) or infer_class(state)
    sae = from_state(class_name, state, weights, config)
    sae.info.hook = config_hook(config)
    return sae


def from_state(class_name: str, state: dict, path, config: dict | None = None) -> SAE:
    """An SAE from a dictionary_learning state_dict of class `class_name` (tensors not copied)."""
    path = Path(path)
    if class_name not in _KEYS:
        raise UserError(f"{path}: dictionary class {class_name!r} is not supported "
                        f"(supported: {', '.join(_KEYS)})")
    require(state, _KEYS[class_name], path, f"a {class_name}")
    if "W_enc" in state:
        d, n = state["W_enc"].shape
        W_enc, W_dec = state["W_enc"], check_shape(state["W_dec"], (n, d), path, "W_dec")
    else:
        n, d = state["encoder.weight"].shape
        W_enc = state["encoder.weight"].T
        W_dec = check_shape(state["decoder.weight"], (d, n), path, "decoder.weight").T
    vec = lambda key, size: check_shape(state[key], (size,), path, key)  # noqa: E731
    info = DictionaryInfo(NAME, class_name, str(path))
    if class_name == "AutoEncoder":
        bias = vec("bias", d)
        return SAE(W_enc, W_dec, bias, ReLU(vec("encoder.bias", n)), centre=bias, info=info)
    if class_name == "GatedAutoEncoder":
        bias = vec("decoder_bias", d)
        act = Gated(vec("gate_bias", n), vec("mag_bias", n), vec("r_mag", n))
        return SAE(W_enc, W_dec, bias, act, centre=bias, info=info)
    if class_name == "JumpReluAutoEncoder":
        act = JumpReLU(vec("b_enc", n), vec("threshold", n))
        return SAE(W_enc, W_dec, vec("b_dec", d), act, info=info)
    b_dec = vec("b_dec", d)
    b_enc = vec("b_enc", n) if "b_enc" in state else vec("encoder.bias", n)
    if class_name == "AutoEncoderTopK":
        k = int(state["k"])
        if not 0 < k <= n:
            raise UserError(f"{path}: k = {k} must be between 1 and the width {n}")
        return SAE(W_enc, W_dec, b_dec, TopK(b_enc, k), centre=b_dec, info=info)
    threshold = float(state["threshold"])  # BatchTopK and Matryoshka infer with the threshold
    if threshold < 0:
        info.notes.append("threshold unset (< 0): every positive pre-activation fires")
    act = JumpReLU(b_enc, torch.full((n,), max(threshold, 0.0), dtype=b_enc.dtype))
    return SAE(W_enc, W_dec, b_dec, act, centre=b_dec, info=info)


def from_module(module) -> SAE | Neurons:
    """An in-memory dictionary_learning module as a Dictionary sharing its tensors."""
    name = type(module).__name__
    if name == "IdentityDict":
        return Neurons(module.activation_dim)
    state = {k: v.detach() for k, v in module.state_dict().items()}
    return from_state(name, state, f"<{name} in memory>")
