"""What a feature means: its top-activating contexts, its density, and its logit lens.

`feature_summaries` streams a corpus through the spliced model in batches and keeps, per
feature, a running top-k of documents by the feature's maximum activation in the document
(one context per document: the tokens within `context` of that maximum, with the activation
at every token), a count of non-pad tokens where the feature fires (activation > 0), and
nothing else, so memory is bounded by k, not by the corpus.

Logit lens (this project's definition): a feature's decoder direction d is written into the
residual stream, so its direct effect on the logits is read through the final norm's linear
part and the unembedding, `logits(d) = W_U (gamma * (d - mean(d)))` for a LayerNorm
(`W_U (gamma * d)` for an RMSNorm). The norm's per-token scale 1/sigma and its bias are
dropped: the first is a positive factor, the second is the same for every feature, so
neither changes which tokens a feature promotes (largest logits) or suppresses (smallest).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__
from .errors import UserError
from .files import atomic_write

FILENAME = "features.json"


def fingerprint(ae) -> str:
    """A short hash of a dictionary's weights: names, shapes and an evenly strided sample of at
    most 65536 values per tensor (an identity check, cheap even for 19 x 32768-wide SAEs)."""
    digest = hashlib.sha256()
    for key, value in sorted(ae.state_dict().items()):
        flat = value.detach().flatten()
        sample = flat[::max(1, flat.numel() // 65536)]
        digest.update(f"{key}{tuple(value.shape)}".encode())
        digest.update(sample.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_corpus(source, max_docs: int | None = None, text_column: str = "text",
                tokenizer=None) -> list[str]:
    """Documents from a text file (one per line), a project JSONL dataset (clean_prefix +
    clean_answer), an HF `datasets` dataset saved with `save_to_disk`, or a task family name
    (its train split); a UserError when the source is missing or empty."""
    from .datasets import read_jsonl
    from .templates import FAMILIES

    path = Path(source)
    if path.is_dir():
        import datasets

        try:
            data = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"{path} is not a dataset saved with save_to_disk ({exc})") from None
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else data[next(iter(data))]
        if text_column not in data.column_names:
            raise UserError(f"{path} has no column {text_column!r} (columns: "
                            f"{', '.join(data.column_names)}); pass --text-column")
        n = len(data) if max_docs is None else min(max_docs, len(data))
        docs = [str(t) for t in data.select(range(n))[text_column]]
    elif path.is_file() and path.suffix == ".jsonl":
        data = read_jsonl(path)
        docs = [p + a for p, a in zip(data["clean_prefix"], data["clean_answer"])]
    elif path.is_file():
        try:
            docs = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"{path} is not a UTF-8 text file (one document per line)") from None
    elif str(source) in FAMILIES:
        from .datasets import generate

        data = generate(str(source), "train", max_docs or 256)
        docs = [p + a for p, a in zip(data["clean_prefix"], data["clean_answer"])]
    else:
        raise UserError(f"corpus {source} does not exist; pass a text file, a .jsonl dataset, "
                        f"a directory saved with datasets' save_to_disk, or one of {', '.join(FAMILIES)}")
    docs = [d for d in docs if d.strip()]
    if max_docs is not None:
        docs = docs[:max_docs]
    if not docs:
        raise UserError(f"corpus {source} holds no documents")
    return docs


def logit_lens(model, direction: torch.Tensor) -> torch.Tensor:
    """(n, vocab) direct logit contributions of decoder directions (n, d): see the module doc."""
    from .architectures import architecture_for, resolve_path
    from .loading import hf_model

    hf = hf_model(model)
    norm = resolve_path(hf, architecture_for(hf.config).final_norm_path)
    unembed = hf.get_output_embeddings().weight
    d = direction.to(unembed.dtype)
    if isinstance(norm, torch.nn.LayerNorm):
        d = d - d.mean(-1, keepdim=True)
    if getattr(norm, "weight", None) is not None:
        d = d * norm.weight
    return d @ unembed.T


def _lens_extremes(model, ae, ids: list[int], n: int, chunk: int = 512):
    """Per feature, (values, token ids) of its n largest and n most negative logit-lens entries,
    computed `chunk` features at a time (all of a 32768-wide SAE against a 50k vocabulary would
    be a 6.6 GB matrix)."""
    from .dictionaries import decoder_directions

    up, down = [], []
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            part = torch.tensor(ids[start:start + chunk], dtype=torch.long)
            lens = logit_lens(model, decoder_directions(ae, part).float())
            k = min(n, lens.shape[-1])
            high, low = lens.topk(k, dim=-1), lens.topk(k, dim=-1, largest=False)
            up += [(v, t) for v, t in zip(high.values.tolist(), high.indices.tolist())]
            down += [(v, t) for v, t in zip(low.values.tolist(), low.indices.tolist())]
    return up, down


def _requested(nodes, dictionaries: dict) -> dict[str, list[int] | None]:
    """{submodule: feature ids, or None for all} from node ids, a circuit graph or submodules."""
    wanted: dict[str, set | None] = {}
    if hasattr(nodes, "nodes"):  # a circuit graph
        items = [(d.get("submodule"), d.get("feature"), d.get("error"))
                 for _, d in nodes.nodes(data=True)]
        for sub, feature, error in items:
            if sub in dictionaries and not error and feature is not None:
                wanted.setdefault(sub, set()).add(int(feature))
    else:
        for item in nodes:
            if "/" not in item:
                if item not in dictionaries:
                    raise UserError(f"unknown submodule {item!r}; choose from {', '.join(dictionaries)}")
                wanted[item] = None
                continue
            sub, rest = item.split("/", 1)
            rest = rest.split("@", 1)[0]
            if sub not in dictionaries:
                raise UserError(f"unknown submodule {sub!r} in node {item!r}")
            if rest == "err":
                continue
            if not rest.isdigit():
                raise UserError(f"node {item!r} is not '<submodule>/<feature>'")
            current = wanted.setdefault(sub, set())
            if current is not None:
                current.add(int(rest))
    return {k: None if v is None else sorted(v) for k, v in wanted.items()}


def _batches(tokenizer, docs: list[str], batch_size: int, max_length: int):
    """Left-padded batches (input_ids, attention_mask, position_ids) of truncated documents."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(docs), batch_size):
        ids = [tokenizer(d)["input_ids"][:max_length] for d in docs[start:start + batch_size]]
        width = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            if seq:
                input_ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
        yield start, {"input_ids": input_ids, "attention_mask": mask,
                      "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


class _RunningTopK:
    """Per feature, the k documents with the largest maximum activation and their windows."""

    def __init__(self, n: int, k: int, context: int):
        width = 2 * context + 1
        self.k, self.context = k, context
        self.values = torch.full((n, k), float("-inf"))
        self.docs = torch.full((n, k), -1, dtype=torch.long)
        self.positions = torch.zeros((n, k), dtype=torch.long)
        self.tokens = torch.full((n, k, width), -1, dtype=torch.long)
        self.acts = torch.zeros((n, k, width))

    def update(self, acts: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, first_doc: int):
        """acts (B, T, n) of one batch; mask (B, T) of real tokens; documents first_doc + b."""
        batch, length, n = acts.shape
        masked = acts.masked_fill(~mask[..., None], float("-inf"))
        values, positions = masked.max(1)  # (B, n), first position of the maximum
        offsets = torch.arange(-self.context, self.context + 1)
        index = positions.T[..., None] + offsets  # (n, B, W)
        clamped = index.clamp(0, length - 1)
        valid = (index >= 0) & (index < length)
        valid &= mask[None].expand(n, batch, length).gather(2, clamped)
        window_acts = acts.permute(2, 0, 1).gather(2, clamped).masked_fill(~valid, 0.0)
        window_tokens = input_ids[None].expand(n, batch, length).gather(2, clamped)
        window_tokens = window_tokens.masked_fill(~valid, -1)
        pad_before = (~mask).sum(1)  # left padding: position in the document = index - pads
        all_values = torch.cat([self.values, values.T], 1)
        top = all_values.sort(dim=1, descending=True, stable=True).indices[:, :self.k]  # ties: earlier doc
        docs = torch.arange(first_doc, first_doc + batch).expand(n, -1)
        self.values = all_values.gather(1, top)
        self.docs = torch.cat([self.docs, docs], 1).gather(1, top)
        self.positions = torch.cat([self.positions, (positions - pad_before[:, None]).T], 1).gather(1, top)
        width = offsets.numel()
        self.tokens = torch.cat([self.tokens, window_tokens], 1).gather(
            1, top[..., None].expand(-1, -1, width))
        self.acts = torch.cat([self.acts, window_acts], 1).gather(1, top[..., None].expand(-1, -1, width))


def _decode(tokenizer, token: int) -> str:
    return tokenizer.decode([token])


def feature_summaries(model, dictionaries: dict, corpus: list[str], nodes, top_k: int = 10,
                      context: int = 8, batch_size: int = 16, max_length: int = 64,
                      n_logit_tokens: int = 10, metadata: dict | None = None) -> dict:
    """Top-k contexts, density and logit-lens tokens of the requested features over `corpus`.

    `nodes`: a circuit graph (its feature nodes), node ids (`resid_2/17`, `@pos` ignored,
    error nodes skipped) or submodule names (all their features). Returns a JSON-ready dict
    {"metadata": ..., "features": {"<submodule>/<feature>": summary}}.
    """
    from .loading import model_name
    from .tracing import run_spliced

    if top_k < 1 or context < 0 or batch_size < 1 or max_length < 1:
        raise UserError("top_k, batch_size and max_length must be positive, context non-negative")
    if not corpus:
        raise UserError("the corpus holds no documents")
    wanted = _requested(nodes, dictionaries)
    if not wanted:
        raise UserError("no feature nodes to summarise (the circuit has only error nodes?)")
    splice = {name: dictionaries[name] for name in dictionaries if name in wanted}
    tokenizer = model.tokenizer
    running: dict[str, _RunningTopK] = {}
    fired: dict[str, torch.Tensor] = {}
    n_tokens = 0
    bar = tqdm(total=len(corpus), desc="features", unit="doc", disable=None)
    for first, inputs in _batches(tokenizer, corpus, batch_size, max_length):
        run = run_spliced(model, splice, inputs, grad=False)
        mask = inputs["attention_mask"].bool()
        n_tokens += int(mask.sum())
        for name, node in run.nodes.items():
            width = node.features.shape[-1]
            if wanted[name] is None:
                wanted[name] = list(range(width))
            ids = torch.tensor(wanted[name], dtype=torch.long)
            if len(ids) and int(ids.max()) >= width:
                raise UserError(f"feature {int(ids.max())} of {name} is out of range: its "
                                f"dictionary has {width} features (another dictionary?)")
            acts = node.features.detach().float().cpu()[..., ids]
            if name not in running:
                running[name] = _RunningTopK(len(ids), top_k, context)
                fired[name] = torch.zeros(len(ids), dtype=torch.long)
            running[name].update(acts, inputs["input_ids"], mask, first)
            fired[name] += ((acts > 0) & mask[..., None]).sum((0, 1))
        bar.update(inputs["input_ids"].shape[0])
    bar.close()
    features = {}
    for name, ids in wanted.items():
        top = running[name]
        up, down = _lens_extremes(model, dictionaries[name], ids, n_logit_tokens)
        for row, feature in enumerate(ids):
            contexts = []
            for slot in range(top_k):
                value = float(top.values[row, slot])
                if not value > 0:
                    continue
                keep = top.tokens[row, slot] >= 0
                tokens = top.tokens[row, slot][keep].tolist()
                centre = int(keep[:context].sum())  # the maximum's index within the kept window
                contexts.append({
                    "document": int(top.docs[row, slot]), "position": int(top.positions[row, slot]),
                    "activation": value, "max_index": centre,
                    "tokens": [_decode(tokenizer, t) for t in tokens],
                    "activations": [round(float(a), 6) for a in top.acts[row, slot][keep]]})
            features[f"{name}/{feature}"] = {
                "submodule": name, "feature": feature,
                "density": float(fired[name][row]) / max(n_tokens, 1),
                "max_activation": contexts[0]["activation"] if contexts else 0.0,
                "contexts": contexts,
                "promoted": [{"token": _decode(tokenizer, int(t)), "logit": round(float(v), 5)}
                             for v, t in zip(*up[row])],
                "suppressed": [{"token": _decode(tokenizer, int(t)), "logit": round(float(v), 5)}
                               for v, t in zip(*down[row])]}
    meta = {"model": model_name(model), "dictionary_fingerprints":
            {name: fingerprint(dictionaries[name]) for name in wanted},
            "n_documents": len(corpus), "n_tokens": n_tokens, "top_k": top_k, "context": context,
            "max_length": max_length, "n_logit_tokens": n_logit_tokens,
            "logit_lens": "W_U (gamma * (d - mean d)) through the final norm's linear part",
            "tool_version": __version__, **(metadata or {})}
    return {"metadata": meta, "features": features}


def save_features(summaries: dict, out_dir) -> Path:
    """Write `out_dir/features.json` atomically."""
    return atomic_write(Path(out_dir) / FILENAME,
                        lambda tmp: Path(tmp).write_text(json.dumps(summaries, indent=1)))


def load_features(path) -> dict:
    """Summaries written by `save_features` (a directory holding features.json, or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise UserError(f"feature summaries {path} do not exist; write them with `sfc-relp features`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a features JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "metadata" not in data or "features" not in data:
        raise UserError(f"{path} lacks metadata/features; was it written by `sfc-relp features`?")
    return data


def check_compatible(features: dict, graph, what: str = "the feature summaries") -> None:
    """A UserError when `what` (summaries, or the loaded model) belongs to another model or to
    other dictionaries than the circuit `graph`."""
    meta, circuit = features["metadata"], graph.graph
    if meta.get("model") != circuit.get("model"):
        raise UserError(f"{what} are for model {meta.get('model')!r} but the circuit is for "
                        f"{circuit.get('model')!r}; use --model {circuit.get('model')} (and its dictionaries)")
    theirs = circuit.get("dictionary_fingerprints") or {}
    ours = meta.get("dictionary_fingerprints") or {}
    clash = sorted(k for k in set(theirs) & set(ours) if theirs[k] != ours[k])
    if clash:
        raise UserError(f"{what} use other dictionaries than the circuit (weights differ at "
                        f"{', '.join(clash)}); use the circuit's --dictionaries")
    if not theirs and meta.get("dictionaries") and circuit.get("dictionaries") and \
            meta["dictionaries"] != circuit["dictionaries"]:
        raise UserError(f"{what} use dictionaries {meta['dictionaries']!r}, the circuit "
                        f"{circuit['dictionaries']!r}; use the circuit's --dictionaries")
