"""The bundled model: training script end to end (mini budget) and the shipped bundle's quality."""

import json

import pytest
import torch

from sfc_relp.cli import main
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.loading import ZOO_DIR, bundled_models, hf_model, load_model
from sfc_relp.templates import FAMILIES
from sfc_relp.tracing import run_spliced, tokenize
from sfc_relp.architectures import submodules_for
from sfc_relp.training.corpus import build_corpus, vocabulary_words
from sfc_relp.training.language_model import TINY_CONFIGS, build_model, tiny_config
from sfc_relp.training.tokenizer import build_tokenizer
from sfc_relp.datasets import generate, split_of
from sfc_relp.errors import UserError


def test_corpus_never_contains_test_prompts():
    corpus = "\n".join(build_corpus(20000, seed=0))
    for family in FAMILIES:
        for row in generate(family, "test", 128):
            assert split_of(row) == "test"
            assert row["clean_prefix"] + row["clean_answer"] not in corpus, row


def test_word_tokenizer_keeps_dataset_words_single(tmp_path):
    from sfc_relp.training.corpus import vocabulary_words
    from sfc_relp.training.tokenizer import build_tokenizer

    tok = build_tokenizer(vocabulary_words())
    for family in FAMILIES:
        row = generate(family, "test", 1)[0]
        assert len(tok(row["clean_answer"])["input_ids"]) == 1
        assert tok.unk_token_id not in tok(row["clean_prefix"])["input_ids"]


def _check_mini_bundle(model_dir, capsys, n_layers=6):
    """A mini-trained model loads, its own SAEs splice in transparently, and it reports."""
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors",
                                                      "tokenizer.json", "dictionaries"}
    model = load_model(str(model_dir))
    dictionaries = dictionaries_for(model)  # the model directory's own dictionaries/
    assert len(dictionaries) == 1 + 3 * n_layers
    assert dictionaries["attn_2"].info.cls == "AutoEncoder"
    inputs = tokenize(model.tokenizer, generate("rc", "test", 4)["clean_prefix"])
    run = run_spliced(model, dictionaries, inputs)
    with torch.no_grad():
        plain = hf_model(model)(**inputs).logits
    assert torch.allclose(run.logits, plain, atol=1e-5)

    capsys.readouterr()
    assert main(["zoo", "report", "--model", str(model_dir), "--n-sentences", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["accuracy"]) == set(FAMILIES)
    assert set(report["dictionaries"]) == set(dictionaries)
    assert set(report["dictionaries"]["mlp_3"]) == {"fve", "l0", "dead", "loss_recovered"}
    assert 0 <= report["dictionaries"]["mlp_3"]["l0"] <= 64
    return model


def test_mini_training_end_to_end(tmp_path, capsys):
    model_dir = tmp_path / "mini-pythia"
    assert main(["zoo", "train", "--budget", "mini", "--name", "mini-pythia",
                 "--model-dir", str(model_dir)]) == 0
    model = _check_mini_bundle(model_dir, capsys)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.use_parallel_residual, cfg.tie_word_embeddings,
            cfg.rope_parameters["partial_rotary_factor"]) == (6, True, False, 0.25)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_tiny_config_of_each_family_builds_a_model_whose_forward_runs(arch):
    tok = build_tokenizer(vocabulary_words())
    config = tiny_config(arch, tok)
    torch.manual_seed(0)
    model = build_model(config)
    assert model.config.model_type == arch
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 6, 4)
    base = getattr(model, {"gpt_neox": "gpt_neox", "gpt2": "transformer"}.get(arch, "model"))
    layer = (base.h if arch == "gpt2" else base.layers)[0]
    if arch in ("qwen2", "gemma2"):  # gated MLPs of width 256
        assert layer.mlp.gate_proj.out_features == 256 and layer.mlp.up_proj.out_features == 256
    else:
        assert sum(p.numel() for p in layer.mlp.parameters()) == 64 * 256 * 2 + 256 + 64
    if arch == "gemma2":
        assert (config.attn_logit_softcapping, config.final_logit_softcapping) == (50.0, 30.0)
    inputs = tokenize(tok, generate("ioi", "test", 3)["clean_prefix"])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (3, inputs["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "gemma2"])
def test_mini_training_of_other_families(arch, tmp_path, capsys):
    """Until a family has its architecture record, training it fails at once with a clear error."""
    model_dir = tmp_path / f"mini-{arch}"
    try:
        submodules_for(tiny_config(arch, build_tokenizer(vocabulary_words())))
        known = True
    except UserError:
        known = False
    code = main(["zoo", "train", "--arch", arch, "--budget", "mini", "--model-dir", str(model_dir)])
    if not known:
        assert code == 1 and not model_dir.exists()
        assert "architecture record" in capsys.readouterr().err
        return
    assert code == 0
    assert _check_mini_bundle(model_dir, capsys).config.model_type == arch


@pytest.mark.parametrize("name", bundled_models())
def test_shipped_bundle_meets_quality_bars(name, capsys):
    assert main(["zoo", "report", "--model", name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for family, accuracy in report["accuracy"].items():
        assert accuracy >= 0.95, (name, family)
    for sub, q in report["dictionaries"].items():
        assert q["fve"] >= 0.9 and q["dead"] < 0.2 and q["loss_recovered"] >= 0.9, (name, sub, q)


def test_shipped_bundle_size_and_formats():
    total = sum(p.stat().st_size for p in ZOO_DIR.rglob("*") if p.is_file())
    assert total <= 25 * 2**20  # every bundled model and its SAEs together
    assert len(list((ZOO_DIR / "tiny-pythia" / "dictionaries").rglob("ae.pt"))) == 19
    model = load_model()  # found by its short name
    assert model.config.model_type == "gpt_neox"
    saes = dictionaries_for(model)  # its own SAEs, shipped inside the package
    assert len(saes) == 19 and all(ae.dict_size == 256 for ae in saes.values())


def test_own_dictionaries_are_used_only_without_a_root(tmp_path):
    import shutil

    model_dir = tmp_path / "copy"
    shutil.copytree(ZOO_DIR / "tiny-pythia", model_dir, ignore=shutil.ignore_patterns("dictionaries"))
    model = load_model(str(model_dir))
    with pytest.raises(UserError, match="no dictionaries for model 'copy'"):
        dictionaries_for(model, root=tmp_path / "empty")
    shutil.copytree(ZOO_DIR / "tiny-pythia" / "dictionaries" / "mlp_out_layer2",
                    tmp_path / "root" / "copy" / "mlp_out_layer2")
    with pytest.raises(UserError, match="no dictionary under .* for: embed"):
        dictionaries_for(model, root=tmp_path / "root")
    shutil.copytree(ZOO_DIR / "tiny-pythia" / "dictionaries", model_dir / "dictionaries")
    model = load_model(str(model_dir))
    own = dictionaries_for(model)
    bundled = dictionaries_for(load_model())
    assert torch.equal(own["mlp_2"].W_enc, bundled["mlp_2"].W_enc)
