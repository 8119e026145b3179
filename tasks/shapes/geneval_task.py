"""`shapes-geneval`: GenEval's protocol over the shapes vocabulary, scored by the exact detector.

Prompts come from the shared GenEval prompt generator with the shapes' 4 class names and 6
colours (same draw logic as GenEval's 553 prompts; no class is exempt from colours). Each prompt
gets `images_per_prompt` images (GenEval: 4) in GenEval's folder layout. Scoring runs the classical
shapes detector, converts its detections to mmdet-2.x form and applies the shared GenEval rules
unchanged; the colour of an object is the one its pixels were segmented as (not CLIP). Every
detection scores 1.0, so the 0.3 / 0.9 score thresholds keep all of them. Metrics: accuracy per
tag and "overall" = unweighted mean of the tags scored; per-image records carry correct/reason.

Two prompt splits, so that `lab tune` never chooses a setting on the prompts it reports:
- `test` (the default): GenEval's draw with `prompt_seed`, the prompts every result is reported on;
- `val`: the validation prompts, another draw of the same generator (seed prompt_seed + 1) without
  any prompt that asks for the same scene as a test prompt (same objects, counts, colours and
  relation, in whatever order or wording: "a cross and a circle" = "a circle and a cross", "a
  circle right of a square" = "a square left of a circle"), so the two sets are disjoint.
The shapes vocabulary allows only 250 distinct scenes, and the default test draw (183 prompts)
asks for every single_object, two_object, counting, colors and position scene; the default val
split therefore holds color_attr prompts only (56), and its "overall" is the color_attr accuracy.
A smaller prompts_per_tag leaves more tags in val (and changes the test prompts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vapi_bench import __version__
from vapi_bench.errors import UsageError
from vapi_bench.imageio import load_png
from vapi_bench.interfaces import Generator, SampleItem, StageContext, TaskResult, Validation
from vapi_bench.params import Param
from vapi_bench.progress import stage

from vapi_bench.plugins.shapes.detector import ShapesDetector, colour_lookup, to_mmdet
from vapi_bench.plugins.shapes.vocab import COLOURS, SHAPES
from vapi_bench.tasks.geneval import layout
from vapi_bench.tasks.geneval.prompts import TAGS, generate_metadata
from vapi_bench.tasks.geneval.rules import GenEvalOptions, evaluate_image, summarize

EVALUATOR = "geneval-rules+shapes-detector"
SPLITS = ("test", "val")
#: the val split draws with prompt_seed + this (another stream of GenEval's generator)
VAL_SEED_OFFSET = 1
#: a position relation and its mirror image: "a right of b" is "b left of a"
MIRRORED = {"right of": "left of", "below": "above"}

GENEVAL_PARAMS: tuple[Param, ...] = (
    Param("tags", str, "", "comma-separated GenEval tags to keep (empty = all six)"),
    Param("images_per_prompt", int, 4, "images generated and scored per prompt (GenEval: 4)"),
    Param("prompts_per_tag", int, 100, "draws per tag of GenEval's generator before de-duplication"),
    Param("prompt_seed", int, 43, "seed of GenEval's prompt generator (GenEval: 43)"),
    Param("position_threshold", float, 0.1, "relative-position dead zone, as a fraction of the object sizes"),
    Param("split", str, "test", "'test': GenEval's draw, the prompts results are reported on; 'val': validation "
          "prompts for `lab tune`, a draw with prompt_seed + 1 minus every prompt asking for a test prompt's scene "
          "(disjoint; with the default draw only color_attr prompts remain)", choices=SPLITS,
          keyed_at_default=False),
)


def shapes_metadata(tags: Sequence[str] = TAGS, *, seed: int = 43, n: int = 100) -> list[dict[str, Any]]:
    """GenEval-style prompt records over the shapes vocabulary, restricted to `tags`."""
    records = generate_metadata(list(SHAPES), list(COLOURS), seed=seed, n=n, uncoloured_class=None)
    return [record for record in records if record["tag"] in tags]


def scene_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a prompt asks the image to show, independent of word order: its tag, its objects
    (class, count, colour) as a sorted list, the excluded counts, and for position prompts the
    relation written with left of / above."""
    include = record["include"]
    if record["tag"] == "position":
        anchor, mover = include[0]["class"], include[1]["class"]
        relation = include[1]["position"][0]
        if relation in MIRRORED:
            anchor, mover, relation = mover, anchor, MIRRORED[relation]
        return ("position", mover, relation, anchor)
    objects = sorted((o["class"], o["count"], o.get("color", "")) for o in include)
    excluded = sorted((o["class"], o["count"]) for o in record.get("exclude", []))
    return (record["tag"], tuple(objects), tuple(excluded))


def split_metadata(split: str, tags: Sequence[str] = TAGS, *, seed: int = 43, n: int = 100) -> list[dict[str, Any]]:
    """The prompt records of a split: 'test' = shapes_metadata(seed); 'val' = the draw with seed +
    VAL_SEED_OFFSET without any prompt whose scene_key is a test prompt's (disjoint by construction)."""
    if split not in SPLITS:
        raise UsageError(f"shapes-geneval: split must be one of {list(SPLITS)}, got {split!r}.")
    test = shapes_metadata(tags, seed=seed, n=n)
    if split == "test":
        return test
    reported = {scene_key(record) for record in test}
    val = [r for r in shapes_metadata(tags, seed=seed + VAL_SEED_OFFSET, n=n) if scene_key(r) not in reported]
    if not val:
        raise UsageError(f"shapes-geneval: the val split of tags {list(tags)} is empty: the test split already asks "
                         "for every scene of them; include color_attr or lower prompts_per_tag.")
    return val


def parse_tags(text: str) -> tuple[str, ...]:
    """'' -> all six tags; 'a,b' -> ('a', 'b') after checking each is a GenEval tag."""
    tags = tuple(t.strip() for t in text.split(",") if t.strip()) or TAGS
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise UsageError(f"shapes-geneval: unknown tag(s) {unknown}; GenEval's tags are {list(TAGS)}.")
    return tags


class ShapesGenEvalTask(layout.GenEvalLayoutTask):
    conditioning = "text"
    #: `lab tune` chooses on the val prompts by the highest overall, reading the task's one row:
    #: the generator's default recipe (with CFG for shapes-t2i, as GenEval is reported in the paper)
    validation = Validation(overrides={"task.split": "val"}, metric="overall", mode="max")
    key_metrics = (("overall", "higher"), ("correct_images", "higher"))

    def __init__(self, tags: str = "", images_per_prompt: int = 4, prompts_per_tag: int = 100,
                 prompt_seed: int = 43, position_threshold: float = 0.1, split: str = "test") -> None:
        if images_per_prompt < 1:
            raise UsageError(f"shapes-geneval: images_per_prompt must be >= 1, got {images_per_prompt}.")
        self.tags = parse_tags(tags)
        self.images_per_prompt = images_per_prompt
        self.split = split
        self.metadata = split_metadata(split, self.tags, seed=prompt_seed, n=prompts_per_tag)
        self.options = GenEvalOptions(position_threshold=position_threshold)
        self.class_names = list(SHAPES)
        self.detector = ShapesDetector()

    # ---- sampling --------------------------------------------------------------------------
    def items(self, generator: Generator, limit: int | None = None) -> list[SampleItem]:
        if generator.conditioning != "text":
            raise UsageError(f"shapes-geneval needs a text-conditional model; '{generator.name}' is class-conditional.")
        return self.prompt_items(limit)

    # ---- scoring ---------------------------------------------------------------------------
    def score_image(self, image: Any, metadata: dict[str, Any]) -> dict[str, Any]:
        """GenEval's verdict on one HxWx3 uint8 image, plus what the detector saw."""
        detections = self.detector(image)
        result = evaluate_image(metadata, to_mmdet(detections, self.class_names), image,
                                class_names=self.class_names, colour_classifier=colour_lookup(detections),
                                options=self.options)
        result["objects"] = [[d.colour, d.shape, *d.bbox] for d in detections]
        return result

    def score(self, sample_dir: Path, items: Sequence[SampleItem], ctx: StageContext) -> TaskResult:
        records = []
        with stage(ctx.progress, "detect", len(items)) as step:
            for item in items:
                prompt_index, image_index = item.meta["prompt_index"], item.meta["image_index"]
                metadata = layout.read_prompt_metadata(sample_dir, prompt_index)
                image = load_png(self.image_path(sample_dir, item))
                records.append({"index": item.index, "prompt_index": prompt_index, "image_index": image_index,
                                **self.score_image(image, metadata)})
                step(1)
        return TaskResult(
            metrics=summarize(records),
            per_sample=records,
            evaluator=EVALUATOR,
            evaluator_version=f"vapi-bench {__version__}",
            extra={"split": self.split, "tags": list(self.tags), "prompts": len(self.metadata),
                   "images_per_prompt": self.images_per_prompt,
                   "options": {"position_threshold": self.options.position_threshold}},
        )
