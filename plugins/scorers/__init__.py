"""Image scorers shared by methods (rewards, losses) and tasks (metrics) (entry point `scorers`).

Pair scorers `mse`, `l1`, `lpips-vgg` (LlamaGen's perceptual reward) and `lpips-alex` (Janus-Pro's);
text-image scorers `hpsv2`, `hpsv2.1`, `clip-score` and `pickscore` (see docs/scorers.md). The
text-image modules import open_clip / transformers only when a scorer is built, so listing plugins
stays fast.
"""
from __future__ import annotations

from typing import Any

from vapi_bench import Entry, hookimpl
from vapi_bench.params import Param

from .lpips_scorer import BACKBONES, LpipsScorer
from .pixel import L1Scorer, MSEScorer

_CLASS_PARAMS = (
    Param("class_names", str, "", "text file, one class name per line, to score class-conditional images "
          "(int conditions); empty = prompts only"),
    Param("class_prompt", str, "a photo of {}", "text for a class condition ({} = its name; AR-GRPO's C2I form)"),
)


def _lpips_params(net: str) -> tuple[Param, ...]:
    return (Param("weights", str, None,
                  f"torchvision {BACKBONES[net].arch} ImageNet weights: local path, URL or hf://repo/file "
                  f"(None = {BACKBONES[net].url}, through the weight cache; offline needs it cached)"),)


def _hps_params(version: str) -> tuple[Param, ...]:
    from .hps import HPS_ARCH, HPS_FILES, HPS_REPO

    return (
        Param("weights", str, "", f"HPS {version} checkpoint: local file, URL or hf://repo/file "
              f"(empty = hf://{HPS_REPO}/{HPS_FILES[version]}, through the weight cache)"),
        Param("arch", str, HPS_ARCH, "open_clip architecture the checkpoint was trained as"),
        Param("precision", str, "auto", "auto = fp16 autocast on CUDA as the hpsv2 package, fp32 on the CPU; "
              "fp32 everywhere", choices=("auto", "fp32")),
    ) + _CLASS_PARAMS


def _hps_entry(version: str) -> Entry:
    from .hps import HPS_NAMES

    def build(**params: Any):
        from .hps import HpsScorer

        return HpsScorer(version=version, **params)

    def requirements(weights: str = "", **_: Any) -> list[Any]:
        from .hps import hps_requirement

        return [hps_requirement(version, weights)]

    return Entry(HPS_NAMES[version], factory=build, params=_hps_params(version), requirements=requirements,
                 summary=f"HPS {version}: cos(image, prompt) of the HPS-tuned open_clip ViT-H/14 (raw cosine; "
                         "x100 in benchmark tables)")


def _build_clip_score(**params: Any):
    from .clip_score import ClipScoreScorer

    return ClipScoreScorer(**params)


def _clip_score_requirements(arch: str = "ViT-L-14", weights: str = "", **_: Any) -> list[Any]:
    from vapi_bench.tasks.geneval.clip_models import clip_requirement

    from .clip_score import open_clip_arch

    requirement = clip_requirement(open_clip_arch(arch), weights)
    return [requirement] if requirement else []


_CLIP_SCORE_PARAMS = (
    Param("arch", str, "ViT-L-14", "open_clip architecture: ViT-B-32 (AR-GRPO's reward) or ViT-L-14 "
          "(DrawBench's metric), both built with QuickGELU; any other open_clip name needs weights"),
    Param("weights", str, "", "CLIP weights: local file, hf://repo/file, URL or 'random'; empty = OpenAI's for "
          "ViT-B-32 / ViT-L-14"),
) + _CLASS_PARAMS


def _build_pickscore(**params: Any):
    from .pickscore import PickScoreScorer

    return PickScoreScorer(**params)


def _pickscore_requirements(weights: str = "", **_: Any) -> list[Any]:
    from .pickscore import pickscore_requirements

    return pickscore_requirements(weights)


_PICKSCORE_PARAMS = (
    Param("weights", str, "", "local transformers CLIPModel folder; empty = yuvalkirstain/PickScore_v1 "
          "(config.json + pytorch_model.bin, through the weight cache)"),
) + _CLASS_PARAMS


@hookimpl
def register_scorers(register) -> None:
    register(Entry("mse", factory=MSEScorer, summary="mean squared error over pixels in [-1, 1], per image"))
    register(Entry("l1", factory=L1Scorer, summary="mean absolute error over pixels in [-1, 1], per image"))
    register(Entry("lpips-vgg", factory=lambda weights=None: LpipsScorer("vgg", weights), params=_lpips_params("vgg"),
                   summary="LPIPS v0.1 with VGG16 (lpips package heads; as LlamaGen's / VA-π's C2I reward)"))
    register(Entry("lpips-alex", factory=lambda weights=None: LpipsScorer("alex", weights), params=_lpips_params("alex"),
                   summary="LPIPS v0.1 with AlexNet (the lpips package default; VA-π's Janus-Pro reward)"))
    register(_hps_entry("v2.0"))
    register(_hps_entry("v2.1"))
    register(Entry("clip-score", factory=_build_clip_score, params=_CLIP_SCORE_PARAMS, aliases=("clip",),
                   requirements=_clip_score_requirements,
                   summary="CLIP score: cos(image, prompt) with OpenAI CLIP ViT-L/14 or ViT-B/32 (raw cosine)"))
    register(Entry("pickscore", factory=_build_pickscore, params=_PICKSCORE_PARAMS, requirements=_pickscore_requirements,
                   summary="PickScore_v1: logit_scale x cos(image, prompt) of a preference-tuned CLIP-H/14 (raw, ~20)"))
