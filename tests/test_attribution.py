"""Attribution backends checked against independent computations.

1. a linear model: atp, relp and exact agree; 2. IG completeness; 3. RelP conservation;
4. rules leave the forward and the model unchanged; 5. every rule is active;
6. exact patching equals a hand-written patched forward; plus batched edges = one by one.
"""

import copy

import pytest
import torch
from torch import nn

from sfc_relp.architectures import resolve_path
from sfc_relp.attribution import METHODS, TaskBatch, get_method, logit_diff
from sfc_relp.datasets import generate
from sfc_relp.dictionaries import neuron_dictionaries
from sfc_relp.architectures import submodules_for
from sfc_relp.loading import _wrap, hf_model
from sfc_relp.lrp import (AHRule, Composite, EpsilonRule, HalfRule, IdentityRule, LNRule,
                          composite_for)
from sfc_relp.tracing import run_spliced


@pytest.fixture(scope="module")
def batch(small_model):
    return TaskBatch.from_rows(small_model.tokenizer, generate("rc", "test", 4).to_list())


def _linear_model(small_model):
    """The small model made exactly linear: no norms, identity MLP activation, q = k = 0."""
    model = copy.deepcopy(hf_model(small_model)).double()  # float64: exact differences stay exact
    hs = model.config.hidden_size // model.config.num_attention_heads
    for layer in model.gpt_neox.layers:
        layer.input_layernorm = nn.Identity()
        layer.post_attention_layernorm = nn.Identity()
        layer.mlp.act = nn.Identity()
        qkv = layer.attention.query_key_value
        with torch.no_grad():
            rows = torch.arange(qkv.out_features) % (3 * hs) < 2 * hs  # query and key rows
            qkv.weight[rows] = 0
            qkv.bias[rows] = 0
    model.gpt_neox.final_layer_norm = nn.Identity()
    with torch.no_grad():  # without norms the random stack shrinks its input; rescale the readout
        model.get_output_embeddings().weight.mul_(1e4)
    return _wrap(model, small_model.tokenizer)


def test_methods_share_one_signature():
    assert set(METHODS) == {"exact", "atp", "ig", "relp"}


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_linear_model_atp_relp_exact_agree(small_model, batch, aggregation):
    model = _linear_model(small_model)
    dicts = neuron_dictionaries(submodules_for(model.config), model.config.hidden_size)
    results = {name: get_method(name, model, dicts).attribute(batch, aggregation)
               for name in ("exact", "atp", "relp")}
    scale = max(v.abs().max() for v in results["exact"].features.values())
    assert scale > 1e-2 and abs(results["exact"].total()) > 1e-2
    for name in ("atp", "relp"):
        for sub in dicts:
            assert torch.allclose(results[name].features[sub], results["exact"].features[sub],
                                  rtol=1e-3, atol=1e-4 * scale), (name, sub)
            assert torch.allclose(results[name].errors[sub], results["exact"].errors[sub],
                                  rtol=1e-3, atol=1e-4 * scale)


def _patch_whole_submodule(model, dicts, batch, name):
    """m(clean with every node of `name` patched) - m(clean), averaged over examples."""
    patched = run_spliced(model, dicts, batch.patch, grad=False)

    def edit(sub, features, error):
        if sub.name == name:
            return patched.nodes[name].features, patched.nodes[name].error
    clean = run_spliced(model, dicts, batch.clean, grad=False)
    run = run_spliced(model, dicts, batch.clean, edit=edit, grad=False)
    return float((logit_diff(run.logits, batch) - logit_diff(clean.logits, batch)).mean())


def test_ig_completeness_improves_with_steps(small_model, small_dictionaries, batch):
    errors = []
    for name in ("attn_1", "resid_1"):
        target = _patch_whole_submodule(small_model, small_dictionaries, batch, name)
        assert abs(target) > 1e-3
        gaps = []
        for steps in (1, 4, 32):
            ig = get_method("ig", small_model, small_dictionaries, steps=steps)
            effects = ig.attribute(batch, "sum")
            total = float(effects.features[name].sum() + effects.errors[name])
            gaps.append(abs(total - target))
        assert gaps[2] < gaps[0] and gaps[2] < 0.05 * abs(target) + 1e-4, (name, gaps, target)
        errors.append(gaps)


def _zero_biases(model):
    model = copy.deepcopy(hf_model(model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


def test_relp_conservation_with_all_rules(small_model, batch):
    """With biases zeroed and LN, Identity and AH rules on, sum(grad * x) at embed = metric."""
    plain = _zero_biases(small_model)
    model = _wrap(plain, small_model.tokenizer)
    dicts = neuron_dictionaries(submodules_for(model.config), model.config.hidden_size)
    gaps = {}
    for ah in (True, False):
        with composite_for(plain, ah=ah).context(plain):
            run = run_spliced(model, {"embed": dicts["embed"]}, batch.clean)
            metric = logit_diff(run.logits, batch)
            (grad,) = torch.autograd.grad(metric.sum(), [run.nodes["embed"].features])
            relevance = (grad * run.nodes["embed"].features.detach()).sum((1, 2))
        gaps[ah] = (relevance - metric.detach()).abs().max().item()
        scale = metric.abs().max().item()
    assert gaps[True] < 1e-4 * max(1.0, scale)
    assert gaps[False] > 1e-3  # without the AH-rule relevance is not conserved


def test_rules_keep_forward_and_leave_model_untouched(small_model, small_dictionaries, batch):
    model = hf_model(small_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = run_spliced(small_model, small_dictionaries, batch.clean, grad=False).logits
    relp = get_method("relp", small_model, small_dictionaries, ah_rule=True)
    with relp.rules():
        ruled = run_spliced(small_model, small_dictionaries, batch.clean, grad=False).logits
        assert sum(len(m._forward_hooks) for m in model.modules()) == 3 * 2 + 1 + 3  # LNs + GELUs
    assert (ruled - plain).abs().max() < 1e-5
    relp.attribute(batch)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert model.config._attn_implementation == "eager"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    again = run_spliced(small_model, small_dictionaries, batch.clean, grad=False).logits
    assert torch.equal(again, plain)


def _input_grad(module, x, rule=None):
    x = x.clone().requires_grad_(True)
    handle = rule.register(module) if rule is not None else None
    try:
        out = module(x)
    finally:
        if handle is not None:
            handle.remove()
    weights = torch.linspace(-1, 2, out.numel()).view_as(out)  # not a constant: LN kills sums
    (g,) = torch.autograd.grad((out * weights).sum(), [x])
    return out.detach(), g


@pytest.mark.parametrize("module, rule", [
    (nn.LayerNorm(8), LNRule()),
    (nn.GELU(), IdentityRule()),
    (nn.Linear(8, 8), EpsilonRule(0.5)),
])
def test_each_rule_changes_gradient_not_value(module, rule):
    torch.manual_seed(0)
    x = torch.randn(3, 8) * 2
    out_plain, g_plain = _input_grad(module, x)
    out_rule, g_rule = _input_grad(module, x, rule)
    assert torch.allclose(out_plain, out_rule, atol=1e-6)
    assert not torch.allclose(g_plain, g_rule, atol=1e-4)


def test_identity_rule_coefficient_is_act_over_x():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    gelu = nn.GELU()
    handle = IdentityRule().register(gelu)
    try:
        (g,) = torch.autograd.grad(gelu(x).sum(), [x])
    finally:
        handle.remove()
    expected = torch.where(x == 0, torch.tensor(0.5), nn.functional.gelu(x) / x)
    assert torch.allclose(g, expected)


def test_half_rule_halves_a_gate_gradient():
    class Gate(nn.Module):
        def forward(self, pair):
            return pair[0] * pair[1]
    a, b = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    gate = Gate()
    handle = HalfRule().register(gate)
    try:
        out = gate((a, b))
    finally:
        handle.remove()
    assert torch.allclose(out, a * b)
    g_a, g_b = torch.autograd.grad(out.sum(), [a, b])
    assert torch.allclose(g_a, 0.5 * b) and torch.allclose(g_b, 0.5 * a)


def test_ah_rule_is_active_in_the_model(small_model, small_dictionaries, batch):
    model = hf_model(small_model)
    grads = {}
    for ah in (False, True):
        composite = Composite(lambda n, m: None, (AHRule(),) if ah else ())
        with composite.context(model):
            run = run_spliced(small_model, {"embed": small_dictionaries["embed"]}, batch.clean)
            (grads[ah],) = torch.autograd.grad(logit_diff(run.logits, batch).sum(),
                                               [run.nodes["embed"].error])
    assert not torch.allclose(grads[False], grads[True], atol=1e-5)


def test_composite_covers_every_norm_and_activation(small_model):
    model = hf_model(small_model)
    mapped = [type(m).__name__ for n, m in model.named_modules()
              if composite_for(model).module_map(n, m) is not None]
    n_layers = model.config.num_hidden_layers
    assert mapped.count("LayerNorm") == 2 * n_layers + 1
    assert mapped.count("GELUActivation") == n_layers


def test_relp_differs_from_atp_on_the_real_model(small_model, small_dictionaries, batch):
    atp = get_method("atp", small_model, small_dictionaries).attribute(batch)
    relp = get_method("relp", small_model, small_dictionaries).attribute(batch)
    assert not torch.allclose(atp.features["resid_0"], relp.features["resid_0"], atol=1e-6)


def test_exact_one_node_equals_hand_written_patch(small_model, small_dictionaries, batch):
    name, sub_path = "attn_1", "gpt_neox.layers.1.attention"
    ae = small_dictionaries[name]
    clean = run_spliced(small_model, small_dictionaries, batch.clean, grad=False)
    patch = run_spliced(small_model, small_dictionaries, batch.patch, grad=False)
    changed = (clean.nodes[name].features != patch.nodes[name].features).flatten(0, 1).any(0)
    index = int(changed.nonzero()[0])

    def hook(_module, _inputs, output):
        f = ae.encode(output[0])
        err = output[0] - ae.decode(f)
        f = f.clone()
        f[..., index] = patch.nodes[name].features[..., index]
        return (ae.decode(f) + err, *output[1:])
    model = hf_model(small_model)
    handle = resolve_path(model, sub_path).register_forward_hook(hook)
    try:
        with torch.no_grad():
            patched_logits = model(**batch.clean).logits
    finally:
        handle.remove()
    with torch.no_grad():
        clean_logits = model(**batch.clean).logits
    expected = (logit_diff(patched_logits, batch) - logit_diff(clean_logits, batch)).mean()
    exact = get_method("exact", small_model, small_dictionaries)
    effects = exact.attribute(batch, "sum", nodes={name: [index]})
    assert torch.allclose(effects.features[name][index], expected, atol=1e-5)
    assert abs(float(expected)) > 0


@pytest.mark.parametrize("method", ["atp", "relp", "ig"])
def test_batched_edges_equal_one_by_one(small_model, small_dictionaries, batch, method):
    attribution = get_method(method, small_model, small_dictionaries)
    down = {"attn_2": torch.tensor([3, -1, 7, 11]), "resid_2": torch.tensor([0, 5, -1])}
    batched = attribution.edges(batch, down, chunk=8)
    loop = attribution.edges(batch, down, batched=False)
    for key, weights in batched.weights.items():
        assert torch.allclose(weights, loop.weights[key], atol=1e-6), key

    with attribution.rules():
        clean, patch = attribution.clean_and_patch(batch, track_inputs=True)
        f_grads, e_grads = attribution.coefficients(batch, clean, patch)
        node = clean.nodes["attn_2"]
        up = clean.nodes["resid_1"]
        outputs = [node.features_of_input,
                   node.input - small_dictionaries["attn_2"].decode(node.features_of_input)]
        rows = []
        for index in down["attn_2"].tolist():  # the naive way: dense one-hot seeds, one by one
            f_seed = torch.zeros_like(node.features_of_input)
            e_seed = torch.zeros_like(node.input)
            if index < 0:
                e_seed = e_grads["attn_2"]
            else:
                f_seed[..., index] = f_grads["attn_2"][..., index]
            g_f, g_e = torch.autograd.grad(outputs, [up.features, up.error],
                                           grad_outputs=[f_seed, e_seed], retain_graph=True)
            d_f = patch.nodes["resid_1"].features - up.features.detach()
            d_e = patch.nodes["resid_1"].error - up.error.detach()
            rows.append(torch.cat([(g_f * d_f).sum((0, 1)), (g_e * d_e).sum().view(1)]) / len(batch))
        expected = torch.stack(rows)
        # the skip edge attn_2 -> resid_2, naively: dense seeds into resid_2's full encoding
        node = clean.nodes["resid_2"]
        skip_rows = []
        for index in down["resid_2"].tolist():
            if index < 0:
                source = node.input - small_dictionaries["resid_2"].decode(node.features_of_input)
                (g_x,) = torch.autograd.grad(source, [node.input], grad_outputs=e_grads["resid_2"],
                                             retain_graph=True)
            else:
                seed = torch.zeros_like(node.features_of_input)
                seed[..., index] = f_grads["resid_2"][..., index]
                (g_x,) = torch.autograd.grad(node.features_of_input, [node.input],
                                             grad_outputs=seed, retain_graph=True)
            g_f = g_x @ small_dictionaries["attn_2"].W_dec.T
            d_f = patch.nodes["attn_2"].features - clean.nodes["attn_2"].features.detach()
            d_e = patch.nodes["attn_2"].error - clean.nodes["attn_2"].error.detach()
            skip_rows.append(torch.cat([(g_f * d_f).sum((0, 1)), (g_x * d_e).sum().view(1)]) / len(batch))
    assert torch.allclose(batched.weights[("resid_1", "attn_2")], expected, atol=1e-6)
    assert torch.allclose(batched.weights[("attn_2", "resid_2")], torch.stack(skip_rows), atol=1e-6)
    assert expected.abs().sum() > 0
    assert set(batched.weights) == {("resid_1", "attn_2"), ("resid_1", "resid_2"),
                                    ("attn_2", "resid_2"), ("mlp_2", "resid_2")}


def test_exact_per_position_sum_is_the_sum_of_single_position_patches(small_model, small_dictionaries, batch):
    """Marks et al.'s aggregation: one patch per position, effects summed (hand-written hooks)."""
    name, sub_path = "attn_1", "gpt_neox.layers.1.attention"
    ae = small_dictionaries[name]
    clean = run_spliced(small_model, small_dictionaries, batch.clean, grad=False)
    patch = run_spliced(small_model, small_dictionaries, batch.patch, grad=False)
    changed = (clean.nodes[name].features != patch.nodes[name].features)
    index = int(changed.flatten(0, 1).any(0).nonzero()[0])
    model = hf_model(small_model)
    with torch.no_grad():
        base = logit_diff(model(**batch.clean).logits, batch)
    total = torch.zeros(())
    for t in range(changed.shape[1]):
        def hook(_module, _inputs, output, t=t):
            f = ae.encode(output[0])
            err = output[0] - ae.decode(f)
            f = f.clone()
            f[:, t, index] = patch.nodes[name].features[:, t, index]
            return (ae.decode(f) + err, *output[1:])
        handle = resolve_path(model, sub_path).register_forward_hook(hook)
        try:
            with torch.no_grad():
                total = total + (logit_diff(model(**batch.clean).logits, batch) - base).mean()
        finally:
            handle.remove()
    per_position = get_method("exact", small_model, small_dictionaries, per_position_sum=True)
    all_at_once = get_method("exact", small_model, small_dictionaries)
    summed = per_position.attribute(batch, "sum", nodes={name: [index]}).features[name][index]
    joint = all_at_once.attribute(batch, "sum", nodes={name: [index]}).features[name][index]
    assert torch.allclose(summed, total, atol=1e-5) and abs(float(total)) > 0
    assert not torch.allclose(summed, joint, atol=1e-7)  # the two aggregations differ here
