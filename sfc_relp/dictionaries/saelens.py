"""SAELens: `cfg.json` + `sae_weights.safetensors`.

v6 configs hold `architecture` and `metadata.hook_name`; pre-6 configs hold `hook_point`,
`activation_fn_str` (`topk` with `activation_fn_kwargs.k` means a TopK SAE) at top level.
With s the activation scaling (1 unless `normalize_activations` is `expected_average_only_in`)
and c = b_dec if `apply_b_dec_to_input` (default true) else 0:

    pre = (s x - c) @ W_enc + b_enc
    standard: relu(pre);  jumprelu: relu(pre) * (pre > threshold)  (`log_threshold`: exp of it)
    topk: the k largest of relu(pre) per token; batchtopk: relu(pre) * (pre > threshold)
    gated: (sae_in @ W_enc + b_gate > 0) * relu(sae_in @ W_enc * exp(r_mag) + b_mag)
    decode: ((f * scaling_factor) @ W_dec + b_dec) / s

`rescale_acts_by_decoder_norm` (topk) multiplies pre by |W_dec_i| and divides f by it before
decoding; it is folded into W_enc, b_enc and W_dec. s comes from `activation_scaler.json`
(`scaling_factor`, what SAELens training writes) or a `norm_scaling_factor`/`scaling_factor`
key in cfg.json (what its pretrained directory lists). Per-token normalisations
(`constant_norm_rescale`, `layer_norm`) make decode depend on x, so they are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .files import as_float, check_shape, read_json, read_safetensors, require
from .sae import SAE, DictionaryInfo, Gated, JumpReLU, ReLU, TopK

NAME = "saelens"
FILES = "cfg.json + sae_weights.safetensors"
ARCHITECTURES = ("standard", "gated", "jumprelu", "topk", "batchtopk")


def detect(folder: Path) -> bool:
    return (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file()


def _settings(cfg: dict, path: Path) -> dict:
    """The fields that matter, from a v6 or a pre-6 config."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    kwargs = cfg.get("activation_fn_kwargs") or {}
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    architecture = cfg.get("architecture", "standard")
    if architecture == "standard" and activation == "topk":
        architecture = "topk"
    head = meta.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
    if head is not None:
        raise UserError(f"{path}: SAEs on one attention head (hook_head_index {head}) are not supported")
    if architecture not in ARCHITECTURES:
        raise UserError(f"{path}: SAELens architecture {architecture!r} is not supported "
                        f"(supported: {', '.join(ARCHITECTURES)}; transcoders are not SAEs)")
    return {"architecture": architecture,
            "hook": meta.get("hook_name", cfg.get("hook_name", cfg.get("hook_point"))),
            "k": cfg.get("k", kwargs.get("k")),
            "apply_b_dec": bool(cfg.get("apply_b_dec_to_input", True)),
            "normalize": cfg.get("normalize_activations") or "none",
            "rescale": bool(cfg.get("rescale_acts_by_decoder_norm", False)),
            "d_in": cfg.get("d_in"), "d_sae": cfg.get("d_sae")}


def _activation_scale(folder: Path, cfg: dict, normalize: str) -> float:
    if normalize == "none":
        return 1.0
    if normalize != "expected_average_only_in":
        raise UserError(f"{folder / 'cfg.json'}: normalize_activations {normalize!r} rescales each "
                        "token by its own norm, so decode would depend on the input; only none and "
                        "expected_average_only_in are supported")
    scaler = folder / "activation_scaler.json"
    if scaler.is_file():
        return as_float(read_json(scaler).get("scaling_factor"), scaler, "scaling_factor")
    for key in ("norm_scaling_factor", "scaling_factor"):
        if cfg.get(key) is not None:
            return as_float(cfg[key], folder / "cfg.json", key)
    raise UserError(f"{folder / 'cfg.json'}: normalize_activations is expected_average_only_in but "
                    "no scaling factor was found; write activation_scaler.json "
                    '{"scaling_factor": S} beside it (SAELens lists S as norm_scaling_factor)')


def hook(folder: Path) -> str | None:
    """The hook point cfg.json names, without reading weights."""
    return _settings(read_json(folder / "cfg.json"), folder / "cfg.json")["hook"]


def load(folder: Path, submodule: str | None = None) -> SAE:
    cfg_path, weights = folder / "cfg.json", folder / "sae_weights.safetensors"
    cfg = read_json(cfg_path)
    s = _settings(cfg, cfg_path)
    state = read_safetensors(weights)
    arch = s["architecture"]
    require(state, ("W_enc", "W_dec", "b_dec"), weights, f"a SAELens {arch} SAE")
    d, n = state["W_enc"].shape
    if s["d_in"] is not None and (d, n) != (s["d_in"], s["d_sae"]):
        raise UserError(f"{weights}: W_enc has shape {(d, n)}, but {cfg_path} says "
                        f"d_in {s['d_in']}, d_sae {s['d_sae']}")
    W_enc = state["W_enc"]
    W_dec = check_shape(state["W_dec"], (n, d), weights, "W_dec")
    b_dec = check_shape(state["b_dec"], (d,), weights, "b_dec")
    vec = lambda key: check_shape(state[key], (n,), weights, key)  # noqa: E731
    info = DictionaryInfo(NAME, arch, str(weights), hook=s["hook"])
    factor = state.get("scaling_factor", state.get("finetuning_scaling_factor"))
    if factor is not None and not torch.all(factor == 1):
        W_dec = W_dec * check_shape(factor, (n,), weights, "scaling_factor")[:, None]
        info.notes.append("scaling_factor folded into W_dec")
    if arch == "gated":
        require(state, ("b_gate", "b_mag", "r_mag"), weights, "a SAELens gated SAE")
        act = Gated(vec("b_gate"), vec("b_mag"), vec("r_mag"))
    else:
        require(state, ("b_enc",), weights, f"a SAELens {arch} SAE")
        b_enc = vec("b_enc")
        if arch == "standard":
            act = ReLU(b_enc)
        elif arch == "topk":
            if s["k"] is None:
                raise UserError(f"{cfg_path}: a topk SAE needs k (or activation_fn_kwargs.k)")
            if s["rescale"]:  # |W_dec_i| folded: pre_i * n_i and f_i / n_i
                norms = W_dec.norm(dim=-1)
                W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
            act = TopK(b_enc, int(s["k"]))
        else:
            act = JumpReLU(b_enc, _threshold(state, n, weights, arch))
    scale = _activation_scale(folder, cfg, s["normalize"])
    if scale != 1.0:
        info.normalisation = f"x * {scale:.4g} in, / {scale:.4g} out"
    return SAE(W_enc, W_dec, b_dec, act, centre=b_dec if s["apply_b_dec"] else None,
               scale_in=scale, scale_out=scale, info=info)


def _threshold(state: dict, n: int, weights: Path, arch: str) -> torch.Tensor:
    """JumpReLU threshold per feature: `threshold`, exp(`log_threshold`) or a batchtopk scalar."""
    if "threshold" in state:
        t = state["threshold"]
    elif "log_threshold" in state:
        t = state["log_threshold"].exp()
    elif "topk_threshold" in state:
        t = state["topk_threshold"]
    else:
        raise UserError(f"{weights} lacks 'threshold' (or 'log_threshold'), needed for a "
                        f"SAELens {arch} SAE")
    if t.numel() == 1:
        t = t.reshape(()).expand(n).clone()
    return check_shape(t, (n,), weights, "threshold")

