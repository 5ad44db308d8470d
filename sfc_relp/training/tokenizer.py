"""A word-level tokenizer built from the corpus vocabulary, saved as `tokenizer.json`.

Words are split on whitespace with punctuation isolated, so " is" and " Mary" are one token
each, as they are under the GPT-NeoX tokenizer for the same datasets.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIAL = ["<|endoftext|>", "<unk>"]


def build_tokenizer(words: list[str]):
    """A `PreTrainedTokenizerFast` with one id per word (specials first)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + sorted(set(words) - set(SPECIAL)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>")
