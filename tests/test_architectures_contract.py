"""The contract every registered architecture meets, on a small random model of each family.

Parametrized over the registry (zennit's `any_composite` pattern): registering a family
(or another model_type of one) puts it under every test here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sfc_relp.architectures import REGISTRY, architecture_for, resolve_path, submodules_for
from sfc_relp.attribution import TaskBatch, get_method, logit_diff
from sfc_relp.datasets import generate
from sfc_relp.dictionaries import neuron_dictionaries
from sfc_relp.errors import UserError
from sfc_relp.loading import _wrap, hf_model
from sfc_relp.lrp import GatedProductCanonizer, composite_for
from sfc_relp.random_model import random_config, random_dictionaries
from sfc_relp.tracing import run_spliced

MODEL_TYPES = [t for arch in REGISTRY.values() for t in arch.model_types]


def build(model_type, tokenizer, dtype=torch.float32, seed=0, **overrides):
    """A 2-layer, d_model-64 random model of the family, eager attention, nnsight-wrapped."""
    from transformers import AutoModelForCausalLM

    config = random_config(model_type, tokenizer, small=True, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return _wrap(model.eval().requires_grad_(False).to(dtype), tokenizer)


@pytest.fixture(scope="module", params=MODEL_TYPES)
def family(request, tokenizer):
    model = build(request.param, tokenizer)
    batch = TaskBatch.from_rows(tokenizer, generate("rc", "test", 3).to_list())
    return request.param, model, batch


def _saes(model, width=128, seed=3):
    return random_dictionaries(model.config, width, seed)


def test_registry_feeds_the_cli_choices():
    from sfc_relp.cli import build_parser

    parser = build_parser()
    zoo = next(a for a in parser._subparsers._group_actions[0].choices["zoo"]._actions
               if a.dest == "zoo_command")
    arch = next(a for a in zoo.choices["random"]._actions if a.dest == "arch")
    assert set(arch.choices) == set(MODEL_TYPES) >= {"gpt_neox", "gpt2", "llama", "qwen2", "gemma2"}


def test_submodules_fire_in_order_with_the_declared_output_types(family):
    _, model, batch = family
    hf, seen, hooks = hf_model(model), [], []
    for sub in submodules_for(model.config):
        hooks.append(resolve_path(hf, sub.module_path).register_forward_hook(
            lambda _m, _i, out, sub=sub: seen.append((sub, out))))
    try:
        with torch.no_grad():
            hf(**batch.clean)
    finally:
        for h in hooks:
            h.remove()
    assert [s.name for s, _ in seen] == [s.name for s in submodules_for(model.config)]
    for sub, out in seen:
        value = out[0] if sub.output_is_tuple else out
        assert isinstance(value, torch.Tensor) and value.shape[-1] == model.config.hidden_size, sub
        assert isinstance(out, tuple) == sub.output_is_tuple, sub


def test_resid_is_resid_before_plus_attn_plus_mlp(family):
    """The nodes add up: resid_l = resid_{l-1} + attn_l + mlp_l (skip edges are identities)."""
    _, model, batch = family
    run = run_spliced(model, neuron_dictionaries(submodules_for(model.config), 64), batch.clean, grad=False)
    for i in range(model.config.num_hidden_layers):
        before = run.nodes["embed" if i == 0 else f"resid_{i - 1}"].input
        total = before + run.nodes[f"attn_{i}"].input + run.nodes[f"mlp_{i}"].input
        assert torch.allclose(run.nodes[f"resid_{i}"].input, total, atol=1e-5)


def test_splicing_leaves_logits_unchanged(family):
    _, model, batch = family
    with torch.no_grad():
        plain = hf_model(model)(**batch.clean).logits
    spliced = run_spliced(model, _saes(model), batch.clean, grad=False).logits
    assert (spliced - plain).abs().max() < 1e-5


def _snapshot(model):
    return {"forwards": {n: m.__dict__.get("forward") for n, m in model.named_modules()},
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                         for m in model.modules()),
            "attn": model.config._attn_implementation,
            "state": {k: v.clone() for k, v in model.state_dict().items()}}


def test_rules_keep_logits_and_leave_the_model_as_found(family):
    _, model, batch = family
    hf, saes = hf_model(model), _saes(model)
    before = _snapshot(hf)
    plain = run_spliced(model, saes, batch.clean, grad=False).logits
    composite = composite_for(hf, ah=True, epsilon=1e-6)
    with composite.context(hf):
        assert sum(len(m._forward_hooks) for m in hf.modules()) > 0
        ruled = run_spliced(model, saes, batch.clean, grad=False).logits
    assert (ruled - plain).abs().max() < 1e-5
    get_method("relp", model, saes, ah_rule=True).attribute(batch)
    after = _snapshot(hf)
    assert after["forwards"] == before["forwards"] and after["hooks"] == before["hooks"]
    assert after["attn"] == before["attn"] == "eager"
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert torch.equal(run_spliced(model, saes, batch.clean, grad=False).logits, plain)


def _norm_expected_grad(module, x, w):
    """The gradient of sum(w * norm(x)) with the norm's scale a constant, by hand per class."""
    name = type(module).__name__
    if name == "LayerNorm":
        centred = x - x.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + module.eps).rsqrt()
        gw = w * module.weight
        return scale * (gw - gw.mean(-1, keepdim=True))
    if name == "Gemma2RMSNorm":
        return (x.pow(2).mean(-1, keepdim=True) + module.eps).rsqrt() * (1 + module.weight) * w
    if name.endswith("RMSNorm"):
        return (x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon).rsqrt() * module.weight * w
    raise AssertionError(f"add the hand-written LN-rule gradient of {name} to this test")


def _grad(fn, x, w):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    (g,) = torch.autograd.grad((out * w).sum(), [x])
    return out.detach(), g


def test_each_rule_changes_the_gradient_where_it_applies(family):
    model_type, model, _ = family
    hf = copy.deepcopy(hf_model(model)).double()
    with torch.no_grad():  # random, non-trivial norm weights
        for name, p in hf.named_parameters():
            if "norm" in name or ".ln" in name:
                p.uniform_(0.5, 1.5)
    arch, composite = architecture_for(hf.config), composite_for(hf)
    torch.manual_seed(0)
    d = hf.config.hidden_size
    x, w = torch.randn(2, 3, d, dtype=torch.float64) * 3, torch.randn(2, 3, d, dtype=torch.float64)
    norms = [(n, m) for n, m in hf.named_modules() if type(m).__name__ in arch.norm_classes]
    assert len(norms) >= 2 * hf.config.num_hidden_layers + 1
    for name, norm in norms[:2]:
        plain_out, plain_g = _grad(norm, x, w)
        handle = composite.module_map(name, norm).register(norm)
        try:
            out, g = _grad(norm, x, w)
        finally:
            handle.remove()
        assert torch.allclose(out, plain_out) and not torch.allclose(g, plain_g, atol=1e-6)
        assert torch.allclose(g, _norm_expected_grad(norm, x, w), atol=1e-10), name
    mlp = resolve_path(hf, f"{arch.layer_path(0)}.{arch.mlp_module}")
    act = getattr(mlp, arch.activation)
    z = torch.tensor([-3.0, -1.0, -0.2, 1e-9, 0.4, 2.0, 5.0], dtype=torch.float64)
    handle = composite.module_map("", act).register(act)
    try:
        _, g = _grad(act, z, torch.ones_like(z))
    finally:
        handle.remove()
    assert torch.allclose(g, torch.where(z.abs() > 1e-6, act(z) / z, torch.tensor(0.5, dtype=z.dtype)))
    if type(mlp).__name__ in arch.gated_mlp_classes:
        grads = {}
        for half in (False, True):
            saved = {}
            hooks = [getattr(mlp, p).register_forward_hook(
                lambda _m, _i, out, p=p: saved.__setitem__(p, out)) for p in ("up_proj", "act_fn")]
            canonizer = GatedProductCanonizer(lambda _model: [getattr(mlp, arch.gated_product_input)])
            try:
                with canonizer.applied(hf) if half else torch.enable_grad():
                    xx = x.clone().requires_grad_(True)
                    out = mlp(xx)
                    grads[half] = torch.autograd.grad((out * w).sum(), [saved["up_proj"], saved["act_fn"]])
            finally:
                for h in hooks:
                    h.remove()
        for plain_g, half_g in zip(grads[False], grads[True]):
            assert plain_g.abs().max() > 0 and torch.allclose(half_g, 0.5 * plain_g)


def test_unsupported_activation_is_a_user_error(family):
    _, model, _ = family
    hf = copy.deepcopy(hf_model(model))
    arch = architecture_for(hf.config)
    setattr(resolve_path(hf, f"{arch.layer_path(0)}.{arch.mlp_module}"), arch.activation, nn.Tanh())
    with pytest.raises(UserError, match="no LRP rule for activation Tanh"):
        composite_for(hf)


def _zero_biases(hf):
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.zero_()


def test_lrp_conservation_with_zero_biases(family, tokenizer):
    """Biases zeroed, every rule on (AH included), neurons spliced everywhere: the relevance
    at the embedding and at every resid_l equals the metric, and relevance reaches every
    node (rules on spliced modules keep the splice); gated families need the Half-rule."""
    model_type, _, batch = family
    arch = architecture_for(random_config(model_type, tokenizer, small=True))
    model = build(model_type, tokenizer, torch.float64, seed=1, **arch.linear_config)
    hf = hf_model(model)
    _zero_biases(hf)
    dicts = neuron_dictionaries(submodules_for(hf.config), 64)
    cuts = ["embed"] + [f"resid_{i}" for i in range(hf.config.num_hidden_layers)]
    gaps = {}
    for half in (True, False):
        with composite_for(hf, ah=True, half=half).context(hf):
            run = run_spliced(model, dicts, batch.clean)
            metric = logit_diff(run.logits, batch).detach()
            grads = dict(zip(dicts, torch.autograd.grad(
                logit_diff(run.logits, batch).sum(), [run.nodes[n].features for n in dicts])))
        assert metric.abs().min() > 0
        assert all(g.abs().max() > 0 for g in grads.values())
        gaps[half] = max(((grads[n] * run.nodes[n].features.detach()).sum((1, 2)) - metric).abs().max().item()
                         / metric.abs().min().item() for n in cuts)
    assert gaps[True] < 1e-4, gaps
    if arch.gated_mlp_classes:
        assert gaps[False] > 1e-3, gaps


class _LinearMLP(nn.Module):
    """down(act(up(x))) with an identity activation: the gated MLP's linear limit."""

    def __init__(self, up, down, act_attr):
        super().__init__()
        self.up, self.down = up, down
        setattr(self, act_attr, nn.Identity())
        self.act_attr = act_attr

    def forward(self, x):
        return self.down(getattr(self, self.act_attr)(self.up(x)))


def _linear_limit(model_type, tokenizer):
    """Identity activations, no norms, uniform attention (queries zero), no soft-capping."""
    arch = architecture_for(random_config(model_type, tokenizer, small=True))
    model = build(model_type, tokenizer, torch.float64, seed=2, **arch.linear_config)
    hf = hf_model(model)
    for name, module in list(hf.named_modules()):
        if type(module).__name__ in arch.norm_classes:
            parent, _, attr = name.rpartition(".")
            setattr(resolve_path(hf, parent) if parent else hf, attr, nn.Identity())
    for i in range(hf.config.num_hidden_layers):
        layer = resolve_path(hf, arch.layer_path(i))
        mlp = resolve_path(layer, arch.mlp_module)
        if type(mlp).__name__ in arch.gated_mlp_classes:
            setattr(layer, arch.mlp_module, _LinearMLP(mlp.up_proj, mlp.down_proj, arch.activation))
        else:
            setattr(mlp, arch.activation, nn.Identity())
        arch.zero_queries(layer)
    with torch.no_grad():  # without norms the random stack shrinks its input
        hf.get_output_embeddings().weight.mul_(1e3)
    return _wrap(hf, tokenizer)


def test_linear_limit_exact_atp_relp_agree_on_nodes_and_edges(family, tokenizer):
    model_type, _, batch = family
    model = _linear_limit(model_type, tokenizer)
    dicts = {k: v.to(torch.float64) for k, v in
             neuron_dictionaries(submodules_for(model.config), model.config.hidden_size).items()}
    methods = {name: get_method(name, model, dicts) for name in ("exact", "atp", "relp")}
    up = {name: list(range(8)) + [-1] for name in dicts}  # exact patching runs these only
    cols = torch.tensor(list(range(8)) + [-1])
    nodes = {name: m.attribute(batch, "sum") for name, m in methods.items() if name != "exact"}
    nodes["exact"] = methods["exact"].attribute(batch, "sum", nodes=up)
    scale = max(v[cols[:-1]].abs().max() for v in nodes["exact"].features.values())
    assert scale > 1e-6
    for name in ("atp", "relp"):
        for sub in dicts:
            assert torch.allclose(nodes[name].features[sub][cols[:-1]],
                                  nodes["exact"].features[sub][cols[:-1]],
                                  rtol=1e-6, atol=1e-8 * scale), (name, sub)
            assert torch.allclose(nodes[name].errors[sub], nodes["exact"].errors[sub], atol=1e-8 * scale)
    ids = torch.tensor([0, 5, 17, -1])
    down = {"attn_1": ids, "mlp_1": ids, "resid_1": ids}
    edges = {name: m.edges(batch, down, up_nodes=up) for name, m in methods.items()}
    big = max(v[:, cols].abs().max() for v in edges["exact"].weights.values())
    assert big > 1e-6
    for key, exact in edges["exact"].weights.items():
        for name in ("atp", "relp"):
            assert torch.allclose(edges[name].weights[key][:, cols], exact[:, cols],
                                  rtol=1e-6, atol=1e-8 * big), (name, key)
    expected = {("resid_0", "attn_1"), ("resid_0", "mlp_1"), ("attn_1", "mlp_1"),
                ("resid_0", "resid_1"), ("attn_1", "resid_1"), ("mlp_1", "resid_1")}
    if architecture_for(model.config).residual(model.config) == "parallel":
        expected.remove(("attn_1", "mlp_1"))
    assert set(edges["exact"].weights) == expected


@pytest.mark.parametrize("method", ["atp", "relp"])
def test_batched_edges_equal_one_by_one(family, method):
    _, model, batch = family
    attribution = get_method(method, model, _saes(model))
    ids = torch.tensor([1, 4, 9, 30, -1])
    down = {"attn_1": ids, "mlp_1": ids, "resid_1": ids}
    batched = attribution.edges(batch, down, chunk=3)
    loop = attribution.edges(batch, down, batched=False)
    assert sum(v.abs().sum() for v in batched.weights.values()) > 0
    for key, weights in batched.weights.items():
        assert torch.allclose(weights, loop.weights[key], atol=1e-6), key


def _jumprelu(d, width, seed):
    from dictionary_learning.dictionary import JumpReluAutoEncoder

    torch.manual_seed(seed)
    ae = JumpReluAutoEncoder(d, width)
    with torch.no_grad():
        ae.W_enc.copy_(torch.randn(d, width) / d ** 0.5)
        ae.W_dec.copy_(torch.randn(width, d) / d ** 0.5)
        ae.b_enc.zero_()
        ae.b_dec.normal_(0, 0.01)
        ae.threshold.fill_(0.0)  # positive pre-activations fire: about half of the features
    return ae.double().eval().requires_grad_(False)


def test_exact_edges_equal_a_hand_written_path_patch_with_jumprelu(tokenizer):
    """Direct edge resid_0 -> mlp_1 of a Llama-style (sequential) model: add u's decoded change
    to attn_1's output (the mid residual), read mlp_1's feature d, patch only d in a clean run."""
    model = build("llama", tokenizer, torch.float64, seed=4)
    hf = hf_model(model)
    batch = TaskBatch.from_rows(tokenizer, generate("rc", "test", 3).to_list())
    dicts = {s.name: _jumprelu(64, 96, i) for i, s in enumerate(submodules_for(hf.config))}
    resid0, mlp1 = dicts["resid_0"], dicts["mlp_1"]
    layer0, layer1 = hf.model.layers[0], hf.model.layers[1]

    def capture(module, inputs):
        saved = {}
        handle = module.register_forward_hook(lambda _m, _i, out: saved.__setitem__("x", out))
        with torch.no_grad():
            logits = hf(**inputs).logits
        handle.remove()
        return saved["x"], logits
    x_clean, logits_clean = capture(layer0, batch.clean)
    x_patch, _ = capture(layer0, batch.patch)
    f_clean, f_patch = resid0.encode(x_clean), resid0.encode(x_patch)
    u = int(((f_patch != f_clean).flatten(0, 1).any(0)).nonzero()[0])
    shift = (f_patch[..., u] - f_clean[..., u]).unsqueeze(-1) * resid0.W_dec[u]

    handle = layer1.self_attn.register_forward_hook(lambda _m, _i, out: (out[0] + shift, *out[1:]))
    try:
        y_edge, _ = capture(layer1.mlp, batch.clean)
    finally:
        handle.remove()
    y_clean, _ = capture(layer1.mlp, batch.clean)
    moved = (mlp1.encode(y_edge) != mlp1.encode(y_clean)).flatten(0, 1).any(0).nonzero().flatten()
    d = int(moved[0])
    target = mlp1.encode(y_edge)[..., d]

    def set_d(_m, _i, out):
        f = mlp1.encode(out)
        err = out - mlp1.decode(f)
        f = f.clone()
        f[..., d] = target
        return mlp1.decode(f) + err
    handle = layer1.mlp.register_forward_hook(set_d)
    try:
        with torch.no_grad():
            logits = hf(**batch.clean).logits
    finally:
        handle.remove()
    expected = (logit_diff(logits, batch) - logit_diff(logits_clean, batch)).mean()
    exact = get_method("exact", model, dicts)
    edges = exact.edges(batch, {"mlp_1": torch.tensor([d])}, up_nodes={"resid_0": [u]})
    assert abs(float(expected)) > 1e-9
    assert torch.allclose(edges.weights[("resid_0", "mlp_1")][0, u], expected,
                          rtol=1e-4, atol=1e-9)


REAL = {  # model_type: number of layers of the real model
    "gpt2": 12, "gpt_neox": 6, "qwen2": 24, "gemma2": 26, "llama": 16, "mistral": 32}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_real_configs_on_meta_give_the_expected_submodules(model_type):
    from transformers import AutoModelForCausalLM

    arch = architecture_for(random_config(model_type))
    config = arch.config(model_type)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    subs = submodules_for(model.config)
    n = REAL[model_type]
    assert config.num_hidden_layers == n and len(subs) == 1 + 3 * n
    assert [s.name for s in subs[:4]] == ["embed", "attn_0", "mlp_0", "resid_0"]
    assert [s.dictionary_dirname for s in subs[-3:]] == [
        f"attn_out_layer{n - 1}", f"mlp_out_layer{n - 1}", f"resid_out_layer{n - 1}"]
    for sub in subs:
        resolve_path(model, sub.module_path)
    composite = composite_for(model)
    mapped = [n for n, m in model.named_modules() if composite.module_map(n, m) is not None]
    norms_per_layer = 4 if model_type == "gemma2" else 2
    assert len(mapped) == (norms_per_layer + 1) * n + 1  # norms, one activation per layer, final norm
    gated = [c for c in composite.model_rules if isinstance(c, GatedProductCanonizer)]
    assert len(gated) == (model_type not in ("gpt2", "gpt_neox"))
    from transformers.pytorch_utils import Conv1D

    epsilon = composite_for(model, epsilon=0.1)  # the optional epsilon-rule: every linear map
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    assert linear and all(epsilon.module_map(n, m) is not None for n, m in linear)
    assert any(isinstance(m, Conv1D) for _, m in linear) == (model_type == "gpt2")


@pytest.mark.slow
def test_circuit_at_qwen2_per_layer_shapes(tokenizer):
    """Qwen2-0.5B's per-layer shapes (d 896, 14 heads / 2 KV heads, MLP 4864), 2 layers."""
    from sfc_relp.circuit import discover_circuit
    from sfc_relp.random_model import calibrate_sparsity, calibration_prompts
    from sfc_relp.tracing import tokenize

    from transformers import AutoModelForCausalLM

    config = random_config("qwen2", tokenizer, num_hidden_layers=2)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval().requires_grad_(False)
    model = _wrap(hf, tokenizer)
    saes = random_dictionaries(config, 4096, 0)
    counts = calibrate_sparsity(model, saes, tokenize(tokenizer, calibration_prompts(2)), 64)
    assert all(40 < c < 90 for c in counts.values()), counts
    graph = discover_circuit(model, saes, generate("rc", "test", 4), "relp", node_threshold=1e-4,
                             edge_threshold=0.0, batch_size=4, metadata={"model": "qwen2-shape"})
    assert graph.graph["edges_computed"] and graph.number_of_nodes() > 1
    assert graph.number_of_edges() > 0


@pytest.mark.parametrize("model_type", [  # two families in the fast suite, all under -m slow
    t if t in ("gpt2", "gemma2") else pytest.param(t, marks=pytest.mark.slow) for t in MODEL_TYPES])
def test_zoo_random_then_circuit_on_every_family(model_type, tokenizer, tmp_path, capsys):
    import json
    import re

    from conftest import TOKENIZER_FILE

    from sfc_relp.circuit import load_circuit
    from sfc_relp.cli import main

    assert main(["zoo", "random", "--arch", model_type, "--small", "--width", "256", "--l0", "16",
                 "--out", str(tmp_path), "--tokenizer", str(TOKENIZER_FILE)]) == 0
    mean = float(re.search(r"mean ([\d.]+)", capsys.readouterr().out).group(1))
    assert 12 < mean < 20  # calibrated: a random encoder would fire about 128 of 256
    model_dir = tmp_path / f"random-{model_type}"
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["eos_token"] == "<|endoftext|>"
    assert "token_type_ids" not in config["model_input_names"]  # 4.x GPT-2 would add wte(0)
    assert main(["circuit", "--model", str(model_dir), "--dictionaries", str(tmp_path / "dictionaries"),
                 "--dataset", "rc", "--n-examples", "4", "--node-threshold", "1e-5",
                 "--edge-threshold", "0", "--out", str(tmp_path / "c")]) == 0
    graph = load_circuit(tmp_path / "c" / f"random-{model_type}_rc_relp.json")
    assert graph.graph["edges_computed"] and graph.number_of_edges() > 0


@pytest.mark.parametrize("family_module", ["gemma2", "llama", "gpt2", "gpt_neox"])
def test_ah_attention_equals_each_family_eager_attention(family_module):
    """Same outputs as the family's eager attention (grouped-query heads, Gemma-2's scaling and
    soft-capping at scores large enough for the tanh to bite), with the probabilities detached."""
    import importlib
    from types import SimpleNamespace

    from sfc_relp.lrp import _ah_attention

    eager = importlib.import_module(
        f"transformers.models.{family_module}.modeling_{family_module}").eager_attention_forward
    grouped = family_module in ("gemma2", "llama")
    module = SimpleNamespace(num_key_value_groups=2 if grouped else 1, training=False, head_dim=8)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64, requires_grad=True) * 4
    k = torch.randn(2, 2 if grouped else 4, 5, 8, dtype=torch.float64) * 4
    v = torch.randn(2, 2 if grouped else 4, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.triu(torch.full((5, 5), -1e9, dtype=torch.float64), 1).view(1, 1, 5, 5)
    kwargs = {"softcap": 5.0} if family_module == "gemma2" else {}
    expected, _ = eager(module, q, k, v, mask, scaling=0.3, dropout=0.0, **kwargs)
    got, weights = _ah_attention(module, q, k, v, mask, scaling=0.3, dropout=0.0, **kwargs)
    assert torch.allclose(got, expected, atol=1e-6) and not weights.requires_grad
    if kwargs:  # the soft-cap matters at these scores
        uncapped, _ = _ah_attention(module, q, k, v, mask, scaling=0.3, dropout=0.0)
        assert not torch.allclose(uncapped, expected, atol=1e-3)
    (g_q,) = torch.autograd.grad(got.sum(), [q], allow_unused=True)
    assert g_q is None or g_q.abs().max() == 0  # queries reach the output only through probabilities
