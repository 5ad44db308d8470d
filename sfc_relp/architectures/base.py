"""The architecture record: everything the toolkit knows about one model family.

A record says where each circuit submodule's output lives (`embed`, `attn_i`, `mlp_i`,
`resid_i`, in forward order), how the residual stream is wired (parallel or sequential),
and where the LRP rules attach (norm classes, the MLP activation, the gated product).
Tracing, edges and the LRP composite read records; none of them knows a module path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


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
    """Module paths, residual topology and LRP sites of one model family.

    `attn_path`, `mlp_path` and `mlp_module` are relative to one decoder layer; `activation`
    and `gated_product_input` are attributes of the MLP module. `attn_path`/`mlp_path` name
    the module whose output is the node (the value added to the residual stream);
    `mlp_module` is the MLP itself (they differ for Gemma-2, whose node is the post-norm's).
    """

    name: str
    model_types: tuple[str, ...]
    embed_path: str
    layers_path: str
    attn_path: str
    mlp_path: str
    final_norm_path: str
    norm_classes: tuple[str, ...]  # class names that get the family's LN-rule
    mlp_module: str = "mlp"
    activation: str = "act"  # attribute of the MLP holding its nonlinearity (Identity-rule)
    attn_returns_tuple: bool = True
    gated_mlp_classes: tuple[str, ...] = ()  # MLP classes computing down(act(gate(x)) * up(x))
    gated_product_input: str | None = None  # attribute of such an MLP whose input is the product
    parallel_residual: Callable = lambda config: False
    norm_rule: str = "layer_norm"  # a key of lrp.NORM_RULES
    zero_queries: Callable | None = None  # (layer module) -> None: queries 0, attention uniform
    linear_config: dict = field(default_factory=dict)  # config values that remove output nonlinearities
    configs: dict = field(default_factory=dict)  # model_type -> HF config kwargs of a real model
    small: dict = field(default_factory=dict)  # overrides giving a d_model-64 toy of the family
    notes: str = ""

    def submodules(self, n_layers: int) -> list[Submodule]:
        """All submodules in forward order: embed, then attn_i, mlp_i, resid_i per layer."""
        subs = [Submodule("embed", "embed", -1, self.embed_path, False)]
        for i in range(n_layers):
            layer = f"{self.layers_path}.{i}"
            subs.append(Submodule(f"attn_{i}", "attn", i, f"{layer}.{self.attn_path}",
                                  self.attn_returns_tuple))
            subs.append(Submodule(f"mlp_{i}", "mlp", i, f"{layer}.{self.mlp_path}", False))
            subs.append(Submodule(f"resid_{i}", "resid", i, layer, False))
        return subs

    def residual(self, config) -> str:
        """'parallel' (attention and MLP both read resid_{l-1}) or 'sequential'."""
        return "parallel" if self.parallel_residual(config) else "sequential"

    def layer_path(self, i: int) -> str:
        return f"{self.layers_path}.{i}"

    def config(self, model_type: str | None = None, small: bool = False, **overrides):
        """An HF config of this family: a real model's (`configs`), the toy's, or overridden."""
        from transformers import AutoConfig

        model_type = model_type or self.model_types[0]
        kwargs = {**self.configs[model_type], **(self.small if small else {}), **overrides}
        return AutoConfig.for_model(model_type, **kwargs)
