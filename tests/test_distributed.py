"""Data parallel on torch.distributed (two gloo processes equal one), failure handling,
bfloat16 against float32, and SAE placement beside split-model submodules."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sfc_relp import distributed
from sfc_relp.attribution import get_method
from sfc_relp.circuit import accumulate_effects, batches_of, select_nodes
from sfc_relp.datasets import load_task
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.fidelity import pearson
from sfc_relp.loading import hf_model, load_model
from sfc_relp.placement import module_device, place_dictionaries, submodule_devices

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "distributed_job.py"
JOB_TIMEOUT = 420  # seconds; a hang fails the test instead of the suite


def _job_module():
    spec = importlib.util.spec_from_file_location("distributed_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun(args, timeout=JOB_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SFC_RELP_DIST_TIMEOUT="120")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(JOB), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-12


def _assert_same_circuits(one: dict, two: dict) -> None:
    for method, single in one.items():
        double = two[method]
        nodes1 = {n["id"]: n["effect"] for n in single["graph"]["nodes"]}
        nodes2 = {n["id"]: n["effect"] for n in double["graph"]["nodes"]}
        assert set(nodes1) == set(nodes2), method
        assert len(nodes1) > 5, method  # a circuit worth comparing
        assert all(_close(nodes1[k], nodes2[k]) for k in nodes1 if nodes1[k] is not None), method
        edges1 = {(e["source"], e["target"]): e["weight"] for e in single["graph"]["links"]}
        edges2 = {(e["source"], e["target"]): e["weight"] for e in double["graph"]["links"]}
        assert set(edges1) == set(edges2) and len(edges1) > 0, method
        assert all(_close(edges1[k], edges2[k]) for k in edges1), method
        for key, value in single["evaluation"].items():
            assert _close(value, double["evaluation"][key]), (method, key)


@pytest.mark.parametrize("methods,n_examples,batch_size", [
    ("atp,relp", 8, 2),
    pytest.param("ig,exact", 4, 2, marks=pytest.mark.slow),
])
def test_two_gloo_processes_equal_one(tmp_path, methods, n_examples, batch_size):
    out = tmp_path / "two.json"
    proc = _torchrun(["circuits", str(out), methods, str(n_examples), str(batch_size)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world_size"] == 2
    one = _job_module().circuits(methods.split(","), n_examples, batch_size)
    one = json.loads(json.dumps(one))  # the same JSON round trip as the job's output
    _assert_same_circuits(one, two["result"])


@pytest.mark.slow
def test_fidelity_two_processes_equal_one(tmp_path):
    out = tmp_path / "fidelity.json"
    proc = _torchrun(["fidelity", str(out), "6", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())["result"]
    one = json.loads(json.dumps(_job_module().fidelity(6, 2)))
    for method, kinds in one["components"].items():
        for kind, values in kinds.items():
            for cells, value in values.items():  # batch shapes differ: rounding only
                assert abs(value - two["components"][method][kind][cells]) < 1e-5, (method, kind, cells)
    assert abs(one["nodes"]["atp"] - two["nodes"]["atp"]) < 1e-5


def test_a_failing_rank_stops_the_job_with_a_clear_message(tmp_path):
    start = time.monotonic()
    missing = tmp_path / "missing.jsonl"
    proc = _torchrun(["cli", "--dataset", str(missing), "--",
                      "circuit", "--dataset", "rc", "--method", "atp", "--n-examples", "8",
                      "--batch-size", "4", "--out", str(tmp_path)], timeout=240)
    assert proc.returncode != 0
    assert time.monotonic() - start < 240
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sfc-relp: error")]
    assert any(line.startswith("sfc-relp: error (rank 1):") and "missing.jsonl" in line for line in errors)
    assert any("stopping because another rank failed" in line for line in errors)
    assert not list(tmp_path.glob("*.json"))  # rank 0 wrote nothing


@pytest.mark.parametrize("how", ["strided", "contiguous"])
def test_shards_cover_every_item_once_and_deterministically(monkeypatch, how):
    items = list(range(11))
    shards = []
    for r in range(3):
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shards.append(distributed.shard(items, how))
        assert distributed.shard(items, how) == shards[-1]
    assert sorted(sum(shards, [])) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if how == "strided":
        assert shards[1] == [1, 4, 7, 10]
    else:
        assert shards[0] == [0, 1, 2, 3] and shards[2] == [8, 9, 10]


def test_single_process_helpers_are_identities():
    assert not distributed.active() and distributed.is_writer() and distributed.world_size() == 1
    x = torch.arange(6, dtype=torch.float32).view(2, 3)
    (summed,) = distributed.all_reduce_sum([x])
    assert summed.dtype == torch.float64 and torch.equal(summed, x.double())
    assert distributed.gather_rows(x, 2) is x
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda:1") == "nccl"


def test_bfloat16_node_effects_follow_float32():
    efs = {}
    for dtype in ("float32", "bfloat16"):
        model = load_model(dtype=dtype)
        dictionaries = dictionaries_for(model)
        assert all(b.dtype == getattr(torch, dtype) for ae in dictionaries.values() for b in ae.buffers()
                   if b.is_floating_point())
        batches = batches_of(model.tokenizer, load_task("rc", "train", 16, tokenizer=model.tokenizer), 8)
        efs[dtype] = accumulate_effects(get_method("relp", model, dictionaries), batches, "sum")
        assert all(v.dtype == torch.float32 for v in efs[dtype].features.values())  # accumulated in float32
    flat = lambda e: torch.cat([torch.cat([e.features[k], e.errors[k].view(1)]) for k in e.features])
    pcc = pearson(flat(efs["bfloat16"]), flat(efs["float32"]))
    nodes = {d: {(k, int(i)) for k, ids in select_nodes(e, 0.1).items() for i in ids} for d, e in efs.items()}
    overlap = len(nodes["float32"] & nodes["bfloat16"]) / len(nodes["float32"] | nodes["bfloat16"])
    print(f"\nbfloat16 vs float32 relp node effects: PCC {pcc:.6f}; node sets at threshold 0.1: "
          f"{len(nodes['float32'])} vs {len(nodes['bfloat16'])} nodes, Jaccard overlap {overlap:.3f}")
    assert pcc >= 0.99
    assert overlap > 0.5


def test_each_sae_goes_beside_its_submodule_on_a_split_model():
    model = load_model()
    dictionaries = dictionaries_for(model)
    hf = hf_model(model)
    hf.gpt_neox.layers[3:].to("meta")  # layers 3-5 on a second device
    hf.gpt_neox.layers[1].attention._hf_hook = SimpleNamespace(execution_device="meta")  # accelerate's hook
    place_dictionaries(model, dictionaries)
    devices = submodule_devices(model)
    for name, ae in dictionaries.items():
        layer = -1 if name == "embed" else int(name.rsplit("_", 1)[1])
        expected = "meta" if layer >= 3 or name == "attn_1" else "cpu"
        assert devices[name].type == expected, name
        assert {b.device.type for b in ae.buffers()} == {expected}, name
    assert module_device(torch.nn.Identity(), "cuda:1") == torch.device("cuda:1")


def test_a_model_split_by_accelerate_attributes_the_same(tmp_path):
    """Layers 3-5 offloaded to disk: accelerate's hooks run them on the CPU (weights on 'meta'
    between calls); each SAE goes to its submodule's execution device and the effects match.
    (AtP: RelP's LN-rule hooks read weights after the forward, which offloading has removed.)"""
    device_map = {"gpt_neox.embed_in": "cpu", "gpt_neox.rotary_emb": "cpu",
                  **{f"gpt_neox.layers.{i}": "cpu" if i < 3 else "disk" for i in range(6)},
                  "gpt_neox.final_layer_norm": "cpu", "lm_head": "cpu"}
    plain = load_model()
    split = load_model(device_map=device_map, offload_folder=str(tmp_path))
    offloaded = hf_model(split).gpt_neox.layers[4]
    assert next(offloaded.parameters()).device.type == "meta" and hasattr(offloaded, "_hf_hook")
    rows = load_task("rc", "train", 4, tokenizer=plain.tokenizer)
    effects = []
    for model in (plain, split):
        dictionaries = place_dictionaries(model, dictionaries_for(model))
        assert all(ae.W_enc.device.type == "cpu" for ae in dictionaries.values())
        batches = batches_of(model.tokenizer, rows, 4)
        effects.append(accumulate_effects(get_method("atp", model, dictionaries), batches, "sum"))
    for name in effects[0].features:
        torch.testing.assert_close(effects[0].features[name], effects[1].features[name])
        torch.testing.assert_close(effects[0].errors[name], effects[1].errors[name])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_devices_are_user_errors():
    from sfc_relp.errors import UserError

    with pytest.raises(UserError, match="no CUDA GPU"):
        load_model(device="cuda")
    with pytest.raises(UserError, match="device-map 'nonsense'.*auto"):
        load_model(device_map="nonsense")
