"""LRP propagation rules for RelP, in zennit's design: small `Rule`s are hooks on one module,
`Canonizer`s make model-wide temporary changes (a new attention function, hooks at a place
that is no module output), and a `Composite` applies both for the duration of a `with` block
and removes everything afterwards. `composite_for(model)` builds the paper's rule set (its
Table 4) from the model's architecture record: LN-rule on the family's norms, Identity-rule
on the MLP activation, Half-rule at the gated product (gated families), 0-rule elsewhere
(epsilon-rule optional, on `nn.Linear` and GPT-2's `Conv1D`), AH-rule optional.

Every rule is a "detach trick": the forward value is unchanged (output = y_lin + [y - y_lin]
with the bracket detached) and only the backward changes. A rule on a module whose output is
a spliced circuit node (Gemma-2's post-norms) must keep the splice's graph, which nnsight
writes before torch's forward hooks run: there the rule adds a zero-valued correction
(rule - [rule]) - (plain - [plain]) to the output instead, swapping only the module's own
Jacobian.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Callable

import torch
from torch import nn

from .architectures import architecture_for, resolve_path
from .errors import UserError


def _keep_forward(original: torch.Tensor, linearised: torch.Tensor) -> torch.Tensor:
    """`linearised`'s gradient with `original`'s value."""
    return linearised + (original - linearised).detach()


class Rule(abc.ABC):
    """A propagation rule: a forward hook that re-expresses a module's output."""

    @abc.abstractmethod
    def linearise(self, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A tensor with `output`'s value (up to rounding) whose gradient is the rule's."""

    def forward_hook(self, module: nn.Module, inputs: tuple, output):
        return _keep_forward(output, self.linearise(module, inputs[0], output))

    def spliced_hook(self, module: nn.Module, inputs: tuple, output):
        """For a module whose (possibly spliced) output must keep its graph."""
        plain = type(module).forward(module, *inputs)
        ruled = self.linearise(module, inputs[0], plain.detach())
        return output + (ruled - ruled.detach()) - (plain - plain.detach())

    def register(self, module: nn.Module, spliced: bool = False):
        return module.register_forward_hook(self.spliced_hook if spliced else self.forward_hook)


class LNRule(Rule):
    """LayerNorm: 1/sqrt(var + eps) treated as a constant (Ali et al. 2022). Also serves
    RMSNorms of the form weight * x / rms(x) computed in the input's dtype."""

    def linearise(self, module, x, output):
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        centred = x - x.mean(-1, keepdim=True) if isinstance(module, nn.LayerNorm) else x
        scale = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt().detach()
        y = centred * scale
        if getattr(module, "weight", None) is not None:
            y = y * module.weight
        if getattr(module, "bias", None) is not None:
            y = y + module.bias
        return y


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half precisions (as the RMSNorms compute), else the input's dtype."""
    return torch.promote_types(x.dtype, torch.float32)


class RMSNormRule(Rule):
    """Llama/Qwen2/Mistral RMSNorm, weight * (x * rsqrt(mean(x^2) + eps)) computed in float32,
    with the rsqrt a constant."""

    def linearise(self, module, x, output):
        xf = x.to(_compute_dtype(x))
        scale = (xf.pow(2).mean(-1, keepdim=True) + module.variance_epsilon).rsqrt().detach()
        return module.weight * (xf * scale).to(x.dtype)


class GemmaRMSNormRule(Rule):
    """Gemma2RMSNorm, (x * rsqrt(mean(x^2) + eps) * (1 + weight)) in float32, rsqrt constant."""

    def linearise(self, module, x, output):
        xf = x.to(_compute_dtype(x))
        scale = (xf.pow(2).mean(-1, keepdim=True) + module.eps).rsqrt().detach()
        return (xf * scale * (1.0 + module.weight.to(xf.dtype))).to(x.dtype)


NORM_RULES = {"layer_norm": LNRule, "rms_norm": RMSNormRule, "gemma_rms_norm": GemmaRMSNormRule}


class IdentityRule(Rule):
    """GELU/SiLU: y = x * [act(x)/x]_const (Rezaei Jafari et al. 2024); x ~ 0 uses act'(0) = 0.5."""

    def __init__(self, eps: float = 1e-6):
        self.eps = eps

    def linearise(self, module, x, output):
        safe = x.abs() > self.eps
        ratio = torch.where(safe, output / torch.where(safe, x, torch.ones_like(x)),
                            torch.full_like(x, 0.5))
        return x * ratio.detach()


class HalfRule(Rule):
    """Multiplicative gate a*b: half the gradient, y = 0.5*(a*b) + 0.5*[a*b]_const.

    As a forward hook it acts on a module whose output is the product; `GatedProductCanonizer`
    applies it to the input of the module that consumes the product.
    """

    def linearise(self, module, x, output):
        return 0.5 * output


class EpsilonRule(Rule):
    """Linear layers, epsilon-rule: z / (z + eps*sign(z)) scales the plain gradient."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = epsilon

    def linearise(self, module, x, output):
        stabilised = output + self.epsilon * torch.where(output >= 0, 1.0, -1.0)
        return output * (output / stabilised).detach()


# activations by class name: the Identity-rule, or no rule (piecewise linear)
IDENTITY_ACTIVATIONS = ("GELU", "SiLU", "GELUActivation", "NewGELUActivation", "GELUTanh",
                        "PytorchGELUTanh", "FastGELUActivation", "SiLUActivation",
                        "QuickGELUActivation")
LINEAR_ACTIVATIONS = ("ReLU", "Identity")


def activation_rule(module: nn.Module, where: str) -> Rule | None:
    """The Identity-rule for a smooth activation, None for piecewise-linear ones."""
    name = type(module).__name__
    if name in IDENTITY_ACTIVATIONS:
        return IdentityRule()
    if name in LINEAR_ACTIVATIONS:
        return None
    raise UserError(f"no LRP rule for activation {name} at {where}; supported: "
                    f"{', '.join(IDENTITY_ACTIVATIONS + LINEAR_ACTIVATIONS)}")


def _ah_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                  softcap=None, **kwargs):
    """Eager attention with the probabilities detached (the AH-rule), for every family:
    grouped-query heads repeated as `repeat_kv` does, Gemma-2's scaling and logit soft-capping
    (tanh(s / c) * c, before the mask) as in its eager forward."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        b, h, t, d = key.shape
        key = key[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)
        value = value[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=_compute_dtype(query)).to(query.dtype)
    weights = weights.detach()
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AH_IMPLEMENTATION = "sfc_relp_ah"


def _register_ah() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(AH_IMPLEMENTATION, _ah_attention)
    # without a mask function the mask arrives as None and attention is silently non-causal
    AttentionMaskInterface.register(AH_IMPLEMENTATION, AttentionMaskInterface._global_mapping["eager"])


class Canonizer(abc.ABC):
    """A model-wide temporary change, undone when the `applied` block exits."""

    @abc.abstractmethod
    def applied(self, model: nn.Module):
        """Context manager: the change holds inside the block only."""


class AHRule(Canonizer):
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


class GatedProductCanonizer(Canonizer):
    """Makes the gated product act(gate(x)) * up(x) hookable: it is no module output in
    transformers, but it is the input of `down_proj`, so a forward pre-hook there applies
    `rule` (the Half-rule) to it."""

    def __init__(self, consumers: Callable[[nn.Module], list[nn.Module]], rule: Rule | None = None):
        self.consumers = consumers
        self.rule = rule or HalfRule()

    def pre_hook(self, module, inputs):
        product = inputs[0]
        return (_keep_forward(product, self.rule.linearise(module, product, product)), *inputs[1:])

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        handles = [m.register_forward_pre_hook(self.pre_hook) for m in self.consumers(model)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


class Composite:
    """Maps modules to rules (`module_map(name, module) -> Rule | None`) plus canonizers.

    `spliced` names modules whose outputs are circuit nodes (their rules keep the splice).
    """

    def __init__(self, module_map: Callable[[str, nn.Module], Rule | None],
                 model_rules: tuple = (), spliced: frozenset = frozenset()):
        self.module_map = module_map
        self.model_rules = model_rules
        self.spliced = spliced

    @contextlib.contextmanager
    def context(self, model: nn.Module):
        """Apply the rules to `model` inside the block; remove every hook afterwards."""
        handles = []
        with contextlib.ExitStack() as stack:
            try:
                for name, module in model.named_modules():
                    rule = self.module_map(name, module)
                    if rule is not None:
                        handles.append(rule.register(module, name in self.spliced))
                for rule in self.model_rules:
                    stack.enter_context(rule.applied(model))
                yield self
            finally:
                for handle in handles:
                    handle.remove()


def _linear_types() -> tuple:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def composite_for(model: nn.Module, ah: bool = False, epsilon: float | None = None,
                  half: bool = True) -> Composite:
    """The paper's rule set for `model`'s family (its Table 4), from the architecture record:
    LN-rule, Identity-rule, Half-rule at gated products, 0-rule (epsilon optional), AH optional.
    """
    arch = architecture_for(model.config)
    n_layers = model.config.num_hidden_layers
    norm = NORM_RULES[arch.norm_rule]()
    mlps = [resolve_path(model, f"{arch.layer_path(i)}.{arch.mlp_module}") for i in range(n_layers)]
    activations = {}
    for i, mlp in enumerate(mlps):
        act = getattr(mlp, arch.activation, None)
        where = f"{arch.layer_path(i)}.{arch.mlp_module}.{arch.activation}"
        if act is None:
            raise UserError(f"{arch.name} model has no MLP activation at {where}")
        activations[id(act)] = activation_rule(act, where)
    eps_rule = EpsilonRule(epsilon) if epsilon else None
    linear = _linear_types()

    def module_map(_name: str, module: nn.Module):
        if type(module).__name__ in arch.norm_classes:
            return norm
        if id(module) in activations:
            return activations[id(module)]
        if eps_rule is not None and isinstance(module, linear):
            return eps_rule
        return None

    def gated_consumers(m: nn.Module) -> list[nn.Module]:
        return [getattr(mlp, arch.gated_product_input) for mlp in mlps
                if type(mlp).__name__ in arch.gated_mlp_classes]
    canonizers = []
    if half and arch.gated_product_input is not None:
        canonizers.append(GatedProductCanonizer(gated_consumers))
    if ah:
        canonizers.append(AHRule())
    spliced = frozenset(s.module_path for s in arch.submodules(n_layers))
    return Composite(module_map, tuple(canonizers), spliced)
