"""GenEval prompt generator: byte parity with the official file, and other vocabularies."""
import hashlib
import json
from pathlib import Path

import pytest

from vapi_bench.tasks.geneval import prompts
from vapi_bench.tasks.geneval.prompts import (
    GENEVAL_COLOURS,
    coco_class_names,
    dump_metadata_jsonl,
    generate_metadata,
    geneval_metadata,
)

OFFICIAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "geneval"
OFFICIAL_SHA256 = "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"
needs_official = pytest.mark.skipif(not OFFICIAL.is_dir(), reason="official GenEval copy not available")


def test_regenerated_metadata_has_the_published_sha256():
    text = dump_metadata_jsonl(geneval_metadata())
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == OFFICIAL_SHA256


@needs_official
def test_regenerated_metadata_is_byte_identical_to_the_official_file():
    official = (OFFICIAL / "evaluation_metadata.jsonl").read_bytes()
    assert hashlib.sha256(official).hexdigest() == OFFICIAL_SHA256
    assert dump_metadata_jsonl(geneval_metadata()).encode("utf-8") == official


@needs_official
def test_shipped_class_names_equal_the_official_list():
    official = [line.strip() for line in (OFFICIAL / "object_names.txt").read_text().splitlines() if line.strip()]
    assert coco_class_names() == official
    assert len(official) == 80 and official[0] == "person"


def test_tag_counts_and_schema_match_evaluation_reference():
    records = geneval_metadata()
    counts = {}
    for record in records:
        counts[record["tag"]] = counts.get(record["tag"], 0) + 1
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}
    counting = [r for r in records if r["tag"] == "counting"]
    assert sorted({r["include"][0]["count"] for r in counting}) == [2, 3, 4]
    assert all(r["exclude"] == [{"class": r["include"][0]["class"], "count": r["include"][0]["count"] + 1}] for r in counting)
    coloured = [c for r in records for c in r["include"] if "color" in c]
    assert coloured and all(c["class"] != "person" for c in coloured)
    assert all(r["include"][1]["position"][1] == 0 for r in records if r["tag"] == "position")


def test_other_vocabulary_gets_geneval_style_prompts_deterministically():
    names, colours = ["circle", "square", "triangle", "star"], ["red", "green", "blue"]
    first = generate_metadata(names, colours, seed=7, n=20)
    assert first == generate_metadata(names, colours, seed=7, n=20)
    assert first != generate_metadata(names, colours, seed=8, n=20)
    assert len({json.dumps(r, sort_keys=True) for r in first}) == len(first)  # de-duplicated
    assert [r["tag"] for r in first[:4]] == ["single_object"] * 4
    assert {c["class"] for r in first for c in r["include"]} <= set(names)
    assert {c["color"] for r in first for c in r["include"] if "color" in c} <= set(colours)
    assert {r["tag"] for r in first} == set(prompts.TAGS)


def test_uncoloured_class_is_never_coloured_in_any_vocabulary():
    records = generate_metadata(["ghost", "cube", "ball"], ["red", "blue"], n=50, uncoloured_class="ghost")
    assert all(c["class"] != "ghost" for r in records for c in r["include"] if "color" in c)


def test_articles_and_plurals_follow_geneval():
    assert prompts.with_article("apple") == "an apple" and prompts.with_article("bus") == "a bus"
    assert prompts.make_plural("bus") == "buses" and prompts.make_plural("mouse") == "mouses"


@pytest.mark.parametrize(
    "names, colours, kwargs",
    [(["a"], ["red", "blue"], {}), (["a", "a"], ["red", "blue"], {}), (["a", "b"], ["red"], {}),
     (["a", "b"], ["red", "blue"], {"max_count": 11}), (["a", "b"], ["red", "blue"], {"n": -1})],
)
def test_bad_vocabularies_are_rejected_with_a_message(names, colours, kwargs):
    with pytest.raises(ValueError, match="must|needs"):
        generate_metadata(names, colours, **kwargs)


def test_colours_constant_is_genevals():
    assert GENEVAL_COLOURS == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
