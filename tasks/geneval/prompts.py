"""GenEval's prompt generator, parameterised by vocabulary.

GenEval (djghosh13/geneval, MIT) ships `prompts/evaluation_metadata.jsonl`: 553 prompts drawn by
`prompts/create_prompts.py` with `np.random.default_rng(43)` from the 80 COCO names. We re-implement
that generator so that (a) the file is produced by code we can test, not copied blindly, and
(b) other vocabularies (the shapes world) get GenEval-style prompts from the same logic.

Byte parity with the official file depends on making exactly the same sequence of numpy
`Generator` calls in the same order, so the draw order below mirrors the original and must not be
"tidied": one permutation for single objects, then n draws per tag in the order two_object,
counting, colors, position, color_attr, then de-duplication keeping first occurrences.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np

#: GenEval's colour vocabulary, in its order (also the CLIP colour classifier's label order).
GENEVAL_COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
#: Relations a position prompt can ask for (image y axis points down).
POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: The six GenEval tags, in the order the generator emits them.
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)
#: The class GenEval never colours ("a photo of a red person" is ill-posed).
GENEVAL_UNCOLOURED_CLASS = "person"


def coco_class_names() -> list[str]:
    """The 80 COCO class names in mmdet order, as GenEval's `object_names.txt` (shipped with us)."""
    text = resources.files(__package__).joinpath("object_names.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def with_article(name: str) -> str:
    """'a cat' / 'an apple' by GenEval's rule: 'an' before a leading vowel letter."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def make_plural(name: str) -> str:
    """GenEval's pluralisation: 'es' after a final 's', else 's' ('buses', 'mice' -> 'mouses')."""
    return f"{name}es" if name[-1] == "s" else f"{name}s"


class _PromptDrawer:
    """Draws one prompt of each kind from a shared numpy Generator (draw order = GenEval's)."""

    def __init__(
        self,
        rng: np.random.Generator,
        class_names: list[str],
        colours: list[str],
        uncoloured_class: str | None,
    ) -> None:
        self.rng = rng
        self.names = class_names
        self.colours = colours
        # GenEval draws a colourable class as (k + index(person)) % N with k in [1, N): it skips
        # exactly one class. Without that class in the vocabulary every class is colourable.
        self.skip = class_names.index(uncoloured_class) if uncoloured_class in class_names else None

    def single_objects(self) -> list[dict[str, Any]]:
        order = self.rng.choice(len(self.names), size=len(self.names), replace=False)
        return [
            {
                "tag": "single_object",
                "include": [{"class": self.names[i], "count": 1}],
                "prompt": f"a photo of {with_article(self.names[i])}",
            }
            for i in order
        ]

    def two_object(self) -> dict[str, Any]:
        a, b = (self.names[i] for i in self.rng.choice(len(self.names), size=2, replace=False))
        return {
            "tag": "two_object",
            "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
            "prompt": f"a photo of {with_article(a)} and {with_article(b)}",
        }

    def counting(self, max_count: int) -> dict[str, Any]:
        name = self.names[self.rng.choice(len(self.names))]
        count = int(self.rng.integers(2, max_count, endpoint=True))
        return {
            "tag": "counting",
            "include": [{"class": name, "count": count}],
            "exclude": [{"class": name, "count": count + 1}],
            "prompt": f"a photo of {NUMBER_WORDS[count]} {make_plural(name)}",
        }

    def colors(self) -> dict[str, Any]:
        (name,) = self._colourable_classes(1)
        colour = self.colours[self.rng.choice(len(self.colours))]
        return {
            "tag": "colors",
            "include": [{"class": name, "count": 1, "color": colour}],
            "prompt": f"a photo of {with_article(colour)} {name}",
        }

    def position(self) -> dict[str, Any]:
        a, b = (self.names[i] for i in self.rng.choice(len(self.names), size=2, replace=False))
        relation = POSITIONS[self.rng.choice(len(POSITIONS))]
        return {
            "tag": "position",
            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
            "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}",
        }

    def color_attr(self) -> dict[str, Any]:
        a, b = self._colourable_classes(2)
        colour_a, colour_b = (self.colours[i] for i in self.rng.choice(len(self.colours), size=2, replace=False))
        return {
            "tag": "color_attr",
            "include": [
                {"class": a, "count": 1, "color": colour_a},
                {"class": b, "count": 1, "color": colour_b},
            ],
            "prompt": f"a photo of {with_article(colour_a)} {a} and {with_article(colour_b)} {b}",
        }

    def _colourable_classes(self, k: int) -> list[str]:
        """k distinct classes other than the uncoloured one (GenEval's offset trick, same draws)."""
        n = len(self.names)
        if self.skip is None:
            picks = self.rng.choice(n, size=k, replace=False) if k > 1 else [self.rng.choice(n)]
            return [self.names[i] for i in picks]
        if k > 1:
            offsets = self.rng.choice(n - 1, size=k, replace=False) + 1
        else:
            offsets = [self.rng.choice(n - 1) + 1]
        return [self.names[(int(o) + self.skip) % n] for o in offsets]


def generate_metadata(
    class_names: list[str],
    colours: list[str],
    *,
    seed: int = 43,
    n: int = 100,
    max_count: int = 4,
    uncoloured_class: str | None = GENEVAL_UNCOLOURED_CLASS,
) -> list[dict[str, Any]]:
    """GenEval evaluation metadata for a vocabulary: one dict per unique prompt, in file order.

    With `coco_class_names()` and `GENEVAL_COLOURS` (and the defaults) this reproduces GenEval's
    `evaluation_metadata.jsonl` exactly (see `dump_metadata_jsonl`). `uncoloured_class` is never
    given a colour when it is part of the vocabulary (GenEval: "person"); counting prompts ask for
    2..max_count objects.
    """
    names = list(class_names)
    palette = list(colours)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"generate_metadata needs at least 2 distinct class names, got {names!r}.")
    if len(palette) < 2 or len(set(palette)) != len(palette):
        raise ValueError(f"generate_metadata needs at least 2 distinct colours, got {palette!r}.")
    if not 2 <= max_count < len(NUMBER_WORDS):
        raise ValueError(f"max_count must be in [2, {len(NUMBER_WORDS) - 1}], got {max_count}.")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    if uncoloured_class in names and len(names) < 3:
        raise ValueError("colour-attribute prompts need two colourable classes besides the uncoloured one.")

    draw = _PromptDrawer(np.random.default_rng(seed), names, palette, uncoloured_class)
    records = draw.single_objects()
    records += [draw.two_object() for _ in range(n)]
    records += [draw.counting(max_count) for _ in range(n)]
    records += [draw.colors() for _ in range(n)]
    records += [draw.position() for _ in range(n)]
    records += [draw.color_attr() for _ in range(n)]
    return _deduplicate(records)


def _deduplicate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first occurrence of each record (compared by content, key order ignored)."""
    seen: set[str] = set()
    unique = []
    for record in records:
        key = json.dumps(record, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def dump_metadata_jsonl(records: list[dict[str, Any]]) -> str:
    """The records as GenEval writes them: `json.dumps` per line (insertion key order), '\\n' after each."""
    return "".join(json.dumps(record) + "\n" for record in records)


def geneval_metadata() -> list[dict[str, Any]]:
    """The 553 official GenEval prompts (regenerated; byte-identical to the published file)."""
    return generate_metadata(coco_class_names(), list(GENEVAL_COLOURS))
