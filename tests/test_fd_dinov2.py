"""FD_DINOv2 features: torch-fidelity's `dinov2-vit-l-14` forward on the transformers port, the hub's
position-embedding resize, loading errors, and the Fréchet distance against torch-fidelity's formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_dinov2 import tiny_dinov2_folder

from vapi_bench.errors import CheckpointError, DataError, OfflineError
from vapi_bench.metrics import frechet_distance, gaussian_stats
from vapi_bench.metrics.dinov2 import DinoV2Extractor, dinov2_requirements, hub_position_embeddings, load_dinov2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_dinov2_folder(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def extractor(folder):
    return DinoV2Extractor(folder)


def _uint8(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_features_match_torch_fidelity_forward(extractor):
    """torch-fidelity's FeatureExtractorDinoV2.forward, with its hub network replaced by ours (its
    constructor can only fetch the hub model from GitHub): identical preprocessing and output."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    reference = FeatureExtractorDinoV2.__new__(FeatureExtractorDinoV2)
    FeatureExtractorBase.__init__(reference, "dinov2-vit-l-14", ["dinov2"])
    reference.feature_extractor_internal_dtype = torch.float32
    reference.model = lambda x: extractor.model(pixel_values=x).pooler_output
    images = _uint8(3, 48, 0)
    with torch.no_grad():
        expected, = reference(images)
    torch.testing.assert_close(extractor(images), expected)
    assert extractor(images).shape == (3, 64)


def test_cls_feature_is_the_final_layernorm_cls_token(extractor):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = extractor.model(pixel_values=x)
        hidden = extractor.model.encoder(extractor.model.embeddings(x)).last_hidden_state
    torch.testing.assert_close(out.pooler_output, extractor.model.layernorm(hidden)[:, 0])


def test_position_embeddings_are_resized_as_the_hub_code_does(extractor):
    """DINOv2 hub: bicubic with scale_factor (w0 + 0.1) / sqrt(N); not transformers' size=(w0, w0)."""
    trained = extractor.model.embeddings.position_embeddings.detach()
    side = 5
    grid = trained[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    hub = F.interpolate(grid, scale_factor=((16 + 0.1) / side, (16 + 0.1) / side), mode="bicubic")
    expected = torch.cat([trained[:, :1], hub.permute(0, 2, 3, 1).reshape(1, 256, -1)], dim=1)
    got = extractor.model.embeddings.interpolate_pos_encoding(torch.zeros(1, 257, 64), 224, 224)
    torch.testing.assert_close(got, expected)
    by_size = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    assert not torch.allclose(hub, by_size)  # the choice matters
    assert torch.equal(hub_position_embeddings(trained, side), trained)


def test_frechet_distance_matches_torch_fidelity(extractor):
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    fake = extractor.extract([_uint8(5, 32, 1).permute(0, 2, 3, 1).numpy(), _uint8(4, 32, 2).permute(0, 2, 3, 1).numpy()])
    real = extractor.extract([_uint8(9, 32, 3).permute(0, 2, 3, 1).numpy()])
    assert fake.shape == (9, 64) and fake.dtype == np.float64
    (mu1, s1), (mu2, s2) = gaussian_stats(fake), gaussian_stats(real)
    expected = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected["frechet_inception_distance"], rel=1e-5)


def test_bad_inputs_and_files_fail_clearly(extractor, folder, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="uint8"):
        extractor(torch.zeros(1, 3, 8, 8))
    with pytest.raises(DataError, match="square"):
        extractor.model.embeddings.interpolate_pos_encoding(torch.zeros(1, 5, 64), 28, 42)
    with pytest.raises(OfflineError, match="config.json does not exist"):
        load_dinov2(str(tmp_path))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text((folder / "config.json").read_text().replace('"hidden_size": 64', '"hidden_size": 128'))
    (wrong / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="DINOv2"):
        DinoV2Extractor(wrong)
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match="facebook/dinov2-large/resolve/main/config.json"):
        load_dinov2()
    assert [r.location().parent for r in dinov2_requirements()] == [tmp_path / "cache" / "dinov2-vitl14"] * 2
