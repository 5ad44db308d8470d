"""Attribution cost at a real model's shapes: random weights, real tokenizer, SAEs of width
32768 calibrated to ~64 active features per token. Pythia-70M by default; `--arch` picks any
registered family (GPT-2 small, Qwen2-0.5B, Gemma-2-2B, ... per-layer shapes; `--layers`
keeps fewer layers). Prints wall time and peak memory (resident set growth during the call)
for node attribution (atp, relp, ig-10), edges (batched, one by one, the reference loop),
exact patching and a whole circuit, and the ratios measured in the same run. On CUDA it also
reports peak GPU memory (torch.cuda.max_memory_allocated) per call.

    python benchmarks/attribution_speed.py [--arch gpt_neox] [--layers N] [--prompts 8]
        [--repeats 3] [--down-nodes 32] [--skip-slow]
        [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from sfc_relp.attribution import TaskBatch, compute_edges, get_method  # noqa: E402
from sfc_relp.circuit import discover_circuit  # noqa: E402
from sfc_relp.datasets import generate  # noqa: E402
from sfc_relp.loading import load_model  # noqa: E402
from sfc_relp.random_model import (calibrate_sparsity, load_tokenizer_file,  # noqa: E402
                                   random_dictionaries, save_random_model)

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt-neox-20b-tokenizer.json"


def reference_loop_edges(saes, clean, patch, feature_grads, error_grads, down: str, ids, up: str):
    """The reference implementation's way, for comparison: per downstream node, a dense one-hot
    seed on the full encoding and one backward pass to the upstream features and error."""
    node, ae = clean.nodes[down], saes[down]
    features = ae.encode(node.input)
    error = node.input - ae.decode(features)
    targets = [clean.nodes[up].features, clean.nodes[up].error]
    d_f = patch.nodes[up].features - targets[0].detach()
    d_e = patch.nodes[up].error - targets[1].detach()
    rows = []
    for index in ids.tolist():
        f_seed, e_seed = torch.zeros_like(features), torch.zeros_like(error)
        if index < 0:
            e_seed = error_grads[down]
        else:
            f_seed[..., index] = feature_grads[down][..., index]
        g_f, g_e = torch.autograd.grad([features, error], targets, grad_outputs=[f_seed, e_seed],
                                       retain_graph=True)
        rows.append(torch.cat([(g_f * d_f).sum((0, 1)), (g_e * d_e).sum().view(1)]))
    return torch.stack(rows) / node.input.shape[0]


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


PEAKS: dict[int, float] = {}
GPU_PEAKS: dict[int, float] = {}


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time over `repeats`; the peak RSS growth of the last call goes to PEAKS."""
    times, result = [], None
    for _ in range(repeats):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base, peak, done = _rss_mb(), [0.0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.005)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            GPU_PEAKS[id(fn)] = torch.cuda.max_memory_allocated() / 2**20
        times.append(time.perf_counter() - start)
        done.set()
        sampler.join()
        PEAKS[id(fn)] = max(0.0, max(peak[0], _rss_mb()) - base)
    return statistics.median(times), result


def row(label: str, seconds: float, fn) -> None:
    gpu = f"  {GPU_PEAKS[id(fn)]:8.0f} MB" if id(fn) in GPU_PEAKS else ""
    print(f"{label:<44} {seconds:8.3f} s  {PEAKS.get(id(fn), float('nan')):8.0f} MB{gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=32768)
    parser.add_argument("--down-nodes", type=int, default=32)
    parser.add_argument("--l0", type=int, default=64, help="features firing per token in the random SAEs")
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default="float32", help="model and SAE dtype (float32, bfloat16, float16)")
    parser.add_argument("--arch", default="gpt_neox", help="HF model_type of a registered family")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the real model")
    parser.add_argument("--skip-slow", action="store_true", help="skip exact patching and the whole circuit")
    args = parser.parse_args()
    from sfc_relp.loading import parse_dtype

    dtype = parse_dtype(args.dtype)

    tokenizer = load_tokenizer_file(args.tokenizer)
    overrides = {} if args.layers is None else {"num_hidden_layers": args.layers}
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(str(save_random_model(Path(tmp) / f"{args.arch}-shape", tokenizer,
                                                  model_type=args.arch, **overrides)),
                           device=args.device, dtype=dtype)
    saes = {k: v.to(args.device, dtype) for k, v in random_dictionaries(model.config, args.width).items()}
    batch = TaskBatch.from_rows(tokenizer, generate("rc", "test", args.prompts).to_list(), args.device)
    counts = calibrate_sparsity(model, saes, batch.clean, args.l0)
    c = model.config
    print(f"{args.arch} shape (d {c.hidden_size}, {c.num_hidden_layers} layers), "
          f"random weights, {len(saes)} SAEs x {args.width} (measured L0 {sum(counts.values()) / len(counts):.1f}); "
          f"{args.prompts} rc prompts of {batch.clean['input_ids'].shape[1]} tokens; "
          f"torch threads {torch.get_num_threads()}; median of {args.repeats}; device {args.device}"
          + (f" ({torch.cuda.get_device_name(torch.device(args.device))})" if "cuda" in args.device else "")
          + f"; {args.dtype}")

    atp = get_method("atp", model, saes)
    relp = get_method("relp", model, saes)
    ig = get_method("ig", model, saes, steps=10)
    exact = get_method("exact", model, saes, chunk=16)
    atp.attribute(batch)  # warm-up
    calls = {
        "node attribution, atp": lambda: atp.attribute(batch),
        "node attribution, relp": lambda: relp.attribute(batch),
        "node attribution, ig (10 steps)": lambda: ig.attribute(batch),
    }
    times, results = {}, {}
    for label, fn in calls.items():
        times[label], results[label] = timed(fn, args.repeats if "ig" not in label else 1)
    effects = results["node attribution, atp"]

    layer = min(3, model.config.num_hidden_layers - 1)
    down, up = f"attn_{layer}", ("embed" if layer == 0 else f"resid_{layer - 1}")
    top = effects.features[down].abs().topk(args.down_nodes - 1).indices
    down_nodes = {down: torch.cat([top, torch.tensor([-1], device=top.device)])}
    top_nodes = {name: values.abs().topk(4).indices.tolist() + [-1] for name, values in effects.features.items()}
    n_exact = sum(len(v) for v in top_nodes.values())
    threshold = sorted(torch.cat([v.abs() for v in effects.features.values()]).tolist())[-60]
    clean, patch = atp.clean_and_patch(batch)
    grads = atp.coefficients(batch, clean, patch)
    later = {
        f"edges into {down} ({args.down_nodes} nodes), whole call":
            lambda: atp.edges(batch, down_nodes, chunk=args.down_nodes),
        "  of which VJPs, batched": lambda: compute_edges(
            model, saes, clean, patch, *grads, down_nodes, chunk=args.down_nodes, batched=True),
        "  of which VJPs, one by one": lambda: compute_edges(
            model, saes, clean, patch, *grads, down_nodes, chunk=args.down_nodes, batched=False),
        "  reference loop (dense seeds)": lambda: reference_loop_edges(
            saes, clean, patch, *grads, down, down_nodes[down], up),
        f"exact patching, {n_exact} nodes": lambda: exact.attribute(batch, "sum", nodes=top_nodes),
        "whole relp circuit (~60 nodes, edges)": lambda: discover_circuit(
            model, saes, generate("rc", "test", args.prompts), "relp", node_threshold=threshold,
            edge_threshold=0.0, batch_size=args.prompts, metadata={"model": "pythia-70m-shape"}),
    }
    if args.skip_slow:
        later = {k: v for k, v in later.items() if not k.startswith(("exact", "whole"))}
    calls.update(later)
    for label, fn in later.items():
        times[label], results[label] = timed(fn, args.repeats if "VJP" in label else 1)
    batched = results["  of which VJPs, batched"]
    loop = results["  of which VJPs, one by one"]
    same = all(torch.allclose(batched.weights[k], loop.weights[k], atol=1e-5, rtol=1e-4)
               for k in loop.weights)
    same_reference = torch.allclose(batched.weights[(up, down)],
                                    results["  reference loop (dense seeds)"], atol=1e-5, rtol=1e-4)
    circuit = results.get("whole relp circuit (~60 nodes, edges)")

    print(f"{'what':<44} {'time':>10}  {'peak RSS growth':>14}" + ("  peak GPU memory" if GPU_PEAKS else ""))
    for label, fn in calls.items():
        row(label, times[label], fn)
    if circuit is not None:
        print(f"(circuit: {circuit.number_of_nodes() - 1} nodes, {circuit.number_of_edges()} edges)")
    t = lambda key: times[key]
    print(f"ratio relp/atp   {t('node attribution, relp') / t('node attribution, atp'):6.2f}   (target <= 1.15)")
    print(f"ratio ig/relp    {t('node attribution, ig (10 steps)') / t('node attribution, relp'):6.2f}")
    print(f"ratio ig/atp     {t('node attribution, ig (10 steps)') / t('node attribution, atp'):6.2f}   (target about 10)")
    print(f"ratio reference loop/batched edges "
          f"{t('  reference loop (dense seeds)') / t('  of which VJPs, batched'):6.2f}   (target >= 10); "
          f"equal results: {same_reference}")
    print(f"ratio own loop/batched edges "
          f"{t('  of which VJPs, one by one') / t('  of which VJPs, batched'):6.2f}; equal results: {same}")


if __name__ == "__main__":
    main()
