"""The shapes feature network: a small CNN that plays Inception's role in the shapes world.

It is trained to classify a single-object image's class (shape x colour), position (3x3 grid of
the centre) and size (3 bins of the radius), so its penultimate features encode exactly what the
shapes world varies. `features` (128-d, standardised, pre-activation) feed FID / KID /
precision-recall, `logits` (the class head) feed the Inception Score and the class-accuracy
check. That network, featnet, is for evaluation only. The perceptual reward (`ShapesPerceptual`,
shapes-perceptual) reads the stage activations of a second network of the same design, the reward
network (narrower stages, its own initialisation and training images), so that no method is
trained on the very features it is scored with.

The network is also registered with torch-fidelity as the feature extractor 'shapes-featnet',
so `torch_fidelity.calculate_metrics(..., feature_extractor='shapes-featnet')` works on shapes.
Weights ship in plugins/shapes/zoo/featnet.safetensors and rewardnet.safetensors (written by
`vapi-bench zoo build`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.transforms.functional import gaussian_blur
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from vapi_bench.errors import CheckpointError, DataError
from vapi_bench.seeding import torch_generator

from .data import CLASS_RADIUS, ClassShapes
from .vocab import NUM_CLASSES

INPUT_SIZE = 32
WIDTHS = (16, 32, 64, 128)
FEATURE_DIM = 128
GRID = 3  # position bins per axis
SIZE_BINS = 3
FIDELITY_NAME = "shapes-featnet"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "zoo" / "featnet.safetensors"
#: the perceptual reward's network (never used by an evaluation task)
REWARD_WEIGHTS = Path(__file__).resolve().parent / "zoo" / "rewardnet.safetensors"


def _conv(cin: int, cout: int) -> list[nn.Module]:
    # GroupNorm: trains quickly without batch statistics, so features never depend on the batch
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]


class ShapesFeatureNet(nn.Module):
    """Four conv stages (32, 16, 8, 4 px) -> 128-d features -> class / position / size heads.

    Accepts uint8 images in [0, 255] or float images in [-1, 1], NCHW, any square size (resized
    to 32 px with antialiasing); inputs go to the network's device.
    """

    def __init__(self, widths: tuple[int, int, int, int] = WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(widths)
        w1, w2, w3, w4 = self.widths
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv(3, w1), *_conv(w1, w1)),
            nn.Sequential(nn.AvgPool2d(2), *_conv(w1, w2), *_conv(w2, w2)),
            nn.Sequential(nn.AvgPool2d(2), *_conv(w2, w3), *_conv(w3, w3)),
            nn.Sequential(nn.AvgPool2d(2), *_conv(w3, w4)),
        ])
        # flattened 4x4 map (where things are) + its global average (what things are, anywhere)
        self.fc = nn.Linear(w4 * (INPUT_SIZE // 8) ** 2 + w4, FEATURE_DIM)
        # Reported features are standardised (parameter-free) to unit RMS, so KID's polynomial
        # kernel (x.y/D + 1)^3 sees x.y/D in [-1, 1] (Inception's pool3 lives on a similar scale);
        # the heads read the raw activations so the class logits stay confident (IS).
        self.feature_norm = nn.LayerNorm(FEATURE_DIM, elementwise_affine=False)
        self.class_head = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.position_head = nn.Linear(FEATURE_DIM, GRID * GRID)
        self.size_head = nn.Linear(FEATURE_DIM, SIZE_BINS)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0,255] or float [-1,1] NCHW -> float [-1,1] at 32 px on the network's device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"ShapesFeatureNet expects NCHW RGB images, got shape {tuple(images.shape)}.")
        device = self.fc.weight.device
        if images.dtype == torch.uint8:
            x = images.to(device).float().div(127.5).sub(1.0)
        else:
            x = images.to(device=device, dtype=torch.float32)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the four conv stages (post-ReLU), for perceptual distances."""
        x = self.prepare(images)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'features' [N,128], 'logits' [N,K classes], 'position_logits' [N,9], 'size_logits' [N,3]}."""
        last = self.activations(images)[-1]
        raw = self.fc(torch.cat([last.flatten(1), last.mean(dim=(2, 3))], dim=1))
        hidden = F.relu(raw)
        return {
            "features": self.feature_norm(raw),
            "logits": self.class_head(hidden),
            "position_logits": self.position_head(hidden),
            "size_logits": self.size_head(hidden),
        }

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pool features [N, 128] for FID, KID and precision/recall."""
        return self.forward(images)["features"]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [N, K] for the Inception Score and class accuracy."""
        return self.forward(images)["logits"]


# ---- weights --------------------------------------------------------------------------------


def save_feature_net(state_dict: dict[str, torch.Tensor], path: Path | str, meta: dict[str, Any] | None = None) -> Path:
    """Write a feature-net state dict as safetensors (contiguous CPU tensors, optional metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta or {}, sort_keys=True)})
    return path


def load_feature_net(path: Path | str | None = None, device: torch.device | str = "cpu") -> ShapesFeatureNet:
    """Load the trained feature net (default: the zoo's featnet.safetensors), frozen, in eval mode.

    A missing file, or one whose tensor names or shapes do not match, raises CheckpointError
    saying which.
    """
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.exists():
        raise CheckpointError(
            f"Shapes feature network weights not found at {path}. Build them with `vapi-bench zoo build` "
            f"or pass a path to a featnet .safetensors file."
        )
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"Cannot read shapes feature network weights {path}: {exc}") from None
    net = ShapesFeatureNet(stage_widths(state))
    _check_state(net, state, path)
    net.load_state_dict(state)
    net.requires_grad_(False)
    return net.to(device).eval()


def stage_widths(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """The four stage widths of a feature-net state dict (the evaluation network and the reward
    network share the architecture but not the widths), read from each stage's first conv."""
    keys = ("stages.0.0.weight", "stages.1.1.weight", "stages.2.1.weight", "stages.3.1.weight")
    if not all(k in state and state[k].ndim == 4 for k in keys):
        return WIDTHS  # not a feature net: _check_state names what is missing
    return tuple(int(state[k].shape[0]) for k in keys)  # type: ignore[return-value]


def _check_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing}")
        if unexpected:
            details.append(f"unexpected {unexpected}")
        if wrong:
            details.append("shape mismatch " + ", ".join(
                f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong))
        raise CheckpointError(f"{path} is not a shapes feature network checkpoint: {'; '.join(details)}.")


# ---- training -------------------------------------------------------------------------------


def attribute_labels(dataset: ClassShapes,
                     indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [B,3,H,W] in [-1,1], class, position bin, size bin) for dataset items."""
    images, classes, positions, sizes = [], [], [], []
    low, high = CLASS_RADIUS
    scale = dataset.size / 32.0
    for i in indices:
        scene = dataset.scene(i)
        obj = scene.objects[0]
        images.append(torch.from_numpy(scene.image))
        classes.append(scene.label)
        col = min(int(obj.cx / dataset.size * GRID), GRID - 1)
        row = min(int(obj.cy / dataset.size * GRID), GRID - 1)
        positions.append(row * GRID + col)
        sizes.append(min(int((obj.r / scale - low) / (high - low) * SIZE_BINS), SIZE_BINS - 1))
    pixels = torch.stack(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return pixels, torch.tensor(classes), torch.tensor(positions), torch.tensor(sizes)


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation: blur a random half of the batch (one Gaussian, sigma 0.4-1.2) and
    add pixel noise of random strength, so that the classifier judges decoded and generated
    images by their content rather than by their sharpness."""
    n = images.shape[0]
    sigma = float(torch.empty(1).uniform_(0.4, 1.2, generator=generator))
    blurred = gaussian_blur(images, kernel_size=[5, 5], sigma=[sigma, sigma])
    chosen = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    strength = 0.06 * torch.rand(n, 1, 1, 1, generator=generator)
    return torch.where(chosen, blurred, images) + strength * torch.randn(images.shape, generator=generator)


def train_feature_net(
    dataset: ClassShapes,
    steps: int = 1000,
    seed: int = 0,
    *,
    batch_size: int = 64,
    lr: float = 2e-3,
    widths: tuple[int, int, int, int] = WIDTHS,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train a ShapesFeatureNet on a class-conditional shapes set; returns its CPU state dict.

    Loss = cross-entropy of the class, position and size heads (summed), on images augmented by
    `degrade`. Adam with a cosine schedule; 1000 steps of 64 reach ~99.5% class accuracy on
    held-out renders. Deterministic for a seed on a given device: initialisation, batch indices
    and augmentation come from seeded generators.
    `on_step(step, loss)` is called after every step (progress bars, logging).
    """
    if not hasattr(dataset, "scene") or len(dataset) == 0:
        raise DataError("train_feature_net needs a non-empty class-conditional shapes dataset (class_dataset(...)).")
    torch.manual_seed(seed)
    net = ShapesFeatureNet(widths).to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps, 1))
    picker = torch_generator(seed)
    for step in range(steps):
        indices = torch.randint(len(dataset), (batch_size,), generator=picker).tolist()
        images, classes, positions, sizes = attribute_labels(dataset, indices)
        images = degrade(images, picker)
        out = net(images.to(device))
        classes, positions, sizes = classes.to(device), positions.to(device), sizes.to(device)
        loss = (F.cross_entropy(out["logits"], classes)
                + F.cross_entropy(out["position_logits"], positions)
                + F.cross_entropy(out["size_logits"], sizes))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        optimiser.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item())
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def extract(net: ShapesFeatureNet, images: np.ndarray | torch.Tensor, batch_size: int = 256,
            on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features [N,128], logits [N,K]) as float64 numpy for uint8 NHWC numpy or NCHW tensors.

    `on_batch(n)` is called after each batch (progress bars)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(f"extract expects NHWC uint8 images, got {images.dtype} {images.shape}.")
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        out = net(images[start : start + batch_size])
        feats.append(out["features"].double().cpu())
        logits.append(out["logits"].double().cpu())
        if on_batch is not None:
            on_batch(len(out["features"]))
    if not feats:
        raise DataError("extract: no images given.")
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


# ---- torch-fidelity -------------------------------------------------------------------------


class ShapesFidelityExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper: features 'features' (fid/kid/prc) and 'logits' (isc).

    torch-fidelity builds it as cls(name, features_list, **calculate_metrics kwargs); the
    `feature_extractor_weights_path` kwarg selects a weights file (default: the zoo's).
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.net = load_feature_net(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(images)
        return tuple(out[name] for name in self.features_list)


def register_with_torch_fidelity() -> None:
    """Register 'shapes-featnet' with torch-fidelity (idempotent)."""
    if FIDELITY_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FIDELITY_NAME, ShapesFidelityExtractor)


register_with_torch_fidelity()
