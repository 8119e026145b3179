"""`pickscore`: PickScore (Kirstain et al. 2023), a CLIP-H/14 fine-tuned on Pick-a-Pic preferences.

Official recipe (docs/reference/peers.md §5; `yuvalkirstain/PickScore` README): the transformers `CLIPModel`
`yuvalkirstain/PickScore_v1` with the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`;
score = logit_scale.exp() * cos(text embedding, image embedding) (both L2-normalised). Raw values
are around 20; AR-GRPO divides by 26 to get roughly [0, 1].

We run the same model with the same preprocessing without fetching the LAION processor files:
- image: transformers' PIL CLIP processor (`CLIPImageProcessorPil`, what `CLIPImageProcessor` was
  before transformers 5 made the torchvision backend the default) with the LAION processor's
  settings: resize the shorter side to 224 with PIL bicubic, centre crop 224, rescale 1/255, OpenAI
  CLIP mean/std. The torchvision backend resizes differently (about 1e-3 on the score);
- text: the OpenAI CLIP BPE (bundled with open_clip), 77 tokens, the last one forced to
  end-of-text when truncating, zero-padded. The LAION tokenizer is this same BPE; CLIP's text
  feature is read at the end-of-text token under a causal mask, so the padding id and the
  attention mask cannot change it.
Weights: `config.json` + `pytorch_model.bin` of `yuvalkirstain/PickScore_v1` (fetched into the
cache) or a local folder with a transformers CLIPModel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import WeightRequirement
from vapi_bench.weights import sha256_file

from .text_image import DEFAULT_CLASS_PROMPT, TextImageScorer

PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_FILES = ("config.json", "pytorch_model.bin")
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def pickscore_requirements(weights: str = "") -> list[WeightRequirement]:
    """The model files: a local folder's config.json (its weights file is found by transformers), or
    the two files of yuvalkirstain/PickScore_v1 cached under `<cache>/pickscore/`."""
    if weights:
        return [WeightRequirement("pickscore", spec=str(Path(weights).expanduser() / "config.json"),
                                  description="PickScore CLIPModel folder (local)")]
    return [WeightRequirement("pickscore", url=f"hf://{PICKSCORE_REPO}/{name}", description=f"PickScore_v1 {name}")
            for name in PICKSCORE_FILES]


class PickScoreScorer(TextImageScorer):
    """logit_scale.exp() * cos(text, image) of PickScore_v1 per (image, text) pair."""

    def __init__(self, weights: str = "", class_names: str = "", class_prompt: str = DEFAULT_CLASS_PROMPT) -> None:
        import open_clip

        try:
            from transformers import CLIPImageProcessorPil, CLIPModel
        except ImportError:
            raise UsageError("the pickscore scorer needs transformers: pip install 'vapi-bench[metrics]'.") from None
        super().__init__(class_names, class_prompt)
        folder = pickscore_requirements(weights)[0].resolve().parent
        for requirement in pickscore_requirements(weights)[1:]:
            requirement.resolve()
        try:
            self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"PickScore model folder {folder} cannot be loaded "
                                  f"({str(exc).strip().splitlines()[0]}).") from None
        self.model.float().eval().requires_grad_(False)
        size = self.model.config.vision_config.image_size
        self.processor = CLIPImageProcessorPil(
            do_resize=True, size={"shortest_edge": size}, resample=Image.BICUBIC, do_center_crop=True,
            crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
            do_normalize=True, image_mean=OPENAI_MEAN, image_std=OPENAI_STD, do_convert_rgb=True)
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")  # the OpenAI CLIP BPE, 77 tokens
        self.description = {"scorer": "pickscore", "weights": str(folder),
                            "config_sha256": sha256_file(folder / "config.json")}

    @torch.no_grad()
    def score_pixels(self, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        images = [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in pixels]
        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        tokens = self.tokenizer(list(texts)).to(device)
        out = self.model(input_ids=tokens, pixel_values=pixel_values)
        cosines = (out.image_embeds.float() * out.text_embeds.float()).sum(dim=-1)
        return self.model.logit_scale.exp().float() * cosines
