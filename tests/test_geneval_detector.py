"""Mask2Former backend: mmdet-style pre/post-processing against straightforward re-implementations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from geneval_testing import tiny_mask2former as tiny_model

from vapi_bench.errors import CheckpointError, OfflineError, UsageError
from vapi_bench.tasks.geneval import mask2former as m2f
from vapi_bench.tasks.geneval.detectors import build_detector
from vapi_bench.tasks.geneval.mmdet_backend import MMDET_INSTALL_RECIPE, result_to_detections


def reference_postprocess(class_logits, mask_logits, max_per_image):
    """mmdet 3.3 instance_postprocess written out pair by pair in numpy (float64)."""
    logits = class_logits.double().numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = probs / probs.sum(1, keepdims=True)
    num_classes = logits.shape[1] - 1
    pairs = [(probs[q, c], q, c) for q in range(logits.shape[0]) for c in range(num_classes)]
    pairs.sort(key=lambda t: -t[0])
    out = []
    for prob, q, c in pairs[:max_per_image]:
        m = mask_logits[q].double().numpy()
        binary = m > 0
        mask_score = (1 / (1 + np.exp(-m)) * binary).sum() / (binary.sum() + 1e-6)
        ys, xs = np.nonzero(binary)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
        out.append((c, prob * mask_score, box, binary))
    return out


def test_instance_postprocess_matches_pairwise_reference_on_random_logits():
    gen = torch.Generator().manual_seed(0)
    class_logits = torch.randn(12, 81, generator=gen) * 3
    mask_logits = torch.randn(12, 20, 24, generator=gen) * 2 - 1
    mask_logits[3] = -5.0  # an empty mask: score 0, box zeros
    labels, scores, boxes, masks = m2f.instance_postprocess(class_logits, mask_logits, max_per_image=100)
    expected = reference_postprocess(class_logits, mask_logits, 100)
    assert labels.tolist() == [c for c, *_ in expected]
    np.testing.assert_allclose(scores.numpy(), [s for _, s, _, _ in expected], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(boxes.numpy(), np.array([b for _, _, b, _ in expected], dtype=np.float32))
    np.testing.assert_array_equal(masks.numpy(), np.stack([m for *_, m in expected]))


def test_keep_ratio_resize_follows_mmcv_rescale():
    assert m2f.keep_ratio_size(512, 512) == (800, 800)
    assert m2f.keep_ratio_size(480, 640) == (800, 1067)  # short edge binds
    assert m2f.keep_ratio_size(100, 1000) == (133, 1333)  # long edge binds
    pixels, resized = m2f.preprocess(np.full((480, 640, 3), 124, np.uint8))
    assert resized == (800, 1067) and pixels.shape == (1, 3, 800, 1088)
    np.testing.assert_allclose(pixels[0, :, 0, 0].numpy(), (124 - np.array(m2f.IMAGENET_MEAN)) / m2f.IMAGENET_STD, atol=1e-6)
    grey128 = torch.tensor((128 - np.array(m2f.IMAGENET_MEAN)) / m2f.IMAGENET_STD, dtype=torch.float32)
    torch.testing.assert_close(pixels[0, :, :, 1067:], grey128.view(3, 1, 1).expand(3, 800, 21))  # mmdet 2.x: pad 128
    pixels3, _ = m2f.preprocess(np.full((480, 640, 3), 124, np.uint8), pipeline="mmdet3")
    torch.testing.assert_close(pixels3[..., :1067], pixels[..., :1067])
    assert torch.all(pixels3[..., 1067:] == 0)  # mmdet 3.3: zero padding after normalisation
    with pytest.raises(ValueError, match="uint8"):
        m2f.preprocess(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="mmdet2"):
        m2f.preprocess(np.zeros((4, 4, 3), np.uint8), pipeline="detectron2")


def test_mmdet2_pipeline_rounds_the_resized_image_and_mmdet3_does_not():
    image = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mean = torch.tensor(m2f.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(m2f.IMAGENET_STD).view(1, 3, 1, 1)
    for pipeline, rounded in (("mmdet2", True), ("mmdet3", False)):
        pixels, (h, w) = m2f.preprocess(image, (100, 60), pipeline=pipeline)
        raw = (pixels[..., :h, :w] * std + mean).double()
        assert torch.allclose(raw, raw.round(), atol=1e-3) == rounded


def test_detect_equals_mmdet_order_upsample_all_then_select():
    model = tiny_model()
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    scale = (140, 90)
    detector = m2f.Mask2FormerDetector(model, scale=scale)
    bboxes, masks = detector.detect(image)

    pixels, (h, w) = m2f.preprocess(image, scale)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    full = F.interpolate(out.masks_queries_logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
    full = F.interpolate(full[:, :, :h, :w], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    expected = reference_postprocess(out.class_queries_logits[0], full, 100)

    assert len(bboxes) == 80 and sum(len(b) for b in bboxes) == len(expected) == 100
    for c in range(80):
        rows = [(s, b, m) for label, s, b, m in expected if label == c]
        np.testing.assert_allclose(bboxes[c][:, 4], [s for s, _, _ in rows], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(bboxes[c][:, :4], np.array([b for _, b, _ in rows], np.float32).reshape(-1, 4))
        for got, (_, _, want) in zip(masks[c], rows):
            assert got.shape == image.shape[:2]
            assert (got != want).mean() < 1e-3  # identical up to float ties at logit 0


def test_swin_small_config_is_genevals_68_7m_parameter_detector():
    from transformers import Mask2FormerForUniversalSegmentation

    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(m2f.swin_small_config())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(68.7e6, rel=2e-3)
    assert model.config.backbone_config.depths == [2, 2, 18, 2]
    assert model.config.num_labels == 80 and model.config.num_queries == 100


def test_local_checkpoint_folder_round_trip_and_label_check(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m2f")
    loaded = m2f.load_mask2former(str(tmp_path / "m2f"), "cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    tiny_model(num_labels=133).save_pretrained(tmp_path / "panoptic")
    with pytest.raises(CheckpointError, match="133 classes"):
        m2f.load_mask2former(str(tmp_path / "panoptic"), "cpu")


def test_hub_id_is_read_from_the_vapi_cache_and_offline_miss_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    hub_id = "facebook/mask2former-swin-small-coco-instance"
    with pytest.raises(OfflineError, match="huggingface.co/facebook/mask2former-swin-small-coco-instance"):
        m2f.load_mask2former(hub_id, "cpu")
    requirements = m2f.checkpoint_requirements(hub_id)
    assert [r.url for r in requirements] == [f"hf://{hub_id}/config.json", f"hf://{hub_id}/pytorch_model.bin"]
    folder = requirements[0].location().parent  # what `vapi-bench prepare` fills
    model = tiny_model()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    loaded = m2f.load_mask2former(hub_id, "cpu")
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    assert m2f.checkpoint_requirements("random") == [] and m2f.checkpoint_requirements(str(folder)) == []
    with pytest.raises(UsageError, match="neither a local folder"):
        m2f.checkpoint_requirements("no-such-folder")


def test_mmdet_backend_missing_gives_the_install_recipe():
    pytest.importorskip("torch")
    try:
        import mmdet  # noqa: F401
        pytest.skip("mmdet is installed")
    except ImportError:
        pass
    with pytest.raises(UsageError, match="mmcv") as info:
        build_detector("mmdet", weights="x.pth", device=torch.device("cpu"), scale=(1333, 800))
    assert "-std=c++20" in str(info.value) and MMDET_INSTALL_RECIPE in str(info.value)
    with pytest.raises(UsageError, match="choose one of"):
        build_detector("yolo", weights="", device=torch.device("cpu"), scale=(1333, 800))


def test_mmdet_results_convert_from_both_major_versions():
    class Instances(dict):
        __getattr__ = dict.__getitem__

    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    inst = Instances(labels=torch.tensor([1, 1]), scores=torch.tensor([0.9, 0.4]),
                     bboxes=torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2]]), masks=masks)
    sample = type("DetDataSample", (), {"pred_instances": inst})()
    bboxes, per_class_masks = result_to_detections(sample, num_classes=3)
    assert [len(b) for b in bboxes] == [0, 2, 0] and len(per_class_masks[1]) == 2
    np.testing.assert_allclose(bboxes[1][:, 4], [0.9, 0.4])
    v2 = ([np.zeros((0, 5)), np.ones((1, 5)), np.zeros((0, 5))], [[], [np.ones((3, 3), bool)], []])
    bboxes2, masks2 = result_to_detections(v2, num_classes=3)
    assert [len(b) for b in bboxes2] == [0, 1, 0] and masks2[1][0].all()


@pytest.mark.parametrize("src, dst", [((512, 512), (800, 800)), ((384, 512), (800, 1067)), ((1024, 1024), (800, 800)),
                                      ((100, 1000), (133, 1333)), ((37, 53), (80, 115)), ((160, 160), (80, 80))])
def test_uint8_resize_is_bit_exact_with_opencv(src, dst):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 2)  # smooth, as generated images are
    expected = cv2.resize(image, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    got = m2f.resize_uint8_like_opencv(image, *dst).permute(1, 2, 0).numpy().astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_uint8_resize_properties_without_opencv():
    image = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    same = m2f.resize_uint8_like_opencv(image, 6, 8)
    np.testing.assert_array_equal(same.permute(1, 2, 0).numpy(), image)  # same size: a copy
    half = m2f.resize_uint8_like_opencv(image, 3, 4).permute(1, 2, 0).numpy()
    blocks = image.reshape(3, 2, 4, 2, 3).astype(int).sum(axis=(1, 3))
    np.testing.assert_array_equal(half, (blocks + 2) >> 2)  # 2x down: rounded mean of each 2x2 block
    flat = m2f.resize_uint8_like_opencv(np.full((5, 7, 3), 201, np.uint8), 13, 11)
    assert torch.all(flat == 201)
