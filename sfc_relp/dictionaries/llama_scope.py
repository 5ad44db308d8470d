"""Llama Scope (fnlp/Llama3_1-8B-Base-*): `hyperparams.json` + `checkpoints/final.safetensors`.

`encoder.weight` (F, d), `encoder.bias`, `decoder.weight` (d, F), `decoder.bias`; a JumpReLU
SAE with one scalar `jump_relu_threshold`, trained on activations rescaled to norm sqrt(d):
with s_in = sqrt(d_model) / dataset_average_activation_norm.in (and s_out likewise with .out)

    pre = (s_in x) @ encoder.weight.T + encoder.bias,  f = relu(pre) * (pre > threshold)
    decode = (f @ decoder.weight.T + decoder.bias) / s_out

(the threshold is compared in the normalised space the SAE computes in, where lm_saes sets
it); with `apply_decoder_bias_to_pre_encoder`, decoder.bias is subtracted from s_in x before
encoding. A file whose
`hook_point_in` differs from `hook_point_out` is a transcoder and is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import UserError
from .files import as_float, check_shape, read_json, read_safetensors, require
from .sae import SAE, DictionaryInfo, JumpReLU

NAME = "llama_scope"
FILES = "hyperparams.json + checkpoints/final.safetensors"


def detect(folder: Path) -> bool:
    return (folder / "hyperparams.json").is_file() and (folder / "checkpoints" / "final.safetensors").is_file()


def hook(folder: Path) -> str | None:
    """hook_point_in from hyperparams.json, without reading weights."""
    return read_json(folder / "hyperparams.json").get("hook_point_in")


def load(folder: Path, submodule: str | None = None) -> SAE:
    cfg_path, weights = folder / "hyperparams.json", folder / "checkpoints" / "final.safetensors"
    cfg = read_json(cfg_path)
    hook_in, hook_out = cfg.get("hook_point_in"), cfg.get("hook_point_out", cfg.get("hook_point_in"))
    if hook_in != hook_out:
        raise UserError(f"{cfg_path}: hook_point_in {hook_in!r} differs from hook_point_out "
                        f"{hook_out!r}, a transcoder; only SAEs can be spliced as dictionaries")
    state = read_safetensors(weights)
    require(state, ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"), weights,
            "a Llama Scope SAE")
    n, d = state["encoder.weight"].shape
    if cfg.get("d_model") not in (None, d):
        raise UserError(f"{weights}: encoder.weight has shape {(n, d)}, but {cfg_path} says "
                        f"d_model {cfg['d_model']}")
    s_in, s_out = _scales(cfg, d, cfg_path)
    threshold = cfg.get("jump_relu_threshold")
    if not isinstance(threshold, (int, float)):
        raise UserError(f"{cfg_path}: jump_relu_threshold must be a number, got {threshold!r}")
    b_enc = check_shape(state["encoder.bias"], (n,), weights, "encoder.bias")
    act = JumpReLU(b_enc, torch.full((n,), float(threshold), dtype=b_enc.dtype))
    b_dec = check_shape(state["decoder.bias"], (d,), weights, "decoder.bias")
    W_dec = check_shape(state["decoder.weight"], (d, n), weights, "decoder.weight").T
    normalisation = "none" if s_in == s_out == 1.0 else f"x * {s_in:.4g} in, / {s_out:.4g} out"
    info = DictionaryInfo(NAME, "jumprelu", str(weights), hook=hook_in, normalisation=normalisation)
    centre = b_dec if cfg.get("apply_decoder_bias_to_pre_encoder") else None
    return SAE(state["encoder.weight"].T, W_dec, b_dec, act, centre=centre, scale_in=s_in,
               scale_out=s_out, info=info)


def _scales(cfg: dict, d: int, cfg_path: Path) -> tuple[float, float]:
    """(s_in, s_out) = sqrt(d) / the dataset's average activation norm in and out (1 without)."""
    norms = cfg.get("dataset_average_activation_norm")
    if not norms:
        return 1.0, 1.0
    if not isinstance(norms, dict):
        raise UserError(f"{cfg_path}: dataset_average_activation_norm must be {{\"in\": N, \"out\": N}}")
    key = "dataset_average_activation_norm"
    norm_in = as_float(norms.get("in"), cfg_path, f"{key}.in")
    norm_out = as_float(norms.get("out", norm_in), cfg_path, f"{key}.out")
    return math.sqrt(d) / norm_in, math.sqrt(d) / norm_out
