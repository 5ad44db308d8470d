"""Per-architecture knowledge, one module per model family, gathered in a registry.

`architecture_for(config)` picks a family's `Architecture` record by `config.model_type`;
tracing, edges, LRP and the CLI read records only. Adding a family is one new module here
that builds an `Architecture` and passes it to `register` (docs/ARCHITECTURES.md).
"""

from __future__ import annotations

from ..errors import UserError
from .base import Architecture, Submodule

REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add a family to the registry (tests and CLI choices read it)."""
    if arch.name in REGISTRY:
        raise ValueError(f"architecture {arch.name!r} registered twice")
    REGISTRY[arch.name] = arch
    return arch


def architecture_for(config) -> Architecture:
    """The architecture entry for an HF config, or a UserError naming the supported ones."""
    for arch in REGISTRY.values():
        if config.model_type in arch.model_types:
            return arch
    supported = ", ".join(t for a in REGISTRY.values() for t in a.model_types)
    raise UserError(f"model type {config.model_type!r} is not supported (supported: {supported})")


def submodules_for(config) -> list[Submodule]:
    """The circuit submodules of a model, from its HF config."""
    return architecture_for(config).submodules(config.num_hidden_layers)


def resolve_path(root, path: str):
    """Follow a dotted module path (digits index into module lists) from `root`."""
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def model_types() -> list[str]:
    """Every HF model_type some registered family serves (CLI choices)."""
    return [t for a in REGISTRY.values() for t in a.model_types]


from . import gpt_neox, gpt2, llama, gemma2  # noqa: E402,F401,I001  (registration, in this order)

__all__ = ["REGISTRY", "Architecture", "Submodule", "architecture_for", "model_types",
           "register", "resolve_path", "submodules_for"]
