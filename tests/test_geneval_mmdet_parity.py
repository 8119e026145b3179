"""The converted backend against mmdet's own Mask2Former: runs only where mmdet 3.3 is installed.

Random weights in mmdet's model (class head sharpened so that detections clear GenEval's
thresholds) -> converted -> the same detections (labels; scores within 3e-3, and >= 90% within
1e-5 where the inputs are bit-identical; masks) and the same GenEval verdicts, through mmdet 3.3's pipeline and through GenEval's
mmdet 2.x pipeline. VAPI_BENCH_PARITY_IMAGES sets the image count (default 4; docs/tasks-geneval.md
records a larger run). The same check on real weights:
`python -m vapi_bench.tasks.geneval.mmdet_parity --checkpoint <mmdet 3.x .pth> --hf-weights release`.
"""
import os

import numpy as np
import pytest

pytest.importorskip("mmdet.apis", reason="needs mmdet 3.3 with a compiled mmcv (docs/tasks-geneval.md)")

from vapi_bench.tasks.geneval import mmdet_parity as mp  # noqa: E402

IMAGES = int(os.environ.get("VAPI_BENCH_PARITY_IMAGES", "4"))


@pytest.fixture(scope="module")
def mmdet_model():
    return mp.build_mmdet_model(None, "cpu", seed=0)


@pytest.mark.parametrize("pipeline", ["mmdet3", "mmdet2"])
def test_converted_model_gives_mmdets_detections_and_verdicts(mmdet_model, pipeline):
    images = mp.synthetic_images(IMAGES, 160, seed=1)
    report = mp.run_parity(mmdet_model, images, pipeline, scale=(267, 160))
    assert report.images == IMAGES and report.images_with_kept_detections > 0  # not vacuous
    assert report.label_mismatches == 0, report.failures
    assert report.max_score_diff <= mp.SCORE_ATOL
    if pipeline == "mmdet2":  # bit-identical inputs (OpenCV's uint8 resize reproduced): mostly float-exact
        assert report.scores_within_1e5 >= 0.9 * report.boxes_total
    assert report.max_mask_mismatch <= mp.MASK_MISMATCH
    assert report.verdicts_identical == report.records_identical == IMAGES


def test_the_two_pipelines_differ_where_genevals_padding_shows(mmdet_model):
    from mmdet.apis import inference_detector

    image = mp.synthetic_images(2, 160, seed=2)[1]  # 120 x 160: resized to 160 x 213, padded to 224
    scores = {}
    for pipeline in ("mmdet2", "mmdet3"):
        result = inference_detector(mmdet_model, np.ascontiguousarray(image[..., ::-1]),
                                    test_pipeline=mp.mmdet_test_pipeline(pipeline, (267, 160)))
        scores[pipeline] = np.sort(result.pred_instances.scores.numpy())
    assert np.abs(scores["mmdet2"] - scores["mmdet3"]).max() > 1e-3


def test_the_real_weights_command_path_on_a_saved_checkpoint(mmdet_model, tmp_path, monkeypatch):
    """--checkpoint <file> --hf-weights <file>: both sides read an OpenMMLab file (here: mmdet's random
    model saved as a 3.x-layout release would be), the HF side through the backend's converter."""
    import torch

    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mask2former_swin-s_random.pth"
    torch.save({"meta": {"mmdet_version": "3.3.0"}, "state_dict": mmdet_model.state_dict()}, path)
    reloaded = mp.build_mmdet_model(str(path), "cpu")
    report = mp.run_parity(reloaded, mp.synthetic_images(2, 160, seed=3), "mmdet2", scale=(267, 160),
                           hf_weights=str(path))
    assert report.within_tolerance() and report.images_with_kept_detections > 0, report
