"""A small deterministic word encoder for shapes captions: the shapes world's stand-in for T5.

LlamaGen's t2i GPT reads left-padded T5 features. Here a caption of GenEval's grammar over the
shapes vocabulary is turned into per-word features with no learned weights at all, so the encoder
is the same on every machine and needs no checkpoint:

    feature(word i) = [one-hot(word i) | one-hot(word i-1) | one-hot(position i)]

The previous-word block binds attributes to objects ("red" sits on the feature of "circle" in
"a red circle"), and the position block (counted from the start of the caption, so independent of
padding) keeps "a square left of a circle" apart from "a circle left of a square". That matters
because LlamaGen zeroes the RoPE of condition positions: the image tokens see the caption as an
unordered set of vectors, so order has to live inside the vectors, as it does in T5's contextual
features.
"""
from __future__ import annotations

from typing import Sequence

import torch

from vapi_bench.errors import UsageError

from .vocab import COLOURS, SHAPE_PLURALS, SHAPES

#: Function words of GenEval's caption grammar ("a photo of two red circles", "... left of ...").
GRAMMAR_WORDS: tuple[str, ...] = (
    "a", "an", "photo", "of", "and", "left", "right", "above", "below",
    "one", "two", "three", "four",
)
#: The fixed vocabulary, in a fixed order (the order defines the one-hot columns).
VOCABULARY: tuple[str, ...] = (
    GRAMMAR_WORDS + SHAPES + tuple(SHAPE_PLURALS[s] for s in SHAPES) + COLOURS
)
DEFAULT_MAX_WORDS = 16


def tokenize_caption(caption: str) -> list[str]:
    """Lower-cased whitespace words of a caption (GenEval prompts carry no punctuation)."""
    return caption.lower().split()


class ShapesWordEncoder:
    """Deterministic caption features obeying LlamaGen's TextEncoder protocol.

    encode(prompts) -> (features [B, L, D] float32, mask [B, L] bool), left-padded: a caption of
    n words occupies the last n of the L slots and the padding slots are zero with mask False.
    """

    def __init__(self, max_words: int = DEFAULT_MAX_WORDS, vocabulary: Sequence[str] = VOCABULARY):
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}.")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("the word encoder's vocabulary has duplicate words.")
        self.max_words = max_words
        self.vocabulary = tuple(vocabulary)
        self._index = {word: i for i, word in enumerate(self.vocabulary)}

    @property
    def num_tokens(self) -> int:
        """L: the number of condition slots (the GPT's cls_token_num)."""
        return self.max_words

    @property
    def feature_dim(self) -> int:
        """D: the feature width (the GPT's caption_dim)."""
        return 2 * len(self.vocabulary) + self.max_words

    def word_ids(self, caption: str) -> list[int]:
        """Vocabulary indices of a caption's words; a clear error for unknown or too many words."""
        words = tokenize_caption(caption)
        if not words:
            raise UsageError("an empty caption cannot be encoded; give at least one word.")
        unknown = [w for w in words if w not in self._index]
        if unknown:
            raise UsageError(
                f"caption {caption!r} uses word(s) {unknown} outside the shapes vocabulary. "
                f"Known words: {', '.join(self.vocabulary)}."
            )
        if len(words) > self.max_words:
            raise UsageError(
                f"caption {caption!r} has {len(words)} words; the shapes word encoder takes at "
                f"most {self.max_words}."
            )
        return [self._index[w] for w in words]

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded features [B, L, D] and validity mask [B, L] for a batch of captions."""
        vocab = len(self.vocabulary)
        features = torch.zeros(len(prompts), self.max_words, self.feature_dim)
        mask = torch.zeros(len(prompts), self.max_words, dtype=torch.bool)
        for row, caption in enumerate(prompts):
            ids = self.word_ids(caption)
            start = self.max_words - len(ids)
            for position, word in enumerate(ids):
                slot = start + position
                features[row, slot, word] = 1.0
                if position > 0:
                    features[row, slot, vocab + ids[position - 1]] = 1.0
                features[row, slot, 2 * vocab + position] = 1.0
                mask[row, slot] = True
        return features, mask

    def describe(self) -> dict[str, object]:
        """What the manifest records so a model is only ever paired with the encoder it saw."""
        return {"kind": "shapes-words-v1", "max_words": self.max_words, "vocabulary": list(self.vocabulary)}
