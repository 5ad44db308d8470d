"""How close each method comes to activation patching (the seed paper's Table 5).

Component level: for every resid/attn/mlp output, the effect of patching that whole output
at one position (exact), against each method's estimate summed over hidden dimensions
(neurons as the dictionary, so no SAE is involved). Pearson correlation over (layer x
position) cells, either of prompt-averaged effects or of per-prompt cells (padding excluded).
SAE-node level: correlation over every feature and error node of the SAEs, prompt-averaged.

The raw component effects are kept in a `FidelityRun` and saved as one `.npz` file
(docs/FIDELITY_FORMAT.md), so the correlations can be recomputed from the file alone.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import distributed
from .architectures import submodules_for
from .attribution import TaskBatch, get_method
from .dictionaries import neuron_dictionaries
from .errors import UserError
from .files import atomic_write
from .placement import input_device
from .tracing import run_spliced

COMPONENTS = ("resid", "attn", "mlp")
FORMAT = "sfc-relp-fidelity/1"
PROMPT_FIELDS = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")
TOKEN_FIELDS = ("clean_ids", "patch_ids", "clean_tokens", "patch_tokens", "attention_mask")


def pearson(x, y) -> float:
    x, y = torch.as_tensor(x).flatten().double(), torch.as_tensor(y).flatten().double()
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _components(model, kinds) -> list:
    return [s for s in submodules_for(model.config) if s.kind in kinds]


def exact_component_effects(model, batch: TaskBatch, kinds=COMPONENTS, chunk: int = 32) -> dict:
    """{submodule: (B, T) effect of patching its whole output at each position}."""
    subs = _components(model, kinds)
    neurons = neuron_dictionaries(subs, model.config.hidden_size)
    with torch.no_grad():
        patch = run_spliced(model, neurons, batch.patch, grad=False)
        clean_metric = get_method("atp", model, neurons).metric(
            run_spliced(model, neurons, batch.clean, grad=False).logits, batch)
    n, positions = len(batch), batch.clean["input_ids"].shape[1]
    jobs = [(s.name, t) for s in subs for t in range(positions)]
    effects = {s.name: torch.zeros(n, positions, device=clean_metric.device) for s in subs}
    for start in tqdm(range(0, len(jobs), chunk), desc="activation patching", disable=None):
        group = jobs[start:start + chunk]

        def edit(sub, features, error, group=group):
            mine = [(c, t) for c, (name, t) in enumerate(group) if name == sub.name]
            if not mine:
                return None
            features = features.clone()
            for copy, t in mine:
                features[copy * n:(copy + 1) * n, t] = patch.nodes[sub.name].features[:, t]
            return features, error
        tiled = batch.repeat(len(group))
        with torch.no_grad():
            run = run_spliced(model, neurons, tiled.clean, edit=edit, grad=False)
            metric = get_method("atp", model, neurons).metric(run.logits, tiled)
        values = (metric - clean_metric.repeat(len(group))).view(len(group), n)
        for (name, t), value in zip(group, values):
            effects[name][:, t] = value
    return effects


def estimated_component_effects(method: str, model, batch: TaskBatch, kinds=COMPONENTS) -> dict:
    """{submodule: (B, T) the method's estimate, summed over hidden dimensions}."""
    subs = _components(model, kinds)
    neurons = neuron_dictionaries(subs, model.config.hidden_size)
    effects = get_method(method, model, neurons).attribute(batch, "none")
    return {name: values.sum(-1).detach() for name, values in effects.features.items()}


@dataclass
class FidelityRun:
    """Raw component effects of every method on one batch, with the prompts behind them.

    effects[method][component] is a float32 array [layer, position, prompt]; method "exact"
    is activation patching. Token arrays are [prompt, position], left-padded (the last
    position is the one the metric reads); attention_mask is 1 on real tokens.
    """

    model: str
    task: str
    effects: dict
    clean_prefix: np.ndarray
    patch_prefix: np.ndarray
    clean_answer: np.ndarray
    patch_answer: np.ndarray
    clean_answer_id: np.ndarray
    patch_answer_id: np.ndarray
    clean_ids: np.ndarray
    patch_ids: np.ndarray
    clean_tokens: np.ndarray
    patch_tokens: np.ndarray
    attention_mask: np.ndarray

    @property
    def methods(self) -> list[str]:
        """The estimating methods (every method but "exact")."""
        return [m for m in self.effects if m != "exact"]

    @property
    def components(self) -> list[str]:
        return list(self.effects["exact"])

    def prompt_averaged(self, method: str, component: str) -> np.ndarray:
        """[layer, position] mean over the prompts that have a real token at each position."""
        values, mask = self.effects[method][component], self.attention_mask.T.astype(np.float64)
        return (values * mask).sum(-1) / np.maximum(mask.sum(-1), 1)

    def position_labels(self) -> list[str]:
        """Tokens of the first prompt without padding (left padding aligns prompts at the end)."""
        full = np.flatnonzero(self.attention_mask.all(1))
        return [str(t) for t in self.clean_tokens[full[0] if len(full) else 0]]


def run_fidelity(model, rows: list[dict], task: str, methods=("atp", "relp"),
                 kinds=COMPONENTS) -> FidelityRun:
    """Exact and estimated component effects of every method on the prompt pairs `rows`."""
    from .loading import model_name

    tokenizer = model.tokenizer
    batch = TaskBatch.from_rows(tokenizer, rows, input_device(model))
    mine = distributed.shard_batch(batch)  # data parallel: per-prompt effects gathered
    gathered = lambda effects: {k: distributed.gather_rows(v, len(batch)).cpu() for k, v in effects.items()}
    estimates = {"exact": gathered(exact_component_effects(model, mine, kinds))}
    for method in methods:
        estimates[method] = gathered(estimated_component_effects(method, model, mine, kinds))
    effects = {}
    for method, by_name in estimates.items():
        effects[method] = {kind: torch.stack([by_name[s.name] for s in _components(model, (kind,))])
                           .permute(0, 2, 1).float().numpy() for kind in kinds}
    tokens = lambda ids: np.array([tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()], dtype=str)
    column = lambda key: np.array([r[key] for r in rows], dtype=str)
    return FidelityRun(
        model=model_name(model), task=task, effects=effects,
        **{key: column(key) for key in PROMPT_FIELDS},
        clean_answer_id=batch.clean_answer.cpu().numpy(), patch_answer_id=batch.patch_answer.cpu().numpy(),
        clean_ids=batch.clean["input_ids"].cpu().numpy(), patch_ids=batch.patch["input_ids"].cpu().numpy(),
        clean_tokens=tokens(batch.clean["input_ids"]), patch_tokens=tokens(batch.patch["input_ids"]),
        attention_mask=batch.clean["attention_mask"].cpu().numpy().astype(np.int8))


def correlations(run: FidelityRun) -> dict:
    """{method: {component: {"prompt_averaged": pcc, "per_prompt": pcc}}} against "exact".

    prompt_averaged: over [layer, position] cells of prompt-averaged effects (positions where
    every prompt is padding are left out); per_prompt: over every real [layer, position, prompt].
    """
    real = run.attention_mask.T.astype(bool)  # [position, prompt]
    present = real.any(1)
    out = {}
    for method in run.methods:
        out[method] = {}
        for kind in run.components:
            exact, estimate = run.effects["exact"][kind], run.effects[method][kind]
            cells = np.broadcast_to(real, exact.shape)
            out[method][kind] = {
                "prompt_averaged": pearson(run.prompt_averaged(method, kind)[:, present],
                                           run.prompt_averaged("exact", kind)[:, present]),
                "per_prompt": pearson(estimate[cells], exact[cells])}
    return out


def component_fidelity(model, rows: list[dict], methods=("atp", "relp", "ig"),
                       kinds=COMPONENTS) -> dict:
    """{method: {component: {"prompt_averaged": pcc, "per_prompt": pcc}}} for prompt pairs."""
    return correlations(run_fidelity(model, list(rows), "", methods, kinds))


def save_fidelity(run: FidelityRun, path) -> Path:
    """Write `run` as one `.npz` (no pickled objects; strings as unicode arrays), atomically."""
    arrays = {"format": np.array(FORMAT), "model": np.array(run.model), "task": np.array(run.task),
              "methods": np.array(list(run.effects), dtype=str),
              "components": np.array(run.components, dtype=str)}
    for method, by_kind in run.effects.items():
        for kind, values in by_kind.items():
            arrays[f"effect_{method}_{kind}"] = values
    for key in PROMPT_FIELDS + TOKEN_FIELDS + ("clean_answer_id", "patch_answer_id"):
        arrays[key] = getattr(run, key)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return atomic_write(path, write)


def load_fidelity(path) -> FidelityRun:
    """Read a file written by `save_fidelity` (numpy.load with allow_pickle=False)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no fidelity file at {path}; write one with `sfc-relp fidelity --out DIR`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a readable .npz of plain arrays ({type(exc).__name__})") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise UserError(f"{path} is not a sfc-relp fidelity file (format {FORMAT!r} expected)")
    methods, kinds = [str(m) for m in arrays["methods"]], [str(c) for c in arrays["components"]]
    needed = [f"effect_{m}_{c}" for m in methods for c in kinds]
    needed += list(PROMPT_FIELDS + TOKEN_FIELDS) + ["clean_answer_id", "patch_answer_id"]
    missing = [key for key in needed if key not in arrays]
    if missing or "exact" not in methods:
        raise UserError(f"{path} lacks {(missing or ['effect_exact_*'])[0]!r}; re-run sfc-relp fidelity")
    n_prompts, n_positions = arrays["attention_mask"].shape
    for key in needed[:len(methods) * len(kinds)]:
        if arrays[key].ndim != 3 or arrays[key].shape[1:] != (n_positions, n_prompts):
            raise UserError(f"{path}: {key} has shape {arrays[key].shape}, expected "
                            f"[layer, {n_positions}, {n_prompts}]")
    effects = {m: {c: arrays[f"effect_{m}_{c}"] for c in kinds} for m in methods}
    return FidelityRun(model=str(arrays["model"]), task=str(arrays["task"]), effects=effects,
                       **{key: arrays[key] for key in PROMPT_FIELDS + TOKEN_FIELDS
                          + ("clean_answer_id", "patch_answer_id")})


def correlations_from_file(path) -> dict:
    """The correlations of `correlations()`, recomputed from a saved fidelity file."""
    return correlations(load_fidelity(path))


def node_fidelity(model, dictionaries, batch: TaskBatch, methods=("atp", "relp", "ig")) -> dict:
    """{method: pcc} over every SAE feature and error node (sum over positions, prompt-averaged)."""
    flat = lambda eff: torch.cat([torch.cat([eff.features[k].flatten(), eff.errors[k].view(1)])
                                  for k in eff.features])
    mine = distributed.shard_batch(batch)  # data parallel: prompt means combined over ranks
    mean = lambda name: distributed.mean_over_ranks(
        flat(get_method(name, model, dictionaries).attribute(mine, "sum")), len(mine), len(batch))
    exact = mean("exact")
    return {method: pearson(mean(method), exact) for method in methods}
