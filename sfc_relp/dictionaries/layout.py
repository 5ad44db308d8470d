"""Where each submodule's dictionary lives and which format it is in.

A source is either a directory in Marks et al.'s layout,
`<root>/<model>/{embed,attn_out_layerN,mlp_out_layerN,resid_out_layerN}/` (or the same
without the `<model>` level), whose submodule directories hold one dictionary or several
`<id>_<width>/` variants; or a directory of dictionaries whose own metadata names their hook
point (a sparsify export's `layers.L/`, SAELens folders with `metadata.hook_name`, ...); or a
mapping file (JSON, or YAML) from submodule names to paths, relative to the file, for any
other layout. The format of each path is detected from the files present.
"""

from __future__ import annotations

from pathlib import Path

from ..architectures import Submodule
from ..errors import UserError
from . import dictionary_learning, gemma_scope, llama_scope, saelens, sparsify

FORMATS = (dictionary_learning, saelens, sparsify, gemma_scope, llama_scope)
MAPPING_SUFFIXES = (".json", ".yaml", ".yml")


def detect_format(path: Path):
    """The format module whose files `path` holds (a directory, or an ae.pt/params.npz file)."""
    if path.is_file():
        if path.name == "params.npz":
            return gemma_scope, path.parent
        if path.suffix == ".pt":
            return dictionary_learning, path
        raise UserError(f"{path}: not a dictionary file; point at its directory instead")
    if not path.is_dir():
        raise UserError(f"no dictionary at {path}: it does not exist")
    for fmt in FORMATS:
        if fmt.detect(path):
            return fmt, path
    looked = "; ".join(f"{fmt.NAME}: {fmt.FILES}" for fmt in FORMATS)
    present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise UserError(f"{path} holds no dictionary in a known format (looked for {looked}; "
                    f"found {present})")


def is_mapping(source) -> bool:
    return Path(source).suffix.lower() in MAPPING_SUFFIXES and Path(source).is_file()


def _variants(subdir: Path, dict_id: str | None) -> list[Path]:
    if not subdir.is_dir():
        return []
    if any(fmt.detect(subdir) for fmt in FORMATS):
        return [subdir]
    found = sorted(p for p in subdir.iterdir() if p.is_dir() and any(f.detect(p) for f in FORMATS))
    children = sorted(p for p in subdir.iterdir() if p.is_dir())
    if not found and children:
        detect_format(children[0])  # raises: names the files looked for and those present
    if dict_id is not None:
        found = [p for p in found if p.name == dict_id or p.name.split("_")[0] == dict_id]
    return found


def from_directory(root, model: str, submodules: list[Submodule],
                   dict_id: str | None = None) -> dict[str, Path | None]:
    """{submodule: path or None} in Marks et al.'s layout under `root`."""
    root = Path(root)
    base = root / model
    if not base.is_dir():
        if any((root / s.dictionary_dirname).is_dir() for s in submodules):
            base = root
        else:
            by_hook = from_hook_points(root, submodules) if root.is_dir() else {}
            if any(by_hook.values()):
                return by_hook
            raise UserError(f"no dictionaries for model {model!r}: {base} does not exist and no "
                            f"directory under {root} names a hook point; pass --dictionaries ROOT "
                            "(holding ROOT/<model>/...), a mapping file, or use neuron mode")
    found = {}
    for sub in submodules:
        variants = _variants(base / sub.dictionary_dirname, dict_id)
        if len(variants) > 1:
            names = ", ".join(p.name for p in variants)
            raise UserError(f"{base / sub.dictionary_dirname} holds several dictionaries ({names}); "
                            "choose one with dict_id (--dict-id)")
        found[sub.name] = variants[0] if variants else None
    return found


def from_mapping(path, submodules: list[Submodule]) -> dict[str, Path | None]:
    """{submodule: path or None} from a mapping file."""
    from .files import read_mapping

    path = Path(path)
    mapping = read_mapping(path)
    names = [s.name for s in submodules]
    unknown = [k for k in mapping if k not in names]
    if unknown:
        raise UserError(f"{path}: {unknown[0]!r} is not a submodule of this model "
                        f"(submodules: {', '.join(names)})")
    found = {}
    for name in names:
        target = mapping.get(name)
        if target is None:
            found[name] = None
            continue
        if not isinstance(target, str):
            raise UserError(f"{path}: the entry for {name} must be a path string, got {target!r}")
        target_path = Path(target).expanduser()
        found[name] = target_path if target_path.is_absolute() else path.parent / target_path
    return found


def from_hook_points(root: Path, submodules: list[Submodule]) -> dict[str, Path | None]:
    """{submodule: path or None} from the hook point each dictionary under `root` names in its
    own metadata; dictionaries on hook points that are not submodules are passed over."""
    from .hooks import submodule_for_hook

    found: dict[str, Path | None] = {s.name: None for s in submodules}
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        fmt = next((f for f in FORMATS if f.detect(child)), None)
        hook = fmt.hook(child) if fmt is not None else None
        if hook is None:
            continue
        try:
            name = submodule_for_hook(hook, child)
        except UserError:
            continue
        if name not in found:
            continue
        if found[name] is not None:
            raise UserError(f"{found[name]} and {child} are both for {name}; pass a mapping file "
                            "naming the one to use")
        found[name] = child
    return found
