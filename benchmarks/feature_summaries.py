"""Feature summaries at Pythia-70M's shapes: time per document and peak memory against corpus size.

A random-weight Pythia-70M-shaped model (real GPT-NeoX tokenizer) and a 32768-wide AutoEncoder
on one submodule; every feature of that submodule is summarised (top-k contexts, density, logit
lens over the 50304-token vocabulary). Memory should not grow with the number of documents
(a running top-k, not all activations). Each corpus size runs in a fresh process so peak RSS is
its own. Usage: python benchmarks/feature_summaries.py [--docs 64,256] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT.parent / "shared" / "data" / "gpt-neox-20b-tokenizer.json"


def one(n_docs: int, batch_size: int, width: int, submodule: str) -> dict:
    import torch
    from dictionary_learning.dictionary import AutoEncoder

    from sfc_relp.features import feature_summaries, load_corpus
    from sfc_relp.loading import load_model
    from sfc_relp.random_model import load_tokenizer_file, save_random_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(str(save_random_model(Path(tmp) / "random-pythia", load_tokenizer_file(TOKENIZER))))
    torch.manual_seed(0)
    dictionaries = {submodule: AutoEncoder(512, width).eval().requires_grad_(False)}
    sentences = load_corpus("ioi", 4 * n_docs)
    docs = [" ".join(sentences[i:i + 4]) for i in range(0, 4 * n_docs, 4)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = feature_summaries(model, dictionaries, docs, [submodule], top_k=10, context=8,
                            batch_size=batch_size, max_length=64)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"documents": n_docs, "tokens": out["metadata"]["n_tokens"], "features": len(out["features"]),
            "seconds": round(seconds, 1), "ms_per_document": round(1000 * seconds / n_docs, 1),
            "peak_rss_mib": round(peak / 1024), "rss_growth_mib": round((peak - before) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="64,256")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=32768)
    parser.add_argument("--submodule", default="resid_3")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.batch_size, args.width, args.submodule)))
        return
    print("| documents | tokens | features | seconds | ms / document | peak RSS (MiB) | RSS growth in the call (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in [int(x) for x in args.docs.split(",")]:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--batch-size", str(args.batch_size),
                               "--width", str(args.width), "--submodule", args.submodule],
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {r['documents']} | {r['tokens']} | {r['features']} | {r['seconds']} | {r['ms_per_document']} "
              f"| {r['peak_rss_mib']} | {r['rss_growth_mib']} |")


if __name__ == "__main__":
    main()
