"""The shapes world's generators, `shapes-c2i`, `shapes-c2i-small`, `shapes-c2i-small-ls`,
`shapes-t2i` and `shapes-t2i-ls`: tiny LlamaGen models from the zoo (and `shapes-var`, a tiny VAR:
var_generator.py).

They are `LlamaGenGenerator`s built from the zoo's VQ and GPT files, so sampling, teacher forcing,
fine-tuning and checkpointing run through exactly the code that serves the real LlamaGen models;
only the configs (read from the zoo manifest) differ. The t2i model reads captions through the
deterministic word encoder in `words.py` instead of FLAN-T5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vapi_bench.errors import UsageError
from vapi_bench.interfaces import Entry, SamplingRecipe
from vapi_bench.params import Param

from ..llamagen.generator import PRECISIONS, LlamaGenGenerator
from .vocab import NUM_CLASSES, class_name
from .zoo.files import FILES, load_gpt, load_vq, read_manifest, word_encoder, zoo_dir_or_default

#: Default sampling recipes, chosen from the CFG sweep `zoo build` records in the manifest
#: (quality.cfg_sweep): the smallest scale past which class accuracy / GenEval stop improving.
DEFAULT_RECIPES: dict[str, SamplingRecipe] = {
    "c2i": SamplingRecipe(cfg_scale=2.0),
    "t2i": SamplingRecipe(cfg_scale=2.0),
    "c2i-small": SamplingRecipe(cfg_scale=2.0),
    "c2i-small-ls": SamplingRecipe(cfg_scale=2.0),
    "t2i-ls": SamplingRecipe(cfg_scale=2.0),
    "var": SamplingRecipe(cfg_scale=2.0),  # shapes-var (var_generator.py); VAR's ramp reaches 2.0 at its last scale
}


#: What text scorers read for a class label (e.g. ar-grpo with clip-score rewards on shapes-c2i):
#: GenEval's wording, "a photo of a red circle" (every colour starts with a consonant).
CLASS_NAMES: tuple[str, ...] = tuple(class_name(label) for label in range(NUM_CLASSES))
CLASS_PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class ShapesModel:
    name: str
    kind: str  # the zoo file (FILES): "c2i", "t2i", "c2i-small", ...
    default_dataset: str
    summary: str


MODELS: dict[str, ShapesModel] = {
    m.name: m
    for m in (
        ShapesModel("shapes-c2i", "c2i", "shapes-c2i",
                    "tiny LlamaGen class-conditional GPT + VQ on the shapes world (24 classes, 32 px, zoo weights)"),
        ShapesModel("shapes-c2i-small", "c2i-small", "shapes-c2i",
                    "under-capacity class-conditional GPT (dim 64, 2 layers) trained to convergence on the same "
                    "tokens (zoo weights; not over-dispersed: sharpening does not help it)"),
        ShapesModel("shapes-c2i-small-ls", "c2i-small-ls", "shapes-c2i",
                    "shapes-c2i-small's GPT trained with label smoothing 0.1 (as MaskGIT trains): over-dispersed, "
                    "like LlamaGen sampled without CFG; the lab's base with temperature headroom (zoo weights)"),
        ShapesModel("shapes-t2i", "t2i", "shapes-captions",
                    "tiny LlamaGen text-to-image GPT + VQ on shapes captions (word encoder, 32 px, zoo weights)"),
        ShapesModel("shapes-t2i-ls", "t2i-ls", "shapes-captions",
                    "shapes-t2i's GPT trained with label smoothing 0.1 (same initialisation, warm start and "
                    "batches): an over-dispersed t2i base (zoo weights; `zoo build --only t2i-ls` adds it)"),
    )
}

PARAMS: tuple[Param, ...] = (
    Param("zoo_dir", str, "", "zoo directory with manifest.json and the safetensors files (default: the shipped zoo)"),
    Param("precision", str, "fp32", "sampling precision (bf16 = autocast on the model's device)",
          choices=tuple(PRECISIONS)),
    Param("head_scale", float, 1.0, "divide the loaded GPT's output head (hence its logits) by this: 1.2 makes "
          "the zoo GPT over-dispersed, a synthetic control for a base with temperature headroom (applies to "
          "the weights loaded, zoo or --checkpoint; fine-tuned weights are saved already scaled)",
          exclusive_minimum=0.0),
)


def build_shapes_generator(
    name: str, *, checkpoint: str | None = None, device: torch.device | str = "cpu", zoo_dir: str = "",
    precision: str = "fp32", head_scale: float = 1.0,
) -> LlamaGenGenerator:
    """Build a registered shapes generator from a zoo; `checkpoint` replaces the zoo's GPT weights."""
    if name not in MODELS:
        raise UsageError(f"unknown shapes model {name!r}; known: {sorted(MODELS)}.")
    if not head_scale > 0:
        raise UsageError(f"model '{name}': head_scale must be positive, got {head_scale!r}.")
    model = MODELS[name]
    root = zoo_dir_or_default(zoo_dir)
    manifest = read_manifest(root)
    vq = load_vq(root, manifest)
    if model.kind not in manifest["models"]:
        raise UsageError(f"model '{name}': the zoo at {root} has no {FILES[model.kind]}; add it with "
                         f"`vapi-bench zoo build --only {model.kind}`.")
    gpt = load_gpt(root, manifest, model.kind, weights=checkpoint)
    if head_scale != 1.0:
        with torch.no_grad():
            gpt.output.weight.div_(head_scale)
    extra: dict[str, Any] = {
        "zoo_dir": str(root),
        "zoo_seed": manifest["seed"],
        "zoo_files": {f: manifest["files"][f]["sha256"] for f in (FILES["vq"], FILES[model.kind])},
    }
    if head_scale != 1.0:
        extra["head_scale"] = head_scale
    if checkpoint:
        extra["checkpoint"] = str(checkpoint)  # its digest is the core's (runner: checkpoint_sha256)
    text = gpt.config.model_type == "t2i"  # what the zoo trained it on, as LlamaGenGenerator reads it
    text_encoder = word_encoder(manifest) if text else None
    if text_encoder is not None:
        extra["text_encoder"] = text_encoder.describe()["kind"]
    generator = LlamaGenGenerator(
        gpt, vq, name=model.name, image_size=manifest["config"]["image_size"], text_encoder=text_encoder,
        default_recipe=DEFAULT_RECIPES[model.kind], default_dataset=model.default_dataset,
        family=model.name, device=device, describe_extra=extra, precision=precision,
        class_names=() if text else CLASS_NAMES, class_prompt=CLASS_PROMPT,
    )
    # the runner's default sampling batch (results do not depend on it): a tiny model spends a batch of
    # 16 mostly in per-token Python overhead; 96 images took 2.2 CPU-s at batch 96 against 3.8 at 16
    generator.sample_batch_size = 128
    return generator


def entries() -> list[Entry]:
    """Registry entries of every shapes model (MODELS) and of `shapes-var`."""
    from .var_generator import entry

    def factory_for(name: str):
        def factory(*, checkpoint: str | None = None, device: torch.device | str = "cpu", **params: Any):
            return build_shapes_generator(name, checkpoint=checkpoint, device=device, **params)

        return factory

    return [Entry(m.name, factory=factory_for(m.name), summary=m.summary, params=PARAMS)
            for m in MODELS.values()] + [entry()]
