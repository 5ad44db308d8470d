"""Fidelity: exact component patching checked by hand on every bundled model, the raw-effects
file round-trip, correlations recomputed from the file, the figure and the command."""

import json

import numpy as np
import pytest
import torch

from sfc_relp.attribution import TaskBatch, logit_diff
from sfc_relp.cli import main
from sfc_relp.datasets import load_task
from sfc_relp.errors import UserError
from sfc_relp.fidelity import (correlations, correlations_from_file, load_fidelity, pearson,
                               run_fidelity, save_fidelity)
from sfc_relp.loading import bundled_models, hf_model, load_model

# Hand-written module access per family (independent of sfc_relp.architectures):
# (attention output module, MLP module, whole layer) of layer i. A bundled model of a family
# missing here fails the test until its entry is written.
HAND_WRITTEN = {
    "gpt_neox": lambda hf, i: (hf.gpt_neox.layers[i].attention, hf.gpt_neox.layers[i].mlp,
                               hf.gpt_neox.layers[i]),
    "gpt2": lambda hf, i: (hf.transformer.h[i].attn, hf.transformer.h[i].mlp, hf.transformer.h[i]),
    "qwen2": lambda hf, i: (hf.model.layers[i].self_attn, hf.model.layers[i].mlp, hf.model.layers[i]),
    "gemma2": lambda hf, i: (hf.model.layers[i].self_attn, hf.model.layers[i].mlp, hf.model.layers[i]),
}


def test_pearson():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _hook_patch(hf, module, batch, t):
    """metric(clean with module's output at position t taken from the patch run) - metric(clean)."""
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.update(x=_first(o).clone()))
    with torch.no_grad():
        hf(**batch.patch)
    handle.remove()

    def patch_position(_m, _i, out):
        value = _first(out).clone()
        value[:, t] = store["x"][:, t]
        return (value, *out[1:]) if isinstance(out, tuple) else value
    handle = module.register_forward_hook(patch_position)
    with torch.no_grad():
        patched = logit_diff(hf(**batch.clean).logits, batch)
    handle.remove()
    with torch.no_grad():
        clean = logit_diff(hf(**batch.clean).logits, batch)
    return patched - clean


@pytest.mark.parametrize("name", bundled_models())
def test_exact_component_effects_match_a_hand_written_hook_patch(name):
    model = load_model(name)
    hf = hf_model(model)
    assert model.config.model_type in HAND_WRITTEN, "add this family's module access above"
    rows = load_task("rc", "test", 4, tokenizer=model.tokenizer).to_list()
    run = run_fidelity(model, rows, "rc", methods=())
    batch = TaskBatch.from_rows(model.tokenizer, rows)
    last = batch.clean["input_ids"].shape[1] - 1
    attn, mlp, layer = HAND_WRITTEN[model.config.model_type](hf, 2)
    for kind, module, t in (("mlp", mlp, 1), ("attn", attn, last), ("resid", layer, last - 2)):
        expected = _hook_patch(hf, module, batch, t)
        assert expected.abs().max() > 1e-4, kind  # a patch that does something
        assert np.allclose(run.effects["exact"][kind][2, t], expected.numpy(), atol=1e-5), kind


@pytest.fixture(scope="module")
def ioi_run():
    model = load_model()
    rows = load_task("ioi", "test", 10, tokenizer=model.tokenizer).to_list()
    return run_fidelity(model, rows, "ioi", methods=("atp", "relp"))


def test_fidelity_file_round_trips_and_recomputes_the_correlations(ioi_run, tmp_path):
    path = save_fidelity(ioi_run, tmp_path / "run.npz")
    loaded = load_fidelity(path)
    assert loaded.methods == ["atp", "relp"] and loaded.components == ["resid", "attn", "mlp"]
    for method in ("exact", "atp", "relp"):
        for kind in ("resid", "attn", "mlp"):
            assert loaded.effects[method][kind].shape == (6, ioi_run.clean_ids.shape[1], 10)
            assert np.array_equal(loaded.effects[method][kind], ioi_run.effects[method][kind])
    for key in ("clean_prefix", "patch_answer", "clean_ids", "clean_tokens", "attention_mask",
                "clean_answer_id"):
        assert np.array_equal(getattr(loaded, key), getattr(ioi_run, key)), key
    assert loaded.clean_tokens.dtype.kind == "U" and loaded.clean_prefix.dtype.kind == "U"
    assert correlations_from_file(path) == correlations(ioi_run)
    # an independent per-prompt correlation from the raw arrays
    with np.load(path, allow_pickle=False) as f:
        exact, relp, mask = f["effect_exact_mlp"], f["effect_relp_mlp"], f["attention_mask"]
    cells = np.broadcast_to(mask.T.astype(bool), exact.shape)
    assert correlations(ioi_run)["relp"]["mlp"]["per_prompt"] == pytest.approx(
        np.corrcoef(exact[cells], relp[cells])[0, 1], abs=1e-9)
    # token strings are the ids' tokens; the last position holds every prompt's last word
    assert list(loaded.clean_tokens[0][-1:]) == ["to"]
    assert (loaded.attention_mask[:, -1] == 1).all()


def test_load_fidelity_rejects_other_files(tmp_path):
    with pytest.raises(UserError, match="no fidelity file"):
        load_fidelity(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(UserError, match="not a sfc-relp fidelity file"):
        load_fidelity(tmp_path / "other.npz")
    np.savez(tmp_path / "pickled.npz", format=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="not a readable .npz"):
        load_fidelity(tmp_path / "pickled.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_fidelity(tmp_path / "text.npz")


def test_figure_files(ioi_run, tmp_path):
    from sfc_relp.fidelity_figure import draw_fidelity

    png, svg = draw_fidelity(ioi_run, tmp_path / "fig")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "activation patching" in text and "RelP" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_fidelity_command_writes_files_whose_correlations_equal_the_printed_ones(tmp_path, capsys):
    assert main(["fidelity", "--task", "simple", "--n-prompts", "12", "--node-prompts", "0",
                 "--methods", "atp,relp", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"atp", "relp"} and set(result["relp"]) == {"resid", "attn", "mlp"}
    assert all(-1 <= v <= 1 for m in result.values() for v in m.values())
    assert result["relp"]["resid"] > 0.5
    recomputed = correlations_from_file(tmp_path / "tiny-pythia_simple_fidelity.npz")
    assert {m: {c: v["prompt_averaged"] for c, v in by.items()} for m, by in recomputed.items()} == result
    assert (tmp_path / "tiny-pythia_simple_fidelity.png").is_file()
    assert (tmp_path / "tiny-pythia_simple_fidelity.svg").is_file()


def test_fidelity_all_bundled_table(tmp_path, capsys):
    assert main(["fidelity", "--all-bundled", "--task", "simple", "--n-prompts", "6",
                 "--node-prompts", "0", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(bundled_models())
    table = (tmp_path / "fidelity_simple_table.md").read_text()
    csv_lines = (tmp_path / "fidelity_simple_table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,family,source,method,resid avg")
    assert f"| tiny-pythia | gpt_neox | this project (bundled, trained here) | RelP | {result['tiny-pythia']['relp']['resid']:.3f} |" in table
    assert "| Pythia-70M | gpt_neox | paper, Table 5 (a different, real model) | AtP | 0.728 |  | 0.981 |  | 0.507 |" in table
    for name in bundled_models():
        assert (tmp_path / f"{name}_simple_fidelity.npz").is_file()


def test_fidelity_command_rejects_bad_arguments(tmp_path, capsys):
    assert main(["fidelity", "--all-bundled"]) == 1
    (tmp_path / "file").write_text("")
    assert main(["fidelity", "--out", str(tmp_path / "file")]) == 1
    assert main(["fidelity", "--methods", "atp,exact"]) == 1
    assert main(["fidelity", "--n-prompts", "1"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("sfc-relp: error: ") for line in errors)
