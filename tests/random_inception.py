"""Random-weight Inception files for offline tests (no pretrained weights can be downloaded).

Recipe from the evaluation reference: build torch-fidelity's FeatureExtractorInceptionV3 without
loading weights, re-initialise (kaiming convs, N(0, 0.05) fc; torch's default init collapses the
features so that FID = 0 and IS = 1), and save its state dict: torch-fidelity and our extractor
then load the very same file through `feature_extractor_weights_path`. The same trunk, scripted,
stands in for clean-fid's TorchScript `inception-2015-12-05.pt`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def random_inception_weights(path: Path, seed: int = 0) -> Path:
    """Write a seeded random state dict for torch-fidelity's Inception to `path` (reused if present)."""
    if path.exists():
        return path
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the constructor insists on loading something
            return None

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(net.fc.weight, std=0.05)
    nn.init.normal_(net.fc.bias, std=0.05)
    torch.save(FeatureExtractorInceptionV3.state_dict(net), path)
    empty.unlink()
    return path


class _CleanFidStandIn(nn.Module):
    """The interface clean-fid's InceptionV3W expects from inception-2015-12-05.pt."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.layers = trunk

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


class _Trunk(nn.Module):
    """torch-fidelity's Inception from the first conv to pool_3, on normalised 299x299 input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"]
        self.blocks = nn.Sequential(*[getattr(net, n) for n in names])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)


def random_clean_fid_inception(path: Path, weights: Path) -> Path:
    """Script the random trunk of `weights` into a clean-fid-compatible TorchScript file."""
    if path.exists():
        return path
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    scripted = torch.jit.script(_CleanFidStandIn(_Trunk(net)).eval())
    scripted.save(str(path))
    return path
