"""Per-architecture knowledge: which module of a model is which circuit submodule.

A circuit submodule is a place in the forward pass whose output gets an SAE: `embed`,
then `attn_i`, `mlp_i` and `resid_i` for every layer i, in forward order. Adding an
architecture means adding one `Architecture` here; nothing else knows module paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Submodule:
    """One circuit submodule: its name, kind, layer and where its output lives."""

    name: str
    kind: str  # "embed", "attn", "mlp" or "resid"
    layer: int  # -1 for embed
    module_path: str  # dotted path from the HF model, e.g. "gpt_neox.layers.0.attention"
    output_is_tuple: bool  # the module returns (tensor, ...) and the activation is element 0

    @property
    def dictionary_dirname(self) -> str:
        """Directory name of this submodule's SAE in Marks et al.'s published layout."""
        if self.kind == "embed":
            return "embed"
        return f"{self.kind}_out_layer{self.layer}"


@dataclass(frozen=True)
class Architecture:
    """Module paths of one model family, plus the names of its LRP-relevant parts."""

    name: str
    model_types: tuple[str, ...]
    embed_path: str
    layers_path: str
    attention_name: str
    mlp_name: str
    final_norm_path: str
    attention_returns_tuple: bool = True

    def submodules(self, n_layers: int) -> list[Submodule]:
        """All submodules in forward order: embed, then attn_i, mlp_i, resid_i per layer."""
        subs = [Submodule("embed", "embed", -1, self.embed_path, False)]
        for i in range(n_layers):
            layer = f"{self.layers_path}.{i}"
            subs.append(Submodule(f"attn_{i}", "attn", i, f"{layer}.{self.attention_name}",
                                  self.attention_returns_tuple))
            subs.append(Submodule(f"mlp_{i}", "mlp", i, f"{layer}.{self.mlp_name}", False))
            subs.append(Submodule(f"resid_{i}", "resid", i, layer, False))
        return subs


GPT_NEOX = Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    embed_path="gpt_neox.embed_in",
    layers_path="gpt_neox.layers",
    attention_name="attention",
    mlp_name="mlp",
    final_norm_path="gpt_neox.final_layer_norm",
)

ARCHITECTURES = (GPT_NEOX,)


def architecture_for(config) -> Architecture:
    """The architecture entry for an HF config, or a UserError naming the supported ones."""
    for arch in ARCHITECTURES:
        if config.model_type in arch.model_types:
            return arch
    supported = ", ".join(t for a in ARCHITECTURES for t in a.model_types)
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
