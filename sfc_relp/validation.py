"""Checks of command-line values, run while arguments are parsed (before any model loads).

Each function is an argparse `type=`: it returns the parsed value or raises
`argparse.ArgumentTypeError`, which the CLI's parser reports as one line, exit code 1.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _number(text: str, kind, what: str, minimum, too_small: str):
    """`text` parsed as `kind`, finite and at least `minimum`, else a one-line argparse error."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{too_small}, got {text if kind is float else value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, steps)."""
    return _number(text, int, "a positive integer", 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (0 meaning 'none', where the flag's help says so)."""
    return _number(text, int, "a non-negative integer", 0, "must be non-negative (0 or more)")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (thresholds)."""
    return _number(text, float, "a number", 0, "must be non-negative (0 or more)")


def threshold_list(text: str) -> list[float]:
    """Comma-separated finite non-negative numbers, at least one."""
    items = [t.strip() for t in text.split(",")]
    if not any(items) or not all(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return [non_negative_float(t) for t in items]


def name_list(choices, what: str):
    """An argparse type: comma-separated names from `choices` (or a function returning
    them, for registries imported lazily), at least one; duplicates dropped."""
    def parse(text: str) -> list[str]:
        nonlocal choices
        if callable(choices):
            choices = list(choices())
        items = [t.strip() for t in text.split(",")]
        if not any(items) or not all(items):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}s from {', '.join(choices)}, got {text!r}")
        for item in items:
            if item not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {item!r}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(items))
    return parse


def dtype(text: str) -> str:
    """A dtype name that loading.parse_dtype knows."""
    from .loading import DTYPES

    if text not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; use one of {', '.join(sorted(DTYPES))}")
    return text


def device(text: str) -> str:
    """A torch device string that exists on this machine ('cpu', 'cuda', 'cuda:1', 'mps')."""
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: only {count} CUDA device(s) here")
        return text
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return text
    raise argparse.ArgumentTypeError(f"device {text!r} is not available here; use --device cpu")


def output_dir(text: str) -> str:
    """A directory to write into: existing and writable, or creatable (its nearest existing
    ancestor is a writable directory). Nothing is created here."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty string")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{probe} is not writable; choose another --out")
    return text


def component(text: str) -> str:
    """A name used as one directory or file name: no '/', not '.' or '..', not empty."""
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} must be a plain name (no '/', not '.' or '..')")
    return text


def existing_file(text: str) -> str:
    """A path to a readable file."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return text
