"""Loading 19 dictionaries of width 32768 at d_model 512 (Pythia-70M's set): the old path
(dictionary_learning's AutoEncoder built with random initialisation, then load_state_dict)
against `load_dictionaries` (plain tensors from a memory-mapped `ae.pt`, nothing initialised).

Both read the same files, written once into a temporary directory with
`save_random_dictionaries`, with a warm page cache (each path runs once untimed first).
Reported: median wall time of `--repeats` loads, and of a load followed by one encode+decode
per dictionary (which touches every weight page, so lazy mapping cannot hide work).

    python benchmarks/dictionary_loading.py [--repeats 3] [--width 32768]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from sfc_relp.architectures import submodules_for  # noqa: E402
from sfc_relp.dictionaries import load_dictionaries  # noqa: E402
from sfc_relp.random_model import PYTHIA_70M, save_random_dictionaries  # noqa: E402

MODEL = "pythia-70m-deduped"


def old_path(root: Path, submodules) -> dict:
    """What loading did before: a randomly initialised AutoEncoder per file, then its weights."""
    from dictionary_learning.dictionary import AutoEncoder

    out = {}
    for sub in submodules:
        folder = next((root / MODEL / sub.dictionary_dirname).iterdir())
        state = torch.load(folder / "ae.pt", map_location="cpu", weights_only=True)
        dict_size, d = state["encoder.weight"].shape
        ae = AutoEncoder(d, dict_size)
        ae.load_state_dict(state)
        out[sub.name] = ae.to(dtype=torch.float32).eval().requires_grad_(False)
    return out


def new_path(root: Path, submodules) -> dict:
    return load_dictionaries(root, MODEL, submodules, PYTHIA_70M["hidden_size"])


def use(dicts: dict) -> None:
    x = torch.randn(1, PYTHIA_70M["hidden_size"])
    with torch.no_grad():
        for ae in dicts.values():
            ae.decode(ae.encode(x))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=32768)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(**PYTHIA_70M)
    subs = submodules_for(config)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        save_random_dictionaries(root, MODEL, config, args.width)
        size = sum(p.stat().st_size for p in root.rglob("ae.pt")) / 2**30
        print(f"wrote {len(subs)} dictionaries of width {args.width} ({size:.2f} GiB) in "
              f"{time.perf_counter() - start:.1f}s")
        for fn in (old_path, new_path):  # warm the page cache and check equality once
            fn(root, subs)
        old, new = old_path(root, subs), new_path(root, subs)
        x = torch.randn(3, PYTHIA_70M["hidden_size"])
        for name in old:
            assert torch.allclose(old[name].decode(old[name].encode(x)), new[name].decode(new[name].encode(x)),
                                  atol=1e-5)
        del old, new
        rows = [("old: AutoEncoder init + load_state_dict", lambda: old_path(root, subs),
                 lambda: use(old_path(root, subs))),
                ("new: load_dictionaries (plain tensors, mmap)", lambda: new_path(root, subs),
                 lambda: use(new_path(root, subs)))]
        print(f"{'path':<46} {'load (s)':>9} {'load + use (s)':>15}")
        for label, load, load_and_use in rows:
            print(f"{label:<46} {timed(load, args.repeats):>9.2f} {timed(load_and_use, args.repeats):>15.2f}")


if __name__ == "__main__":
    main()
