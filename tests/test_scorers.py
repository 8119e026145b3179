"""Scorers: pixel distances and LPIPS parity with the official formula on random backbones."""
from __future__ import annotations

import lpips
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg as tv_vgg

import vapi_bench
from vapi_bench.errors import CheckpointError, OfflineError
from vapi_bench.plugins.scorers.lpips_scorer import load_backbone

VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """A random torchvision-format VGG16 backbone file (features.N.* keys) and its module."""
    torch.manual_seed(0)
    features = tv_vgg.make_layers(tv_vgg.cfgs["D"]).eval()
    path = tmp_path_factory.mktemp("w") / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


@pytest.fixture(scope="module")
def vgg_scorer(vgg_features_file):
    return vapi_bench.load_scorer("lpips-vgg", weights=str(vgg_features_file[0]))


def _images(n=2, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1


def test_pixel_scorers_match_formulas():
    pred, target = _images(3, 8, 1), _images(3, 8, 2)
    mse = vapi_bench.load_scorer("mse")(pred, target)
    l1 = vapi_bench.load_scorer("l1")(pred, target)
    assert mse.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(mse[i], F.mse_loss(pred[i], target[i]))
        torch.testing.assert_close(l1[i], F.l1_loss(pred[i], target[i]))


def test_lpips_vgg_matches_official_formula(vgg_features_file, vgg_scorer):
    """LPIPS v0.1 by hand: scaling layer, VGG16 relu taps, channel-unit-normalise, squared
    difference, the package's linear heads, spatial mean, sum over the five layers."""
    _, features = vgg_features_file
    scorer = vgg_scorer
    pred, target = _images(2, 32, 3), _images(2, 32, 4)
    heads = torch.load(lpips.__path__[0] + "/weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def taps(x):
        out, h = [], (x - shift) / scale
        for i, layer in enumerate(features):
            h = layer(h)
            if i in VGG_TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        expected = sum(
            F.conv2d((a - b) ** 2, heads[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
            for k, (a, b) in enumerate(zip(taps(pred), taps(target)))
        )
        got = scorer(pred, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert torch.all(scorer(pred, pred) < 1e-6)


def test_lpips_is_differentiable_and_frozen(vgg_scorer):
    scorer = vgg_scorer
    pred = _images(1, 32, 5).requires_grad_(True)
    scorer(pred, _images(1, 32, 6)).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in scorer.parameters())


def test_lpips_alex_loads_torchvision_full_checkpoint(tmp_path):
    """A full torchvision AlexNet state dict (classifier included) loads into the lpips slices."""
    from torchvision.models import alexnet

    torch.manual_seed(1)
    reference = alexnet(weights=None).eval()
    path = tmp_path / "alexnet.pth"
    torch.save(reference.state_dict(), path)
    scorer = vapi_bench.load_scorer("lpips-alex", weights=str(path))
    own = scorer.model.net.state_dict()
    torch.testing.assert_close(own["slice1.0.weight"], reference.features[0].weight)
    torch.testing.assert_close(own["slice5.10.bias"], reference.features[10].bias)
    assert scorer(_images(2, 64, 7), _images(2, 64, 8)).shape == (2,)


def test_lpips_bad_backbone_files_fail_clearly(tmp_path, vgg_features_file, vgg_scorer):
    state = torch.load(vgg_features_file[0], weights_only=True)
    truncated, wrong = tmp_path / "partial.pth", tmp_path / "wrong.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("features.28")}, truncated)
    torch.save({**state, "features.0.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match="features.28"):
        load_backbone(vgg_scorer.model.net, truncated)
    with pytest.raises(CheckpointError, match="features.0.weight"):
        load_backbone(vgg_scorer.model.net, wrong)
    with pytest.raises(OfflineError, match="does not exist"):
        vapi_bench.load_scorer("lpips-vgg", weights=str(tmp_path / "nope.pth"))


def test_lpips_default_backbone_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match="vgg16-397923af.pth"):
        vapi_bench.load_scorer("lpips-vgg")
