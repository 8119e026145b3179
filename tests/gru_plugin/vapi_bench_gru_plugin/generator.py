"""`GruGenerator`: a GRU policy plus the shapes plugin's frozen VQ tokenizer."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vapi_bench import Generator, SamplingRecipe
from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.plugins.llamagen.sampling import cfg_combine, inverse_cdf_draw, logits_to_probs, uses_cfg_at
from vapi_bench.plugins.shapes.zoo.files import load_vq, read_manifest, zoo_dir_or_default
from vapi_bench.seeding import torch_generator

GRU_FAMILY = "tiny-gru"
POLICY_FILE = "gru.safetensors"


class GruPolicy(nn.Module):
    """Position t reads the class (t = 0) or token t-1 and predicts token t."""

    def __init__(self, num_classes: int, vocab: int, hidden: int, class_dropout_prob: float) -> None:
        super().__init__()
        self.null_class = num_classes  # the extra embedding row CFG's unconditional branch uses
        self.class_dropout_prob = class_dropout_prob
        self.classes = nn.Embedding(num_classes + 1, hidden)
        self.tokens = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, labels: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] from labels [B] and the token prefix [B, T]."""
        if self.training and self.class_dropout_prob > 0:  # label dropout trains the null class
            drop = torch.rand(labels.shape, device=labels.device) < self.class_dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        inputs = torch.cat([self.classes(labels)[:, None], self.tokens(prefix[:, :-1])], dim=1)
        out, _ = self.gru(inputs)
        return self.head(out)

    def step(self, inputs: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step (the GRU's state is its 'KV cache'): logits [B, V] and the new state."""
        out, state = self.gru(inputs[:, None], state)
        return self.head(out[:, 0]), state


class GruGenerator(Generator):
    conditioning = "class"
    family = GRU_FAMILY
    default_dataset = "shapes-c2i"  # the shapes plugin's registered training data
    default_recipe = SamplingRecipe(cfg_scale=2.0)

    def __init__(self, hidden: int, class_dropout_prob: float, zoo_dir: str, device: torch.device) -> None:
        root = zoo_dir_or_default(zoo_dir)
        manifest = read_manifest(root)  # the shapes world's facts, without loading its GPTs
        self.name = "tiny-gru"
        self.device = torch.device(device)
        self.image_size = manifest["config"]["image_size"]
        self.num_classes = manifest["models"]["c2i"]["config"]["num_classes"]
        self.codebook_size = manifest["models"]["vq"]["config"]["codebook_size"]
        self._vq = load_vq(root, manifest).to(self.device).requires_grad_(False)  # borrowed, frozen
        self.num_tokens = self._vq.grid_size(self.image_size) ** 2
        self._policy = GruPolicy(self.num_classes, self.codebook_size, hidden, class_dropout_prob).to(self.device)
        self._facts = {"hidden": hidden, "zoo_vq_sha256": manifest["files"]["vq.safetensors"]["sha256"]}

    # ---- tokenizer (the shapes VQ) ----------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._vq.encode_indices(images.to(self.device, torch.float32))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._vq.decode_indices(tokens.to(self.device))

    # ---- conditions and policy ----------------------------------------------------------------
    def prepare_conditions(self, conds: Sequence[Any]) -> torch.Tensor:
        bad = [c for c in conds if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_classes]
        if bad:
            raise UsageError(f"{self.name}: conditions must be class indices in [0, {self.num_classes}); got {bad[:5]}.")
        return torch.tensor(list(conds), dtype=torch.long, device=self.device)

    @property
    def policy(self) -> nn.Module:
        return self._policy

    def teacher_forced_logits(self, tokens: torch.Tensor, cond: Any, context: torch.Tensor | None = None) -> torch.Tensor:
        prefix = tokens if context is None else context
        return self._policy(cond, prefix.to(self.device))

    @torch.no_grad()
    def sample(self, conds: Sequence[Any], *, seeds: Sequence[int], recipe: SamplingRecipe = SamplingRecipe()) -> torch.Tensor:
        labels = self.prepare_conditions(conds)
        batch, guided = len(labels), recipe.cfg_scale > 1.0
        # row i's randomness: one uniform per token from its own seed (batch-size independent)
        uniforms = torch.stack([torch.rand(self.num_tokens, generator=torch_generator(int(s))) for s in seeds])
        uniforms = uniforms.to(self.device)
        rows = torch.cat([labels, torch.full_like(labels, self._policy.null_class)]) if guided else labels
        tokens = torch.empty(batch, self.num_tokens, dtype=torch.long, device=self.device)
        with _eval_mode(self._policy):
            inputs, state = self._policy.classes(rows), None
            for t in range(self.num_tokens):
                logits, state = self._policy.step(inputs, state)
                if guided:
                    cond, uncond = logits.float().split(batch)
                    logits = cfg_combine(cond, uncond, recipe.cfg_scale) if uses_cfg_at(t, recipe) else cond
                tokens[:, t] = inverse_cdf_draw(logits_to_probs(logits.float(), recipe), uniforms[:, t])
                inputs = self._policy.tokens(torch.cat([tokens[:, t]] * (2 if guided else 1)))
        return tokens

    # ---- checkpoints: the policy only (the borrowed VQ never changes here) ------------------
    def save_finetuned(self, directory: Path) -> list[Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / POLICY_FILE
        save_file({k: v.detach().cpu().contiguous() for k, v in self._policy.state_dict().items()}, str(path))
        return [path]

    def load_finetuned(self, directory: Path) -> None:
        self.load_policy(Path(directory) / POLICY_FILE)

    def load_policy(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{self.name}: no GRU weights at {path}.")
        try:
            self._policy.load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise CheckpointError(f"{self.name}: {path} does not fit this GRU ({str(exc).splitlines()[0]}).") from None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": self.family, **self._facts}


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Sampling never uses dropout or label dropout; the caller's mode is restored."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def build_gru(*, checkpoint: str | None, device: torch.device, hidden: int, class_dropout_prob: float,
              zoo_dir: str) -> GruGenerator:
    """Entry factory: a random-init GRU (seeded by the runner), or GRU weights from --checkpoint."""
    generator = GruGenerator(hidden, class_dropout_prob, zoo_dir, device)
    if checkpoint:
        generator.load_policy(Path(checkpoint))
    return generator
