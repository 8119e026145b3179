"""Image-pair scorers shared by methods (rewards, losses) and tasks (entry point `scorers`):
`mse`, `l1`, `lpips-vgg` (LlamaGen's perceptual reward) and `lpips-alex` (Janus-Pro's)."""
from __future__ import annotations

from vapi_bench import Entry, hookimpl
from vapi_bench.params import Param

from .lpips_scorer import BACKBONES, LpipsScorer
from .pixel import L1Scorer, MSEScorer


def _lpips_params(net: str) -> tuple[Param, ...]:
    return (Param("weights", str, None,
                  f"torchvision {BACKBONES[net].arch} ImageNet weights: local path, URL or hf://repo/file "
                  f"(None = {BACKBONES[net].url}, through the weight cache; offline needs it cached)"),)


@hookimpl
def register_scorers(register) -> None:
    register(Entry("mse", factory=MSEScorer, summary="mean squared error over pixels in [-1, 1], per image"))
    register(Entry("l1", factory=L1Scorer, summary="mean absolute error over pixels in [-1, 1], per image"))
    register(Entry("lpips-vgg", factory=lambda weights=None: LpipsScorer("vgg", weights), params=_lpips_params("vgg"),
                   summary="LPIPS v0.1 with VGG16 (lpips package heads; as LlamaGen's / VA-π's C2I reward)"))
    register(Entry("lpips-alex", factory=lambda weights=None: LpipsScorer("alex", weights), params=_lpips_params("alex"),
                   summary="LPIPS v0.1 with AlexNet (the lpips package default; VA-π's Janus-Pro reward)"))
