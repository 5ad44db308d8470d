"""Fidelity: exact component patching checked by hand, correlations in range, the command."""

import json

import pytest
import torch

from sfc_relp.attribution import TaskBatch, logit_diff
from sfc_relp.cli import main
from sfc_relp.datasets import load_task
from sfc_relp.fidelity import exact_component_effects, pearson
from sfc_relp.loading import hf_model, load_model


def test_pearson():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)


def test_exact_component_effect_matches_a_hook():
    model = load_model()
    data = load_task("rc", "test", 4, tokenizer=model.tokenizer)
    batch = TaskBatch.from_rows(model.tokenizer, data.to_list())
    effects = exact_component_effects(model, batch, kinds=("mlp",))
    hf = hf_model(model)
    store = {}
    handle = hf.gpt_neox.layers[2].mlp.register_forward_hook(lambda m, i, o: store.update(x=o))
    with torch.no_grad():
        hf(**batch.patch)
    handle.remove()

    def patch_position(_m, _i, out, t=1):
        out = out.clone()
        out[:, t] = store["x"][:, t]
        return out
    handle = hf.gpt_neox.layers[2].mlp.register_forward_hook(patch_position)
    with torch.no_grad():
        patched = logit_diff(hf(**batch.clean).logits, batch)
    handle.remove()
    with torch.no_grad():
        clean = logit_diff(hf(**batch.clean).logits, batch)
    assert torch.allclose(effects["mlp_2"][:, 1], patched - clean, atol=1e-5)


def test_fidelity_command_json(capsys):
    assert main(["fidelity", "--task", "simple", "--n-prompts", "12", "--node-prompts", "0",
                 "--methods", "atp,relp", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"atp", "relp"} and set(result["relp"]) == {"resid", "attn", "mlp"}
    assert all(-1 <= v <= 1 for m in result.values() for v in m.values())
    assert result["relp"]["resid"] > 0.5
