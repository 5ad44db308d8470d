"""Faithfulness at matched circuit sizes for relp, ig (10 steps) and atp on the four agreement
datasets (the seed paper's Figure 3 comparison), on the bundled model.

    python benchmarks/faithfulness_matched.py [--n-examples 64] [--out docs]

Writes `faithfulness_matched.png` (one panel per dataset) and prints a markdown table of
faithfulness interpolated (log node count) at fixed circuit sizes.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

from sfc_relp.datasets import load_task  # noqa: E402
from sfc_relp.dictionaries import dictionaries_for  # noqa: E402
from sfc_relp.loading import load_model  # noqa: E402
from sfc_relp.sweep import sweep  # noqa: E402

DATASETS = ("simple", "nounpp", "rc", "within_rc")
METHODS = ("relp", "ig", "atp")
SIZES = (25, 50, 100, 200, 400)


def at_size(rows: list[dict], method: str, size: int) -> float:
    points = sorted((r["n_nodes"], r["faithfulness"]) for r in rows if r["method"] == method and r["n_nodes"] > 0)
    n, f = zip(*points)
    if size < n[0] or size > n[-1]:
        return float("nan")
    return float(np.interp(np.log(size), np.log(n), f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-examples", type=int, default=64)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model()
    saes = dictionaries_for(model)
    thresholds = tuple(float(t) for t in np.logspace(-3, 0.5, 15))
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(16, 3.8), sharey=True)
    print("| dataset | method | " + " | ".join(f"{s} nodes" for s in SIZES) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in SIZES) + " |")
    for ax, dataset in zip(axes, DATASETS):
        train = load_task(dataset, "train", args.n_examples, tokenizer=model.tokenizer)
        test = load_task(dataset, "test", args.n_examples, tokenizer=model.tokenizer)
        rows = sweep(model, saes, train, test, METHODS, thresholds)
        for method in METHODS:
            values = " | ".join(f"{at_size(rows, method, s):.3f}" for s in SIZES)
            print(f"| {dataset} | {method} | {values} |", flush=True)
            points = sorted((r["n_nodes"], r["faithfulness"]) for r in rows
                            if r["method"] == method and r["n_nodes"] > 0)
            ax.plot(*zip(*points), marker="o", markersize=3, label=method)
        ax.set_xscale("log")
        ax.set_title(f"{dataset} ({len(test)} test prompts)")
        ax.set_xlabel("nodes in circuit")
        ax.axhline(1.0, color="grey", linewidth=0.5)
    axes[0].set_ylabel("faithfulness (mean ablation)")
    axes[0].legend()
    fig.tight_layout()
    out = Path(args.out) / "faithfulness_matched.png"
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
