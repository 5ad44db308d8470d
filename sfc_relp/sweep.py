"""Faithfulness and completeness against node threshold, several methods side by side."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .attribution import get_method, logit_diff
from .circuit import accumulate_effects, batches_of, select_nodes
from .errors import UserError
from .evaluation import baseline_runs, evaluate_circuit
from .files import atomic_write
from .placement import input_device

DEFAULT_THRESHOLDS = tuple(float(t) for t in np.logspace(-4, 0, 15))
COLUMNS = ("method", "node_threshold", "n_nodes", "faithfulness", "completeness")


def sweep(model, dictionaries, train, test, methods=("relp", "ig", "atp"),
          thresholds=DEFAULT_THRESHOLDS, batch_size: int = 32, **evaluation_options) -> list[dict]:
    """Rows of (method, threshold, n_nodes, faithfulness, completeness): node effects from
    `train`, circuits evaluated on `test`. The test set's full and patch runs are computed
    once and shared by every evaluation."""
    methods, thresholds = list(methods), list(thresholds)
    if not methods or not thresholds:
        raise UserError("a sweep needs at least one method and one threshold")
    rows = []
    batches = batches_of(model.tokenizer, train, batch_size, input_device(model))
    base = baseline_runs(model, dictionaries, test, evaluation_options.get("ablation", "mean"),
                         batch_size, evaluation_options.get("metric", logit_diff),
                         evaluation_options.get("seed", 0))
    bar = tqdm(total=len(methods) * len(thresholds), desc="sweep evaluations", disable=None)
    for method in methods:
        effects = accumulate_effects(get_method(method, model, dictionaries), batches, "sum")
        for threshold in thresholds:
            chosen = select_nodes(effects, threshold)
            circuit = {name: ({int(i) for i in ids if i >= 0}, bool((ids < 0).any()))
                       for name, ids in chosen.items()}
            result = evaluate_circuit(model, dictionaries, test, circuit, batch_size=batch_size,
                                      baseline=base, **evaluation_options)
            rows.append({"method": method, "node_threshold": threshold, "n_nodes": result.n_nodes,
                         "faithfulness": result.faithfulness, "completeness": result.completeness})
            bar.update()
    bar.close()
    return rows


def write_csv(rows: list[dict], path, atomic: bool = True) -> Path:
    """The sweep's rows as CSV, written atomically (or straight to `path`, for a path that is
    already a staged temporary file)."""
    def write(tmp) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if not atomic:
        write(path)
        return Path(path)
    return atomic_write(path, write)
