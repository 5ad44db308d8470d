"""Safe readers for dictionary files, each failure a one-line UserError naming the file.

Only loaders that cannot run code: safetensors, `torch.load(weights_only=True)` (memory-mapped
when the file allows), `numpy.load(allow_pickle=False)` and JSON/YAML.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError


def read_json(path: Path) -> dict:
    """A JSON object from `path`."""
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"could not read {path} ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, expected an object")
    return value


def check_finite(tensors: dict, path: Path) -> dict:
    """`tensors` unchanged, or a UserError naming the first float tensor holding NaN or inf."""
    for key, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{path}: {key} holds NaN or infinite values; retrain or re-export it")
    return tensors


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (read through a memory map)."""
    from safetensors.torch import load_file

    try:
        return check_finite(load_file(str(path)), path)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise UserError(f"could not read {path} as safetensors ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'truncated or corrupt'}); "
                        "re-download or re-save it") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict saved with torch.save, without unpickling any object."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:
        raise UserError(f"could not read {path} as a weights-only state_dict "
                        f"({type(exc).__name__}); re-save it with torch.save(ae.state_dict())") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds a {type(state).__name__} that is not a state_dict of "
                        "tensors; re-save it with torch.save(ae.state_dict())")
    return check_finite(state, path)


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """All arrays of an .npz file as tensors, refusing object arrays (they need pickle)."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: torch.from_numpy(np.ascontiguousarray(archive[key])) for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UserError(f"{path} holds Python objects, which would need unpickling; save "
                            "plain numeric arrays (numpy.savez) instead") from None
        raise UserError(f"could not read {path} as .npz ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, TypeError) as exc:
        raise UserError(f"could not read {path} as .npz ({type(exc).__name__}: truncated or "
                        "corrupt); re-download it") from None
    return check_finite(arrays, path)


def read_mapping(path: Path) -> dict:
    """A mapping file: JSON, or YAML when PyYAML is installed."""
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UserError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                            "or write the mapping as JSON") from None
        try:
            value = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(value, dict):
            raise UserError(f"{path} must map submodule names to paths")
        return value
    return read_json(path)


def require(tensors: dict, keys, path: Path, what: str) -> None:
    """Every key present, or a UserError naming the missing ones."""
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise UserError(f"{path} lacks {', '.join(repr(k) for k in missing)}, expected for {what} "
                        f"(it holds {', '.join(sorted(tensors)) or 'nothing'})")


def check_shape(tensor: torch.Tensor, shape: tuple, path: Path, key: str) -> torch.Tensor:
    """`tensor` if its shape is `shape`, else a UserError naming the file and both shapes."""
    if tuple(tensor.shape) != tuple(shape):
        raise UserError(f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    return tensor


def as_float(value, path: Path, key: str) -> float:
    """A positive finite number from a config, or a UserError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}: {key} must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise UserError(f"{path}: {key} must be positive and finite, got {value!r}")
    return number
