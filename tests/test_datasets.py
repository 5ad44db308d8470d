"""Template datasets: vocabulary fits the real tokenizer, splits, JSONL, validation."""

import json

import pytest

from sfc_relp import templates
from sfc_relp.datasets import (SPLITS, build_all, generate, load_task, read_jsonl, split_of,
                               validate, write_jsonl)
from sfc_relp.errors import UserError


def test_every_word_is_one_pythia_token(tokenizer):
    multi = [w for w in sorted(templates.all_words())
             if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) != 1]
    assert multi == []


@pytest.mark.parametrize("family", templates.FAMILIES)
def test_generated_examples_are_valid_and_deterministic(family, tokenizer):
    data = generate(family, "test", 50, seed=3)
    assert len(data) >= 30
    assert generate(family, "test", 50, seed=3).to_list() == data.to_list()
    kept, report = validate(data, tokenizer)
    assert report.kept == len(data) and not report.dropped
    for row in data:
        assert row["clean_answer"] != row["patch_answer"]
        assert row["clean_answer"].startswith(" ") and row["patch_answer"].startswith(" ")
        assert split_of(row) == "test"


@pytest.mark.parametrize("family", templates.FAMILIES)
def test_train_and_test_are_disjoint(family):
    train = generate(family, "train", 300)
    test = generate(family, "test", 100)
    pairs = lambda d: {frozenset((r["clean_prefix"], r["patch_prefix"])) for r in d}
    assert pairs(train).isdisjoint(pairs(test))


def test_agreement_answers_follow_the_subject():
    for row in generate("rc", "train", 40):
        noun = row["clean_prefix"].split()[1]
        plural = any(noun == p for _, p in templates.NOUNS)
        singular_verbs = {" " + s for s, _ in templates.AUXILIARIES}
        assert (row["clean_answer"] in singular_verbs) != plural
    for row in generate("within_rc", "train", 40):
        noun = row["clean_prefix"].split()[-1]
        plural = any(noun == p for _, p in templates.NOUNS)
        assert row["clean_answer"].endswith("s") != plural


def test_ioi_patch_swaps_subject_and_indirect_object():
    for row in generate("ioi", "test", 30):
        clean, patch = row["clean_prefix"], row["patch_prefix"]
        a, b = row["clean_answer"].strip(), row["patch_answer"].strip()
        assert clean.replace(a, "#").replace(b, a).replace("#", b) == patch
        assert clean.count(b) == 2 and clean.count(a) == 1


def test_jsonl_round_trip(tmp_path):
    data = generate("nounpp", "train", 20)
    path = write_jsonl(data, tmp_path / "x.jsonl")
    assert read_jsonl(path).to_list() == data.to_list()
    assert not list(tmp_path.glob(".*tmp"))


def test_marks_published_lines_load(tmp_path):
    line = {"clean_prefix": "The managers", "patch_prefix": "The manager", "clean_answer": " are",
            "patch_answer": " is", "case": "plural"}
    path = tmp_path / "marks.jsonl"
    path.write_text(json.dumps(line) + "\n")
    assert read_jsonl(path).to_list() == [line]


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(generate("simple", "train", 1)[0])
    path.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(UserError, match="line 3"):
        read_jsonl(path)


def test_validation_reports_drops_and_fails_when_too_few(tokenizer):
    from datasets import Dataset

    rows = generate("simple", "train", 5).to_list()
    rows[0]["clean_answer"] = " unbelievably"  # several tokens
    rows[1]["patch_prefix"] = "The friends of mine"
    kept, report = validate(Dataset.from_list(rows), tokenizer)
    assert len(kept) == 3
    assert report.dropped == {"multi-token answer": 1, "clean/patch prefix length mismatch": 1}
    with pytest.raises(UserError, match="only 3 usable examples"):
        validate(Dataset.from_list(rows), tokenizer, min_examples=4)


def test_unknown_family():
    with pytest.raises(UserError, match="unknown dataset 'agreement'"):
        load_task("agreement")


def test_build_all_writes_every_file(tmp_path):
    paths = build_all(tmp_path, n_train=10, n_test=5)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{f}_{s}.jsonl" for f in templates.FAMILIES for s in SPLITS)
    assert len(read_jsonl(tmp_path / "ioi_test.jsonl")) == 5
