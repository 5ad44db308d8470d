"""Load a causal LM (bundled short name, local directory or HF id) wrapped for nnsight."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .architectures import architecture_for
from .errors import UserError

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
DEFAULT_MODEL = "tiny-pythia"

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float64": torch.float64, "fp64": torch.float64,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def parse_dtype(dtype) -> torch.dtype:
    """A torch dtype from a dtype or its name ('float32', 'bf16', ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))}")


def bundled_models() -> list[str]:
    """Short names of the models shipped inside the package."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_path(name_or_path: str) -> str:
    """A bundled model's directory for a short name; otherwise the argument unchanged."""
    if (ZOO_DIR / name_or_path / "config.json").is_file():
        return str(ZOO_DIR / name_or_path)
    return name_or_path


def hf_model(model):
    """The plain torch module under an nnsight wrapper (or the argument itself)."""
    return getattr(model, "_module", model)


def model_name(model) -> str:
    """The short name a model was loaded under (used in output file names and circuits)."""
    hf = hf_model(model)
    return getattr(hf, "sfc_relp_name", None) or Path(hf.config.name_or_path).name


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer_file = Path(path) / "tokenizer.json"
    if tokenizer_file.is_file() and not (Path(path) / "tokenizer_config.json").is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    else:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    for special in ("bos_token", "eos_token", "pad_token"):
        if getattr(tok, special) is None:
            fallback = tok.eos_token or tok.bos_token or "<|endoftext|>"
            setattr(tok, special, fallback)
    return tok


def _wrap(hf_model, tokenizer):
    from nnsight.modeling.transformers import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformersModel(hf_model, tokenizer=tokenizer)


def own_dictionaries_dir(model) -> Path | None:
    """The `dictionaries/` folder inside the directory a model was loaded from, if it has one.

    A model directory may carry its own SAEs there, in Marks et al.'s per-model layout
    (`<submodule dir>/<id>_<width>/ae.pt`); every bundled model does, so its SAEs ship with it.
    """
    source = Path(hf_model(model).config.name_or_path)
    folder = source / "dictionaries"
    return folder if (source / "config.json").is_file() and folder.is_dir() else None


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu", dtype="float32",
               attn_implementation: str = "eager"):
    """The nnsight-wrapped HF causal LM for a bundled name, a local directory or an HF id.

    Nothing is downloaded: an HF id must already be in the local HF cache. Eager attention
    is the default so attention probabilities are an explicit tensor (RelP's AH-rule).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    path = resolve_model_path(name_or_path)
    local = Path(path).is_dir()
    if local and not (Path(path) / "config.json").is_file():
        raise UserError(f"{path} has no config.json; pass a directory saved with "
                        "save_pretrained() or a bundled model name")
    if local and not any((Path(path) / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickled = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (Path(path) / f).is_file()]
        raise UserError(f"{path} has no model.safetensors" + (
            f" (only {pickled[0]}, a pickle this tool does not load); convert it with "
            "save_pretrained(..., safe_serialization=True)" if pickled else ""))
    torch_dtype = parse_dtype(dtype)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, local_files_only=True, use_safetensors=True,
            attn_implementation=attn_implementation)
        tokenizer = _load_tokenizer(path)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        if local or not isinstance(exc, OSError):
            detail = " ".join(str(exc).split())[:200]
            raise UserError(f"could not load a model from {path} ({type(exc).__name__}: {detail}); "
                            "it needs config.json, complete weights (model.safetensors) and a "
                            "tokenizer") from None
        if local:
            raise UserError(f"could not load a model from {path}: it needs config.json, "
                            "weights (model.safetensors) and a tokenizer") from None
        bundled = ", ".join(bundled_models()) or "none built yet"
        raise UserError(
            f"model {name_or_path!r} is neither a local directory nor in the HF cache and this "
            f"machine cannot download it; copy it here (e.g. `huggingface-cli download "
            f"{name_or_path}` on a connected machine, then copy the directory) and pass its "
            f"path, or use a bundled model ({bundled})") from None
    architecture_for(hf_model.config)
    hf_model.eval().requires_grad_(False).to(device)
    hf_model.sfc_relp_name = Path(name_or_path.rstrip("/")).name
    return _wrap(hf_model, tokenizer)
