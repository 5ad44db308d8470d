"""A job that tests/test_distributed.py launches under torchrun (and runs in one process).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_job.py circuits OUT.json atp,relp 16 4
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_job.py fidelity OUT.json 6 2
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_job.py cli RANK1_ARGS -- ARGS

`circuits`: circuits and their evaluation on the bundled model for the given methods, `fidelity`:
fidelity against activation patching; rank 0 writes them as JSON. `cli`: the command line, with different arguments on rank 1 (to make it fail).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

NODE_THRESHOLD, EDGE_THRESHOLD = 0.3, 0.02


def circuits(methods, n_examples: int, batch_size: int) -> dict:
    """{method: {"graph": node-link data, "evaluation": numbers}} on tiny-pythia / rc."""
    import networkx as nx

    from sfc_relp.circuit import circuit_nodes, discover_circuit
    from sfc_relp.datasets import load_task
    from sfc_relp.dictionaries import dictionaries_for
    from sfc_relp.evaluation import evaluate_circuit
    from sfc_relp.loading import load_model

    model = load_model()
    dictionaries = dictionaries_for(model)
    train = load_task("rc", "train", n_examples, tokenizer=model.tokenizer)
    test = load_task("rc", "test", n_examples, tokenizer=model.tokenizer)
    out = {}
    for method in methods:
        graph = discover_circuit(model, dictionaries, train, method, NODE_THRESHOLD, EDGE_THRESHOLD,
                                 batch_size=batch_size, metadata={"model": "tiny-pythia"})
        result = evaluate_circuit(model, dictionaries, test, circuit_nodes(graph, list(dictionaries)),
                                  batch_size=batch_size)
        out[method] = {"graph": nx.node_link_data(graph, edges="links"), "evaluation": result.as_dict()}
    return out


def fidelity(n_prompts: int, node_prompts: int) -> dict:
    """Component-level (per-prompt effects gathered) and SAE-node-level fidelity on ioi."""
    from sfc_relp.attribution import TaskBatch
    from sfc_relp.datasets import load_task
    from sfc_relp.dictionaries import dictionaries_for
    from sfc_relp.fidelity import component_fidelity, node_fidelity
    from sfc_relp.loading import load_model

    model = load_model()
    rows = load_task("ioi", "test", n_prompts, tokenizer=model.tokenizer).to_list()
    nodes = node_fidelity(model, dictionaries_for(model),
                          TaskBatch.from_rows(model.tokenizer, rows[:node_prompts]), ("atp",))
    return {"components": component_fidelity(model, rows, ("atp", "relp")), "nodes": nodes}


def main() -> int:
    from sfc_relp import distributed

    mode = sys.argv[1]
    if mode == "cli":
        from sfc_relp.cli import main as cli_main

        split = sys.argv.index("--")
        rank1_args, args = sys.argv[2:split], sys.argv[split + 1:]
        return cli_main(args + rank1_args if os.environ.get("RANK") == "1" else args)
    distributed.init()
    try:
        with distributed.guard():
            if mode == "fidelity":
                result = fidelity(int(sys.argv[3]), int(sys.argv[4]))
            else:
                result = circuits(sys.argv[3].split(","), int(sys.argv[4]), int(sys.argv[5]))
            if distributed.is_writer():
                with open(sys.argv[2], "w") as handle:
                    json.dump({"world_size": distributed.world_size(), "result": result}, handle)
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
