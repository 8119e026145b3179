"""`shapes-geneval`: GenEval's protocol over the shapes vocabulary, scored by the exact detector.

Prompts come from the shared GenEval prompt generator with the shapes' 4 class names and 6
colours (same draw logic as GenEval's 553 prompts; no class is exempt from colours). Each prompt
gets `images_per_prompt` images (GenEval: 4) in GenEval's folder layout. Scoring runs the classical
shapes detector, converts its detections to mmdet-2.x form and applies the shared GenEval rules
unchanged; the colour of an object is the one its pixels were segmented as (not CLIP). Every
detection scores 1.0, so the 0.3 / 0.9 score thresholds keep all of them. Metrics: accuracy per
tag and "overall" = unweighted mean of the tags scored; per-image records carry correct/reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vapi_bench import __version__
from vapi_bench.errors import UsageError
from vapi_bench.imageio import load_png
from vapi_bench.interfaces import Generator, SampleItem, StageContext, TaskResult
from vapi_bench.params import Param
from vapi_bench.progress import stage

from vapi_bench.plugins.shapes.detector import ShapesDetector, colour_lookup, to_mmdet
from vapi_bench.plugins.shapes.vocab import COLOURS, SHAPES
from vapi_bench.tasks.geneval import layout
from vapi_bench.tasks.geneval.prompts import TAGS, generate_metadata
from vapi_bench.tasks.geneval.rules import GenEvalOptions, evaluate_image, summarize

EVALUATOR = "geneval-rules+shapes-detector"

GENEVAL_PARAMS: tuple[Param, ...] = (
    Param("tags", str, "", "comma-separated GenEval tags to keep (empty = all six)"),
    Param("images_per_prompt", int, 4, "images generated and scored per prompt (GenEval: 4)"),
    Param("prompts_per_tag", int, 100, "draws per tag of GenEval's generator before de-duplication"),
    Param("prompt_seed", int, 43, "seed of GenEval's prompt generator (GenEval: 43)"),
    Param("position_threshold", float, 0.1, "relative-position dead zone, as a fraction of the object sizes"),
)


def shapes_metadata(tags: Sequence[str] = TAGS, *, seed: int = 43, n: int = 100) -> list[dict[str, Any]]:
    """GenEval-style prompt records over the shapes vocabulary, restricted to `tags`."""
    records = generate_metadata(list(SHAPES), list(COLOURS), seed=seed, n=n, uncoloured_class=None)
    return [record for record in records if record["tag"] in tags]


def parse_tags(text: str) -> tuple[str, ...]:
    """'' -> all six tags; 'a,b' -> ('a', 'b') after checking each is a GenEval tag."""
    tags = tuple(t.strip() for t in text.split(",") if t.strip()) or TAGS
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise UsageError(f"shapes-geneval: unknown tag(s) {unknown}; GenEval's tags are {list(TAGS)}.")
    return tags


class ShapesGenEvalTask(layout.GenEvalLayoutTask):
    conditioning = "text"

    def __init__(self, tags: str = "", images_per_prompt: int = 4, prompts_per_tag: int = 100,
                 prompt_seed: int = 43, position_threshold: float = 0.1) -> None:
        if images_per_prompt < 1:
            raise UsageError(f"shapes-geneval: images_per_prompt must be >= 1, got {images_per_prompt}.")
        self.tags = parse_tags(tags)
        self.images_per_prompt = images_per_prompt
        self.metadata = shapes_metadata(self.tags, seed=prompt_seed, n=prompts_per_tag)
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
            extra={"tags": list(self.tags), "prompts": len(self.metadata), "images_per_prompt": self.images_per_prompt,
                   "options": {"position_threshold": self.options.position_threshold}},
        )
