"""The seed paper's Figure 2 for one model: layer x position heatmaps of prompt-averaged
component effects, one row per method (activation patching first), one column per component.

Prompts are left-padded, so positions are aligned at the end; the x axis is labelled with the
tokens of the first prompt that has no padding. Each column shares one symmetric colour scale,
so a method's map can be compared with activation patching's by eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fidelity import FidelityRun
from .files import atomic_write

METHOD_LABELS = {"exact": "activation patching", "atp": "AtP", "relp": "RelP", "ig": "IG (10 steps)"}
COMPONENT_LABELS = {"resid": "residual stream", "attn": "attention output", "mlp": "MLP output"}


def draw_fidelity(run: FidelityRun, stem) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg`; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["exact"] + run.methods
    kinds = run.components
    labels = run.position_labels()
    n_layers = run.effects["exact"][kinds[0]].shape[0]
    width = max(3.2, 0.32 * len(labels) + 1.2)
    fig, axes = plt.subplots(len(methods), len(kinds), squeeze=False,
                             figsize=(width * len(kinds), 1.0 + (0.28 * n_layers + 0.9) * len(methods)),
                             constrained_layout=True)
    for column, kind in enumerate(kinds):
        maps = [run.prompt_averaged(m, kind) for m in methods]
        scale = max(float(np.abs(m).max()) for m in maps) or 1.0
        for row, (method, values) in enumerate(zip(methods, maps)):
            ax = axes[row, column]
            image = ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto",
                              interpolation="nearest")
            ax.set_yticks(range(n_layers))
            ax.set_yticklabels([str(i) for i in range(n_layers)], fontsize=7)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels if row == len(methods) - 1 else [], rotation=90, fontsize=7)
            if row == 0:
                ax.set_title(COMPONENT_LABELS.get(kind, kind), fontsize=10)
            if column == 0:
                ax.set_ylabel(f"{METHOD_LABELS.get(method, method)}\nlayer", fontsize=9)
        fig.colorbar(image, ax=axes[:, column], shrink=0.6, label="effect on logit difference")
    fig.suptitle(f"{run.model}: {run.task}, {len(run.clean_prefix)} prompts, prompt-averaged "
                 "effects of patching one component at one position", fontsize=10)
    paths = []
    for suffix in ("png", "svg"):
        target = Path(f"{stem}.{suffix}")
        paths.append(atomic_write(target, lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=130)))
    plt.close(fig)
    return paths
