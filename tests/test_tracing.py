"""The spliced trace: forward unchanged, gradients readable and correctly wired, edits applied."""

import pytest
import torch

from sfc_relp.architectures import resolve_path
from sfc_relp.loading import hf_model
from sfc_relp.tracing import run_spliced, tokenize

PROMPTS = ["The friends that the boy likes", "Then, Mary and John went to the store. Mary gave"]


@pytest.fixture(scope="module")
def inputs(small_model):
    return tokenize(small_model.tokenizer, PROMPTS)


def _plain_logits(model, inputs):
    with torch.no_grad():
        return hf_model(model)(**inputs).logits


def test_splicing_leaves_logits_unchanged(small_model, small_dictionaries, inputs):
    run = run_spliced(small_model, small_dictionaries, inputs)
    assert set(run.nodes) == set(small_dictionaries)
    assert torch.allclose(run.logits, _plain_logits(small_model, inputs), atol=1e-5)
    node = run.nodes["attn_1"]
    assert node.features.shape == (2, inputs["input_ids"].shape[1], 128)
    assert node.error.shape == node.input.shape == (2, inputs["input_ids"].shape[1], 64)


def test_feature_gradient_is_error_gradient_times_decoder(small_model, small_dictionaries, inputs):
    run = run_spliced(small_model, small_dictionaries, inputs)
    metric = run.logits[:, -1, 100].sum() - run.logits[:, -1, 200].sum()
    names = list(run.nodes)
    grads = torch.autograd.grad(metric, [run.nodes[n].features for n in names]
                                + [run.nodes[n].error for n in names])
    for i, name in enumerate(names):
        g_feat, g_err = grads[i], grads[i + len(names)]
        assert g_err.abs().sum() > 0, name
        expected = g_err @ small_dictionaries[name].W_dec.T
        assert torch.allclose(g_feat, expected, atol=1e-5), name


def test_splices_are_transparent_to_upstream_gradients(small_model, small_dictionaries, inputs):
    """d metric / d embed output equals the plain model's, though 9 SAEs sit downstream."""
    run = run_spliced(small_model, small_dictionaries, inputs)
    metric = run.logits[:, -1, 7].sum()
    (spliced,) = torch.autograd.grad(metric, [run.nodes["embed"].error])

    model = hf_model(small_model)
    captured = {}

    def hook(_module, _inputs, output):
        output = output.detach().requires_grad_(True)
        captured["embed"] = output
        return output
    handle = resolve_path(model, "gpt_neox.embed_in").register_forward_hook(hook)
    try:
        plain = model(**inputs).logits[:, -1, 7].sum()
    finally:
        handle.remove()
    (expected,) = torch.autograd.grad(plain, [captured["embed"]])
    assert torch.allclose(spliced, expected, atol=1e-5)


def test_features_of_input_connect_to_upstream_nodes(small_model, small_dictionaries, inputs):
    run = run_spliced(small_model, small_dictionaries, inputs, track_inputs=True)
    downstream = run.nodes["resid_1"].features_of_input.sum()
    g_feat, g_err = torch.autograd.grad(downstream, [run.nodes["attn_0"].features,
                                                     run.nodes["attn_0"].error])
    assert g_feat.abs().sum() > 0 and g_err.abs().sum() > 0


def test_edit_patches_node_values(small_model, small_dictionaries, inputs):
    """Replacing attn_1's error by zero equals a hand-written hook that drops the error term."""
    ae = small_dictionaries["attn_1"]

    def drop_error(sub, features, error):
        return (features, torch.zeros_like(error)) if sub.name == "attn_1" else None
    run = run_spliced(small_model, small_dictionaries, inputs, edit=drop_error, grad=False)

    model = hf_model(small_model)

    def hook(_module, _inputs, output):
        return (ae.decode(ae.encode(output[0])), *output[1:])
    handle = resolve_path(model, "gpt_neox.layers.1.attention").register_forward_hook(hook)
    try:
        expected = _plain_logits(small_model, inputs)
    finally:
        handle.remove()
    assert torch.allclose(run.logits, expected, atol=1e-5)
    assert not torch.allclose(run.logits, _plain_logits(small_model, inputs), atol=1e-3)


def test_patching_every_node_reproduces_the_patch_run(small_model, small_dictionaries):
    clean = tokenize(small_model.tokenizer, ["The friend that the boy likes"])
    patch = tokenize(small_model.tokenizer, ["The friends that the boy likes"])
    patched = run_spliced(small_model, small_dictionaries, patch, grad=False)

    def use_patch(sub, features, error):
        node = patched.nodes[sub.name]
        return node.features, node.error
    run = run_spliced(small_model, small_dictionaries, clean, edit=use_patch, grad=False)
    assert torch.allclose(run.logits, patched.logits, atol=1e-5)


def test_left_padding_keeps_last_position_logits(small_model, small_dictionaries):
    short = ["The friends that the boy likes"]
    batch = tokenize(small_model.tokenizer, short + ["Then, Mary and John went to the store. Mary gave"])
    alone = tokenize(small_model.tokenizer, short)
    batched = run_spliced(small_model, small_dictionaries, batch, grad=False).logits[0, -1]
    single = run_spliced(small_model, small_dictionaries, alone, grad=False).logits[0, -1]
    assert torch.allclose(batched, single, atol=1e-4)
