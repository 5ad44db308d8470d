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


def _plain_fast_tokenizer(config_file: Path) -> bool:
    """Whether a tokenizer_config.json names the generic fast tokenizer class."""
    import json

    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("tokenizer_class") in ("PreTrainedTokenizerFast",
                                                                          "TokenizersBackend")


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer_file = Path(path) / "tokenizer.json"
    config_file = Path(path) / "tokenizer_config.json"
    if tokenizer_file.is_file() and not config_file.is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    elif _plain_fast_tokenizer(config_file):
        # a plain tokenizers file: AutoTokenizer would pick the model family's own class
        # (e.g. Qwen2Tokenizer), which rebuilds its pre-tokenizer and breaks a word-level vocabulary
        tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
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


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _check_device(device) -> None:
    """A UserError for a device this machine does not have (instead of a torch traceback)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")


def _check_device_map(device_map):
    """The device map, after checking accelerate (which implements it) is installed."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise UserError("--device-map needs the accelerate package: pip install accelerate") from None
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        try:
            _check_device(device_map)
        except UserError as exc:
            raise UserError(f"--device-map {device_map!r}: {exc}; or use one of "
                            f"{', '.join(DEVICE_MAP_STRATEGIES)}") from None
    return device_map


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu", dtype="float32",
               attn_implementation: str = "eager", device_map=None, offload_folder=None):
    """The nnsight-wrapped HF causal LM for a bundled name, a local directory or an HF id.

    Nothing is downloaded: an HF id must already be in the local HF cache. Eager attention
    is the default so attention probabilities are an explicit tensor (RelP's AH-rule).
    `device_map` ('auto', 'balanced', a dict of module -> device, ...) splits the model over
    devices through accelerate, in place of `device` ("disk" entries go to `offload_folder`).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    if device_map is None:
        _check_device(device)
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
        placement = {} if device_map is None else {"device_map": _check_device_map(device_map),
                                                    "offload_folder": offload_folder}
        hf_model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, local_files_only=True, use_safetensors=True,
            attn_implementation=attn_implementation, **placement)
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
    hf_model.eval().requires_grad_(False)
    if device_map is None:
        hf_model.to(device)
    hf_model.sfc_relp_name = Path(name_or_path.rstrip("/")).name
    return _wrap(hf_model, tokenizer)
