"""The `sfc-relp` command line: a thin layer over the library.

Every user mistake surfaces as a UserError: one line on stderr, exit code 1, no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from .errors import UserError


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    from .loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"bundled model name, local HF directory or cached HF id (default {DEFAULT_MODEL})")
    parser.add_argument("--dictionaries", default=None,
                        help="root of SAE dictionaries in Marks et al.'s layout (default: the project's dictionaries/)")
    parser.add_argument("--dict-id", default=None, help="which <id>_<width> dictionary to use when several exist")
    parser.add_argument("--neurons", action="store_true", help="use neurons (identity dictionaries) instead of SAEs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)


def _load(args):
    import torch

    from .dictionaries import dictionaries_for
    from .loading import load_model

    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    dictionaries = dictionaries_for(model, args.dictionaries, args.dict_id, args.neurons)
    return model, dictionaries


def cmd_datasets_build(args) -> None:
    from .datasets import build_all

    for path in build_all(args.out, args.n_train, args.n_test, args.seed):
        print(path)


def cmd_trace(args) -> None:
    """Splice every dictionary into one forward and report what each submodule holds."""
    import torch

    from .datasets import load_task
    from .loading import hf_model
    from .tracing import run_spliced, tokenize

    model, dictionaries = _load(args)
    data = load_task(args.dataset, "test", args.n_examples, args.seed, model.tokenizer)
    inputs = tokenize(model.tokenizer, data["clean_prefix"], args.device)
    with torch.no_grad():
        plain = hf_model(model)(**inputs).logits
    run = run_spliced(model, dictionaries, inputs, grad=False)
    print(f"model {args.model}: {len(dictionaries)} dictionaries spliced, "
          f"{len(data)} prompts of {args.dataset}")
    print(f"max |logit change| from splicing: {(run.logits - plain).abs().max().item():.2e}")
    print(f"{'submodule':<10} {'width':>7} {'mean L0':>9} {'error share':>12}")
    for name, node in run.nodes.items():
        mask = inputs["attention_mask"].bool()
        l0 = (node.features[mask] != 0).sum(-1).float().mean().item()
        share = (node.error[mask].norm(dim=-1) / node.input[mask].norm(dim=-1).clamp_min(1e-12)).mean().item()
        print(f"{name:<10} {node.features.shape[-1]:>7} {l0:>9.1f} {share:>12.3f}")


def cmd_zoo_random(args) -> None:
    """A random-weight model of a registered family plus random SAEs calibrated to ~L0."""
    from .loading import load_model
    from .random_model import (calibrate_sparsity, calibration_prompts, load_tokenizer_file,
                               random_dictionaries, save_random_model, write_dictionaries)
    from .tracing import tokenize

    if args.width <= args.l0:
        raise UserError(f"--width {args.width} must exceed --l0 {args.l0}")
    tokenizer = load_tokenizer_file(args.tokenizer)
    name = args.name or f"random-{args.arch}"
    overrides = {} if args.layers is None else {"num_hidden_layers": args.layers}
    model_dir = save_random_model(f"{args.out}/{name}", tokenizer, args.seed, args.arch,
                                  args.small, **overrides)
    model = load_model(str(model_dir))
    saes = random_dictionaries(model.config, args.width, args.seed)
    counts = calibrate_sparsity(model, saes, tokenize(model.tokenizer, calibration_prompts()), args.l0)
    root = write_dictionaries(f"{args.out}/dictionaries", name, model.config, saes)
    print(f"model: {model_dir}\ndictionaries: {root}")
    print(f"active features per token (target {args.l0}): mean "
          f"{sum(counts.values()) / len(counts):.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in counts.items()))


def cmd_zoo_train(args) -> None:
    from .dictionaries import DEFAULT_ROOT
    from .loading import ZOO_DIR
    from .training.bundle import train_bundle

    model_dir = args.model_dir or ZOO_DIR / args.name
    result = train_bundle(model_dir, args.dictionaries or DEFAULT_ROOT, args.name, args.budget,
                          args.seed)
    print(f"model: {result['model']}\ndictionaries: {result['dictionaries']}\n"
          f"took {result['seconds']:.0f}s")


def cmd_zoo_report(args) -> None:
    import json

    from .loading import hf_model
    from .training.bundle import REPORT_SEED
    from .training.corpus import build_corpus
    from .training.quality import bundle_report

    model, dictionaries = _load(args)
    report = bundle_report(hf_model(model), model.tokenizer, dictionaries,
                           build_corpus(args.n_sentences, REPORT_SEED))
    if args.json:
        print(json.dumps(report))
        return
    print("task accuracy on held-out test splits (logit clean answer > logit patch answer)")
    for family, value in report["accuracy"].items():
        print(f"  {family:<10} {value:.3f}")
    print(f"{'dictionary':<10} {'FVE':>7} {'L0':>7} {'dead':>7} {'loss rec.':>10}")
    for name, q in report["dictionaries"].items():
        print(f"{name:<10} {q['fve']:>7.3f} {q['l0']:>7.1f} {q['dead']:>7.3f} {q['loss_recovered']:>10.3f}")


def _check_thresholds(*values) -> None:
    for value in values:
        if value is not None and value < 0:
            raise UserError(f"thresholds must be non-negative, got {value}")


def cmd_circuit(args) -> None:
    from pathlib import Path

    from .circuit import discover_circuit, save_circuit
    from .datasets import dataset_name, load_task
    from .loading import model_name
    from .plotting import draw_circuit

    _check_thresholds(args.node_threshold, args.edge_threshold)
    model, dictionaries = _load(args)
    data = load_task(args.dataset, "train", args.n_examples, args.seed, model.tokenizer)
    name = f"{model_name(model)}_{dataset_name(args.dataset)}_{args.method}"
    if args.exact_per_position and args.method != "exact":
        raise UserError("--exact-per-position applies to --method exact only")
    options = {"per_position_sum": True} if args.exact_per_position else {}
    graph = discover_circuit(
        model, dictionaries, data, args.method, args.node_threshold, args.edge_threshold,
        args.aggregation, args.batch_size, metadata={
            "model": model_name(model), "model_path": args.model,
            "dictionaries": "neurons" if args.neurons else str(args.dictionaries or "default"),
            "dict_id": args.dict_id, "dataset": args.dataset, "split": "train",
            "exact_per_position_sum": args.exact_per_position}, **options)
    out = Path(args.out)
    paths = [save_circuit(graph, out / f"{name}.json")] + draw_circuit(graph, out / name)
    for path in paths:
        print(path)
    print(f"nodes: {graph.number_of_nodes() - 1}  edges: {graph.number_of_edges()}")
    if not graph.graph["edges_computed"]:
        print("note: edges are computed for --aggregation sum only; this circuit has nodes per position")


def cmd_evaluate(args) -> None:
    import json

    from .circuit import circuit_nodes, load_circuit
    from .datasets import load_task
    from .evaluation import evaluate_circuit
    from .loading import model_name

    graph = load_circuit(args.circuit)
    meta = graph.graph
    if args.model is None:
        args.model = meta.get("model_path") or meta["model"]
    if args.dictionaries is None and meta.get("dictionaries") not in (None, "default", "neurons"):
        args.dictionaries = meta["dictionaries"]
    args.neurons = args.neurons or meta.get("dictionaries") == "neurons"
    args.dict_id = args.dict_id or meta.get("dict_id")
    model, dictionaries = _load(args)
    if model_name(model) != meta["model"]:
        raise UserError(f"{args.circuit} was built on model {meta['model']!r}, not "
                        f"{model_name(model)!r}; pass --model {meta['model']}")
    data = load_task(args.dataset or meta.get("dataset"), args.split, args.n_examples, args.seed,
                     model.tokenizer)
    circuit = circuit_nodes(graph, list(dictionaries))
    result = evaluate_circuit(model, dictionaries, data, circuit, args.ablation, args.errors,
                              args.intact_layers, args.batch_size, seed=args.seed)
    if args.json:
        print(json.dumps({"faithfulness": result.faithfulness, "completeness": result.completeness,
                          "n_nodes": result.n_nodes}))
    else:
        print(f"faithfulness {result.faithfulness:.4f}  completeness {result.completeness:.4f}  "
              f"nodes {result.n_nodes}  ({len(data)} {args.split} examples, {args.ablation} ablation)")


def cmd_sweep(args) -> None:
    from pathlib import Path

    from .attribution import METHODS
    from .datasets import dataset_name, load_task
    from .loading import model_name
    from .plotting import plot_sweep
    from .sweep import DEFAULT_THRESHOLDS, sweep, write_csv

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    thresholds = DEFAULT_THRESHOLDS
    if args.thresholds:
        try:
            thresholds = [float(t) for t in args.thresholds.split(",")]
        except ValueError:
            raise UserError(f"--thresholds must be comma-separated numbers, got {args.thresholds!r}") from None
    _check_thresholds(*thresholds)
    model, dictionaries = _load(args)
    train = load_task(args.dataset, "train", args.n_examples, args.seed, model.tokenizer)
    test = load_task(args.dataset, "test", args.n_examples, args.seed, model.tokenizer)
    rows = sweep(model, dictionaries, train, test, methods, thresholds, args.batch_size)
    stem = Path(args.out) / f"{model_name(model)}_{dataset_name(args.dataset)}_sweep"
    csv_path = write_csv(rows, stem.parent / f"{stem.name}.csv")
    png_path = plot_sweep(rows, stem.parent / f"{stem.name}.png",
                          f"{model_name(model)} / {dataset_name(args.dataset)}")
    print(csv_path)
    print(png_path)


def cmd_fidelity(args) -> None:
    import json

    from .attribution import METHODS, TaskBatch
    from .datasets import load_task
    from .fidelity import COMPONENTS, component_fidelity, node_fidelity

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    for name in methods:
        if name not in METHODS or name == "exact":
            raise UserError(f"unknown method {name!r}; choose from atp, relp, ig")
    for name in components:
        if name not in COMPONENTS:
            raise UserError(f"unknown component {name!r}; choose from {', '.join(COMPONENTS)}")
    model, dictionaries = _load(args)
    data = load_task(args.task, "test", args.n_prompts, args.seed, model.tokenizer)
    batch = TaskBatch.from_rows(model.tokenizer, data.to_list())
    result = component_fidelity(model, batch, methods, components)
    nodes = {}
    if args.node_prompts > 0:
        node_batch = TaskBatch.from_rows(model.tokenizer, data.to_list()[:args.node_prompts])
        nodes = node_fidelity(model, dictionaries, node_batch, methods)
    if args.json:
        print(json.dumps({m: {**{c: v["prompt_averaged"] for c, v in result[m].items()},
                              **({"sae_nodes": nodes[m]} if nodes else {})} for m in methods}))
        return
    print(f"Pearson correlation with activation patching, {len(data)} {args.task} prompts, "
          "effects summed over hidden dims, cells = layer x position")
    print(f"{'method':<7}" + "".join(f"{c + ' avg':>11}{c + ' per':>11}" for c in components)
          + (f"{'SAE nodes':>11}" if nodes else ""))
    for m in methods:
        row = "".join(f"{result[m][c]['prompt_averaged']:>11.3f}{result[m][c]['per_prompt']:>11.3f}"
                      for c in components)
        print(f"{m:<7}{row}" + (f"{nodes[m]:>11.3f}" if nodes else ""))
    print("avg: over prompt-averaged cells (what --json reports); per: over per-prompt cells; "
          f"SAE nodes: features and errors, {min(args.node_prompts, len(data))} prompts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfc-relp", description=(
        "Sparse feature circuits with relevance patching (RelP) for GPT-NeoX, GPT-2, Llama/Qwen2/Mistral "
        "and Gemma-2 models."))
    parser.add_argument("--version", action="version", version=f"sfc-relp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    datasets = commands.add_parser("datasets", help="build the template datasets as JSONL")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    build = datasets_commands.add_parser("build", help="write {family}_{split}.jsonl for every task family")
    build.add_argument("--out", default="data", help="output directory (default data/)")
    build.add_argument("--n-train", type=int, default=512)
    build.add_argument("--n-test", type=int, default=128)
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=cmd_datasets_build)

    trace = commands.add_parser("trace", help="splice every SAE into one forward and summarise the nodes")
    _add_model_args(trace)
    trace.add_argument("--dataset", default="rc", help="task family or JSONL file (default rc)")
    trace.add_argument("--n-examples", type=int, default=8)
    trace.set_defaults(func=cmd_trace)

    circuit = commands.add_parser("circuit", help="discover a sparse feature circuit and draw it")
    _add_model_args(circuit)
    circuit.add_argument("--dataset", required=True, help="simple, nounpp, rc, within_rc, ioi or a .jsonl file")
    circuit.add_argument("--method", choices=["relp", "atp", "ig", "exact"], default="relp")
    circuit.add_argument("--node-threshold", type=float, default=0.1)
    circuit.add_argument("--edge-threshold", type=float, default=0.01)
    circuit.add_argument("--aggregation", choices=["sum", "none"], default="sum")
    circuit.add_argument("--exact-per-position", action="store_true",
                         help="exact node effects under --aggregation sum as the sum of single-position "
                              "patches (Marks et al.'s code) instead of one patch at every position")
    circuit.add_argument("--n-examples", type=int, default=64)
    circuit.add_argument("--batch-size", type=int, default=32)
    circuit.add_argument("--out", default="circuits")
    circuit.set_defaults(func=cmd_circuit)

    evaluate = commands.add_parser("evaluate", help="faithfulness and completeness of a saved circuit")
    _add_model_args(evaluate)
    evaluate.set_defaults(model=None)
    evaluate.add_argument("--circuit", required=True)
    evaluate.add_argument("--dataset", default=None, help="default: the circuit's dataset")
    evaluate.add_argument("--split", choices=["train", "test"], default="test")
    evaluate.add_argument("--n-examples", type=int, default=64)
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--ablation", choices=["mean", "zero", "resample"], default="mean")
    evaluate.add_argument("--errors", choices=["outside", "always", "never"], default="outside",
                          help="error nodes: ablate when outside the circuit, always, or never")
    evaluate.add_argument("--intact-layers", type=int, default=None,
                          help="layers below this are never ablated (default: a third of the layers)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    sweep_ = commands.add_parser("sweep", help="faithfulness against node threshold for several methods")
    _add_model_args(sweep_)
    sweep_.add_argument("--dataset", required=True)
    sweep_.add_argument("--methods", default="relp,ig,atp")
    sweep_.add_argument("--thresholds", default=None, help="comma-separated (default: logspace(-4, 0, 15))")
    sweep_.add_argument("--n-examples", type=int, default=64)
    sweep_.add_argument("--batch-size", type=int, default=32)
    sweep_.add_argument("--out", default="circuits")
    sweep_.set_defaults(func=cmd_sweep)

    fidelity = commands.add_parser("fidelity", help="correlation of each method with activation patching")
    _add_model_args(fidelity)
    fidelity.add_argument("--task", choices=["ioi", "simple", "nounpp", "rc", "within_rc"], default="ioi")
    fidelity.add_argument("--n-prompts", type=int, default=100)
    fidelity.add_argument("--methods", default="atp,relp,ig")
    fidelity.add_argument("--components", default="resid,attn,mlp")
    fidelity.add_argument("--node-prompts", type=int, default=16,
                          help="prompts for the SAE-node-level correlation (exact patching of every node; 0 skips)")
    fidelity.add_argument("--json", action="store_true", help="print {method: {component: pcc}}")
    fidelity.set_defaults(func=cmd_fidelity)

    zoo = commands.add_parser("zoo", help="models and dictionaries made by the project")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    train = zoo_commands.add_parser("train", help="recreate the bundled model and its 19 SAEs (seeded)")
    train.add_argument("--name", default="tiny-pythia")
    train.add_argument("--budget", choices=["full", "mini"], default="full",
                       help="full: the shipped bundle; mini: a seconds-long smoke run")
    train.add_argument("--model-dir", default=None, help="where to write the model (default: the package zoo)")
    train.add_argument("--dictionaries", default=None, help="dictionary root (default: the project's dictionaries/)")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_zoo_train)

    report = zoo_commands.add_parser("report", help="task accuracy and SAE quality of a model and its SAEs")
    _add_model_args(report)
    report.add_argument("--n-sentences", type=int, default=1000, help="held-out corpus size for SAE metrics")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.set_defaults(func=cmd_zoo_report)

    from .architectures import model_types

    random_ = zoo_commands.add_parser("random", help="save a random-weight model of a family and calibrated SAEs")
    random_.add_argument("--out", required=True)
    random_.add_argument("--arch", choices=model_types(), default="gpt_neox",
                         help="model family (HF model_type); real shapes of Pythia-70M, GPT-2 small, "
                              "Llama-3.2-1B, Qwen2-0.5B, Mistral-7B or Gemma-2-2B unless --small")
    random_.add_argument("--name", default=None, help="model directory name (default random-ARCH)")
    random_.add_argument("--tokenizer", default="../shared/data/gpt-neox-20b-tokenizer.json")
    random_.add_argument("--width", type=int, default=32768)
    random_.add_argument("--l0", type=int, default=64, help="features firing per token after calibration")
    random_.add_argument("--layers", type=int, default=None, help="number of layers (default: the real model's)")
    random_.add_argument("--small", action="store_true", help="d_model 64 toy of the family")
    random_.add_argument("--seed", type=int, default=0)
    random_.set_defaults(func=cmd_zoo_random)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        args.func(args)
    except UserError as exc:
        print(f"sfc-relp: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sfc-relp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
