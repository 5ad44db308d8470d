"""Circuits, their evaluation, the sweep, and the commands that wrap them (bundled model)."""

import json
import subprocess
import sys

import networkx as nx
import pytest
import torch

from sfc_relp.architectures import resolve_path
from sfc_relp.attribution import TaskBatch, get_method, logit_diff
from sfc_relp.circuit import (circuit_nodes, discover_circuit, load_circuit,
                              save_circuit, select_nodes)
from sfc_relp.datasets import load_task
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.errors import UserError
from sfc_relp.evaluation import ablatable_submodules, evaluate_circuit
from sfc_relp.loading import hf_model, load_model
from sfc_relp.sweep import sweep


@pytest.fixture(scope="module")
def bundle():
    model = load_model()
    return model, dictionaries_for(model)


@pytest.fixture(scope="module")
def rc(bundle):
    model, _ = bundle
    return (load_task("rc", "train", 16, tokenizer=model.tokenizer),
            load_task("rc", "test", 16, tokenizer=model.tokenizer))


@pytest.fixture(scope="module")
def graph(bundle, rc):
    model, dicts = bundle
    return discover_circuit(model, dicts, rc[0], "relp", node_threshold=0.3, edge_threshold=0.02,
                            batch_size=8, metadata={"model": "tiny-pythia", "dataset": "rc"})


def test_graph_respects_thresholds_and_carries_metadata(graph, bundle, rc):
    model, dicts = bundle
    assert graph.graph["method"] == "relp" and graph.graph["n_examples"] == 16
    assert graph.graph["node_threshold"] == 0.3 and "tool_version" in graph.graph
    assert graph.graph["edges_computed"] is True
    nodes = [d for n, d in graph.nodes(data=True) if n != "y"]
    assert len(nodes) > 5
    assert all(abs(d["effect"]) > 0.3 for d in nodes)
    assert all(abs(d["weight"]) > 0.02 for _, _, d in graph.edges(data=True))
    assert graph.number_of_edges() > 0 and any(t == "y" for _, t in graph.edges())
    # the circuit's nodes are exactly the nodes of effects accumulated the same way
    effects = get_method("relp", model, dicts).attribute(
        TaskBatch.from_rows(model.tokenizer, rc[0].to_list()))
    expected = sum(len(ids) for ids in select_nodes(effects, 0.3).values())
    assert abs(len(nodes) - expected) <= 2  # batching (8 vs 16) changes sums only in rounding


def test_json_round_trip(graph, tmp_path):
    path = save_circuit(graph, tmp_path / "c.json")
    loaded = load_circuit(path)
    assert loaded.graph == graph.graph
    assert dict(loaded.nodes(data=True)) == dict(graph.nodes(data=True))
    assert {(u, v): d for u, v, d in loaded.edges(data=True)} == \
        {(u, v): d for u, v, d in graph.edges(data=True)}


def test_positions_kept_under_aggregation_none(bundle, rc):
    model, dicts = bundle
    g = discover_circuit(model, dicts, rc[0], "atp", node_threshold=0.05, aggregation="none",
                         batch_size=16, metadata={"model": "tiny-pythia"})
    positions = {d["position"] for n, d in g.nodes(data=True) if n != "y"}
    assert len(positions) > 1 and None not in positions
    assert g.graph["edges_computed"] is False and g.number_of_edges() == 0


def _all_nodes(dicts):
    return {name: (set(range(ae.dict_size)), True) for name, ae in dicts.items()}


def test_full_and_empty_circuits(bundle, rc):
    model, dicts = bundle
    full = evaluate_circuit(model, dicts, rc[1], _all_nodes(dicts), batch_size=16)
    assert full.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert full.completeness == pytest.approx(0.0, abs=1e-5)
    empty = evaluate_circuit(model, dicts, rc[1], {}, batch_size=16)
    assert empty.faithfulness == pytest.approx(0.0, abs=1e-5)
    assert empty.completeness == pytest.approx(1.0, abs=1e-5)


def test_empty_circuit_metric_matches_hand_written_mean_ablation(bundle, rc):
    """m(empty) = outputs of every ablatable submodule replaced by their per-position means
    over the patch prompts (decoders are affine, so mean features + mean error = mean output)."""
    model, dicts = bundle
    result = evaluate_circuit(model, dicts, rc[1], {}, batch_size=16)
    batch = TaskBatch.from_rows(model.tokenizer, rc[1].to_list())
    hf = hf_model(model)
    names = ablatable_submodules(model.config)
    subs = {s.name: s for s in __import__("sfc_relp.architectures", fromlist=["x"]).submodules_for(model.config)}
    means, hooks = {}, []

    def record(name):
        def hook(_m, _i, out):
            x = out[0] if subs[name].output_is_tuple else out
            means[name] = x.mean(0, keepdim=True)
        return hook
    for name in names:
        hooks.append(resolve_path(hf, subs[name].module_path).register_forward_hook(record(name)))
    with torch.no_grad():
        hf(**batch.patch)
    for h in hooks:
        h.remove()

    def replace(name):
        def hook(_m, _i, out):
            x = out[0] if subs[name].output_is_tuple else out
            new = means[name].expand_as(x)
            return (new, *out[1:]) if subs[name].output_is_tuple else new
        return hook
    hooks = [resolve_path(hf, subs[n].module_path).register_forward_hook(replace(n)) for n in names]
    try:
        with torch.no_grad():
            expected = logit_diff(hf(**batch.clean).logits, batch).mean()
    finally:
        for h in hooks:
            h.remove()
    assert result.m_empty == pytest.approx(float(expected), abs=1e-4)
    assert abs(result.m_full - result.m_empty) > 0.1


def test_evaluation_options(bundle, rc, graph):
    model, dicts = bundle
    circuit = circuit_nodes(graph, list(dicts))
    mean = evaluate_circuit(model, dicts, rc[1], circuit, batch_size=16)
    zero = evaluate_circuit(model, dicts, rc[1], circuit, ablation="zero", batch_size=16)
    never = evaluate_circuit(model, dicts, rc[1], circuit, error_policy="never", batch_size=16)
    assert mean.faithfulness != zero.faithfulness
    assert never.faithfulness != mean.faithfulness
    assert 0.2 < mean.faithfulness < 1.5
    with pytest.raises(UserError, match="unknown ablation"):
        evaluate_circuit(model, dicts, rc[1], circuit, ablation="median")


def test_sweep_rows(bundle, rc):
    model, dicts = bundle
    rows = sweep(model, dicts, rc[0], rc[1], methods=("relp", "atp"), thresholds=(0.01, 0.1, 1.0),
                 batch_size=16)
    assert [(r["method"], r["node_threshold"]) for r in rows] == [
        ("relp", 0.01), ("relp", 0.1), ("relp", 1.0), ("atp", 0.01), ("atp", 0.1), ("atp", 1.0)]
    for method in ("relp", "atp"):
        counts = [r["n_nodes"] for r in rows if r["method"] == method]
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sfc_relp", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_circuit_evaluate_sweep(tmp_path):
    out = tmp_path / "out"
    proc = _cli("circuit", "--dataset", "rc", "--n-examples", "16", "--node-threshold", "0.3",
                "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tiny-pythia_rc_relp.json").is_file() and (out / "tiny-pythia_rc_relp.dot").is_file()
    assert "nodes:" in proc.stdout and "edges:" in proc.stdout
    proc = _cli("evaluate", "--circuit", str(out / "tiny-pythia_rc_relp.json"), "--n-examples", "16",
                "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"faithfulness", "completeness", "n_nodes"} and result["n_nodes"] > 0
    proc = _cli("sweep", "--dataset", "simple", "--methods", "relp,atp", "--thresholds", "0.1,1",
                "--n-examples", "16", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tiny-pythia_simple_sweep.png").stat().st_size > 1000
    assert len((out / "tiny-pythia_simple_sweep.csv").read_text().splitlines()) == 5


def _bad_file(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"clean_prefix": "The friends", "patch_prefix": "The friend", "clean_answer": " are",
        "patch_answer": " is", "case": "plural"}


def _bad_inputs(tmp_path):
    circuit = tmp_path / "good.json"
    g = nx.DiGraph(model="another-model", method="relp", dataset="rc")
    g.add_node("y", submodule="y")
    save_circuit(g, circuit)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"nodes": [')
    return {
        "unknown dataset": (["circuit", "--dataset", "agreement"], "unknown dataset"),
        "malformed line": (["circuit", "--dataset", str(_bad_file(tmp_path, "m.jsonl", [GOOD, "{oops"]))],
                           "line 2"),
        "multi-token answer": (["circuit", "--dataset", str(_bad_file(
            tmp_path, "t.jsonl", [GOOD, {**GOOD, "clean_answer": " are not"}]))], "example 2: multi-token"),
        "unknown word": (["circuit", "--dataset", str(_bad_file(
            tmp_path, "u.jsonl", [{**GOOD, "clean_prefix": "The wombats"}]))], "vocabulary"),
        "length mismatch": (["circuit", "--dataset", str(_bad_file(
            tmp_path, "l.jsonl", [{**GOOD, "patch_prefix": "The friend that the"}]))], "length"),
        "negative threshold": (["circuit", "--dataset", "rc", "--node-threshold", "-1"], "non-negative"),
        "missing circuit": (["evaluate", "--circuit", str(tmp_path / "nope.json")], "does not exist"),
        "corrupt circuit": (["evaluate", "--circuit", str(corrupt)], "not a circuit"),
        "other model": (["evaluate", "--circuit", str(circuit), "--model", "tiny-pythia"], "another-model"),
    }


@pytest.mark.parametrize("case", ["unknown dataset", "malformed line", "multi-token answer", "unknown word",
                                  "length mismatch", "negative threshold", "missing circuit",
                                  "corrupt circuit", "other model"])
def test_bad_input_is_one_line_exit_1_and_writes_nothing(tmp_path, case):
    args, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "outputs"
    if args[0] == "circuit":
        args = args + ["--out", str(out)]
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    import re
    assert re.search(message, proc.stderr), proc.stderr
    assert not out.exists() or not any(out.iterdir())
