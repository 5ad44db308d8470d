"""A synthetic training corpus: completed task sentences (train split only) plus filler.

Task sentences complete both the clean and the patch prompt of every family with their
answers; filler sentences reuse the same vocabulary in other frames so the model is not
only the test prompts. A prompt pair from a test split never appears: rows are drawn from
the same generator as the datasets and kept only when `split_of(row) == "train"`.
"""

from __future__ import annotations

import random

from .. import templates as T
from ..datasets import _agreement, _ioi, split_of

ENDINGS = ["here", "there", "happy", "ready", "tired", "late", "away"]
PLURALS = {plural for _, plural in T.NOUNS}
FILLER_SHARE = 0.3


def _finish(rng: random.Random) -> str:
    return f" {rng.choice(ENDINGS)} ."


def _swap_number(word: str) -> str:
    for singular, plural in T.NOUNS:
        if word in (singular, plural):
            return plural if word == singular else singular
    raise ValueError(word)


def _relative_clause_rows(row: dict, family: str, aux: tuple[str, str]) -> list[dict]:
    """The rc and within_rc prompt pairs that one completed relative-clause sentence holds."""
    words = row["clean_prefix"].split()  # The N1 that the N2 [V]
    if family == "within_rc":
        words = words + [row["clean_answer"].strip()]
    main, inner, verb = words[1], words[4], words[5]
    verbs = dict(T.RC_VERBS + [(p, s) for s, p in T.RC_VERBS])
    head = f"The {main} that the "
    rc_patch = f"The {_swap_number(main)} that the {inner} {verb}"
    within = {"clean_prefix": head + inner, "patch_prefix": head + _swap_number(inner),
              "clean_answer": " " + verb, "patch_answer": " " + verbs[verb], "case": ""}
    rc = {"clean_prefix": " ".join(words), "patch_prefix": rc_patch,
          "clean_answer": " " + aux[0], "patch_answer": " " + aux[1], "case": ""}
    return [within, rc]


def _task_sentences(rng: random.Random, family: str) -> list[str]:
    while True:
        row = _ioi(rng) if family == "ioi" else _agreement(rng, family)
        if split_of(row) != "train":
            continue
        if family in ("rc", "within_rc"):
            # a relative-clause sentence holds both an rc and a within_rc prompt: keep it only
            # when neither is a test prompt
            aux = (row["clean_answer"].strip(), row["patch_answer"].strip())
            if family == "within_rc":
                aux = rng.choice(T.AUXILIARIES)
            sides = [row, {**row, "clean_prefix": row["patch_prefix"],
                           "clean_answer": row["patch_answer"]}]
            if family == "rc":
                aux_of = [aux, aux[::-1]]
            else:
                aux_of = [aux[::-1] if row["clean_prefix"].split()[1] in PLURALS else aux] * 2
            if any(split_of(r) != "train" for side, a in zip(sides, aux_of)
                   for r in _relative_clause_rows(side, family, a)):
                continue
        break
    out = []
    for prefix, answer in ((row["clean_prefix"], row["clean_answer"]),
                           (row["patch_prefix"], row["patch_answer"])):
        if family == "ioi":
            out.append(f"{prefix}{answer} .")
        elif family == "within_rc":
            main_plural = prefix.split()[1] in PLURALS
            out.append(f"{prefix}{answer} {aux[int(main_plural)]}{_finish(rng)}")
        else:
            out.append(f"{prefix}{answer}{_finish(rng)}")
    return out


def _filler(rng: random.Random) -> str:
    kind = rng.randrange(4)
    noun, other = rng.choice(T.NOUNS), rng.choice(T.NOUNS)
    number = rng.randrange(2)
    if kind == 0:
        verb = rng.choice(T.RC_VERBS)[number]
        return f"The {noun[number]} {verb} the {other[rng.randrange(2)]} ."
    if kind == 1:
        a, b = rng.sample(T.NAMES, 2)
        return f"{a} and {b} went to the {rng.choice(T.PLACES)} ."
    if kind == 2:
        a = rng.choice(T.NAMES)
        return f"{a} {rng.choice(T.RC_VERBS)[0]} the {noun[number]} {rng.choice(T.PREPOSITIONS)} the {rng.choice(T.PLACES)} ."
    aux = rng.choice(T.AUXILIARIES)[number]
    return f"The {noun[number]} {rng.choice(T.PREPOSITIONS)} the {rng.choice(T.OBJECTS)} {aux}{_finish(rng)}"


def build_corpus(n_sentences: int, seed: int = 0) -> list[str]:
    """`n_sentences` seeded sentences: task completions of all five families plus filler."""
    rng = random.Random(seed)
    sentences: list[str] = []
    while len(sentences) < n_sentences:
        if rng.random() < FILLER_SHARE:
            sentences.append(_filler(rng))
        else:
            sentences.extend(_task_sentences(rng, rng.choice(T.FAMILIES)))
    return sentences[:n_sentences]


def vocabulary_words() -> list[str]:
    """Every word and punctuation mark the corpus and the datasets can contain."""
    words = T.all_words() | set(ENDINGS) | {".", ","}
    return sorted(words)
