"""Feature summaries against brute force on the bundled model: top-k contexts, density, logit lens."""

import json

import pytest
import torch

from sfc_relp.architectures import architecture_for, resolve_path, submodules_for
from sfc_relp.dictionaries import decoder_directions, dictionaries_for
from sfc_relp.errors import UserError
from sfc_relp.features import feature_summaries, load_corpus
from sfc_relp.loading import hf_model, load_model

NODES = ["resid_2/3", "mlp_1/7", "attn_0/5@2", "embed/11", "resid_4/err", "mlp_3/200"]
TOP_K, CONTEXT = 4, 3


@pytest.fixture(scope="module")
def bundle():
    model = load_model()
    return model, dictionaries_for(model)


@pytest.fixture(scope="module")
def corpus():
    docs = load_corpus("rc", 20) + load_corpus("ioi", 10)
    return docs + ["The doctors that the officer calls are here and the man sees the customer"]


@pytest.fixture(scope="module")
def summaries(bundle, corpus):
    model, dicts = bundle
    return feature_summaries(model, dicts, corpus, NODES, top_k=TOP_K, context=CONTEXT,
                             batch_size=7, max_length=12)


def _brute_activations(model, dicts, doc, max_length):
    """Each submodule's SAE features on one unpadded document, read by plain torch hooks."""
    hf = hf_model(model)
    ids = model.tokenizer(doc)["input_ids"][:max_length]
    captured, handles = {}, []
    for sub in submodules_for(hf.config):
        def hook(_module, _inputs, output, sub=sub):
            x = output[0] if sub.output_is_tuple else output
            captured[sub.name] = dicts[sub.name].encode(x)[0]
        handles.append(resolve_path(hf, sub.module_path).register_forward_hook(hook))
    with torch.no_grad():
        hf(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return ids, captured


def test_contexts_and_density_match_brute_force(bundle, corpus, summaries):
    model, dicts = bundle
    per_doc = [_brute_activations(model, dicts, doc, 12) for doc in corpus]
    features = summaries["features"]
    assert sorted(features) == ["attn_0/5", "embed/11", "mlp_1/7", "mlp_3/200", "resid_2/3"]
    n_tokens = sum(len(ids) for ids, _ in per_doc)
    assert summaries["metadata"]["n_tokens"] == n_tokens
    checked_contexts = 0
    for key, summary in features.items():
        sub, feature = key.split("/")
        feature = int(feature)
        fired = sum(int((acts[sub][:, feature] > 0).sum()) for _, acts in per_doc)
        assert abs(summary["density"] * n_tokens - fired) <= 1  # a value at ~0 may flip with padding
        best = []
        for doc, (ids, acts) in enumerate(per_doc):
            column = acts[sub][:, feature]
            value, position = float(column.max()), int(column.argmax())
            if value > 0:
                best.append((value, doc, position))
        best.sort(key=lambda item: -item[0])
        got = summary["contexts"]
        assert len(got) == min(TOP_K, len(best))
        # ties (the same word opening many documents) may be broken either way: compare values,
        # then check each chosen document and position against its own brute-force activations
        assert [c["activation"] for c in got] == pytest.approx([b[0] for b in best[:TOP_K]],
                                                               rel=1e-4, abs=1e-4)
        assert len({c["document"] for c in got}) == len(got)
        for context in got:
            ids, acts = per_doc[context["document"]]
            column = acts[sub][:, feature]
            position = context["position"]
            assert float(column[position]) == pytest.approx(float(column.max()), rel=1e-4, abs=1e-4)
            assert context["activation"] == pytest.approx(float(column.max()), rel=1e-4, abs=1e-4)
            lo, hi = max(0, position - CONTEXT), min(len(ids), position + CONTEXT + 1)
            assert context["tokens"] == [model.tokenizer.decode([t]) for t in ids[lo:hi]]
            assert context["max_index"] == position - lo
            assert context["activations"] == pytest.approx(column[lo:hi].tolist(), rel=1e-4, abs=1e-4)
            checked_contexts += 1
    assert checked_contexts >= 8  # the brute force had something to compare


def test_logit_lens_matches_brute_force(bundle, summaries):
    model, dicts = bundle
    hf = hf_model(model)
    norm = resolve_path(hf, architecture_for(hf.config).final_norm_path)
    gamma = norm.weight.double()
    unembed = hf.get_output_embeddings().weight.double()
    for key, summary in summaries["features"].items():
        sub, feature = key.split("/")
        d = decoder_directions(dicts[sub], torch.tensor([int(feature)]))[0].double()
        centred = d - d.sum() / len(d)
        logits = [float(sum(unembed[v, j] * gamma[j] * centred[j] for j in range(len(d))))
                  for v in range(unembed.shape[0])]
        order = sorted(range(len(logits)), key=lambda v: -logits[v])
        n = len(summary["promoted"])
        assert [p["token"] for p in summary["promoted"]] == [model.tokenizer.decode([v]) for v in order[:n]]
        assert [p["logit"] for p in summary["promoted"]] == pytest.approx([logits[v] for v in order[:n]], abs=1e-4)
        low = order[::-1][:n]
        assert [p["token"] for p in summary["suppressed"]] == [model.tokenizer.decode([v]) for v in low]
        assert [p["logit"] for p in summary["suppressed"]] == pytest.approx([logits[v] for v in low], abs=1e-4)


def test_streaming_batch_size_does_not_change_results(bundle, corpus, summaries):
    model, dicts = bundle
    one_batch = feature_summaries(model, dicts, corpus, NODES, top_k=TOP_K, context=CONTEXT,
                                  batch_size=len(corpus), max_length=12)
    for key, summary in summaries["features"].items():
        other = one_batch["features"][key]
        assert [c["activation"] for c in other["contexts"]] == pytest.approx(
            [c["activation"] for c in summary["contexts"]], rel=1e-4, abs=1e-4)
        assert other["density"] == pytest.approx(summary["density"], abs=1.5 / summaries["metadata"]["n_tokens"])


def test_corpus_sources(tmp_path, bundle):
    import datasets

    text = tmp_path / "docs.txt"
    text.write_text("first doc\n\n  \nsecond doc\n")
    assert load_corpus(text) == ["first doc", "second doc"]
    jsonl = tmp_path / "task.jsonl"
    jsonl.write_text(json.dumps({"clean_prefix": "The man", "patch_prefix": "The men",
                                 "clean_answer": " is", "patch_answer": " are"}) + "\n")
    assert load_corpus(jsonl) == ["The man is"]
    datasets.Dataset.from_dict({"text": ["a b", "c d", "e"]}).save_to_disk(str(tmp_path / "hf"))
    assert load_corpus(tmp_path / "hf", max_docs=2) == ["a b", "c d"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(UserError, match="holds no documents"):
        load_corpus(empty)
    with pytest.raises(UserError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="no column"):
        load_corpus(tmp_path / "hf", text_column="body")
    model, dicts = bundle
    with pytest.raises(UserError, match="out of range"):
        feature_summaries(model, dicts, ["The man is"], ["resid_0/99999"])
    with pytest.raises(UserError, match="unknown submodule"):
        feature_summaries(model, dicts, ["The man is"], ["resid_99"])
