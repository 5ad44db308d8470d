"""Annotations, as Marks et al. use them: a JSON object mapping node ids to short labels.

A key is a node id (`resid_2/17`, `attn_1/err`, `mlp_0/3@4`); a key without `@<position>`
labels that feature at every position. Labels replace ids in diagrams and on the page.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def load_annotations(path) -> dict[str, str]:
    """{node id: label} from a JSON file; a UserError when missing or not a string mapping."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"annotations file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not JSON ({type(exc).__name__}); write an object "
                        '{"resid_2/17": "plural subject", ...}') from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise UserError(f'{path} must hold one JSON object of strings, {{"resid_2/17": "label"}}')
    return data


def label_for(node: str, annotations: dict[str, str] | None) -> str | None:
    """The label of `node`: its own entry, else its feature's entry (position dropped)."""
    if not annotations:
        return None
    return annotations.get(node) or annotations.get(node.split("@", 1)[0])
