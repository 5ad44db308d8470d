"""The bundled model: training script end to end (mini budget) and the shipped bundle's quality."""

import json

import pytest
import torch

from sfc_relp.cli import main
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.loading import ZOO_DIR, hf_model, load_model
from sfc_relp.templates import FAMILIES
from sfc_relp.tracing import run_spliced, tokenize
from sfc_relp.training.corpus import build_corpus
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


def test_mini_training_end_to_end(tmp_path, capsys):
    model_dir, root = tmp_path / "mini-pythia", tmp_path / "dicts"
    assert main(["zoo", "train", "--budget", "mini", "--name", "mini-pythia",
                 "--model-dir", str(model_dir), "--dictionaries", str(root)]) == 0
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    model = load_model(str(model_dir))
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.use_parallel_residual, cfg.tie_word_embeddings,
            cfg.rope_parameters["partial_rotary_factor"]) == (6, True, False, 0.25)
    dictionaries = dictionaries_for(model, root)
    assert len(dictionaries) == 19 and type(dictionaries["attn_2"]).__name__ == "AutoEncoder"
    inputs = tokenize(model.tokenizer, generate("rc", "test", 4)["clean_prefix"])
    run = run_spliced(model, dictionaries, inputs)
    with torch.no_grad():
        plain = hf_model(model)(**inputs).logits
    assert torch.allclose(run.logits, plain, atol=1e-5)

    assert main(["zoo", "report", "--model", str(model_dir), "--dictionaries", str(root),
                 "--n-sentences", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["accuracy"]) == set(FAMILIES)
    assert set(report["dictionaries"]) == set(dictionaries)
    assert set(report["dictionaries"]["mlp_3"]) == {"fve", "l0", "dead", "loss_recovered"}
    assert 0 <= report["dictionaries"]["mlp_3"]["l0"] <= 64


def test_shipped_bundle_meets_quality_bars(capsys):
    assert main(["zoo", "report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for family, accuracy in report["accuracy"].items():
        assert accuracy >= 0.95, family
    for name, q in report["dictionaries"].items():
        assert q["fve"] >= 0.9 and q["dead"] < 0.2 and q["loss_recovered"] >= 0.9, (name, q)


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
    assert torch.equal(own["mlp_2"].encoder.weight, bundled["mlp_2"].encoder.weight)
