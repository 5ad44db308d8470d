"""One in-memory representation for every dictionary: plain tensors, an activation, scaling.

An SAE of any published format becomes

    encode(x) = act((s_in * x - c) @ W_enc)          c: input centring (often b_dec) or none
    decode(f) = (f @ W_dec + b_dec) / s_out

where `act` adds the encoder bias and applies the format's nonlinearity (ReLU, JumpReLU,
TopK, GroupMax, gated). decode is affine in f, so decoder direction i is exactly
W_dec[i] / s_out, and the splice (features = encode(x), error = x - decode(f)) leaves the
forward unchanged whatever normalisation a format folds in. Tensors are used as given (views
of memory-mapped files where possible): nothing is randomly initialised and then overwritten.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class DictionaryInfo:
    """Where a dictionary came from and how it computes, for `inspect` and error messages."""

    format: str  # dictionary_learning, saelens, gemma_scope, sparsify, llama_scope, neurons
    cls: str  # the publisher's class or architecture name
    path: str | None = None
    hook: str | None = None  # the hook point its own metadata names, if any
    normalisation: str = "none"
    notes: list[str] = field(default_factory=list)


def _pick(t: torch.Tensor, ids) -> torch.Tensor:
    return t if ids is None else t[ids]


class Activation(nn.Module, abc.ABC):
    """The nonlinearity after the encoder matmul: an elementwise part, then (for TopK-like
    activations) a per-token choice of which features survive."""

    per_token = False  # True when whether a feature fires depends on the other features

    @abc.abstractmethod
    def values(self, lin: torch.Tensor, ids=None) -> torch.Tensor:
        """Elementwise part on `lin` = centred input @ W_enc[:, ids] (all features if ids is None)."""

    def select(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token choice on the full-width values; the identity for elementwise activations."""
        return values

    @abc.abstractmethod
    def describe(self) -> str:
        """Short text for `dictionaries inspect`: the sparsity mechanism and its parameter."""


class ReLU(Activation):
    """relu(lin + b_enc)."""

    def __init__(self, b_enc: torch.Tensor):
        super().__init__()
        self.register_buffer("b_enc", b_enc)

    def values(self, lin, ids=None):
        return torch.relu(lin + _pick(self.b_enc, ids))

    def describe(self):
        return "relu"


class JumpReLU(Activation):
    """relu(pre) * (pre > threshold), pre = lin + b_enc, one threshold per feature."""

    def __init__(self, b_enc: torch.Tensor, threshold: torch.Tensor):
        super().__init__()
        self.register_buffer("b_enc", b_enc)
        self.register_buffer("threshold", threshold)

    def values(self, lin, ids=None):
        pre = lin + _pick(self.b_enc, ids)
        return torch.relu(pre) * (pre > _pick(self.threshold, ids))

    def describe(self):
        t = self.threshold.float()
        if t.numel() and bool((t == t[0]).all()):
            return f"jumprelu threshold {t[0].item():.4g}"
        return f"jumprelu threshold mean {t.mean().item():.4g}"


class TopK(Activation):
    """The k largest of relu(lin + b_enc) per token; the rest zero."""

    per_token = True

    def __init__(self, b_enc: torch.Tensor, k: int):
        super().__init__()
        self.register_buffer("b_enc", b_enc)
        self.k = int(k)

    def values(self, lin, ids=None):
        return torch.relu(lin + _pick(self.b_enc, ids))

    def select(self, values):
        index = values.topk(min(self.k, values.shape[-1]), dim=-1, sorted=False).indices
        return torch.zeros_like(values).scatter(-1, index, values.gather(-1, index))

    def describe(self):
        return f"topk k={self.k}"


class GroupMax(TopK):
    """sparsify's groupmax: the features split into k equal groups, the largest of each kept."""

    def select(self, values):
        groups = values.unflatten(-1, (self.k, -1))
        index = groups.argmax(-1, keepdim=True)
        return torch.zeros_like(groups).scatter(-1, index, groups.gather(-1, index)).flatten(-2)

    def describe(self):
        return f"groupmax k={self.k}"


class Gated(Activation):
    """Gated SAE: (lin + b_gate > 0) * relu(exp(r_mag) * lin + b_mag), one shared encoder."""

    def __init__(self, b_gate: torch.Tensor, b_mag: torch.Tensor, r_mag: torch.Tensor):
        super().__init__()
        self.register_buffer("b_gate", b_gate)
        self.register_buffer("b_mag", b_mag)
        self.register_buffer("r_mag", r_mag)

    def values(self, lin, ids=None):
        gate = lin + _pick(self.b_gate, ids) > 0
        return gate * torch.relu(_pick(self.r_mag, ids).exp() * lin + _pick(self.b_mag, ids))

    def describe(self):
        return "gated"


class Dictionary(nn.Module, abc.ABC):
    """What tracing and attribution need from a dictionary: encode, an affine decode, the
    decoder direction of each feature and the encoding of selected features only."""

    info: DictionaryInfo

    @property
    @abc.abstractmethod
    def activation_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def dict_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def decode(self, f: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def directions(self, ids) -> torch.Tensor:
        """(len(ids), d): d decode / d f_i for each feature i in ids."""

    @abc.abstractmethod
    def encode_subset(self, x: torch.Tensor, ids) -> torch.Tensor:
        """encode(x)[..., ids], differentiable through those features' encoder rows only."""

    def forward(self, x):
        return self.decode(self.encode(x))


class SAE(Dictionary):
    """A sparse autoencoder in the form the module docstring gives."""

    def __init__(self, W_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
                 activation: Activation, centre: torch.Tensor | None = None,
                 scale_in: float = 1.0, scale_out: float = 1.0, info: DictionaryInfo | None = None):
        super().__init__()
        self.register_buffer("W_enc", W_enc)  # (d, F)
        self.register_buffer("W_dec", W_dec)  # (F, d)
        self.register_buffer("b_dec", b_dec)  # (d,)
        self.register_buffer("centre", centre)  # (d,) or None
        self.activation = activation
        self.scale_in, self.scale_out = float(scale_in), float(scale_out)
        self.info = info or DictionaryInfo("memory", type(activation).__name__)

    @property
    def activation_dim(self) -> int:
        return self.W_enc.shape[0]

    @property
    def dict_size(self) -> int:
        return self.W_enc.shape[1]

    def _linear(self, x: torch.Tensor, ids=None) -> torch.Tensor:
        if self.scale_in != 1.0:
            x = x * self.scale_in
        if self.centre is not None:
            x = x - self.centre
        return x @ (self.W_enc if ids is None else self.W_enc[:, ids])

    def encode(self, x):
        return self.activation.select(self.activation.values(self._linear(x)))

    def decode(self, f):
        out = f @ self.W_dec + self.b_dec
        return out / self.scale_out if self.scale_out != 1.0 else out

    def directions(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.W_dec.device)
        rows = self.W_dec[ids]
        return rows / self.scale_out if self.scale_out != 1.0 else rows

    def encode_subset(self, x, ids):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.W_enc.device)
        values = self.activation.values(self._linear(x, ids), ids)
        if not self.activation.per_token:
            return values
        # which features survive is piecewise constant in x: read it from the full encoding
        return values * (self.encode(x.detach())[..., ids] != 0)


class Neurons(Dictionary):
    """The identity dictionary: one 'feature' per hidden unit (Marks et al.'s neuron baseline)."""

    def __init__(self, d: int, info: DictionaryInfo | None = None):
        super().__init__()
        self.d = int(d)
        self.register_buffer("_like", torch.zeros(0))  # carries dtype and device
        self.info = info or DictionaryInfo("neurons", "identity")

    @property
    def activation_dim(self) -> int:
        return self.d

    @property
    def dict_size(self) -> int:
        return self.d

    def encode(self, x):
        return x

    def decode(self, f):
        return f

    def directions(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self._like.device)
        return torch.eye(self.d, dtype=self._like.dtype, device=self._like.device)[ids]

    def encode_subset(self, x, ids):
        return x[..., torch.as_tensor(ids, dtype=torch.long, device=x.device)]
