"""Dictionary loading: Marks et al.'s layout, config dispatch, safe loading, clear errors."""

import argparse
import json
import shutil

import pytest
import torch

from sfc_relp.architectures import submodules_for
from sfc_relp.dictionaries import load_dictionaries, load_dictionary, neuron_dictionaries
from sfc_relp.errors import UserError


def _classes():
    from dictionary_learning.dictionary import AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {
        "AutoEncoder": lambda: AutoEncoder(16, 40),
        "GatedAutoEncoder": lambda: GatedAutoEncoder(16, 40),
        "JumpReluAutoEncoder": lambda: JumpReluAutoEncoder(16, 40),
        "AutoEncoderTopK": lambda: AutoEncoderTopK(16, 40, k=5),
        "BatchTopKSAE": lambda: BatchTopKSAE(16, 40, k=5),
    }


CASES = [(name, True) for name in _classes()] + [  # without config.json: inferred from keys
    (name, False) for name in ("AutoEncoder", "GatedAutoEncoder", "JumpReluAutoEncoder",
                               "AutoEncoderTopK")]


@pytest.mark.parametrize("class_name, with_config", CASES)
def test_config_dispatch_round_trip(tmp_path, class_name, with_config):
    torch.manual_seed(0)
    ae = _classes()[class_name]()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / "10_40"
    folder.mkdir()
    torch.save(ae.state_dict(), folder / "ae.pt")
    if with_config:
        (folder / "config.json").write_text(json.dumps({"trainer": {"dict_class": class_name}}))
    loaded = load_dictionary(folder, d_model=16)
    assert loaded.info.cls == class_name
    x = torch.randn(3, 16)
    assert torch.allclose(loaded.encode(x), ae.encode(x), atol=1e-6)
    assert torch.allclose(loaded.decode(ae.encode(x)), ae.decode(ae.encode(x)), atol=1e-6)


def test_width_mismatch_names_file_and_shapes(small_bundle):
    with pytest.raises(UserError) as err:
        load_dictionary(small_bundle[1] / "small-pythia" / "embed" / "10_128", d_model=512)
    message = str(err.value)
    assert "ae.pt" in message and "64" in message and "512" in message and "\n" not in message


def test_missing_submodules_are_listed(small_bundle, small_model, tmp_path):
    root = tmp_path / "dicts"
    shutil.copytree(small_bundle[1], root)
    shutil.rmtree(root / "small-pythia" / "attn_out_layer1")
    shutil.rmtree(root / "small-pythia" / "mlp_out_layer2")
    with pytest.raises(UserError, match="attn_1, mlp_2"):
        load_dictionaries(root, "small-pythia", submodules_for(small_model.config), 64)


def test_unknown_model_directory(small_bundle, small_model):
    with pytest.raises(UserError, match="no dictionaries for model 'nope'"):
        load_dictionaries(small_bundle[1], "nope", submodules_for(small_model.config), 64)


def test_pickled_objects_are_refused(tmp_path):
    """A file that needs unpickling of arbitrary classes is rejected, never executed."""
    folder = tmp_path / "10_4"
    folder.mkdir()
    torch.save({"bias": torch.zeros(4), "obj": argparse.Namespace(run="code")}, folder / "ae.pt")
    with pytest.raises(UserError, match="weights-only"):
        load_dictionary(folder, d_model=4)


def test_several_variants_need_a_dict_id(small_bundle, small_model, tmp_path):
    root = tmp_path / "dicts"
    shutil.copytree(small_bundle[1], root)
    embed = root / "small-pythia" / "embed"
    shutil.copytree(embed / "10_128", embed / "5_128")
    subs = submodules_for(small_model.config)
    with pytest.raises(UserError, match="several dictionaries"):
        load_dictionaries(root, "small-pythia", subs, 64)
    loaded = load_dictionaries(root, "small-pythia", subs, 64, dict_id="10")
    assert len(loaded) == len(subs)


def test_neuron_mode_is_identity(small_model):
    dicts = neuron_dictionaries(submodules_for(small_model.config), 64)
    x = torch.randn(2, 3, 64)
    for ae in dicts.values():
        assert torch.equal(ae.decode(ae.encode(x)), x) and ae.dict_size == 64
