"""Attribution cost at Pythia-70M's real shapes: random weights, real tokenizer, 19 SAEs of
width 32768. Prints wall times and the ratios the backend issue sets targets for
(RelP/AtP <= 1.15, IG-10/AtP about 10, batched edges >= 10x the one-by-one loop).

    python benchmarks/attribution_speed.py [--prompts 8] [--repeats 3] [--down-nodes 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from sfc_relp.architectures import submodules_for  # noqa: E402
from sfc_relp.attribution import TaskBatch, compute_edges, get_method  # noqa: E402
from sfc_relp.datasets import generate  # noqa: E402
from sfc_relp.loading import load_model  # noqa: E402
from sfc_relp.random_model import load_tokenizer_file, save_random_model  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpt-neox-20b-tokenizer.json"


def random_saes(config, width: int, seed: int = 0) -> dict:
    from dictionary_learning.dictionary import AutoEncoder

    torch.manual_seed(seed)
    return {s.name: AutoEncoder(config.hidden_size, width).eval().requires_grad_(False)
            for s in submodules_for(config)}


@torch.no_grad()
def calibrate_sparsity(model, saes: dict, batch, l0: int) -> None:
    """Shift each random SAE's encoder bias so about `l0` features fire per token, as in
    trained SAEs (a random encoder fires half its features, which no real SAE does)."""
    from sfc_relp.tracing import run_spliced

    run = run_spliced(model, saes, batch.clean, grad=False)
    for name, ae in saes.items():
        x = run.nodes[name].input.flatten(0, 1)
        pre = (x - ae.bias) @ ae.encoder.weight.T + ae.encoder.bias
        ae.encoder.bias -= torch.quantile(pre.flatten()[:1_000_000], 1 - l0 / ae.dict_size)


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


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=32768)
    parser.add_argument("--down-nodes", type=int, default=32)
    parser.add_argument("--l0", type=int, default=64, help="features firing per token in the random SAEs")
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    args = parser.parse_args()

    tokenizer = load_tokenizer_file(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(str(save_random_model(Path(tmp) / "pythia-70m-shape", tokenizer)))
    saes = random_saes(model.config, args.width)
    batch = TaskBatch.from_rows(tokenizer, generate("rc", "test", args.prompts).to_list())
    calibrate_sparsity(model, saes, batch, args.l0)
    print(f"Pythia-70M shape, random weights, 19 SAEs x {args.width} (L0 ~{args.l0}); {args.prompts} rc prompts "
          f"of {batch.clean['input_ids'].shape[1]} tokens; torch threads {torch.get_num_threads()}; "
          f"median of {args.repeats}")

    atp = get_method("atp", model, saes)
    relp = get_method("relp", model, saes)
    ig = get_method("ig", model, saes, steps=10)
    get_method("atp", model, saes).attribute(batch)  # warm-up
    t_atp, effects = timed(lambda: atp.attribute(batch), args.repeats)
    t_relp, _ = timed(lambda: relp.attribute(batch), args.repeats)
    t_ig, _ = timed(lambda: ig.attribute(batch), max(1, args.repeats - 2))

    down = "attn_3"
    top = effects.features[down].abs().topk(args.down_nodes - 1).indices
    down_nodes = {down: torch.cat([top, torch.tensor([-1])])}
    t_edges_call, _ = timed(lambda: atp.edges(batch, down_nodes, chunk=args.down_nodes), 1)
    clean, patch = atp.clean_and_patch(batch)
    grads = atp.coefficients(batch, clean, patch)
    edges = lambda batched: compute_edges(model, saes, clean, patch, *grads, down_nodes,
                                          chunk=args.down_nodes, batched=batched)
    t_batched, batched = timed(lambda: edges(True), args.repeats)
    t_loop, loop = timed(lambda: edges(False), args.repeats)
    same = all(torch.allclose(batched.weights[k], loop.weights[k], atol=1e-5, rtol=1e-4)
               for k in loop.weights)
    up = "resid_2"
    t_reference, reference = timed(lambda: reference_loop_edges(
        saes, clean, patch, *grads, down, down_nodes[down], up), 1)
    same_reference = torch.allclose(batched.weights[(up, down)], reference, atol=1e-5, rtol=1e-4)

    print(f"{'node attribution, atp':<38} {t_atp:8.2f} s")
    print(f"{'node attribution, relp':<38} {t_relp:8.2f} s")
    print(f"{'node attribution, ig (10 steps)':<38} {t_ig:8.2f} s")
    print(f"{'edges into ' + down + f' ({args.down_nodes} nodes), whole call':<38} {t_edges_call:8.2f} s")
    print(f"{'  of which VJPs, batched':<38} {t_batched:8.3f} s")
    print(f"{'  of which VJPs, one by one':<38} {t_loop:8.3f} s")
    print(f"{'  reference loop (dense seeds)':<38} {t_reference:8.3f} s")
    print(f"ratio relp/atp   {t_relp / t_atp:6.2f}   (target <= 1.15)")
    print(f"ratio ig/atp     {t_ig / t_atp:6.2f}   (target about 10)")
    print(f"ratio reference loop/batched edges {t_reference / t_batched:6.2f}   (target >= 10); "
          f"equal results: {same_reference}")
    print(f"ratio own loop/batched edges {t_loop / t_batched:6.2f}; equal results: {same}")


if __name__ == "__main__":
    main()
