"""LRP propagation rules for RelP, in zennit's design: small Rules, a Composite maps modules
to rules, and `composite.context(model)` applies them for the duration of a `with` block.

Every rule is a "detach trick": the forward value is unchanged (output = y_lin + [y - y_lin]
with the bracket detached) and only the backward changes. Rule sets per architecture live in
`composite_for` at the bottom.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Callable

import torch
from torch import nn



def _keep_forward(original: torch.Tensor, linearised: torch.Tensor) -> torch.Tensor:
    """`linearised`'s gradient with `original`'s value."""
    return linearised + (original - linearised).detach()


class Rule(abc.ABC):
    """A propagation rule: a forward hook that re-expresses a module's output."""

    @abc.abstractmethod
    def forward_hook(self, module: nn.Module, inputs: tuple, output):
        """The module's output re-expressed so that only its gradient changes."""

    def register(self, module: nn.Module):
        return module.register_forward_hook(self.forward_hook)


class LNRule(Rule):
    """LayerNorm/RMSNorm: 1/sqrt(var + eps) treated as a constant (Ali et al. 2022)."""

    def forward_hook(self, module, inputs, output):
        x = inputs[0]
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        centred = x - x.mean(-1, keepdim=True) if isinstance(module, nn.LayerNorm) else x
        scale = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt().detach()
        y = centred * scale
        if getattr(module, "weight", None) is not None:
            y = y * module.weight
        if getattr(module, "bias", None) is not None:
            y = y + module.bias
        return _keep_forward(output, y)


class IdentityRule(Rule):
    """GELU/SiLU: y = x * [act(x)/x]_const (Rezaei Jafari et al. 2024); x ~ 0 uses act'(0)."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def forward_hook(self, module, inputs, output):
        x = inputs[0]
        safe = x.abs() > self.eps
        ratio = torch.where(safe, output / torch.where(safe, x, torch.ones_like(x)),
                            torch.full_like(x, 0.5))
        return _keep_forward(output, x * ratio.detach())


class HalfRule(Rule):
    """Multiplicative gate a*b: half the gradient, y = 0.5*(a*b) + 0.5*[a*b]_const.

    For modules whose output is a product of two inputs (gated MLPs), applied at the product.
    """

    def forward_hook(self, module, inputs, output):
        return _keep_forward(output, 0.5 * output)


class EpsilonRule(Rule):
    """Linear layers, epsilon-rule: z / (z + eps*sign(z)) scales the plain gradient."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = epsilon

    def forward_hook(self, module, inputs, output):
        stabilised = output + self.epsilon * torch.where(output >= 0, 1.0, -1.0)
        return _keep_forward(output, output * (output / stabilised).detach())


def _ah_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention with the probabilities detached (the AH-rule)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype).detach()
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AH_IMPLEMENTATION = "sfc_relp_ah"


def _register_ah() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(AH_IMPLEMENTATION, _ah_attention)
    # without a mask function the mask arrives as None and attention is silently non-causal
    AttentionMaskInterface.register(AH_IMPLEMENTATION, AttentionMaskInterface._global_mapping["eager"])


class AHRule:
    """Attention probabilities as constants: swaps the model's attention implementation."""

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        _register_ah()
        config = model.config
        previous = config._attn_implementation
        config._attn_implementation = AH_IMPLEMENTATION
        try:
            yield
        finally:
            config._attn_implementation = previous


class Composite:
    """Maps modules to rules (`module_map(name, module) -> Rule | None`) plus model-wide rules."""

    def __init__(self, module_map: Callable[[str, nn.Module], Rule | None],
                 model_rules: tuple = ()):
        self.module_map = module_map
        self.model_rules = model_rules

    @contextlib.contextmanager
    def context(self, model: nn.Module):
        """Apply the rules to `model` inside the block; remove every hook afterwards."""
        handles = []
        with contextlib.ExitStack() as stack:
            try:
                for name, module in model.named_modules():
                    rule = self.module_map(name, module)
                    if rule is not None:
                        handles.append(rule.register(module))
                for rule in self.model_rules:
                    stack.enter_context(rule.applied(model))
                yield self
            finally:
                for handle in handles:
                    handle.remove()


def _is_activation(module: nn.Module) -> bool:
    from transformers.activations import GELUActivation, SiLUActivation

    return isinstance(module, (nn.GELU, nn.SiLU, GELUActivation, SiLUActivation)) or \
        type(module).__name__ in ("NewGELUActivation", "FastGELUActivation", "GELUTanh",
                                  "PytorchGELUTanh", "QuickGELUActivation", "GELUActivation")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


# Activations whose gradient already is a valid LRP-0 relevance (piecewise linear, through 0).
_NO_RULE_NEEDED = (nn.ReLU, nn.LeakyReLU, nn.PReLU)


def _activation_classes() -> tuple:
    from transformers.activations import ACT2CLS

    classes = {v[0] if isinstance(v, tuple) else v for v in ACT2CLS.values()}
    return tuple(classes | {nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Mish})


def check_activations(model: nn.Module) -> None:
    """UserError when the model has an activation module with no LRP rule here (RelP would
    silently fall back to the plain gradient through it)."""
    from .errors import UserError

    known = _activation_classes()
    for name, module in model.named_modules():
        if isinstance(module, known) and type(module).__name__ != "LinearActivation" and \
                not _is_activation(module) and not isinstance(module, _NO_RULE_NEEDED):
            raise UserError(f"RelP has no LRP rule for activation {type(module).__name__} (at {name}); "
                            "use --method atp or ig, or add a rule in sfc_relp/lrp.py")


def composite_for(model: nn.Module, ah: bool = False, epsilon: float | None = None) -> Composite:
    """The paper's rule set: LN-rule, Identity-rule, 0-rule (epsilon optional), AH optional.

    Raises UserError for a model with an activation no rule covers (`check_activations`).
    """
    check_activations(model)
    identity, ln = IdentityRule(), LNRule()
    eps_rule = EpsilonRule(epsilon) if epsilon else None

    def module_map(_name: str, module: nn.Module):
        if _is_norm(module):
            return ln
        if _is_activation(module):
            return identity
        if eps_rule is not None and isinstance(module, nn.Linear):
            return eps_rule
        return None
    return Composite(module_map, (AHRule(),) if ah else ())
