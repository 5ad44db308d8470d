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
