"""Model loading: local directories, offline HF ids, bad input."""

import subprocess
import sys

import pytest

from sfc_relp.errors import UserError
from sfc_relp.loading import load_model, model_name, parse_dtype


def test_loads_local_directory(small_bundle, small_model):
    assert small_model.config.model_type == "gpt_neox"
    assert model_name(small_model) == "small-pythia"
    assert small_model.tokenizer(" friends")["input_ids"] == [3858]


def test_uncached_hub_id_is_a_one_line_error():
    with pytest.raises(UserError) as err:
        load_model("EleutherAI/pythia-70m-deduped-not-cached")
    assert "HF cache" in str(err.value) and "\n" not in str(err.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_model(str(tmp_path))


def test_bad_dtype():
    with pytest.raises(UserError, match="unknown dtype"):
        parse_dtype("float7")


def test_cli_missing_model_exits_1_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sfc_relp", "trace", "--model",
                           "EleutherAI/pythia-70m-deduped-not-cached"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "HF cache" in proc.stderr
