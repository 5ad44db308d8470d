"""EleutherAI sparsify: `<hookpoint>/cfg.json` + `<hookpoint>/sae.safetensors`.

`encoder.weight` (F, d), `encoder.bias`, `W_dec` (F, d), `b_dec`; the directory name is the
Hugging Face module path it was trained on (`layers.10`, `embed_tokens`). Encode is
relu(encoder(x - b_dec)) followed by `activation`: `topk` keeps the k largest per token,
`groupmax` splits the F latents into k groups and keeps each group's largest; decode is
f @ W_dec + b_dec. Transcoders (`transcode`) predict another module's output and a skip
connection (`W_skip`) adds x @ W_skip.T to the reconstruction, so decode would no longer be a
function of the features: both are refused.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .files import check_shape, read_json, read_safetensors, require
from .sae import SAE, DictionaryInfo, GroupMax, TopK

NAME = "sparsify"
FILES = "cfg.json + sae.safetensors"


def detect(folder: Path) -> bool:
    return (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file()


def hook(folder: Path) -> str:
    """The module path the SAE was trained on: sparsify names the directory after it."""
    return folder.name


def load(folder: Path, submodule: str | None = None) -> SAE:
    cfg_path, weights = folder / "cfg.json", folder / "sae.safetensors"
    cfg = read_json(cfg_path)
    if cfg.get("transcode"):
        raise UserError(f"{cfg_path}: a sparsify transcoder (transcode: true) maps a module's input "
                        "to its output; only SAEs can be spliced as dictionaries")
    state = read_safetensors(weights)
    if cfg.get("skip_connection") or "W_skip" in state:
        raise UserError(f"{weights}: the skip connection W_skip adds x @ W_skip.T to the "
                        "reconstruction, which the splice cannot attribute to features; "
                        "use an SAE trained without skip_connection")
    require(state, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), weights, "a sparsify SAE")
    n, d = state["encoder.weight"].shape
    if cfg.get("d_in") is not None and cfg["d_in"] != d:
        raise UserError(f"{weights}: encoder.weight has shape {(n, d)}, but {cfg_path} says d_in {cfg['d_in']}")
    b_dec = check_shape(state["b_dec"], (d,), weights, "b_dec")
    b_enc = check_shape(state["encoder.bias"], (n,), weights, "encoder.bias")
    activation, k = cfg.get("activation", "topk"), cfg.get("k")
    if not isinstance(k, int) or not 0 < k <= n:
        raise UserError(f"{cfg_path}: k must be an integer between 1 and the width {n}, got {k!r}")
    if activation == "topk":
        act = TopK(b_enc, k)
    elif activation == "groupmax":
        if n % k:
            raise UserError(f"{cfg_path}: groupmax needs the width {n} to be a multiple of k = {k}")
        act = GroupMax(b_enc, k)
    else:
        raise UserError(f"{cfg_path}: activation {activation!r} is not supported (topk, groupmax)")
    info = DictionaryInfo(NAME, activation, str(weights), hook=folder.name)
    return SAE(state["encoder.weight"].T, check_shape(state["W_dec"], (n, d), weights, "W_dec"),
               b_dec, act, centre=b_dec, info=info)
