"""Baseline methods the paper compares VA-π against (entry point `baselines`):
`none`, `sft`, `post-train-tokenizer` and `ste` (docs/reference/vapi.md §5.1). They train with the
family's shared budget (vapi_bench.training.recipes); STE's β is VA-π's prior weight, 0.1."""
from __future__ import annotations

from vapi_bench import Entry, Recipe, hookimpl
from vapi_bench.training import ANY_FAMILY

from .identity import Identity
from .post_train_tokenizer import PT_PARAMS, PostTrainTokenizer
from .sft import SFT_PARAMS, SupervisedFineTune
from .ste import STE_PARAMS, StraightThrough


@hookimpl
def register_methods(register) -> None:
    register(Entry("none", factory=Identity, summary="the base model, unchanged"))
    register(Entry("sft", factory=SupervisedFineTune, params=SFT_PARAMS,
                   summary="next-token NLL fine-tuning on the same data and budget as VA-π"))
    register(Entry("post-train-tokenizer", factory=PostTrainTokenizer, params=PT_PARAMS, aliases=("pt",),
                   summary="generator frozen; fine-tune the tokenizer decoder on teacher-forced samples "
                           "with MSE + perceptual (paper App. C.2)"))
    register(Entry("ste", factory=StraightThrough, params=STE_PARAMS,
                   summary="straight-through hard Gumbel-softmax through the decoder, MSE + perceptual + β·CE "
                           "(paper App. C.1)"))


@hookimpl
def register_recipes(register) -> None:
    register(Recipe("ste", ANY_FAMILY, {"beta": 0.1}, source="paper App. C.1: the CE weight of VA-π's Table 7"))
