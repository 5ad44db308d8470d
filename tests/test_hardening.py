"""Hostile input: every subcommand answers bad input with one line and exit code 1, writes
nothing, touches nothing outside --out; outputs are all-or-none and follow the umask;
`zoo train` never deletes what it did not write; the library raises UserError (a ValueError)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

from sfc_relp.cli import main
from sfc_relp.errors import SfcRelpWarning, UserError

GOOD = {"clean_prefix": "The friends", "patch_prefix": "The friend", "clean_answer": " are",
        "patch_answer": " is", "case": "plural"}


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*")}


def _circuit_file(path: Path, nodes: list, links=(), graph=None) -> str:
    data = {"directed": True, "multigraph": False,
            "graph": graph or {"model": "small-pythia", "method": "relp", "dataset": "rc"},
            "nodes": nodes, "links": list(links)}
    path.write_text(json.dumps(data))
    return str(path)


def _cases(tmp: Path, model: str, dicts: str) -> dict:
    """{case: (argv, expected text in the error)}; files the cases need are created under tmp/in."""
    inp = tmp / "in"
    inp.mkdir()
    m = ["--model", model, "--dictionaries", dicts]
    not_utf8 = inp / "latin1.jsonl"
    not_utf8.write_bytes(json.dumps(GOOD).replace("friends", "fri\u00e9nds").encode("latin-1") + b"\n")
    long = inp / "long.jsonl"
    long.write_text(json.dumps({**GOOD, "clean_prefix": "The friends" + " and the friends" * 700,
                                "patch_prefix": "The friend" + " and the friends" * 700}) + "\n")
    pickled = inp / "pickled-model"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    truncated = inp / "truncated-model"
    shutil.copytree(model, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    nan_dicts = inp / "nan-dicts"
    shutil.copytree(dicts, nan_dicts)
    ae = next(nan_dicts.rglob("ae.pt"))
    state = torch.load(ae, weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(state, ae)
    node = lambda feature: [{"id": "resid_1/x", "submodule": "resid_1", "feature": feature, "error": False}]
    a_file = inp / "a_file"
    a_file.write_text("not a directory")
    unrelated = inp / "unrelated-dir"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("irreplaceable")
    ev = lambda path: ["evaluate", "--circuit", path, *m]
    return {
        # datasets build
        "build zero": (["datasets", "build", "--n-train", "0"], "at least 1"),
        "build nan": (["datasets", "build", "--n-test", "nan"], "positive integer"),
        "build too many": (["datasets", "build", "--n-train", "100000"], "at most"),
        "build out is a file": (["datasets", "build", "--out", str(a_file)], "not a directory"),
        # trace
        "trace negative n": (["trace", *m, "--n-examples", "-3"], "at least 1"),
        "trace bad device": (["trace", *m, "--device", "cuda:7"], "device"),
        "trace bad dtype": (["trace", *m, "--dtype", "float8"], "unknown dtype"),
        "trace nan SAE": (["trace", "--model", model, "--dictionaries", str(nan_dicts)], "NaN"),
        "trace pickled model": (["trace", "--model", str(pickled), "--dictionaries", dicts], "pytorch_model.bin"),
        "trace truncated model": (["trace", "--model", str(truncated), "--dictionaries", dicts], "could not load"),
        # circuit
        "circuit nan threshold": (["circuit", *m, "--dataset", "rc", "--node-threshold", "nan"], "finite"),
        "circuit inf threshold": (["circuit", *m, "--dataset", "rc", "--edge-threshold", "inf"], "finite"),
        "circuit batch 0": (["circuit", *m, "--dataset", "rc", "--batch-size", "0"], "at least 1"),
        "circuit non-utf8": (["circuit", *m, "--dataset", str(not_utf8)], "UTF-8"),
        "circuit longer than context": (["circuit", *m, "--dataset", str(long)], "context"),
        "circuit escaping dataset name": (["circuit", *m, "--dataset", "./../../x/rows.jsonl"], "does not exist"),
        # evaluate
        "evaluate list json": (ev(str(inp / "list.json")), "not a node-link"),
        "evaluate negative feature": (ev(_circuit_file(inp / "neg.json", node(-3))), "negative feature"),
        "evaluate string feature": (ev(_circuit_file(inp / "str.json", node("7"))), "feature '7'"),
        "evaluate null feature": (ev(_circuit_file(inp / "null.json", node(None))), "feature None"),
        "evaluate feature out of range": (ev(_circuit_file(inp / "big.json", node(9999))), "only 128"),
        "evaluate unknown submodule": (ev(_circuit_file(inp / "sub.json", [
            {"id": "mlp_9/1", "submodule": "mlp_9", "feature": 1, "error": False}])), "does not have"),
        "evaluate edge to unknown node": (ev(_circuit_file(inp / "edge.json", node(1), [
            {"source": "resid_1/x", "target": "attn_7/3", "weight": 1.0}])), "no submodule"),
        "evaluate negative intact": (ev(str(inp / "neg.json")) + ["--intact-layers", "-1"], "non-negative"),
        # sweep
        "sweep empty methods": (["sweep", *m, "--dataset", "rc", "--methods", ","], "expected comma-separated"),
        "sweep unknown method": (["sweep", *m, "--dataset", "rc", "--methods", "relp,foo"], "unknown method 'foo'"),
        "sweep inf threshold": (["sweep", *m, "--dataset", "rc", "--thresholds", "0.1,inf"], "finite"),
        "sweep empty threshold": (["sweep", *m, "--dataset", "rc", "--thresholds", "0.1,"], "comma-separated"),
        # fidelity
        "fidelity empty components": (["fidelity", *m, "--components", ","], "comma-separated"),
        "fidelity exact": (["fidelity", *m, "--methods", "exact"], "unknown method"),
        "fidelity zero prompts": (["fidelity", *m, "--n-prompts", "0"], "at least 1"),
        "fidelity negative node prompts": (["fidelity", *m, "--node-prompts", "-1"], "non-negative"),
        # zoo
        "train unrelated dir": (["zoo", "train", "--budget", "mini", "--model-dir", str(unrelated),
                                 "--dictionaries", str(tmp / "out")], "was not written by"),
        "train escaping name": (["zoo", "train", "--name", "../x"], "plain name"),
        "report zero sentences": (["zoo", "report", *m, "--n-sentences", "0"], "at least 1"),
        "random escaping name": (["zoo", "random", "--name", "../../x"], "plain name"),
        "random zero width": (["zoo", "random", "--width", "0"], "at least 1"),
        "random missing tokenizer": (["zoo", "random", "--tokenizer", str(inp / "nope.json")], "not a file"),
    }


CASES = ["build zero", "build nan", "build too many", "build out is a file", "trace negative n",
         "trace bad device", "trace bad dtype", "trace nan SAE", "trace pickled model",
         "trace truncated model", "circuit nan threshold", "circuit inf threshold", "circuit batch 0",
         "circuit non-utf8", "circuit longer than context", "circuit escaping dataset name",
         "evaluate list json", "evaluate negative feature", "evaluate string feature",
         "evaluate null feature", "evaluate feature out of range", "evaluate unknown submodule",
         "evaluate edge to unknown node", "evaluate negative intact", "sweep empty methods",
         "sweep unknown method", "sweep inf threshold", "sweep empty threshold",
         "fidelity empty components", "fidelity exact", "fidelity zero prompts",
         "fidelity negative node prompts", "train unrelated dir", "train escaping name",
         "report zero sentences", "random escaping name", "random zero width",
         "random missing tokenizer"]

# Subcommands that take --out (the others get theirs from elsewhere).
OUT_FLAG = {"datasets", "circuit", "sweep", "random"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_exit_1_nothing_written(case, tmp_path, small_bundle, capsys, monkeypatch):
    model, dicts = small_bundle
    work = tmp_path / "work"
    work.mkdir()
    argv, expected = _cases(tmp_path, str(model), str(dicts))[case]
    (tmp_path / "in" / "list.json").write_text("[1, 2]")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a file the user had")
    command = argv[1] if argv[0] in ("datasets", "zoo") else argv[0]
    if command in OUT_FLAG and "--out" not in argv:
        argv = argv + ["--out", str(out)]
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    model_before, dicts_before = _snapshot(Path(model)), _snapshot(Path(dicts))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "error:" in err and expected in err, err
    assert _snapshot(tmp_path) == before  # no new, changed or removed file anywhere
    assert (out / "keep.txt").read_text() == "a file the user had"
    assert _snapshot(Path(model)) == model_before and _snapshot(Path(dicts)) == dicts_before


def test_exit_code_and_stderr_for_real(tmp_path):
    """The same through a real process: exit status 1, one stderr line, nothing written."""
    for argv in (["sweep", "--dataset", "rc", "--methods", ","],
                 ["datasets", "build", "--n-train", "-5", "--out", str(tmp_path / "d")]):
        proc = subprocess.run([sys.executable, "-m", "sfc_relp", *argv], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


# --- zoo train: never delete what it did not write; a failed swap keeps the previous bundle ---

def _contents(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_zoo_train_refuses_unrelated_dir_and_rolls_back_failed_swap(tmp_path, monkeypatch, capsys):
    from sfc_relp.training import bundle

    model_dir, root = tmp_path / "zoo" / "mini", tmp_path / "dicts"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("irreplaceable")
    assert main(["zoo", "train", "--budget", "mini", "--name", "mini", "--model-dir", str(other),
                 "--dictionaries", str(root)]) == 1
    assert "--force" in capsys.readouterr().err
    assert _contents(other) == {"thesis.tex": b"irreplaceable"} and not root.exists()

    quiet = dict(progress=False, log=lambda *_: None)
    bundle.train_bundle(model_dir, root, "mini", "mini", seed=0, **quiet)
    assert (model_dir / bundle.MANIFEST).is_file() and (root / "mini" / bundle.MANIFEST).is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert (model_dir / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert model_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    model_before, dicts_before = _contents(model_dir), _contents(root / "mini")
    real_replace = os.replace

    def replace(src, dst):  # the model is swapped in, then the dictionaries' swap fails
        if Path(dst) == root / "mini" and ".staging" in str(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        bundle.train_bundle(model_dir, root, "mini", "mini", seed=1, **quiet)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _contents(model_dir) == model_before and _contents(root / "mini") == dicts_before
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["mini"]  # no staging left over
    assert sorted(p.name for p in root.iterdir()) == ["mini"]
    # a previous bundle is recognised and replaced without --force
    bundle.train_bundle(model_dir, root, "mini", "mini", seed=1, **quiet)
    assert _contents(model_dir)["model.safetensors"] != model_before["model.safetensors"]


# --- outputs: all or none, umask, graphviz failures, settings conflicts, names inside --out ---

def test_outputs_follow_the_umask(tmp_path):
    import stat

    from sfc_relp.datasets import build_all
    from sfc_relp.files import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
        paths = build_all(tmp_path / "data", 2, 2)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "a.txt", *paths]}
    assert modes == {0o640}
    old = os.umask(0o002)
    try:
        atomic_write(tmp_path / "b.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664


def test_staged_files_are_renamed_all_or_none(tmp_path, monkeypatch):
    from sfc_relp.files import StagedFiles

    (tmp_path / "a.json").write_text("old a")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "a.svg":
            raise OSError(30, "Read-only file system")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with StagedFiles(tmp_path) as staged:
            Path(staged.path("a.json")).write_text("new a")
            Path(staged.path("a.svg")).write_text("new svg")
            staged.commit()
    assert (tmp_path / "a.json").read_text() == "old a"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(KeyboardInterrupt):  # interrupted before the end: nothing, not even the dir
        with StagedFiles(tmp_path / "new" / "dir") as staged:
            Path(staged.path("x.dot")).write_text("digraph {}")
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()


def test_circuit_outputs_dot_failures_conflicts_and_names(tmp_path, small_bundle, monkeypatch, capsys):
    model, dicts = small_bundle
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in [
        GOOD, {**GOOD, "clean_prefix": "The teachers", "patch_prefix": "The teacher"}]) + "\n")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    base = ["circuit", "--model", str(model), "--dictionaries", str(dicts), "--dataset",
            "./../../x/rows.jsonl", "--out", str(out), "--node-threshold", "0.01"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no graphviz: .dot only, one warning line
    assert main(base) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: graphviz `dot` not found" in err
    assert sorted(p.name for p in out.iterdir()) == ["small-pythia_rows_relp.dot", "small-pythia_rows_relp.json"]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["rows.jsonl"]
    assert not list(work.iterdir())
    meta = json.loads((out / "small-pythia_rows_relp.json").read_text())["graph"]
    assert (meta["dtype"], meta["seed"], meta["neurons"], meta["n_examples_requested"]) == ("float32", 0, False, 64)
    before = _snapshot(out)
    dot = bin_dir / "dot"  # a graphviz that fails: one line, nothing changed in --out
    dot.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 3\n")
    dot.chmod(0o755)
    assert main(base) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dot -Tsvg` failed (exit 3): Error: syntax error" in err
    assert _snapshot(out) == before
    dot.unlink()
    assert main(base[:-1] + ["0.02"]) == 1  # other settings: refused before the model loads
    err = capsys.readouterr().err
    assert "other settings (node_threshold 0.01 -> 0.02)" in err and "--force" in err
    assert _snapshot(out) == before
    assert main(base[:-1] + ["0.02", "--force"]) == 0
    capsys.readouterr()
    assert json.loads((out / "small-pythia_rows_relp.json").read_text())["graph"]["node_threshold"] == 0.02


# --- library errors and warnings ---

def test_library_errors_are_value_errors_with_messages(small_model, small_dictionaries, tokenizer):
    from sfc_relp.attribution import TaskBatch, get_method
    from sfc_relp.circuit import batches_of, circuit_nodes, node_id
    from sfc_relp.datasets import generate, load_task
    from sfc_relp.evaluation import evaluate_circuit

    assert issubclass(UserError, ValueError)
    data = load_task("rc", "test", 4, 0, small_model.tokenizer)
    batch = TaskBatch.from_rows(small_model.tokenizer, data.to_list())
    checks = [
        (lambda: TaskBatch.from_rows(tokenizer, []), "at least one example"),
        (lambda: get_method("ig", small_model, small_dictionaries, steps=0), "steps >= 1"),
        (lambda: batches_of(tokenizer, data, 0), "batch size"),
        (lambda: batches_of(tokenizer, data.select([]), 2), "empty"),
        (lambda: load_task("rc", "test", 0), "positive integer"),
        (lambda: generate("ioi", "train", 10 ** 7), "at most"),
        (lambda: node_id("resid_1", -2), "integer >= 0"),
        (lambda: node_id("resid_1", 1.5), "integer >= 0"),
        (lambda: get_method("atp", small_model, small_dictionaries).edges(
            batch, {"resid_1": torch.tensor([-2])}), "must lie in"),
        (lambda: get_method("atp", small_model, small_dictionaries).edges(
            batch, {"resid_1": torch.tensor([1.7])}), "must be integers"),
        (lambda: get_method("atp", small_model, small_dictionaries).edges(
            batch, {"mlp_9": torch.tensor([1])}), "unknown submodule"),
        (lambda: evaluate_circuit(small_model, {}, data, {}), "no dictionary"),
        (lambda: evaluate_circuit(small_model, small_dictionaries, data, {"resid_1": ({-1}, False)}),
         "not an id"),
    ]
    for call, message in checks:
        with pytest.raises(ValueError, match=message):
            call()
    graph = nx.DiGraph(model="m", method="relp")
    graph.add_node("resid_1/x", submodule="resid_1", feature=-2, error=False)
    with pytest.raises(UserError, match="negative feature"):
        circuit_nodes(graph, small_dictionaries)


def test_generation_is_capped_and_warns_when_short():
    from sfc_relp.datasets import generate
    from sfc_relp.templates import family_size

    with pytest.warns(SfcRelpWarning, match="generated"):
        rows = generate("simple", "test", family_size("simple"))
    assert 0 < len(rows) < family_size("simple")


def test_warnings_that_save_a_day(small_model, small_dictionaries):
    from datasets import Dataset

    from sfc_relp.circuit import batches_of, discover_circuit
    from sfc_relp.datasets import generate, validate

    same = Dataset.from_list([{**GOOD, "patch_answer": " are"}])
    with pytest.warns(SfcRelpWarning, match="equal clean and patch answers"):
        validate(same, small_model.tokenizer)
    with pytest.warns(SfcRelpWarning, match="left-padded"):
        batches_of(small_model.tokenizer, generate("ioi", "test", 12), 12)
    with pytest.warns(SfcRelpWarning, match="no nodes"):
        graph = discover_circuit(small_model, small_dictionaries, generate("rc", "test", 2), "atp",
                                 node_threshold=1e9, edges=False)
    assert graph.number_of_nodes() == 1


def test_relp_refuses_an_activation_without_rule():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from sfc_relp.lrp import composite_for

    config = GPTNeoXConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, hidden_act="tanh")
    with pytest.raises(UserError, match="no LRP rule for activation Tanh"):
        composite_for(GPTNeoXForCausalLM(config))
    composite_for(GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, hidden_act="gelu")))  # covered: no error


# --- the sweep shares the full and patch runs across thresholds, with identical results ---

def test_sweep_baseline_is_computed_once_and_changes_nothing(small_model, small_dictionaries, monkeypatch):
    from sfc_relp import sweep as sweep_module
    from sfc_relp.attribution import get_method
    from sfc_relp.circuit import accumulate_effects, batches_of, select_nodes
    from sfc_relp.datasets import generate
    from sfc_relp.evaluation import baseline_runs, evaluate_circuit

    train, test = generate("rc", "train", 4), generate("rc", "test", 4)
    calls = []
    counted = lambda *a, **k: calls.append(1) or baseline_runs(*a, **k)
    monkeypatch.setattr(sweep_module, "baseline_runs", counted)
    thresholds = [0.001, 0.1]
    rows = sweep_module.sweep(small_model, small_dictionaries, train, test, ["atp"], thresholds,
                              batch_size=4, ablation="resample", seed=5)
    assert len(calls) == 1 and len(rows) == 2
    effects = accumulate_effects(get_method("atp", small_model, small_dictionaries),
                                 batches_of(small_model.tokenizer, train, 4), "sum")
    for row, threshold in zip(rows, thresholds):  # recomputed from scratch, no cache
        chosen = select_nodes(effects, threshold)
        circuit = {n: ({int(i) for i in ids if i >= 0}, bool((ids < 0).any())) for n, ids in chosen.items()}
        fresh = evaluate_circuit(small_model, small_dictionaries, test, circuit, "resample",
                                 batch_size=4, seed=5)
        assert (row["faithfulness"], row["completeness"], row["n_nodes"]) == \
            (fresh.faithfulness, fresh.completeness, fresh.n_nodes)


def test_disk_full_mid_run_is_one_line_and_leaves_no_file(tmp_path, small_bundle, monkeypatch, capsys):
    import matplotlib.figure

    model, dicts = small_bundle
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("kept")

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert main(["sweep", "--model", str(model), "--dictionaries", str(dicts), "--dataset", "rc",
                 "--methods", "atp", "--thresholds", "0.1", "--n-examples", "4", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == "sfc-relp: error: No space left on device\n"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the staged CSV is gone too


def test_zoo_random_writes_all_or_nothing_and_never_replaces(tmp_path, monkeypatch, capsys):
    from conftest import TOKENIZER_FILE

    if not TOKENIZER_FILE.is_file():
        pytest.skip(f"real GPT-NeoX tokenizer not found at {TOKENIZER_FILE}")
    import sfc_relp.random_model as random_model

    out = tmp_path / "out"
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["zoo", "random", "--arch", "gpt_neox", "--small", "--layers", "1", "--width", "64",
            "--l0", "8", "--tokenizer", str(TOKENIZER_FILE), "--out", str(out)]

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as patch:
        patch.setattr(random_model, "write_dictionaries", broken)
        assert main(args) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no model, no staging left
    assert main(args) == 0
    assert (out / "random-gpt_neox" / "config.json").is_file()
    assert len(list((out / "dictionaries" / "random-gpt_neox").rglob("ae.pt"))) == 4
    capsys.readouterr()
    assert main(args) == 1  # an existing model directory is refused, not replaced
    assert "already exists" in capsys.readouterr().err
