"""Task datasets: generated from templates, held as HF `datasets`, read/written as JSONL.

Schema (Marks et al.'s, so their published files load as they are): `clean_prefix`,
`patch_prefix`, `clean_answer`, `patch_answer` (answers with a leading space), `case`.
Train and test splits are disjoint by prompt pair: a stable hash of the pair picks the split,
so a test prompt is never a training prompt whatever the sizes asked for.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from . import templates as T
from .errors import UserError, warn
from .files import StagedFiles, atomic_write, safe_name

COLUMNS = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer", "case")
TEST_PERCENT = 20
SPLITS = ("train", "test")


def _agreement(rng: random.Random, family: str) -> dict:
    number = rng.randrange(2)  # 0: singular clean subject, 1: plural
    other = 1 - number
    noun = rng.choice(T.NOUNS)
    aux = rng.choice(T.AUXILIARIES)
    case = ("singular", "plural")[number]
    if family == "simple":
        clean, patch = f"The {noun[number]}", f"The {noun[other]}"
        return _row(clean, patch, aux[number], aux[other], case)
    inner = rng.choice(T.NOUNS)
    inner_number = rng.randrange(2)
    if family == "nounpp":
        tail = f" {rng.choice(T.PREPOSITIONS)} the {inner[inner_number]}"
        return _row(f"The {noun[number]}{tail}", f"The {noun[other]}{tail}",
                    aux[number], aux[other], case)
    verb = rng.choice(T.RC_VERBS)
    if family == "rc":
        tail = f" that the {inner[inner_number]} {verb[inner_number]}"
        return _row(f"The {noun[number]}{tail}", f"The {noun[other]}{tail}",
                    aux[number], aux[other], case)
    if family == "within_rc":
        head = f"The {noun[rng.randrange(2)]} that the "
        return _row(head + inner[inner_number], head + inner[1 - inner_number],
                    verb[inner_number], verb[1 - inner_number],
                    ("singular", "plural")[inner_number])
    raise ValueError(family)


def _ioi(rng: random.Random) -> dict:
    name, template = rng.choice(sorted(T.IOI_TEMPLATES.items()))
    a, b = rng.sample(T.NAMES, 2)
    place, obj = rng.choice(T.PLACES), rng.choice(T.OBJECTS)
    clean = template.format(A=a, B=b, PLACE=place, OBJECT=obj)
    patch = template.format(A=b, B=a, PLACE=place, OBJECT=obj)
    return _row(clean, patch, a, b, name)


def _row(clean: str, patch: str, clean_answer: str, patch_answer: str, case: str) -> dict:
    return {"clean_prefix": clean, "patch_prefix": patch, "clean_answer": " " + clean_answer,
            "patch_answer": " " + patch_answer, "case": case}


def split_of(row: dict) -> str:
    """'test' or 'train' for a prompt pair, from a hash of the unordered pair of prefixes."""
    key = "\n".join(sorted((row["clean_prefix"], row["patch_prefix"])))
    bucket = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
    return "test" if bucket < TEST_PERCENT else "train"


def generate(family: str, split: str, n: int, seed: int = 0) -> Dataset:
    """Up to `n` distinct examples of `family` in `split`, seeded (fewer if the family runs out)."""
    if family not in T.FAMILIES:
        raise UserError(f"unknown dataset {family!r}; choose one of {', '.join(T.FAMILIES)} "
                        "or pass a .jsonl file")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose train or test")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise UserError(f"number of examples must be a positive integer, got {n!r}")
    size = T.family_size(family)
    if n > size:
        raise UserError(f"{family} can produce at most {size} distinct examples (both splits "
                        f"together, about {100 - TEST_PERCENT}% train); ask for fewer than {n}")
    rng = random.Random(f"{family}/{split}/{seed}")
    rows, seen = [], set()
    for _ in range(200 * n):
        row = _ioi(rng) if family == "ioi" else _agreement(rng, family)
        key = (row["clean_prefix"], row["clean_answer"])
        if key in seen:
            continue
        seen.add(key)
        if split_of(row) == split:
            rows.append(row)
        if len(rows) == n or len(seen) == size:
            break
    if len(rows) < n:
        warn(f"{family} {split}: generated {len(rows)} distinct examples of the {n} asked for "
             f"(the family has {size} in both splits together)")
    return Dataset.from_list(rows)


def read_jsonl(path) -> Dataset:
    """A dataset from a JSONL file in Marks et al.'s schema; errors name the bad line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset file {path} does not exist")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSONL") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {number}: expected a JSON object")
        missing = [c for c in COLUMNS[:4] if not isinstance(row.get(c), str)]
        if missing:
            raise UserError(f"{path}, line {number}: missing or non-string "
                            f"{', '.join(missing)}")
        rows.append({c: str(row.get(c, "")) for c in COLUMNS})
    if not rows:
        raise UserError(f"{path} holds no examples")
    return Dataset.from_list(rows)


def _write_rows(dataset: Dataset, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in dataset:
            handle.write(json.dumps({c: row[c] for c in COLUMNS}) + "\n")


def write_jsonl(dataset: Dataset, path) -> Path:
    """Write `dataset` as JSONL atomically (temp file, then rename)."""
    return atomic_write(path, lambda tmp: _write_rows(dataset, tmp))


@dataclass
class ValidationReport:
    """How many examples survived validation and why the others were dropped."""

    kept: int
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        if not self.dropped:
            return f"kept all {self.kept} examples"
        reasons = ", ".join(f"{n} {why}" for why, n in self.dropped.most_common())
        return f"kept {self.kept} examples, dropped {sum(self.dropped.values())} ({reasons})"


def validate(dataset: Dataset, tokenizer, min_examples: int = 1, strict: bool = False,
             max_length: int | None = None) -> tuple[Dataset, ValidationReport]:
    """Keep examples whose answers are single tokens and whose prefixes tokenize equally long.

    Raises UserError when fewer than `min_examples` remain (never returns None), or, with
    `strict`, at the first bad example (for files a user hands in), or when a prompt is longer
    than `max_length` tokens (the model's context). Warns when clean and patch answers are
    equal (the metric is then identically 0 for those examples).
    """
    if len(dataset) == 0:
        raise UserError("the dataset is empty; it needs at least one example")
    report = ValidationReport(kept=0)
    keep = []
    for i, row in enumerate(dataset):
        if max_length is not None:
            length = max(_n_tokens(tokenizer, row["clean_prefix"]), _n_tokens(tokenizer, row["patch_prefix"]))
            if length > max_length:
                raise UserError(f"example {i + 1} is {length} tokens long, more than the model's "
                                f"context of {max_length}; shorten it or drop it")
        reason = _problem(row, tokenizer)
        if reason and strict:
            raise UserError(f"example {i + 1}: {reason} ({row['clean_prefix']!r} -> "
                            f"{row['clean_answer']!r} / {row['patch_prefix']!r} -> {row['patch_answer']!r})")
        if reason:
            report.dropped[reason] += 1
        else:
            keep.append(i)
    report.kept = len(keep)
    if report.kept < min_examples:
        raise UserError(f"only {report.kept} usable examples, need at least {min_examples}: "
                        f"{report}")
    kept = dataset.select(keep)
    same = sum(row["clean_answer"] == row["patch_answer"] for row in kept)
    if same:
        warn(f"{same} of {len(kept)} examples have equal clean and patch answers: the metric is "
             "identically 0 for them" + (" (every example: effects will all be 0)" if same == len(kept) else ""))
    return kept, report


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _problem(row: dict, tokenizer) -> str | None:
    unknown = tokenizer.unk_token_id
    for key in ("clean_answer", "patch_answer"):
        if _n_tokens(tokenizer, row[key]) != 1:
            return "multi-token answer"
    if unknown is not None and unknown != tokenizer.eos_token_id and any(
            unknown in tokenizer(row[k], add_special_tokens=False)["input_ids"] for k in COLUMNS[:4]):
        return "word outside the model's vocabulary"
    if _n_tokens(tokenizer, row["clean_prefix"]) != _n_tokens(tokenizer, row["patch_prefix"]):
        return "clean/patch prefix length mismatch"
    return None


def load_task(name_or_path: str, split: str = "test", n: int | None = None, seed: int = 0,
              tokenizer=None, min_examples: int = 1, max_length: int | None = None) -> Dataset:
    """A task by family name (generated) or JSONL path, validated when a tokenizer is given.

    `n` None means 128 generated examples or the whole file; `max_length` is the model's
    context (longer prompts are an error).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise UserError(f"number of examples must be a positive integer, got {n!r}")
    from_file = str(name_or_path).endswith(".jsonl") or Path(name_or_path).is_file()
    if from_file:
        dataset = read_jsonl(name_or_path)
    else:
        dataset = generate(name_or_path, split, 128 if n is None else n, seed)
    if tokenizer is not None:
        dataset, _ = validate(dataset, tokenizer, min_examples, strict=from_file,
                              max_length=max_length)
    if from_file and n is not None:
        dataset = dataset.select(range(min(n, len(dataset))))
    return dataset


def dataset_name(name_or_path: str) -> str:
    """A family name as given, or a JSONL file's stem, reduced to one safe file-name component
    (output names never hold a directory from the dataset path)."""
    name = Path(name_or_path).stem if str(name_or_path).endswith(".jsonl") else Path(str(name_or_path)).name
    return safe_name(name, "dataset")


def build_all(out_dir, n_train: int = 512, n_test: int = 128, seed: int = 0) -> list[Path]:
    """Write `{family}_{split}.jsonl` for every family and split into `out_dir`, all or none."""
    datasets = {f"{family}_{split}.jsonl": generate(family, split, n, seed)
                for family in T.FAMILIES for split, n in (("train", n_train), ("test", n_test))}
    with StagedFiles(out_dir) as staged:
        for name, dataset in datasets.items():
            _write_rows(dataset, staged.path(name))
        return staged.commit()
