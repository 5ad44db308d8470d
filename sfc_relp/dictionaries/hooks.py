"""Which of our submodules a dictionary's own metadata names.

TransformerLens hook names (SAELens, Llama Scope) and Hugging Face module paths (sparsify)
are translated to `embed`, `attn_L`, `mlp_L`, `resid_L`; a hook point that is none of these
(attention `hook_z`, `hook_resid_pre`, `hook_resid_mid`, ...) is refused.
"""

from __future__ import annotations

import re

from ..errors import UserError

SUPPORTED = ("hook_embed, blocks.L.hook_resid_post, blocks.L.hook_attn_out, blocks.L.hook_mlp_out "
             "(TransformerLens) or embed_tokens/embed_in, layers.L, layers.L.mlp, "
             "layers.L.self_attn/attention (Hugging Face module paths)")

_OURS = re.compile(r"embed|(?:attn|mlp|resid)_\d+")
_TRANSFORMER_LENS = (
    (re.compile(r"hook_embed"), "embed"),
    (re.compile(r"blocks\.(\d+)\.hook_resid_post"), "resid_{}"),
    (re.compile(r"blocks\.(\d+)\.hook_attn_out"), "attn_{}"),
    (re.compile(r"blocks\.(\d+)\.hook_mlp_out"), "mlp_{}"),
)
_PREFIX = r"(?:(?:model|gpt_neox|transformer|base_model\.model|model\.model)\.)?"
_HUGGING_FACE = (
    (re.compile(_PREFIX + r"(?:embed_tokens|embed_in|wte)"), "embed"),
    (re.compile(_PREFIX + r"(?:layers|h)\.(\d+)"), "resid_{}"),
    (re.compile(_PREFIX + r"(?:layers|h)\.(\d+)\.mlp"), "mlp_{}"),
    (re.compile(_PREFIX + r"(?:layers|h)\.(\d+)\.(?:self_attn|attention|attn)"), "attn_{}"),
)


def submodule_for_hook(hook: str, where) -> str:
    """Our submodule name for a hook point or module path, or a UserError saying what fits."""
    if _OURS.fullmatch(hook):
        return hook
    for pattern, name in _TRANSFORMER_LENS + _HUGGING_FACE:
        match = pattern.fullmatch(hook)
        if match:
            return name.format(*match.groups())
    raise UserError(f"{where} was trained on hook point {hook!r}, which is not one of this "
                    f"project's submodules; supported: {SUPPORTED}")


def check_assignment(hook: str | None, submodule: str, where) -> None:
    """A dictionary whose metadata names `hook` may only serve `submodule`."""
    if hook is None:
        return
    ours = submodule_for_hook(hook, where)
    if ours != submodule:
        raise UserError(f"{where} was trained on {hook!r} ({ours}), not on {submodule}; "
                        f"assign it to {ours} or pick the dictionary trained on {submodule}")
