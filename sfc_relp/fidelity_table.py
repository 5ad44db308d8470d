"""The Table 5 analog over bundled models, beside the seed paper's numbers for real models.

PAPER_TABLE5 is transcribed from the paper's Appendix B, Table 5: Pearson correlation with
activation patching over 100 IOI prompts (resid / attn / mlp; AtP and RelP). Those are
different, real models; a bundled model is set beside the real models of its family only.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .files import atomic_write

# model: {method: (resid, attn, mlp)}
PAPER_TABLE5 = {
    "GPT-2 small": {"atp": (0.753, 0.979, 0.195), "relp": (0.968, 0.962, 0.992)},
    "GPT-2 medium": {"atp": (0.671, 0.961, 0.551), "relp": (0.884, 0.982, 0.993)},
    "GPT-2 large": {"atp": (0.740, 0.461, 0.006), "relp": (0.853, 0.965, 0.956)},
    "Pythia-70M": {"atp": (0.728, 0.981, 0.507), "relp": (0.898, 0.986, 0.967)},
    "Pythia-410M": {"atp": (0.695, 0.879, 0.501), "relp": (0.874, 0.903, 0.948)},
    "Qwen2-0.5B": {"atp": (0.684, 0.933, 0.717), "relp": (0.922, 0.965, 0.981)},
    "Qwen2-7B": {"atp": (0.230, 0.395, 0.471), "relp": (0.549, 0.569, 0.622)},
    "Gemma2-2B": {"atp": (0.391, 0.942, 0.910), "relp": (0.769, 0.956, 0.952)},
}
PAPER_MODELS_OF_FAMILY = {
    "gpt2": ("GPT-2 small", "GPT-2 medium", "GPT-2 large"),
    "gpt_neox": ("Pythia-70M", "Pythia-410M"),
    "qwen2": ("Qwen2-0.5B", "Qwen2-7B"),
    "gemma2": ("Gemma2-2B",),
}
METHOD_NAMES = {"atp": "AtP", "relp": "RelP", "ig": "IG-10"}
KINDS = ("resid", "attn", "mlp")
COLUMNS = ["model", "family", "source", "method"] + [f"{k} {c}" for k in KINDS for c in ("avg", "per")]


def table_rows(results: list[dict]) -> list[dict]:
    """One row per (model, method), each bundled model followed by its family's paper rows.

    `results` holds {"model", "family", "correlations"} per bundled model, correlations as
    returned by `sfc_relp.fidelity.correlations`. Paper values go in the "avg" columns (the
    paper gives one PCC per component; its Figure 2 maps are prompt-averaged).
    """
    rows, families_done = [], set()
    for result in results:
        for method, by_kind in result["correlations"].items():
            row = {"model": result["model"], "family": result["family"],
                   "source": "this project (bundled, trained here)", "method": METHOD_NAMES.get(method, method)}
            for kind in KINDS:
                values = by_kind.get(kind, {})
                row[f"{kind} avg"] = _fmt(values.get("prompt_averaged"))
                row[f"{kind} per"] = _fmt(values.get("per_prompt"))
            rows.append(row)
        if result["family"] in families_done:
            continue
        families_done.add(result["family"])
        for paper_model in PAPER_MODELS_OF_FAMILY.get(result["family"], ()):
            for method, values in PAPER_TABLE5[paper_model].items():
                row = {"model": paper_model, "family": result["family"],
                       "source": "paper, Table 5 (a different, real model)",
                       "method": METHOD_NAMES[method]}
                for kind, value in zip(KINDS, values):
                    row[f"{kind} avg"], row[f"{kind} per"] = f"{value:.3f}", ""
                rows.append(row)
    return rows


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], stem) -> list[Path]:
    """`<stem>.md` and `<stem>.csv`, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    texts = {"md": to_markdown(rows), "csv": buffer.getvalue()}
    return [atomic_write(Path(f"{stem}.{suffix}"), lambda tmp, t=text: Path(tmp).write_text(t))
            for suffix, text in texts.items()]
