"""Training datasets (entry point `datasets`): `imagenet` (ImageFolder or Hugging Face
load_from_disk) and `captions-jsonl`. Every item is (image [3, S, S] in [-1, 1], condition)."""
from __future__ import annotations

from vapi_bench import Entry, hookimpl

from .captions import CAPTIONS_PARAMS, CaptionsJsonl
from .imagenet import IMAGENET_PARAMS, build_imagenet


@hookimpl
def register_datasets(register) -> None:
    register(Entry("imagenet", factory=build_imagenet, params=IMAGENET_PARAMS,
                   summary="ImageNet-1k train images + class labels (ImageFolder tree or HF save_to_disk), ADM crop"))
    register(Entry("captions-jsonl", factory=CaptionsJsonl, params=CAPTIONS_PARAMS,
                   summary="image + caption pairs listed in a JSONL file (text-to-image fine-tuning)"))
