"""Pythia-70M's exact shapes: random weights, real tokenizer, 19 SAEs of width 32768."""

import pytest
import torch
from transformers import AutoConfig

from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.loading import hf_model, load_model
from sfc_relp.random_model import save_random_dictionaries, save_random_model
from sfc_relp.tracing import run_spliced, tokenize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pythia_70m(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("pythia")
    model_dir = save_random_model(out / "pythia-70m-deduped", tokenizer, seed=0)
    config = AutoConfig.from_pretrained(model_dir)
    save_random_dictionaries(out / "dictionaries", "pythia-70m-deduped", config, width=32768)
    model = load_model(str(model_dir))
    return model, dictionaries_for(model, out / "dictionaries")


def test_real_shapes_trace(pythia_70m):
    model, dictionaries = pythia_70m
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size, config.rope_parameters["partial_rotary_factor"],
            config.use_parallel_residual, config.vocab_size) == (6, 512, 8, 2048, 0.25, True, 50304)
    assert hf_model(model).gpt_neox.layers[0].attention.rotary_ndims == 16  # 0.25 of head size 64
    assert len(dictionaries) == 19
    inputs = tokenize(model.tokenizer, ["The managers that the boy likes", "The friend near the desk"])
    with torch.no_grad():
        plain = hf_model(model)(**inputs).logits
    run = run_spliced(model, dictionaries, inputs)
    assert run.logits.shape == (2, inputs["input_ids"].shape[1], 50304)
    assert (run.logits - plain).abs().max() < 1e-5
    metric = (run.logits[:, -1, 389] - run.logits[:, -1, 310]).sum()
    names = list(run.nodes)
    grads = torch.autograd.grad(metric, [run.nodes[n].features for n in names]
                                + [run.nodes[n].error for n in names])
    for i, name in enumerate(names):
        node = run.nodes[name]
        assert node.features.shape[-1] == 32768 and node.error.shape[-1] == 512
        expected = grads[i + len(names)] @ dictionaries[name].W_dec.T
        assert torch.allclose(grads[i], expected, atol=1e-5, rtol=1e-4), name
