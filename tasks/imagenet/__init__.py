"""Built-in `imagenet-fid` task (ADM evaluator protocol: FID, sFID, IS, precision, recall; plus FD_DINOv2)."""
from __future__ import annotations

from vapi_bench import Entry, Param, hookimpl

from .reference import ADM_REFERENCE_URL
from .task import ImageNetFIDTask

PARAMS = (
    Param("n", int, 50_000, "number of samples (50,000 in the published protocol)"),
    Param("class_sampling", str, "balanced", "class labels: balanced (i mod C; 50 per class for 50k) or "
          "random (uniform, seeded by label_seed; the LlamaGen/VA-pi scripts' protocol)",
          choices=("balanced", "random")),
    Param("label_seed", int, 0, "seed of the labels when class_sampling=random"),
    Param("image_size", int, 256, "evaluation resolution; samples are bicubic-resized to it (ADM reference: 256)"),
    Param("cfg", str, "both", "rows to score: without CFG, with the model's CFG, or both",
          choices=("both", "without", "with")),
    Param("reference", str, ADM_REFERENCE_URL, "ADM reference batch .npz: local path, URL or hf:// id"),
    Param("inception_weights", str, "", "local torch-fidelity Inception weights (.pth) for offline use; "
          "empty downloads torch-fidelity's release file"),
    Param("batch_size", int, 50, "images per Inception forward pass"),
    Param("split_size", int, 5000, "Inception Score split size (consecutive, unshuffled, as ADM)"),
    Param("export_npz", bool, True, "write samples.npz (ADM format: arr_0 NHWC uint8, arr_1 labels)"),
    Param("clean_fid", bool, False, "also report clean-fid's clean-mode FID as `clean_fid` (a different metric)"),
    Param("clean_fid_inception", str, "", "local clean-fid TorchScript inception-2015-12-05.pt"),
    Param("fd_dinov2", bool, True, "also report FD on DINOv2 ViT-L/14 features as `fd_dinov2` "
          "(torch-fidelity's definition, against the reference images)"),
    Param("dinov2_weights", str, "", "local Hugging Face DINOv2 folder (config.json + model.safetensors) for "
          "offline use; empty downloads facebook/dinov2-large"),
)


@hookimpl
def register_tasks(register):
    register(Entry(
        "imagenet-fid",
        factory=ImageNetFIDTask,
        summary="ImageNet 256 class-to-image: FID, sFID, IS, precision, recall (ADM evaluator protocol), FD_DINOv2",
        params=PARAMS,
    ))
