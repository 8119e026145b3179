"""clean-fid's "clean" FID: a different metric from the ADM FID, reported under its own name.

clean-fid (GaParmar/clean-fid) resizes each image to 299x299 with PIL bicubic on float32 channels
(antialiased, not re-quantised) and runs NVIDIA's TorchScript port of the same 2015 Inception; the
ADM FID uses TF1's bilinear resize. The numbers differ systematically (clean-FID is higher) and are
never comparable with published ADM/LlamaGen FIDs, which is why the task reports it as `clean_fid`.

We use clean-fid's own resizer (`cleanfid.resize.build_resizer("clean")`) and reproduce the forward
of its `InceptionV3W` wrapper (`layers((x - 128) / 128)`) on a TorchScript file we resolve ourselves:
clean-fid can only load that file from a hard-coded `/tmp/inception-2015-12-05.pt`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from vapi_bench.errors import CheckpointError, DataError
from vapi_bench.hashing import file_digest
from vapi_bench.metrics import frechet_distance, gaussian_stats

from .adm_npz import iter_npz_images, npz_keys
from .reference import cached_arrays

CLEAN_FID_INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)


class CleanInception:
    """clean-mode features (2048-d) of uint8 NHWC batches."""

    def __init__(self, weights: Path | str, device: torch.device | str = "cpu") -> None:
        from cleanfid.resize import build_resizer

        try:
            with warnings.catch_warnings():  # clean-fid's file is TorchScript; torch 2.x warns on every load
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
                self.base = torch.jit.load(str(weights), map_location=device).eval()
            self.layers = self.base.layers
        except (RuntimeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"clean-fid Inception {weights} is not the TorchScript model clean-fid uses "
                f"({CLEAN_FID_INCEPTION_URL.rsplit('/', 1)[-1]}): {str(exc).splitlines()[0]}"
            ) from None
        self.resize = build_resizer("clean")
        self.device = torch.device(device)

    @torch.no_grad()
    def features(self, batch: np.ndarray) -> np.ndarray:
        resized = np.stack([self.resize(image) for image in batch]).astype(np.float32)  # [B, 299, 299, 3]
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).to(self.device)
        return self.layers.forward((x - 128) / 128).view(len(batch), 2048).cpu().numpy().astype(np.float64)

    def extract(self, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None) -> np.ndarray:
        parts = []
        for batch in batches:
            parts.append(self.features(batch))
            if progress is not None:
                progress(len(batch))
        return np.concatenate(parts)



def clean_mode_fid(
    sample_batches: Iterable[np.ndarray],
    reference: Path,
    weights: Path,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
) -> float:
    """clean-mode FID of uint8 NHWC sample batches against the reference .npz's images.

    The reference statistics are cached by the sha256 of the reference and of the weights.
    """
    if "arr_0" not in npz_keys(reference):
        raise DataError(f"clean_fid needs reference images (arr_0); {reference} holds only statistics.")
    model = CleanInception(weights, device=device)

    def reference_stats() -> dict[str, np.ndarray]:
        mu, sigma = gaussian_stats(model.extract(iter_npz_images(reference, batch_size)))
        return {"mu": mu, "sigma": sigma}

    ref = cached_arrays(f"clean-{file_digest(reference)[:16]}-inception-{file_digest(weights)[:16]}", reference_stats)
    return frechet_distance(*gaussian_stats(model.extract(sample_batches)), ref["mu"], ref["sigma"])
