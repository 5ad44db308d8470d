"""Gemma Scope (google/gemma-scope-*): `params.npz` with `W_enc` (d, F), `W_dec` (F, d),
`b_enc`, `b_dec`, `threshold`; a JumpReLU SAE without input centring:

    pre = x @ W_enc + b_enc,  f = relu(pre) * (pre > threshold),  decode = f @ W_dec + b_dec

The file carries no hook metadata. The embedding SAE was trained on the unscaled embedding
rows, while Gemma's embedding module (transformers' `Gemma2TextScaledWordEmbedding`, as
TransformerLens's `hook_embed`) outputs them multiplied by sqrt(d_model); our `embed`
submodule is that module's output, so for it x is divided by sqrt(d_model) before encoding
and the reconstruction multiplied back (s_in = s_out = 1/sqrt(d_model); SAELens folds the same
factor into W_enc and W_dec). Attention SAEs (`-att`) read `hook_z` and are refused. Read with
numpy.load(allow_pickle=False).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..errors import UserError
from .files import check_shape, read_npz, require
from .sae import SAE, DictionaryInfo, JumpReLU

NAME = "gemma_scope"
FILES = "params.npz"


def detect(folder: Path) -> bool:
    return (folder / "params.npz").is_file()


def hook(folder: Path) -> str | None:
    """What a Gemma Scope download path says: `...-att...` is hook_z, `embedding` the embedding
    SAE, `layer_L` under a `-res`/`-mlp` release the residual/MLP output of layer L."""
    text = str(folder.resolve())
    if re.search(r"gemma-scope[^/]*-att", text):
        return "blocks.L.attn.hook_z"
    if "embedding" in folder.name or re.search(r"/embedding[^/]*/", text + "/"):
        return "hook_embed"
    layer = re.search(r"layer_(\d+)", text)
    if layer and re.search(r"gemma-scope[^/]*-res", text):
        return f"blocks.{layer.group(1)}.hook_resid_post"
    if layer and re.search(r"gemma-scope[^/]*-mlp", text):
        return f"blocks.{layer.group(1)}.hook_mlp_out"
    return None


def load(folder: Path, submodule: str | None = None) -> SAE:
    path = folder / "params.npz"
    arrays = read_npz(path)
    require(arrays, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), path, "a Gemma Scope SAE")
    if arrays["W_enc"].dim() != 2:
        raise UserError(f"{path}: W_enc has shape {tuple(arrays['W_enc'].shape)}, expected (d_model, width)")
    d, n = arrays["W_enc"].shape
    hook_name = hook(folder)
    info = DictionaryInfo(NAME, "jumprelu", str(path), hook=hook_name)
    act = JumpReLU(check_shape(arrays["b_enc"], (n,), path, "b_enc"),
                   check_shape(arrays["threshold"], (n,), path, "threshold"))
    scale = 1.0
    if submodule == "embed" or hook_name == "hook_embed":
        scale = 1 / math.sqrt(d)
        info.normalisation = f"x / sqrt({d}) in, * sqrt({d}) out (embedding SAE)"
    return SAE(arrays["W_enc"], check_shape(arrays["W_dec"], (n, d), path, "W_dec"),
               check_shape(arrays["b_dec"], (d,), path, "b_dec"), act,
               scale_in=scale, scale_out=scale, info=info)
