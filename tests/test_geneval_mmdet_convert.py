"""OpenMMLab Mask2Former -> transformers conversion, checked without mmdet.

- the key table against the recorded key/shape list of the checkpoint (tasks/geneval/
  mmdet_mask2former_swin_s_keys.tsv, dumped from mmdet 3.3's own model) and against the keys of
  transformers' Swin-S Mask2Former: every key used exactly once;
- a synthetic checkpoint with exactly those keys and shapes, saved as an OpenMMLab-style `.pth`
  (with a pickled non-tensor object in `meta`), read safely, converted, loaded strictly;
- a random HF model -> mmdet layout -> converted back gives the same outputs, and mmdet's patch
  merging (nn.Unfold), written out here, agrees with the converted HF weights.
The comparison with mmdet's own model is in test_geneval_mmdet_parity.py (needs mmdet).
"""
import functools
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from geneval_testing import tiny_mask2former

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.prepare import prepare
from vapi_bench.tasks.geneval import mmdet_convert as mc
from vapi_bench.tasks.geneval import openmmlab_weights as ow
from vapi_bench.tasks.geneval.detectors import build_detector, detector_requirements
from vapi_bench.tasks.geneval.mask2former import swin_small_config

KEYS_FILE = Path(mc.__file__).with_name("mmdet_mask2former_swin_s_keys.tsv")


def recorded_keys():
    rows = [line.split("\t") for line in KEYS_FILE.read_text().splitlines() if not line.startswith("#")]
    assert rows[0] == ["mmdet3_key", "mmdet2_key", "shape", "dtype"]
    return [(k3, k2, tuple(int(s) for s in shape.split("x")), getattr(torch, dtype)) for k3, k2, shape, dtype in rows[1:]]


def hf_swin_small_on_meta():
    from transformers import Mask2FormerForUniversalSegmentation

    with torch.device("meta"):
        return Mask2FormerForUniversalSegmentation(swin_small_config())


def synthetic_state(layout: str) -> dict:
    """Random tensors with the recorded keys and shapes (a fresh dict of shared tensors)."""
    return dict(_synthetic_state(layout))


@functools.lru_cache(maxsize=2)
def _synthetic_state(layout: str) -> dict:
    """Swin's index buffers hold the real index; the same seed for both layouts."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for k3, k2, shape, dtype in recorded_keys():
        if k3.endswith("relative_position_index"):
            value = mc.window_relative_position_index(7)
        else:
            value = torch.randn(shape, generator=gen).to(dtype)
        state[k3 if layout == "mmdet3" else k2] = value
    return state


def test_key_table_uses_every_recorded_mmdet_key_and_every_hf_key_exactly_once():
    table = mc.key_table(swin_small_config())
    recorded = recorded_keys()
    assert len(recorded) == 649
    mmdet_uses = Counter(key for rule in table for key in rule.mmdet)
    hf_uses = Counter(key for rule in table for key in rule.hf)
    assert set(mmdet_uses) == {k3 for k3, *_ in recorded} and set(mmdet_uses.values()) == {1}
    assert set(hf_uses) == set(hf_swin_small_on_meta().state_dict()) and set(hf_uses.values()) == {1}
    assert {rule.op for rule in table} == set(mc.OPS)
    for k3, k2, *_ in recorded:  # the 2.x release differs only inside the two transformer stacks
        assert mc.mmdet2_to_mmdet3_key(k2) == k3
        assert (k2 != k3) == (".attentions." in k2 or ".ffns." in k2)
    assert mc.is_mmdet2_layout(k2 for _, k2, *_ in recorded) and not mc.is_mmdet2_layout(k3 for k3, *_ in recorded)


class HistoryBuffer:
    """Stands for an mmengine object pickled into a checkpoint's meta; unpickling must not run it."""

    executed = False

    def __setstate__(self, state):
        HistoryBuffer.executed = True


@pytest.fixture(scope="module")
def openmmlab_pth(tmp_path_factory):
    """A synthetic mmdet 2.x-layout release file: {'meta': {..., non-tensor object}, 'state_dict': ...}."""
    module = types.ModuleType("fake_mmengine_logging")
    module.HistoryBuffer = HistoryBuffer
    HistoryBuffer.__module__ = module.__name__
    sys.modules[module.__name__] = module
    path = tmp_path_factory.mktemp("openmmlab") / "mask2former_swin-s_synthetic.pth"
    try:
        meta = {"mmdet_version": "2.28.2", "CLASSES": ("person",), "hook": HistoryBuffer()}
        torch.save({"meta": meta, "state_dict": synthetic_state("mmdet2")}, path)
    finally:
        del sys.modules[module.__name__]
    return path


def test_openmmlab_pth_is_read_weights_only_without_running_pickled_objects(openmmlab_pth, tmp_path):
    with pytest.raises(Exception, match="fake_mmengine_logging"):
        torch.load(openmmlab_pth, weights_only=True)  # why the placeholders are needed
    state = mc.load_openmmlab_checkpoint(openmmlab_pth)
    assert not HistoryBuffer.executed
    assert set(state) == {k2 for _, k2, *_ in recorded_keys()}
    for key, tensor in synthetic_state("mmdet2").items():
        assert torch.equal(state[key], tensor)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(openmmlab_pth.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pth"):
        mc.load_openmmlab_checkpoint(broken)


def test_synthetic_checkpoint_converts_into_the_hf_model_and_back_exactly():
    config = swin_small_config()
    model = hf_swin_small_on_meta()
    for layout in ("mmdet2", "mmdet3"):
        state = synthetic_state(layout)
        converted = mc.convert_state_dict(state, config)
        expected = model.state_dict()
        assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}
        model.load_state_dict(converted, strict=True, assign=True)
        back = mc.hf_to_mmdet_state_dict(converted, config)
        reference = synthetic_state("mmdet3")
        assert set(back) == set(reference) and all(torch.equal(back[k], reference[k]) for k in reference)
    qkv = reference["backbone.stages.2.blocks.5.attn.w_msa.qkv.weight"]
    block = "model.pixel_level_module.encoder.swin.encoder.layers.2.blocks.5.attention"
    assert torch.equal(converted[f"{block}.k_proj.weight"], qkv[384:768])
    assert torch.equal(converted["criterion.empty_weight"], torch.tensor([1.0] * 80 + [0.1]))


def test_missing_unexpected_and_foreign_index_keys_are_named():
    config = swin_small_config()
    state = synthetic_state("mmdet3")
    state.pop("panoptic_head.cls_embed.bias")
    state["panoptic_head.ema.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing: panoptic_head.cls_embed.bias; unexpected: panoptic_head.ema"):
        mc.convert_state_dict(state, config)
    state = synthetic_state("mmdet3")
    state["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    with pytest.raises(CheckpointError, match="relative position index"):
        mc.convert_state_dict(state, config)


def test_converted_mmdet_layout_reproduces_the_hf_model_it_came_from():
    source = tiny_mask2former()
    config = source.config
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    source.load_state_dict(state)
    mmdet_state = mc.hf_to_mmdet_state_dict(source.state_dict(), config)
    mmdet_state.pop("backbone.stages.0.blocks.0.attn.w_msa.relative_position_index")
    mmdet_state["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = mc.window_relative_position_index(7)
    target = tiny_mask2former()
    target.load_state_dict(mc.convert_state_dict(mmdet_state, config), strict=True)
    pixels = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want, got = source(pixel_values=pixels), target(pixel_values=pixels)
    assert torch.equal(want.class_queries_logits, got.class_queries_logits)
    assert torch.equal(want.masks_queries_logits, got.masks_queries_logits)


def test_mmdet_unfold_patch_merging_agrees_with_the_converted_hf_merging():
    model = tiny_mask2former()
    merging = model.model.pixel_level_module.encoder.swin.encoder.layers[0].downsample
    with torch.no_grad():
        merging.norm.weight.normal_()
        merging.norm.bias.normal_()
    mmdet_state = mc.hf_to_mmdet_state_dict(model.state_dict(), model.config)
    reduction = mmdet_state["backbone.stages.0.downsample.reduction.weight"]
    norm_w, norm_b = mmdet_state["backbone.stages.0.downsample.norm.weight"], mmdet_state["backbone.stages.0.downsample.norm.bias"]
    x = torch.randn(1, 6 * 8, 16)  # [B, H*W, C] at 6x8
    # mmdet's PatchMerging: nn.Unfold(kernel 2, stride 2) on [B, C, H, W] -> [B, 4C, L] -> LayerNorm -> Linear
    unfolded = F.unfold(x.transpose(1, 2).reshape(1, 16, 6, 8), kernel_size=2, stride=2).transpose(1, 2)
    expected = F.linear(F.layer_norm(unfolded, (64,), norm_w, norm_b), reduction)
    with torch.no_grad():
        got = merging(x, (6, 8))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_prepare_converts_to_safetensors_once_and_runs_load_it_offline(openmmlab_pth, tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    (outcome,) = prepare(detector_requirements("hf-mask2former-openmmlab", str(openmmlab_pth)))
    assert outcome.status == "local" and outcome.path == ow.converted_path(openmmlab_pth) and outcome.path.is_file()
    stamp = outcome.path.stat().st_mtime_ns
    detector = build_detector("hf-mask2former-openmmlab", weights=str(openmmlab_pth), device=torch.device("cpu"),
                              scale=(64, 48))
    assert outcome.path.stat().st_mtime_ns == stamp  # the cached conversion was reused
    expected = mc.convert_state_dict(synthetic_state("mmdet3"), swin_small_config())
    for key, value in detector.model.state_dict().items():
        if key in expected:
            assert torch.equal(value, expected[key]), key
    assert detector.describe()["backend"] == "hf-mask2former-openmmlab"
    bboxes, masks = detector.detect(np.zeros((40, 50, 3), np.uint8))
    assert len(bboxes) == 80 and sum(len(b) for b in bboxes) == 100
    direct = ow.load_openmmlab_mask2former(str(outcome.path), "cpu")  # a copied .safetensors works alone
    assert torch.equal(direct.state_dict()["class_predictor.bias"], expected["class_predictor.bias"])
    default = ow.openmmlab_requirement("")
    assert default.url == ow.MMDET2_CHECKPOINT_URL and default.sha256 == "743b7d99"
    assert detector_requirements("hf-mask2former-openmmlab", "random") == []
    with pytest.raises(UsageError, match="detector=hf-mask2former"):
        detector_requirements("hf-mask2former-openmmlab", str(tmp_path))
