"""The `sfc-relp` command line: a thin layer over the library.

Every user mistake surfaces as a UserError: one line on stderr, exit code 1, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import __version__
from . import validation as V
from .errors import SfcRelpWarning, UserError


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line on stderr and exits 1 (argparse: usage + exit 2)."""

    def error(self, message: str):
        command = self.prog.removeprefix("sfc-relp").strip()
        self.exit(1, f"sfc-relp: error: {command + ': ' if command else ''}{message}\n")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    from .loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"bundled model name, local HF directory or cached HF id (default {DEFAULT_MODEL})")
    parser.add_argument("--dictionaries", default=None,
                        help="SAE dictionaries: a root in Marks et al.'s layout or a JSON/YAML mapping file "
                             "{submodule: path}; formats detected per path (default: the model directory's own "
                             "dictionaries/ (bundled models), else the project's dictionaries/)")
    parser.add_argument("--dict-id", default=None, help="which <id>_<width> dictionary to use when several exist")
    parser.add_argument("--neurons", action="store_true", help="use neurons (identity dictionaries) instead of SAEs")
    parser.add_argument("--missing", choices=["error", "neurons", "skip"], default=None,
                        help="submodules without a dictionary: error (default), neuron nodes, or left out of the graph")
    parser.add_argument("--device", default="cpu", type=V.device,
                        help="cpu, cuda or cuda:N (under torchrun, cuda is cuda:LOCAL_RANK)")
    parser.add_argument("--device-map", default=None,
                        help="split the model over devices with accelerate (auto, balanced, sequential); "
                             "each SAE goes beside its submodule")
    parser.add_argument("--dtype", default="float32", type=V.dtype,
                        help="model and SAE dtype: float32, bfloat16 or float16")
    parser.add_argument("--seed", type=V.non_negative_int, default=0)


def _load(args):
    import torch

    from .dictionaries import dictionaries_for
    from .distributed import local_device
    from .loading import load_model
    from .placement import place_dictionaries

    torch.manual_seed(args.seed)
    args.device = local_device(args.device)
    model = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    dictionaries = dictionaries_for(model, args.dictionaries, args.dict_id, args.neurons,
                                    args.missing or "error")
    if args.device_map is not None:
        place_dictionaries(model, dictionaries)
    return model, dictionaries


def _task(args, model, name, split, n):
    """load_task with the model's tokenizer and context length."""
    from .datasets import load_task

    context = getattr(model.config, "max_position_embeddings", None)
    return load_task(name, split, n, args.seed, model.tokenizer, max_length=context)


def _missing_record(args, model, dictionaries) -> dict:
    """What happened to submodules without a dictionary, for the circuit metadata."""
    from .architectures import submodules_for

    names = [s.name for s in submodules_for(model.config)]
    filled = [] if args.neurons else [n for n, d in dictionaries.items() if d.info.format == "neurons"]
    return {"policy": args.missing or "error", "neurons": filled,
            "skipped": [n for n in names if n not in dictionaries]}


def cmd_datasets_build(args) -> None:
    from .datasets import build_all

    for path in build_all(args.out, args.n_train, args.n_test, args.seed):
        print(path)


def cmd_trace(args) -> None:
    """Splice every dictionary into one forward and report what each submodule holds."""
    import torch

    from .loading import hf_model
    from .tracing import run_spliced, tokenize

    model, dictionaries = _load(args)
    data = _task(args, model, args.dataset, "test", args.n_examples)
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
    """A random-weight model of a registered family plus random SAEs calibrated to ~L0.

    Both are written under a staging directory in --out and renamed into place together, so a
    failure leaves nothing behind; an existing non-empty target is refused, never replaced.
    """
    import shutil
    from pathlib import Path

    from .files import apply_umask, stage_dir, swap_in
    from .loading import load_model
    from .random_model import (calibrate_sparsity, calibration_prompts, load_tokenizer_file,
                               random_dictionaries, save_random_model, write_dictionaries)
    from .tracing import tokenize

    if args.width <= args.l0:
        raise UserError(f"--width {args.width} must exceed --l0 {args.l0}")
    name = args.name or f"random-{args.arch}"
    out = Path(args.out)
    targets = (out / name, out / "dictionaries" / name)
    for target in targets:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} already exists; choose another --out or --name")
    tokenizer = load_tokenizer_file(args.tokenizer)
    overrides = {} if args.layers is None else {"num_hidden_layers": args.layers}
    staging = stage_dir(out / name)
    try:
        model_dir = save_random_model(staging / name, tokenizer, args.seed, args.arch, args.small,
                                      **overrides)
        model = load_model(str(model_dir))
        saes = random_dictionaries(model.config, args.width, args.seed)
        counts = calibrate_sparsity(model, saes, tokenize(model.tokenizer, calibration_prompts()), args.l0)
        write_dictionaries(staging / "dictionaries", name, model.config, saes)
        apply_umask(staging)
        targets[1].parent.mkdir(exist_ok=True)
        for target in targets:
            if target.is_dir():
                target.rmdir()  # empty, checked above
        swap_in([(staging / name, targets[0]), (staging / "dictionaries" / name, targets[1])])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"model: {targets[0]}\ndictionaries: {out / 'dictionaries'}")
    print(f"active features per token (target {args.l0}): mean "
          f"{sum(counts.values()) / len(counts):.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in counts.items()))


def cmd_zoo_train(args) -> None:
    from .loading import ZOO_DIR
    from .training.bundle import train_bundle

    from .training.language_model import DEFAULT_NAMES

    name = args.name or DEFAULT_NAMES[args.arch]
    model_dir = args.model_dir or ZOO_DIR / name
    result = train_bundle(model_dir, args.dictionaries, name, args.budget, args.seed, arch=args.arch,
                          force=args.force)
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


def _canonical_dtype(name: str) -> str:
    from .loading import parse_dtype

    return str(parse_dtype(name)).removeprefix("torch.")


def cmd_circuit(args) -> None:
    from pathlib import Path

    from .annotations import load_annotations
    from .circuit import circuit_json, discover_circuit, settings_conflict
    from .datasets import dataset_name
    from .features import fingerprint
    from .files import StagedFiles, safe_name
    from .distributed import is_writer
    from .plotting import draw_circuit

    model_short = safe_name(Path(args.model.rstrip("/")).name, "model")
    name = f"{model_short}_{dataset_name(args.dataset)}_{args.method}"
    out = Path(args.out)
    settings = {"method": args.method, "node_threshold": args.node_threshold,
                "edge_threshold": args.edge_threshold, "aggregation": args.aggregation,
                "dtype": _canonical_dtype(args.dtype), "seed": args.seed, "neurons": args.neurons,
                "dictionaries": "neurons" if args.neurons else str(args.dictionaries or "default"),
                "dict_id": args.dict_id, "missing": args.missing or "error",
                "n_examples_requested": args.n_examples, "dataset": args.dataset, "split": "train",
                "exact_per_position_sum": args.exact_per_position}
    conflict = settings_conflict(out / f"{name}.json", settings)
    if conflict and not args.force:
        raise UserError(f"{conflict}; pass --force to replace it or choose another --out")
    if args.exact_per_position and args.method != "exact":
        raise UserError("--exact-per-position applies to --method exact only")
    annotations = load_annotations(args.annotations)
    model, dictionaries = _load(args)
    data = _task(args, model, args.dataset, "train", args.n_examples)
    options = {"per_position_sum": True} if args.exact_per_position else {}
    graph = discover_circuit(
        model, dictionaries, data, args.method, args.node_threshold, args.edge_threshold,
        args.aggregation, args.batch_size, metadata={
            **{k: v for k, v in settings.items()
               if k not in ("method", "node_threshold", "edge_threshold", "aggregation")},
            "model": model_short, "model_path": args.model,
            "missing_dictionaries": _missing_record(args, model, dictionaries)}, **options)
    graph.graph["dictionary_fingerprints"] = {k: fingerprint(v) for k, v in dictionaries.items()}
    if not is_writer():
        return
    with StagedFiles(out) as staged:
        Path(staged.path(f"{name}.json")).write_text(circuit_json(graph))
        draw_circuit(graph, out / name, annotations, staged=staged)
        paths = staged.commit()
    for path in paths:
        print(path)
    print(f"nodes: {graph.number_of_nodes() - 1}  edges: {graph.number_of_edges()}")
    if not graph.graph["edges_computed"]:
        print("note: edges are computed for --aggregation sum only; this circuit has nodes per position")


def cmd_evaluate(args) -> None:
    import json

    from .circuit import circuit_nodes, load_circuit
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
    args.missing = args.missing or (meta.get("missing_dictionaries") or {}).get("policy")
    model, dictionaries = _load(args)
    if model_name(model) != meta["model"]:
        raise UserError(f"{args.circuit} was built on model {meta['model']!r}, not "
                        f"{model_name(model)!r}; pass --model {meta['model']}")
    circuit = circuit_nodes(graph, dictionaries)
    data = _task(args, model, args.dataset or meta.get("dataset"), args.split, args.n_examples)
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

    from .datasets import dataset_name
    from .files import StagedFiles, safe_name
    from .distributed import is_writer
    from .loading import model_name
    from .plotting import plot_sweep
    from .sweep import DEFAULT_THRESHOLDS, sweep, write_csv

    thresholds = args.thresholds or DEFAULT_THRESHOLDS
    model, dictionaries = _load(args)
    train = _task(args, model, args.dataset, "train", args.n_examples)
    test = _task(args, model, args.dataset, "test", args.n_examples)
    rows = sweep(model, dictionaries, train, test, args.methods, thresholds, args.batch_size)
    if not is_writer():
        return
    stem = f"{safe_name(model_name(model), 'model')}_{dataset_name(args.dataset)}_sweep"
    with StagedFiles(Path(args.out)) as staged:
        write_csv(rows, staged.path(f"{stem}.csv"), atomic=False)
        plot_sweep(rows, staged.path(f"{stem}.png"),
                   f"{model_name(model)} / {dataset_name(args.dataset)}", atomic=False)
        for path in staged.commit():
            print(path)


def _fidelity_one(args, model, dictionaries, methods, components, out):
    """Run one model's fidelity (component effects, optional SAE nodes); write its files."""
    from .attribution import TaskBatch
    from .distributed import is_writer
    from .fidelity import correlations, node_fidelity, run_fidelity, save_fidelity
    from .fidelity_figure import draw_fidelity
    from .placement import input_device

    data = _task(args, model, args.task, "test", args.n_prompts)
    run = run_fidelity(model, data.to_list(), args.task, methods, components)
    result = correlations(run)
    nodes = {}
    if args.node_prompts > 0:
        node_batch = TaskBatch.from_rows(model.tokenizer, data.to_list()[:args.node_prompts],
                                         input_device(model))
        nodes = node_fidelity(model, dictionaries, node_batch, methods)
    paths = []
    if out is not None and is_writer():
        stem = out / f"{run.model}_{args.task}_fidelity"
        paths = [save_fidelity(run, f"{stem}.npz")] + draw_fidelity(run, stem)
    return run, result, nodes, paths


def _print_fidelity(run, result, nodes, methods, components, node_prompts) -> None:
    print(f"{run.model}: Pearson correlation with activation patching, {len(run.clean_prefix)} "
          f"{run.task} prompts, effects summed over hidden dims, cells = layer x position")
    print(f"{'method':<7}" + "".join(f"{c + ' avg':>11}{c + ' per':>11}" for c in components)
          + (f"{'SAE nodes':>11}" if nodes else ""))
    for m in methods:
        row = "".join(f"{result[m][c]['prompt_averaged']:>11.3f}{result[m][c]['per_prompt']:>11.3f}"
                      for c in components)
        print(f"{m:<7}{row}" + (f"{nodes[m]:>11.3f}" if nodes else ""))
    print("avg: over prompt-averaged cells (what --json reports); per: over per-prompt cells"
          + (f"; SAE nodes: features and errors, {min(node_prompts, len(run.clean_prefix))} prompts"
             if nodes else ""))


def cmd_fidelity(args) -> None:
    import json
    from pathlib import Path

    from .distributed import is_writer
    from .fidelity_table import table_rows, write_table
    from .loading import bundled_models

    methods, components = args.methods, args.components
    if args.n_prompts < 2:
        raise UserError(f"--n-prompts must be at least 2, got {args.n_prompts}")
    out = Path(args.out) if args.out else None
    if args.all_bundled and out is None:
        raise UserError("--all-bundled writes a table and figures; pass --out DIR")
    names = bundled_models() if args.all_bundled else [args.model]
    summary, results = {}, []
    for name in names:
        args.model = name
        model, dictionaries = _load(args)
        run, result, nodes, paths = _fidelity_one(args, model, dictionaries, methods, components, out)
        results.append({"model": run.model, "family": model.config.model_type,
                        "correlations": result})
        summary[run.model] = {m: {**{c: v["prompt_averaged"] for c, v in result[m].items()},
                                  **({"sae_nodes": nodes[m]} if nodes else {})} for m in methods}
        if not args.json:
            _print_fidelity(run, result, nodes, methods, components, args.node_prompts)
            for path in paths:
                print(path)
    if args.all_bundled and is_writer():
        for path in write_table(table_rows(results), out / f"fidelity_{args.task}_table"):
            if not args.json:
                print(path)
    if args.json:
        print(json.dumps(summary if args.all_bundled else summary[run.model]))


def _methods() -> list[str]:
    from .attribution import METHODS

    return list(METHODS)


def _add_inspect_model(parser: argparse.ArgumentParser) -> None:
    from .loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help="model whose submodules to list "
                        f"(default {DEFAULT_MODEL})")


def cmd_dictionaries_inspect(args) -> None:
    """One line per submodule: format, class, width, sparsity, normalisation, path."""
    from pathlib import Path

    from transformers import AutoConfig

    from .architectures import submodules_for
    from .dictionaries import describe, inspect_source
    from .loading import resolve_model_path

    path = resolve_model_path(args.model)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read the config of model {args.model!r} ({type(exc).__name__})") from None
    rows = inspect_source(args.source, Path(path).name, submodules_for(config), config.hidden_size,
                          args.dict_id)
    print(f"{'submodule':<10} {'format':<20} {'class':<22} {'width':>7}  {'sparsity':<28} "
          f"{'normalisation':<26} path")
    for name, ae in rows:
        if ae is None:
            print(f"{name:<10} {'(none)':<20}")
            continue
        d = describe(ae)
        print(f"{name:<10} {d['format']:<20} {d['class']:<22} {d['width']:>7}  {d['sparsity']:<28} "
              f"{d['normalisation']:<26} {d['path']}")


def cmd_features(args) -> None:
    from .circuit import load_circuit
    from .features import feature_summaries, fingerprint, load_corpus, save_features

    if (args.circuit is None) == (args.submodules is None):
        raise UserError("pass exactly one of --circuit FILE and --submodules a,b")
    graph = load_circuit(args.circuit) if args.circuit else None
    if graph is not None and args.model is None:
        args.model = graph.graph.get("model_path") or graph.graph["model"]
        if args.dictionaries is None and graph.graph.get("dictionaries") not in (None, "default", "neurons"):
            args.dictionaries = graph.graph["dictionaries"]
        args.neurons = args.neurons or graph.graph.get("dictionaries") == "neurons"
        args.dict_id = args.dict_id or graph.graph.get("dict_id")
    if args.model is None:
        from .loading import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    corpus = load_corpus(args.corpus, args.max_docs, args.text_column)
    model, dictionaries = _load(args)
    if graph is not None:
        from .features import check_compatible
        from .loading import model_name

        check_compatible({"metadata": {
            "model": model_name(model), "dictionaries": "neurons" if args.neurons else str(args.dictionaries or "default"),
            "dictionary_fingerprints": {k: fingerprint(v) for k, v in dictionaries.items()}}},
            graph, what="--model/--dictionaries")
    nodes = graph if graph is not None else [s.strip() for s in args.submodules.split(",") if s.strip()]
    summaries = feature_summaries(
        model, dictionaries, corpus, nodes, top_k=args.top_k, context=args.context,
        batch_size=args.batch_size, max_length=args.max_length, metadata={
            "model_path": args.model, "corpus": str(args.corpus), "dict_id": args.dict_id,
            "dictionaries": "neurons" if args.neurons else str(args.dictionaries or "default")})
    path = save_features(summaries, args.out)
    print(path)
    print(f"{len(summaries['features'])} features over {summaries['metadata']['n_documents']} documents "
          f"({summaries['metadata']['n_tokens']} tokens)")


def cmd_view(args) -> None:
    from .annotations import load_annotations
    from .circuit import load_circuit
    from .features import load_features
    from .view import write_page

    graph = load_circuit(args.circuit)
    annotations = load_annotations(args.annotations)
    features = load_features(args.features) if args.features else None
    print(write_page(graph, args.out, features, annotations))


def cmd_export(args) -> None:
    from pathlib import Path

    from .annotations import load_annotations
    from .circuit import load_circuit
    from .export import save_neuronpedia, to_neuronpedia
    from .features import load_features

    graph = load_circuit(args.circuit)
    features = load_features(args.features)["features"] if args.features else None
    data = to_neuronpedia(graph, load_annotations(args.annotations), features=features)
    out = args.out or str(Path(args.circuit).with_suffix("")) + ".neuronpedia.json"
    print(save_neuronpedia(data, out))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sfc-relp", description=(
        "Sparse feature circuits with relevance patching (RelP) for GPT-NeoX, GPT-2, Llama/Qwen2/Mistral "
        "and Gemma-2 models."))
    parser.add_argument("--version", action="version", version=f"sfc-relp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    datasets = commands.add_parser("datasets", help="build the template datasets as JSONL")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    build = datasets_commands.add_parser("build", help="write {family}_{split}.jsonl for every task family")
    build.add_argument("--out", default="data", type=V.output_dir, help="output directory (default data/)")
    build.add_argument("--n-train", type=V.positive_int, default=512)
    build.add_argument("--n-test", type=V.positive_int, default=128)
    build.add_argument("--seed", type=V.non_negative_int, default=0)
    build.set_defaults(func=cmd_datasets_build)

    trace = commands.add_parser("trace", help="splice every SAE into one forward and summarise the nodes")
    _add_model_args(trace)
    trace.add_argument("--dataset", default="rc", help="task family or JSONL file (default rc)")
    trace.add_argument("--n-examples", type=V.positive_int, default=8)
    trace.set_defaults(func=cmd_trace)

    circuit = commands.add_parser("circuit", help="discover a sparse feature circuit and draw it")
    _add_model_args(circuit)
    circuit.add_argument("--dataset", required=True, help="simple, nounpp, rc, within_rc, ioi or a .jsonl file")
    circuit.add_argument("--method", choices=["relp", "atp", "ig", "exact"], default="relp")
    circuit.add_argument("--node-threshold", type=V.non_negative_float, default=0.1)
    circuit.add_argument("--edge-threshold", type=V.non_negative_float, default=0.01)
    circuit.add_argument("--aggregation", choices=["sum", "none"], default="sum")
    circuit.add_argument("--exact-per-position", action="store_true",
                         help="exact node effects under --aggregation sum as the sum of single-position "
                              "patches (Marks et al.'s code) instead of one patch at every position")
    circuit.add_argument("--n-examples", type=V.positive_int, default=64)
    circuit.add_argument("--batch-size", type=V.positive_int, default=32)
    circuit.add_argument("--out", default="circuits", type=V.output_dir)
    circuit.add_argument("--force", action="store_true",
                         help="replace a saved circuit of the same name built with other settings")
    circuit.add_argument("--annotations", default=None, help="JSON {node id: label}; labels replace ids in the diagram")
    circuit.set_defaults(func=cmd_circuit)

    features = commands.add_parser("features", help="top contexts, density and logit lens of circuit features")
    _add_model_args(features)
    features.set_defaults(model=None)
    features.add_argument("--corpus", required=True,
                          help="text file (a document per line), .jsonl task file, save_to_disk directory or task family")
    features.add_argument("--circuit", default=None, help="summarise this circuit's feature nodes")
    features.add_argument("--submodules", default=None, help="or all features of these submodules (a,b)")
    features.add_argument("--out", required=True, help="directory for features.json")
    features.add_argument("--top-k", type=V.positive_int, default=10)
    features.add_argument("--context", type=V.non_negative_int, default=8, help="tokens each side of the maximum")
    features.add_argument("--batch-size", type=V.positive_int, default=16)
    features.add_argument("--max-length", type=V.positive_int, default=64, help="tokens kept per document")
    features.add_argument("--max-docs", type=V.positive_int, default=None)
    features.add_argument("--text-column", default="text", help="column of a save_to_disk dataset")
    features.set_defaults(func=cmd_features)

    view = commands.add_parser("view", help="one self-contained offline HTML page for a circuit")
    view.add_argument("--circuit", required=True)
    view.add_argument("--features", default=None, help="directory (or file) written by `sfc-relp features`")
    view.add_argument("--annotations", default=None, help="JSON {node id: label}")
    view.add_argument("--out", required=True, help="the .html file to write")
    view.set_defaults(func=cmd_view)

    export = commands.add_parser("export", help="export a circuit as Neuronpedia / circuit-tracer graph JSON")
    export.add_argument("--circuit", required=True)
    export.add_argument("--format", choices=["neuronpedia"], default="neuronpedia")
    export.add_argument("--features", default=None, help="features directory (fills node activation)")
    export.add_argument("--annotations", default=None, help="JSON {node id: label} (fills clerp)")
    export.add_argument("--out", default=None, help="default: <circuit>.neuronpedia.json")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="faithfulness and completeness of a saved circuit")
    _add_model_args(evaluate)
    evaluate.set_defaults(model=None)
    evaluate.add_argument("--circuit", required=True)
    evaluate.add_argument("--dataset", default=None, help="default: the circuit's dataset")
    evaluate.add_argument("--split", choices=["train", "test"], default="test")
    evaluate.add_argument("--n-examples", type=V.positive_int, default=64)
    evaluate.add_argument("--batch-size", type=V.positive_int, default=32)
    evaluate.add_argument("--ablation", choices=["mean", "zero", "resample"], default="mean")
    evaluate.add_argument("--errors", choices=["outside", "always", "never"], default="outside",
                          help="error nodes: ablate when outside the circuit, always, or never")
    evaluate.add_argument("--intact-layers", type=V.non_negative_int, default=None,
                          help="layers below this are never ablated (default: a third of the layers)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)

    sweep_ = commands.add_parser("sweep", help="faithfulness against node threshold for several methods")
    _add_model_args(sweep_)
    sweep_.add_argument("--dataset", required=True)
    sweep_.add_argument("--methods", default="relp,ig,atp", type=V.name_list(_methods, "method"))
    sweep_.add_argument("--thresholds", default=None, type=V.threshold_list,
                        help="comma-separated (default: logspace(-4, 0, 15))")
    sweep_.add_argument("--n-examples", type=V.positive_int, default=64)
    sweep_.add_argument("--batch-size", type=V.positive_int, default=32)
    sweep_.add_argument("--out", default="circuits", type=V.output_dir)
    sweep_.set_defaults(func=cmd_sweep)

    fidelity = commands.add_parser("fidelity", help="correlation of each method with activation patching")
    _add_model_args(fidelity)
    fidelity.add_argument("--task", choices=["ioi", "simple", "nounpp", "rc", "within_rc"], default="ioi")
    fidelity.add_argument("--n-prompts", type=V.positive_int, default=100)
    fidelity.add_argument("--methods", default="atp,relp", type=V.name_list(("atp", "relp", "ig"), "method"),
                          help="comma-separated: atp, relp, ig")
    fidelity.add_argument("--components", default="resid,attn,mlp",
                          type=V.name_list(("resid", "attn", "mlp"), "component"))
    fidelity.add_argument("--node-prompts", type=V.non_negative_int, default=16,
                          help="prompts for the SAE-node-level correlation (exact patching of every node; 0 skips)")
    fidelity.add_argument("--out", default=None, type=V.output_dir,
                          help="write <model>_<task>_fidelity.npz (raw effects) and .png/.svg (heatmaps) here")
    fidelity.add_argument("--all-bundled", action="store_true",
                          help="every bundled model, plus fidelity_<task>_table.md/.csv beside the paper's Table 5")
    fidelity.add_argument("--json", action="store_true",
                          help="print {method: {component: pcc}} ({model: ...} with --all-bundled)")
    fidelity.set_defaults(func=cmd_fidelity)

    dicts = commands.add_parser("dictionaries", help="inspect SAE dictionaries in any supported format")
    dicts_commands = dicts.add_subparsers(dest="dictionaries_command", metavar="ACTION", required=True)
    inspect = dicts_commands.add_parser("inspect", help="one line per submodule: format, class, width, "
                                                        "threshold/k, normalisation, path")
    inspect.add_argument("source", help="dictionary root (Marks et al.'s layout) or mapping file")
    _add_inspect_model(inspect)
    inspect.add_argument("--dict-id", default=None)
    inspect.set_defaults(func=cmd_dictionaries_inspect)

    zoo = commands.add_parser("zoo", help="models and dictionaries made by the project")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    train = zoo_commands.add_parser("train", help="recreate a bundled model and its SAEs (seeded)")
    train.add_argument("--arch", choices=["gpt_neox", "gpt2", "qwen2", "gemma2"], default="gpt_neox",
                       help="model family (default gpt_neox)")
    train.add_argument("--name", default=None, type=V.component,
                       help="default by family: tiny-pythia, tiny-gpt2, tiny-qwen2, tiny-gemma2")
    train.add_argument("--budget", choices=["full", "mini"], default="full",
                       help="full: the shipped bundle; mini: a seconds-long smoke run")
    train.add_argument("--model-dir", default=None, type=V.output_dir,
                       help="where to write the model (default: the package zoo)")
    train.add_argument("--dictionaries", default=None, type=V.output_dir,
                       help="dictionary root to write ROOT/<name>/... (default: the model directory's dictionaries/)")
    train.add_argument("--seed", type=V.non_negative_int, default=0)
    train.add_argument("--force", action="store_true",
                       help="replace a non-empty target directory that zoo train did not write")
    train.set_defaults(func=cmd_zoo_train)

    report = zoo_commands.add_parser("report", help="task accuracy and SAE quality of a model and its SAEs")
    _add_model_args(report)
    report.add_argument("--n-sentences", type=V.positive_int, default=1000, help="held-out corpus size for SAE metrics")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.set_defaults(func=cmd_zoo_report)

    from .architectures import model_types

    random_ = zoo_commands.add_parser("random", help="save a random-weight model of a family and calibrated SAEs")
    random_.add_argument("--out", required=True, type=V.output_dir)
    random_.add_argument("--arch", choices=model_types(), default="gpt_neox",
                         help="model family (HF model_type); real shapes of Pythia-70M, GPT-2 small, "
                              "Llama-3.2-1B, Qwen2-0.5B, Mistral-7B or Gemma-2-2B unless --small")
    random_.add_argument("--name", default=None, type=V.component,
                         help="model directory name (default random-ARCH)")
    random_.add_argument("--tokenizer", default="../shared/data/gpt-neox-20b-tokenizer.json",
                         type=V.existing_file)
    random_.add_argument("--width", type=V.positive_int, default=32768)
    random_.add_argument("--l0", type=V.positive_int, default=64, help="features firing per token after calibration")
    random_.add_argument("--layers", type=V.positive_int, default=None,
                         help="number of layers (default: the real model's)")
    random_.add_argument("--small", action="store_true", help="d_model 64 toy of the family")
    random_.add_argument("--seed", type=V.non_negative_int, default=0)
    random_.set_defaults(func=cmd_zoo_random)
    return parser


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, *_args, **_kwargs) -> None:
    print(f"sfc-relp: warning: {_one_line(message)}", file=sys.stderr)


def _run_ranked(args) -> None:
    """Run the command; under torchrun join the process group, keep stdout to rank 0, and
    stop every rank when one fails (see sfc_relp.distributed)."""
    import contextlib

    from . import distributed

    if not distributed.init(distributed.local_device(getattr(args, "device", "cpu"))):
        args.func(args)
        return
    try:
        with contextlib.ExitStack() as stack:
            if not distributed.is_writer():
                stack.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))
            with distributed.guard():
                args.func(args)
    finally:
        distributed.shutdown()


def main(argv=None) -> int:
    from .distributed import PeerFailure, launched

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    where = f" (rank {os.environ['RANK']})" if launched() else ""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("always", category=SfcRelpWarning)
        warnings.showwarning = _show_warning
        try:
            _run_ranked(args)
        except UserError as exc:
            print(f"sfc-relp: error{where}: {_one_line(exc)}", file=sys.stderr)
            return 1
        except PeerFailure as exc:
            print(f"sfc-relp: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        except OSError as exc:  # disk full, read-only output, permissions
            path = f" ({exc.filename})" if exc.filename else ""
            print(f"sfc-relp: error{where}: {_one_line(exc.strerror or exc)}{path}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("sfc-relp: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
