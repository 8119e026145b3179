"""Every GenEval-grammar caption of the shapes world, mapped back to its GenEval record.

A verifiable text-to-image reward is given only the prompt an image was generated for, while the
GenEval rules judge an image against the prompt's record (include / exclude clauses). The grammar
of `data.random_record` is finite over 4 shapes and 6 colours (about 460 prompts), so the
records are enumerated once with the same vocabulary helpers, and a prompt is looked up. The
tests check that every caption the dataset and the shapes-geneval task draw maps back to the very
record they drew.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import permutations
from typing import Any

from vapi_bench.errors import UsageError

from .vocab import COLOURS, NUMBER_WORDS, POSITIONS, SHAPES, plural, with_article


def _all_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shape in SHAPES:
        records.append({"tag": "single_object", "include": [{"class": shape, "count": 1}],
                        "prompt": f"a photo of {with_article(shape)}"})
        for count in (2, 3, 4):
            records.append({"tag": "counting", "include": [{"class": shape, "count": count}],
                            "exclude": [{"class": shape, "count": count + 1}],
                            "prompt": f"a photo of {NUMBER_WORDS[count]} {plural(shape)}"})
        for colour in COLOURS:
            records.append({"tag": "colors", "include": [{"class": shape, "count": 1, "color": colour}],
                            "prompt": f"a photo of {with_article(colour)} {shape}"})
    for a, b in permutations(SHAPES, 2):
        records.append({"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                        "prompt": f"a photo of {with_article(a)} and {with_article(b)}"})
        for relation in POSITIONS:
            records.append({"tag": "position",
                            "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
                            "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}"})
        for ca, cb in permutations(COLOURS, 2):
            records.append({"tag": "color_attr",
                            "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
                            "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"})
    return records


@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, Any]]:
    return {record["prompt"]: record for record in _all_records()}


def record_for_prompt(prompt: str) -> dict[str, Any]:
    """The GenEval record of a shapes-world caption (a fresh copy); UsageError if it is none."""
    record = _index().get(prompt.strip())
    if record is None:
        raise UsageError(f"shapes-geneval reward: {prompt!r} is not a caption of the shapes world's GenEval "
                         "grammar (e.g. 'a photo of a red circle'); train on shapes-captions.")
    return {key: ([dict(c) for c in value] if isinstance(value, list) else value) for key, value in record.items()}
