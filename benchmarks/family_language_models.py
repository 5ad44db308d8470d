"""Can each family's tiny config learn the tasks at the shipped budget? Language models only.

Trains the tiny GPT-NeoX / GPT-2 / Qwen2 / Gemma2 language models exactly as `sfc-relp zoo train
--arch ARCH` does (same corpus, seed and `full` budget) but skips the SAEs, so it runs before a
family has its architecture record; prints held-out task accuracy per family and the training
time. Nothing is saved.

    python benchmarks/family_language_models.py [--archs gpt2,qwen2,gemma2] [--budget full]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

warnings.filterwarnings("ignore")

from sfc_relp.training.bundle import BUDGETS  # noqa: E402
from sfc_relp.training.corpus import build_corpus, vocabulary_words  # noqa: E402
from sfc_relp.training.language_model import TINY_CONFIGS, accuracies, train_language_model  # noqa: E402
from sfc_relp.training.tokenizer import build_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(TINY_CONFIGS))
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = BUDGETS[args.budget]
    tokenizer = build_tokenizer(vocabulary_words())
    sentences = build_corpus(settings["n_sentences"], args.seed)
    for arch in args.archs.split(","):
        started = time.time()
        model = train_language_model(tokenizer, sentences, settings["lm_steps"], settings["lm_batch"],
                                     seed=args.seed, progress=False, arch=arch)
        seconds = time.time() - started
        print(json.dumps({"arch": arch, "seconds": round(seconds, 1),
                          "parameters": sum(p.numel() for p in model.parameters()),
                          "accuracy": accuracies(model, tokenizer, "test")}), flush=True)


if __name__ == "__main__":
    main()
