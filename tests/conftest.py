"""Shared fixtures: the real tokenizer, and small random-weight models with SAEs on disk."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", message=".*deprecated.*")

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILE = ROOT.parent / "shared" / "data" / "gpt-neox-20b-tokenizer.json"
SMALL = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=3)


@pytest.fixture(scope="session")
def tokenizer():
    if not TOKENIZER_FILE.is_file():
        pytest.skip(f"real GPT-NeoX tokenizer not found at {TOKENIZER_FILE}")
    from sfc_relp.random_model import load_tokenizer_file

    return load_tokenizer_file(TOKENIZER_FILE)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory, tokenizer):
    """A 3-layer random Pythia-architecture model and 128-wide SAEs, saved in the real formats."""
    from transformers import AutoConfig

    from sfc_relp.random_model import save_random_dictionaries, save_random_model

    out = tmp_path_factory.mktemp("small")
    model_dir = save_random_model(out / "small-pythia", tokenizer, seed=1, **SMALL)
    config = AutoConfig.from_pretrained(model_dir)
    save_random_dictionaries(out / "dicts", "small-pythia", config, width=128, seed=2)
    return model_dir, out / "dicts"


@pytest.fixture(scope="session")
def small_model(small_bundle):
    from sfc_relp.loading import load_model

    return load_model(str(small_bundle[0]))


@pytest.fixture(scope="session")
def small_dictionaries(small_model, small_bundle):
    from sfc_relp.dictionaries import dictionaries_for

    return dictionaries_for(small_model, small_bundle[1])


def double(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)
