"""Every dictionary format: files written here the way each publishing project writes them,
loaded through the public API, checked against a hand-written formula of that format, spliced
into the small model (logits unchanged) and used for circuits; bad files get one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sfc_relp.architectures import submodules_for
from sfc_relp.dictionaries import (decoder_directions, describe, dictionaries_for, load_dictionaries,
                                   load_dictionary, sparse_encode)
from sfc_relp.errors import UserError

D, F = 64, 96


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------- writers, one per format ---

def write_dictionary_learning(folder: Path, cls: str, seed: int, submodule: str = "resid_1") -> dict:
    """The class's own state_dict (dictionary_learning is installed) and its trainer config."""
    from dictionary_learning.dictionary import AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    torch.manual_seed(seed)
    make = {"AutoEncoder": lambda: AutoEncoder(D, F), "GatedAutoEncoder": lambda: GatedAutoEncoder(D, F),
            "JumpReluAutoEncoder": lambda: JumpReluAutoEncoder(D, F),
            "AutoEncoderTopK": lambda: AutoEncoderTopK(D, F, k=7),
            "BatchTopKSAE": lambda: BatchTopKSAE(D, F, k=7),
            "MatryoshkaBatchTopKSAE": lambda: MatryoshkaBatchTopKSAE(D, F, k=7, group_sizes=[32, 64])}
    ae = make[cls]()
    g = _gen(seed)
    with torch.no_grad():
        for name, p in ae.named_parameters():
            p.add_(_randn(g, *p.shape, scale=0.3))
        if hasattr(ae, "threshold"):
            ae.threshold.copy_(torch.rand(ae.threshold.shape, generator=g) * 0.5 + 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ae.state_dict(), folder / "ae.pt")
    trainer = {"dict_class": cls, "activation_dim": D, "dict_size": F, "lm_name": "small-pythia",
               "layer": 1, "submodule_name": submodule}
    if "TopK" in cls:
        trainer["k"] = 7
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": D}}))
    return {"module": ae.eval()}


def write_saelens(folder: Path, arch: str, seed: int, hook: str = "blocks.1.hook_resid_post",
                  v6: bool = True, apply_b_dec: bool = True, scale: float | None = None,
                  scaling_factor: bool = False, rescale: bool = False, log_threshold: bool = False) -> dict:
    g = _gen(seed)
    w = {"W_enc": _randn(g, D, F, scale=0.3), "W_dec": _randn(g, F, D, scale=0.3),
         "b_dec": _randn(g, D, scale=0.3)}
    if arch == "gated":
        w.update(b_gate=_randn(g, F, scale=0.5), b_mag=_randn(g, F, scale=0.5), r_mag=_randn(g, F, scale=0.3))
    else:
        w["b_enc"] = _randn(g, F, scale=0.5)
    if arch == "jumprelu":
        threshold = torch.rand(F, generator=g) * 0.8 + 0.1
        w["log_threshold" if log_threshold else "threshold"] = threshold.log() if log_threshold else threshold
    if arch == "batchtopk":
        w["topk_threshold"] = torch.tensor(0.7, dtype=torch.float64)
    if scaling_factor:
        w["scaling_factor"] = torch.rand(F, generator=g) + 0.5
    cfg = {"d_in": D, "d_sae": F, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": "expected_average_only_in" if scale else "none"}
    if v6:
        cfg.update(architecture=arch, reshape_activations="none", metadata={
            "model_name": "small-pythia", "hook_name": hook, "hook_head_index": None,
            "prepend_bos": True, "context_size": 128, "neuronpedia_id": None, "sae_lens_version": "6.5.0"})
        if arch in ("topk", "batchtopk"):
            cfg.update(k=6, rescale_acts_by_decoder_norm=rescale)
    else:
        cfg.update(model_name="small-pythia", hook_point=hook, hook_point_layer=1, hook_point_head_index=None,
                   context_size=128, sae_lens_version="3.20.0", finetuning_scaling_factor=scaling_factor)
        if arch == "topk":
            cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": 6})
        else:
            cfg.update(architecture=arch, activation_fn_str="relu", activation_fn_kwargs={})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    if scale:
        (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": scale}))
    return {"w": w, "cfg": cfg, "arch": arch, "scale": scale or 1.0, "apply_b_dec": apply_b_dec,
            "rescale": rescale}


def write_gemma_scope(folder: Path, seed: int) -> dict:
    g = _gen(seed)
    w = {"W_enc": _randn(g, D, F, scale=0.3).numpy(), "W_dec": _randn(g, F, D, scale=0.3).numpy(),
         "b_enc": _randn(g, F, scale=0.5).numpy(), "b_dec": _randn(g, D, scale=0.3).numpy(),
         "threshold": (torch.rand(F, generator=g) * 0.8 + 0.1).numpy()}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **w)
    return {"w": {k: torch.from_numpy(v) for k, v in w.items()}}


def write_sparsify(folder: Path, seed: int, activation: str = "topk", k: int = 6, **extra) -> dict:
    g = _gen(seed)
    w = {"encoder.weight": _randn(g, F, D, scale=0.3), "encoder.bias": _randn(g, F, scale=0.5),
         "W_dec": _randn(g, F, D, scale=0.3), "b_dec": _randn(g, D, scale=0.3), **extra.pop("tensors", {})}
    cfg = {"activation": activation, "expansion_factor": F // D, "normalize_decoder": True,
           "num_latents": F, "k": k, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": D, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return {"w": w, "activation": activation, "k": k}


def write_llama_scope(folder: Path, seed: int, hook: str = "blocks.1.hook_resid_post",
                      centred: bool = False) -> dict:
    g = _gen(seed)
    w = {"encoder.weight": _randn(g, F, D, scale=0.3), "encoder.bias": _randn(g, F, scale=0.5),
         "decoder.weight": _randn(g, D, F, scale=0.3), "decoder.bias": _randn(g, D, scale=0.3)}
    cfg = {"d_model": D, "d_sae": F, "hook_point_in": hook, "hook_point_out": hook,
           "jump_relu_threshold": 0.4, "act_fn": "jumprelu", "norm_activation": "dataset-wise",
           "dataset_average_activation_norm": {"in": 12.0, "out": 10.0}, "top_k": 50,
           "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": centred}
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "checkpoints" / "final.safetensors"))
    (folder / "hyperparams.json").write_text(json.dumps(cfg))
    return {"w": w, "cfg": cfg}


# ------------------------------------------------- hand-written formulas, one per format ---

def ref_dictionary_learning(spec, x):
    """dictionary_learning's own classes are the reference (2-D input: Matryoshka indexes [:, ...])."""
    ae = spec["module"]
    with torch.no_grad():
        f = ae.encode(x)
        return f, ae.decode(f)


def ref_saelens(spec, x):
    w, arch, s = spec["w"], spec["arch"], spec["scale"]
    sae_in = x * s - (w["b_dec"] if spec["apply_b_dec"] else 0)
    if arch == "gated":
        gate = (sae_in @ w["W_enc"] + w["b_gate"] > 0).float()
        f = gate * torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    else:
        hidden = sae_in @ w["W_enc"] + w["b_enc"]
        norms = w["W_dec"].norm(dim=-1)
        if spec["rescale"]:
            hidden = hidden * norms
        if arch == "standard":
            f = torch.relu(hidden)
        elif arch == "jumprelu":
            threshold = w["threshold"] if "threshold" in w else w["log_threshold"].exp()
            f = torch.relu(hidden) * (hidden > threshold).float()
        elif arch == "batchtopk":
            f = torch.relu(hidden) * (hidden > float(w["topk_threshold"])).float()
        else:  # SAELens TopK: top-k of the pre-activations, then relu of those values
            values, index = hidden.topk(6, dim=-1)
            f = torch.zeros_like(hidden).scatter(-1, index, values.relu())
    acts = f / norms if spec["rescale"] else f
    if "scaling_factor" in w:
        acts = acts * w["scaling_factor"]
    return f, (acts @ w["W_dec"] + w["b_dec"]) / s


def ref_gemma_scope(spec, x, embedding=False):
    w = spec["w"]
    s = math.sqrt(D) if embedding else 1.0  # the module's output is sqrt(d) * the trained-on rows
    pre = (x / s) @ w["W_enc"] + w["b_enc"]
    f = (pre > w["threshold"]) * torch.relu(pre)
    return f, (f @ w["W_dec"] + w["b_dec"]) * s


def ref_sparsify(spec, x):
    w, k = spec["w"], spec["k"]
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    if spec["activation"] == "topk":
        values, index = pre.topk(k, dim=-1)
    else:
        values, index = pre.unflatten(-1, (k, -1)).max(-1)
        index = index + torch.arange(k) * (F // k)
    f = torch.zeros_like(pre).scatter(-1, index, values)
    recon = (values.unsqueeze(-1) * w["W_dec"][index]).sum(-2) + w["b_dec"]  # sparsify's decode
    return f, recon


def ref_llama_scope(spec, x):
    w, cfg = spec["w"], spec["cfg"]
    norm = cfg["dataset_average_activation_norm"]
    x_in = x * math.sqrt(D) / norm["in"]
    if cfg["apply_decoder_bias_to_pre_encoder"]:
        x_in = x_in - w["decoder.bias"]
    pre = x_in @ w["encoder.weight"].T + w["encoder.bias"]
    f = torch.relu(pre) * (pre > cfg["jump_relu_threshold"])
    out = f @ w["decoder.weight"].T + w["decoder.bias"]
    return f, out * norm["out"] / math.sqrt(D)


def _dl(cls):
    return (lambda p, seed: write_dictionary_learning(p, cls, seed), ref_dictionary_learning)


def _sl(arch, **kw):
    return (lambda p, seed: write_saelens(p, arch, seed, **kw), ref_saelens)


CASES = {
    "dl-AutoEncoder": _dl("AutoEncoder"),
    "dl-GatedAutoEncoder": _dl("GatedAutoEncoder"),
    "dl-JumpReluAutoEncoder": _dl("JumpReluAutoEncoder"),
    "dl-AutoEncoderTopK": _dl("AutoEncoderTopK"),
    "dl-BatchTopKSAE": _dl("BatchTopKSAE"),
    "dl-MatryoshkaBatchTopKSAE": _dl("MatryoshkaBatchTopKSAE"),
    "saelens-standard-v6-scaling-factor": _sl("standard", scaling_factor=True),
    "saelens-standard-pre6": _sl("standard", v6=False),
    "saelens-gated": _sl("gated"),
    "saelens-jumprelu-no-b-dec-in": _sl("jumprelu", apply_b_dec=False),
    "saelens-jumprelu-log-threshold-normalised": _sl("jumprelu", log_threshold=True, scale=0.37),
    "saelens-topk-pre6-normalised": _sl("topk", v6=False, scale=2.5),
    "saelens-topk-rescaled-by-decoder-norm": _sl("topk", rescale=True),
    "saelens-batchtopk": _sl("batchtopk"),
    "gemma-scope": (lambda p, seed: write_gemma_scope(p, seed), ref_gemma_scope),
    "sparsify-topk": (lambda p, seed: write_sparsify(p, seed), ref_sparsify),
    "sparsify-groupmax": (lambda p, seed: write_sparsify(p, seed, "groupmax", 4), ref_sparsify),
    "llama-scope": (lambda p, seed: write_llama_scope(p, seed), ref_llama_scope),
    "llama-scope-centred": (lambda p, seed: write_llama_scope(p, seed, centred=True), ref_llama_scope),
}


def _folder(tmp_path, case):
    return tmp_path / ("layers.1" if case.startswith("sparsify") else case)


def _input(seed=5):
    return _randn(_gen(seed), 40, D, scale=1.5)


@pytest.mark.parametrize("case", CASES)
def test_encode_and_decode_follow_the_format(tmp_path, case):
    write, reference = CASES[case]
    spec = write(_folder(tmp_path, case), 3)
    ae = load_dictionary(_folder(tmp_path, case), d_model=D, submodule="resid_1")
    x = _input()
    f_ref, recon_ref = reference(spec, x)
    f = ae.encode(x)
    active = (f_ref != 0).float().mean().item()
    assert 0.01 < active < 0.9, f"reference encoding not sparse-but-active ({active:.3f}): weak test"
    torch.testing.assert_close(f, f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ae.decode(f_ref), recon_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_decoder_directions_and_sparse_encode(tmp_path, case):
    write, _ = CASES[case]
    write(_folder(tmp_path, case), 4)
    ae = load_dictionary(_folder(tmp_path, case), d_model=D)
    ids = torch.tensor([0, 5, 17, 63, F - 1])
    basis = torch.eye(F)[ids]
    expected = ae.decode(basis) - ae.decode(torch.zeros(1, F))
    torch.testing.assert_close(decoder_directions(ae, ids), expected, atol=1e-5, rtol=1e-5)
    x = _input(6).view(5, 8, D).requires_grad_(True)
    full = ae.encode(x)[..., ids]
    part = sparse_encode(ae, x, ids)
    torch.testing.assert_close(part, full)
    seed = torch.randn(part.shape, generator=_gen(1))
    g_full, = torch.autograd.grad(full, x, seed)
    g_part, = torch.autograd.grad(part, x, seed)
    torch.testing.assert_close(g_part, g_full, atol=1e-5, rtol=1e-5)


def test_gemma_scope_embedding_sae_rescales_by_sqrt_d_model(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6"
    spec = write_gemma_scope(folder, 7)
    ae = load_dictionary(folder, d_model=D, submodule="embed")
    x = _input() * math.sqrt(D)  # scaled embeddings, as Gemma's embedding module outputs them
    f_ref, recon_ref = ref_gemma_scope(spec, x, embedding=True)
    assert 0.01 < (f_ref != 0).float().mean() < 0.9
    torch.testing.assert_close(ae.encode(x), f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ae.decode(f_ref), recon_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="hook_embed"):  # its path says embedding: not resid_1
        load_dictionary(folder, d_model=D, submodule="resid_1")


# ------------------------------------------------ whole models: splice and circuits ---

HOOKS = {"embed": ("hook_embed", "embed_tokens"), "attn": ("blocks.{}.hook_attn_out", "layers.{}.self_attn"),
         "mlp": ("blocks.{}.hook_mlp_out", "layers.{}.mlp"), "resid": ("blocks.{}.hook_resid_post", "layers.{}")}


def write_model_dictionaries(root: Path, config, fmt: str, skip=()) -> Path:
    """One dictionary per submodule in format `fmt`, and a mapping file pointing at each."""
    mapping = {}
    for i, sub in enumerate(submodules_for(config)):
        if sub.name in skip:
            continue
        tl, hf = HOOKS[sub.kind]
        tl, hf = tl.format(sub.layer), hf.format(sub.layer)
        if fmt == "saelens":  # release folders are named after the hook point
            folder = root / tl
            write_saelens(folder, "jumprelu", 10 + i, hook=tl)
        elif fmt == "sparsify":
            folder = root / hf
            write_sparsify(folder, 10 + i)
        elif fmt == "llama_scope":
            folder = root / sub.name
            write_llama_scope(folder, 10 + i, hook=tl)
        elif fmt == "gemma_scope":
            folder = root / sub.name
            write_gemma_scope(folder, 10 + i)
        else:
            folder = root / sub.name
            write_dictionary_learning(folder, fmt, 10 + i, submodule=sub.name)
        mapping[sub.name] = str(folder.relative_to(root))
    (root / "mapping.json").write_text(json.dumps(mapping))
    return root / "mapping.json"


@pytest.fixture(scope="module")
def inputs(small_model):
    from sfc_relp.tracing import tokenize

    return tokenize(small_model.tokenizer, ["The cat that the dogs chase sleeps", "Then Mary gave"])


@pytest.mark.parametrize("fmt", ["saelens", "sparsify", "gemma_scope", "llama_scope", "AutoEncoderTopK",
                                 "GatedAutoEncoder", "MatryoshkaBatchTopKSAE"])
def test_splice_leaves_logits_unchanged(tmp_path, small_model, inputs, fmt):
    from sfc_relp.loading import hf_model
    from sfc_relp.tracing import run_spliced

    mapping = write_model_dictionaries(tmp_path, small_model.config, fmt)
    dicts = dictionaries_for(small_model, mapping)
    assert len(dicts) == 10 and {describe(d)["format"] for d in dicts.values()} == \
        {fmt if fmt in ("saelens", "sparsify", "gemma_scope", "llama_scope") else "dictionary_learning"}
    with torch.no_grad():
        plain = hf_model(small_model)(**inputs).logits
    run = run_spliced(small_model, dicts, inputs, grad=False)
    torch.testing.assert_close(run.logits, plain, atol=1e-5, rtol=0)
    errors = [n.error.norm() / n.input.norm() for n in run.nodes.values()]
    assert min(errors) > 1e-3  # random SAEs reconstruct badly: the error node carries the rest


@pytest.mark.parametrize("fmt, method", [("saelens", "relp"), ("sparsify", "atp"), ("llama_scope", "atp")])
def test_circuit_end_to_end(tmp_path, small_model, fmt, method):
    from sfc_relp.circuit import discover_circuit
    from sfc_relp.datasets import generate

    dicts = dictionaries_for(small_model, write_model_dictionaries(tmp_path, small_model.config, fmt))
    data = generate("rc", "train", 4)
    graph = discover_circuit(small_model, dicts, data, method, node_threshold=1e-3,
                             edge_threshold=1e-4, batch_size=4)
    assert graph.graph["edges_computed"]
    submodules = {d["submodule"] for _, d in graph.nodes(data=True)}
    assert len(submodules) > 3 and graph.number_of_edges() > 0
    features = [d for _, d in graph.nodes(data=True) if d.get("feature") is not None]
    assert features and all(0 <= d["feature"] < F for d in features)


@pytest.mark.parametrize("missing", ["neurons", "skip"])
def test_missing_dictionaries(tmp_path, small_model, missing):
    from sfc_relp.circuit import discover_circuit
    from sfc_relp.datasets import generate

    absent = ("attn_1", "mlp_2")
    mapping = write_model_dictionaries(tmp_path, small_model.config, "saelens", skip=absent)
    with pytest.raises(UserError, match="attn_1, mlp_2"):
        dictionaries_for(small_model, mapping)
    dicts = dictionaries_for(small_model, mapping, missing=missing)
    if missing == "skip":
        assert set(absent).isdisjoint(dicts) and len(dicts) == 8
    else:
        assert all(dicts[n].info.format == "neurons" and dicts[n].dict_size == D for n in absent)
    graph = discover_circuit(small_model, dicts, generate("rc", "train", 4), "atp",
                             node_threshold=1e-3, edge_threshold=1e-4, batch_size=4)
    in_graph = {d["submodule"] for _, d in graph.nodes(data=True)}
    assert set(absent).isdisjoint(in_graph) if missing == "skip" else set(absent) <= in_graph
    assert graph.number_of_edges() > 0


def test_marks_layout_with_other_formats_and_dict_id(tmp_path, small_model):
    root = tmp_path / "root"
    for i, sub in enumerate(submodules_for(small_model.config)):
        tl = HOOKS[sub.kind][0].format(sub.layer)
        write_saelens(root / "small-pythia" / sub.dictionary_dirname / f"a_{F}", "standard", i, hook=tl)
        write_gemma_scope(root / "small-pythia" / sub.dictionary_dirname / f"b_{F}", i)
    with pytest.raises(UserError, match="several dictionaries"):
        dictionaries_for(small_model, root)
    assert {d.info.format for d in dictionaries_for(small_model, root, dict_id="a").values()} == {"saelens"}
    assert {d.info.format for d in dictionaries_for(small_model, root, dict_id="b").values()} == {"gemma_scope"}


# --------------------------------------------------------------------- refusals ---

def test_mapping_to_the_wrong_hook_point_is_refused(tmp_path, small_model):
    mapping = write_model_dictionaries(tmp_path, small_model.config, "saelens")
    entries = json.loads(mapping.read_text())
    entries["resid_1"], entries["mlp_1"] = entries["mlp_1"], entries["resid_1"]
    mapping.write_text(json.dumps(entries))
    with pytest.raises(UserError, match=r"trained on .blocks\.1\.hook_resid_post. \(resid_1\), not on mlp_1") as err:
        dictionaries_for(small_model, mapping)
    assert "\n" not in str(err.value)


def test_sparsify_module_path_is_checked(tmp_path):
    write_sparsify(tmp_path / "layers.2", 1)
    with pytest.raises(UserError, match=r"'layers.2' \(resid_2\), not on resid_1"):
        load_dictionary(tmp_path / "layers.2", D, submodule="resid_1")
    assert load_dictionary(tmp_path / "layers.2", D, submodule="resid_2").dict_size == F


@pytest.mark.parametrize("hook", ["blocks.1.attn.hook_z", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"])
def test_unsupported_hook_points_are_refused(tmp_path, hook):
    write_saelens(tmp_path / "sae", "standard", 1, hook=hook)
    with pytest.raises(UserError, match="supported: hook_embed, blocks.L.hook_resid_post") as err:
        load_dictionary(tmp_path / "sae", D, submodule="resid_1")
    assert hook in str(err.value)


def test_unknown_mapping_entry_and_missing_path(tmp_path, small_model):
    (tmp_path / "m.json").write_text(json.dumps({"resid_9": "x"}))
    with pytest.raises(UserError, match="'resid_9' is not a submodule"):
        dictionaries_for(small_model, tmp_path / "m.json")
    (tmp_path / "m.json").write_text(json.dumps({"resid_1": "nowhere"}))
    with pytest.raises(UserError, match="nowhere: it does not exist"):
        dictionaries_for(small_model, tmp_path / "m.json", missing="skip")


def test_yaml_mapping(tmp_path, small_model):
    pytest.importorskip("yaml")
    mapping = write_model_dictionaries(tmp_path, small_model.config, "sparsify")
    entries = json.loads(mapping.read_text())
    (tmp_path / "m.yaml").write_text("".join(f"{k}: '{v}'\n" for k, v in entries.items()))
    assert len(dictionaries_for(small_model, tmp_path / "m.yaml")) == 10


def test_unrecognised_directory_names_the_files_looked_for(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(UserError) as err:
        load_dictionary(tmp_path, D)
    message = str(err.value)
    for name in ("ae.pt", "sae_weights.safetensors", "sae.safetensors", "params.npz",
                 "hyperparams.json", "weights.bin"):
        assert name in message
    assert "\n" not in message


def test_wrong_shapes_name_the_file_and_both_shapes(tmp_path):
    write_saelens(tmp_path / "sae", "jumprelu", 1)
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    tensors["W_dec"] = tensors["W_dec"][:, :10].contiguous()
    save_file(tensors, str(tmp_path / "sae" / "sae_weights.safetensors"))
    with pytest.raises(UserError, match=r"sae_weights\.safetensors: W_dec has shape \(96, 10\), "
                                        r"expected \(96, 64\)"):
        load_dictionary(tmp_path / "sae", D)
    write_gemma_scope(tmp_path / "gs", 1)
    with pytest.raises(UserError, match=r"params\.npz: dictionary input width 64 .* d_model 32"):
        load_dictionary(tmp_path / "gs", 32)


@pytest.mark.parametrize("fmt", ["saelens", "sparsify", "llama_scope", "ae.pt", "npz"])
def test_truncated_files_get_one_line_errors(tmp_path, fmt):
    folder = tmp_path / "d"
    target = {"saelens": lambda: (write_saelens(folder, "standard", 1), folder / "sae_weights.safetensors"),
              "sparsify": lambda: (write_sparsify(folder, 1), folder / "sae.safetensors"),
              "llama_scope": lambda: (write_llama_scope(folder, 1), folder / "checkpoints" / "final.safetensors"),
              "ae.pt": lambda: (write_dictionary_learning(folder, "AutoEncoder", 1), folder / "ae.pt"),
              "npz": lambda: (write_gemma_scope(folder, 1), folder / "params.npz")}[fmt]()[1]
    data = target.read_bytes()
    target.write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError) as err:
        load_dictionary(folder, D)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_pickled_module_in_ae_pt_is_refused(tmp_path):
    from dictionary_learning.dictionary import AutoEncoder

    folder = tmp_path / "d"
    folder.mkdir()
    torch.save(AutoEncoder(D, F), folder / "ae.pt")  # the whole module: needs unpickling
    with pytest.raises(UserError, match="weights-only") as err:
        load_dictionary(folder, D)
    assert "\n" not in str(err.value)


def test_npz_holding_objects_is_refused(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    objects = np.array([{"W_enc": 1}], dtype=object)
    np.savez(folder / "params.npz", W_enc=objects, W_dec=objects, b_enc=objects, b_dec=objects,
             threshold=objects)
    with pytest.raises(UserError, match="Python objects") as err:
        load_dictionary(folder, D)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"skip_connection": True, "tensors": {"W_skip": torch.zeros(D, D)}}, "W_skip"),
    ({"transcode": True}, "transcoder"),
])
def test_sparsify_refusals(tmp_path, change, message):
    write_sparsify(tmp_path / "layers.1", 1, **change)
    with pytest.raises(UserError, match=message):
        load_dictionary(tmp_path / "layers.1", D)


def test_saelens_refusals(tmp_path):
    write_saelens(tmp_path / "a", "standard", 1)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    for key, value, message in [("normalize_activations", "layer_norm", "rescales each token"),
                                ("normalize_activations", "expected_average_only_in", "activation_scaler.json"),
                                ("architecture", "transcoder", "transcoders are not SAEs")]:
        (tmp_path / "a" / "cfg.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(UserError, match=message):
            load_dictionary(tmp_path / "a", D)


def test_llama_scope_transcoder_is_refused(tmp_path):
    write_llama_scope(tmp_path / "tc", 1)
    cfg = json.loads((tmp_path / "tc" / "hyperparams.json").read_text())
    cfg["hook_point_out"] = "blocks.1.hook_mlp_out"
    (tmp_path / "tc" / "hyperparams.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="transcoder"):
        load_dictionary(tmp_path / "tc", D)


def test_inspect_cli_lists_every_submodule(tmp_path, small_bundle, capsys):
    from transformers import AutoConfig

    from sfc_relp.cli import main

    config = AutoConfig.from_pretrained(small_bundle[0])
    mapping = write_model_dictionaries(tmp_path, config, "llama_scope", skip=("mlp_0",))
    assert main(["dictionaries", "inspect", str(mapping), "--model", str(small_bundle[0])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 11
    resid = next(line for line in lines if line.startswith("resid_1 "))
    assert "llama_scope" in resid and "jumprelu threshold 0.4" in resid and " 96 " in resid
    assert "x * 0.6667 in, / 0.8 out" in resid and "final.safetensors" in resid
    assert "(none)" in next(line for line in lines if line.startswith("mlp_0 "))


def test_loading_dictionaries_without_a_model(tmp_path, small_model):
    mapping = write_model_dictionaries(tmp_path, small_model.config, "gemma_scope")
    dicts = load_dictionaries(mapping, "small-pythia", submodules_for(small_model.config), D,
                              dtype=torch.float64)
    assert all(d.W_enc.dtype == torch.float64 for d in dicts.values())


def test_cli_circuit_records_missing_dictionaries(tmp_path, small_bundle, capsys):
    from transformers import AutoConfig

    from sfc_relp.circuit import load_circuit
    from sfc_relp.cli import main

    config = AutoConfig.from_pretrained(small_bundle[0])
    mapping = write_model_dictionaries(tmp_path / "d", config, "sparsify", skip=("resid_0",))
    common = ["--model", str(small_bundle[0]), "--dictionaries", str(mapping)]
    assert main(["circuit", *common, "--dataset", "rc", "--method", "atp", "--n-examples", "4",
                 "--node-threshold", "0.001", "--out", str(tmp_path / "out")]) == 1
    assert "resid_0" in capsys.readouterr().err
    assert main(["circuit", *common, "--missing", "skip", "--dataset", "rc", "--method", "atp",
                 "--n-examples", "4", "--node-threshold", "0.001", "--out", str(tmp_path / "out")]) == 0
    saved = next((tmp_path / "out").glob("*.json"))
    meta = load_circuit(saved).graph
    assert meta["missing_dictionaries"] == {"policy": "skip", "neurons": [], "skipped": ["resid_0"]}
    capsys.readouterr()
    assert main(["evaluate", "--circuit", str(saved), "--n-examples", "4", "--json"]) == 0
    assert "faithfulness" in json.loads(capsys.readouterr().out)


def test_in_memory_dictionary_learning_modules(tmp_path):
    from dictionary_learning.dictionary import AutoEncoder

    torch.manual_seed(0)
    ae = AutoEncoder(D, F)
    ids = torch.tensor([3, 50])
    torch.testing.assert_close(decoder_directions(ae, ids), ae.decoder.weight[:, ids].T)
    x = _input()
    torch.testing.assert_close(sparse_encode(ae, x, ids), ae.encode(x)[..., ids].detach())


def test_marks_layout_variant_in_no_known_format(tmp_path, small_model):
    staging, root = tmp_path / "staging", tmp_path / "root" / "small-pythia"
    mapping = write_model_dictionaries(staging, small_model.config, "AutoEncoder")
    for name, folder in json.loads(mapping.read_text()).items():  # into Marks et al.'s layout
        sub = next(s for s in submodules_for(small_model.config) if s.name == name)
        (root / sub.dictionary_dirname).mkdir(parents=True)
        (staging / folder).rename(root / sub.dictionary_dirname / f"1_{F}")
    assert len(dictionaries_for(small_model, tmp_path / "root")) == 10
    (root / "mlp_out_layer2" / f"1_{F}" / "ae.pt").rename(root / "mlp_out_layer2" / f"1_{F}" / "model.bin")
    with pytest.raises(UserError, match=r"mlp_out_layer2/1_96 holds no dictionary.*found config.json, model.bin"):
        dictionaries_for(small_model, tmp_path / "root")


@pytest.mark.parametrize("fmt", ["sparsify", "saelens"])
def test_directory_of_hook_named_dictionaries(tmp_path, small_model, fmt):
    """A sparsify export (`layers.L/`, `embed_tokens/`) or SAELens folders need no mapping:
    each dictionary's own metadata says where it goes; other hook points are passed over."""
    mapping = write_model_dictionaries(tmp_path, small_model.config, fmt, skip=("attn_0",))
    mapping.unlink()
    write_saelens(tmp_path / "z", "standard", 1, hook="blocks.0.attn.hook_z")
    dicts = dictionaries_for(small_model, tmp_path, missing="skip")
    assert sorted(dicts) == sorted(s.name for s in submodules_for(small_model.config) if s.name != "attn_0")
    expected = "layers.2" if fmt == "sparsify" else "blocks.2.hook_resid_post"
    assert Path(dicts["resid_2"].info.path).parent.name == expected
    with pytest.raises(UserError, match="attn_0"):
        dictionaries_for(small_model, tmp_path)
