"""LPIPS through the `lpips` package, with the ImageNet backbone loaded from a path we control.

The lpips package ships its v0.1 linear heads (weights/v0.1/{vgg,alex}.pth) but asks torchvision
to download the backbone. We build it with a random backbone (`pnet_rand=True`, no network) and
load torchvision's backbone file through `vapi_bench.weights.resolve_weight`, so it honours a local
path, the shared cache and --offline. LlamaGen's taming-transformers VGG-LPIPS uses the same
torchvision VGG16 and the same v0.1 VGG heads, so `lpips-vgg` is its reward.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from vapi_bench.errors import CheckpointError
from vapi_bench.interfaces import Scorer
from vapi_bench.weights import resolve_weight


@dataclass(frozen=True)
class Backbone:
    arch: str
    url: str


BACKBONES = {
    "vgg": Backbone("vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": Backbone("alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


class LpipsScorer(Scorer):
    """Per-image LPIPS distance [B] (images in [-1, 1]); differentiable w.r.t. `pred`."""

    differentiable = True

    def __init__(self, net: str, weights: str | None = None) -> None:
        super().__init__()
        import lpips

        if net not in BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
        path = resolve_weight(weights, what=f"lpips-{net} backbone ({BACKBONES[net].arch})", url=BACKBONES[net].url)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        load_backbone(self.model.net, path)
        self.model.eval().requires_grad_(False)
        self.net, self.backbone_file = net, str(path)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model(pred.float(), target.float()).flatten()


def load_backbone(net: torch.nn.Module, path) -> None:
    """Load torchvision `features.N.*` weights (a full classifier checkpoint or features only) into
    the lpips package's sliced backbone (`sliceK.N.*`); missing keys or wrong shapes raise
    CheckpointError naming them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"Cannot read LPIPS backbone weights {path}: {type(exc).__name__}: {exc}") from None
    wanted = {}
    for slice_name, block in net.named_children():
        for index, layer in block.named_children():
            for pname, _ in layer.named_parameters(recurse=False):
                wanted[f"{slice_name}.{index}.{pname}"] = f"features.{index}.{pname}"
    missing = sorted(src for src in wanted.values() if src not in state)
    if missing:
        raise CheckpointError(f"LPIPS backbone file {path} lacks {len(missing)} tensor(s), e.g. {missing[:4]}; "
                              "expected torchvision's ImageNet checkpoint (keys features.N.weight/bias).")
    own = net.state_dict()
    bad = [f"{src} {tuple(state[src].shape)} vs {tuple(own[dst].shape)}" for dst, src in wanted.items()
           if state[src].shape != own[dst].shape]
    if bad:
        raise CheckpointError(f"LPIPS backbone file {path} has wrong shapes: {bad[:4]}.")
    net.load_state_dict({dst: state[src] for dst, src in wanted.items()}, strict=True)
