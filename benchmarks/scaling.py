"""Data parallel scaling: one process against N processes (torchrun, gloo on CPU or NCCL on
GPUs) on the same prompts, float32 against bfloat16. For each setting: wall time of circuit
discovery (node effects and edges) after loading, speed-up over one process, peak memory per
process (resident set; peak GPU memory on CUDA), and whether the circuit equals the
one-process float32 circuit (node set) or correlates with it (bfloat16 effects).

    python benchmarks/scaling.py [--prompts 128] [--batch-size 16] [--procs 1,2] [--dtypes float32,bfloat16]
                                 [--method relp] [--device cpu|cuda] [--model tiny-pythia]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    """One rank: load, discover the circuit (timed between barriers), write this rank's figures."""
    import networkx as nx
    import torch
    import torch.distributed as dist

    from sfc_relp import distributed
    from sfc_relp.circuit import discover_circuit
    from sfc_relp.datasets import load_task
    from sfc_relp.dictionaries import dictionaries_for
    from sfc_relp.loading import load_model

    device = distributed.local_device(args.device)
    distributed.init(device)
    try:
        with distributed.guard():
            model = load_model(args.model, device=device, dtype=args.dtype)
            dictionaries = dictionaries_for(model)
            data = load_task("rc", "train", args.prompts, tokenizer=model.tokenizer)
            if distributed.active():
                dist.barrier()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            graph = discover_circuit(model, dictionaries, data, args.method, batch_size=args.batch_size,
                                     metadata={"model": args.model})
            if distributed.active():
                dist.barrier()
            seconds = time.perf_counter() - start
            figures = {"rank": distributed.rank(), "seconds": seconds, "n_examples": len(data),
                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if "cuda" in device else None}
            if distributed.is_writer():
                figures["graph"] = nx.node_link_data(graph, edges="links")
            Path(f"{args.out}.rank{distributed.rank()}").write_text(json.dumps(figures))
    finally:
        distributed.shutdown()


def launch(args, procs: int, dtype: str, out: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               __file__, "--worker", "--out", out, "--dtype", dtype, "--prompts", str(args.prompts),
               "--batch-size", str(args.batch_size), "--method", args.method, "--device", args.device,
               "--model", args.model]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(procs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--method", default="relp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny-pythia")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    from sfc_relp.fidelity import pearson

    effects = lambda g: {n["id"]: n["effect"] for n in g["nodes"] if n["effect"] is not None}
    print(f"{args.model}, {args.method} circuit (nodes and edges), {args.prompts} rc prompts, batch size "
          f"{args.batch_size}, device {args.device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'dtype':<9} {'procs':>5} {'time s':>8} {'speed-up':>9} {'peak RSS MB/proc':>17} "
          f"{'peak GPU MB/proc':>17} {'nodes':>6} {'same nodes as 1x fp32':>22} {'PCC vs 1x fp32':>15}")
    reference, base = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            for procs in (int(p) for p in args.procs.split(",")):
                ranks = launch(args, procs, dtype, f"{tmp}/{dtype}-{procs}")
                seconds = max(r["seconds"] for r in ranks)
                base.setdefault(dtype, seconds)
                graph = effects(ranks[0]["graph"])
                reference = reference or graph
                same = set(graph) == set(reference)
                common = sorted(set(graph) & set(reference))
                pcc = pearson(torch.tensor([graph[k] for k in common]), torch.tensor([reference[k] for k in common]))
                rss = "/".join(f"{r['peak_rss_mb']:.0f}" for r in ranks)
                gpu = "/".join(f"{r['peak_gpu_mb']:.0f}" for r in ranks) if ranks[0]["peak_gpu_mb"] else "-"
                print(f"{dtype:<9} {procs:>5} {seconds:>8.1f} {base[dtype] / seconds:>9.2f} {rss:>17} {gpu:>17} "
                      f"{len(graph):>6} {str(same):>22} {pcc:>15.6f}", flush=True)


if __name__ == "__main__":
    main()
