"""`vapi-bench zoo build`: train the shapes world's models from scratch and write the zoo.

Stages, each behind a progress bar: render the training sets; train the VQ tokenizer; tokenize
the sets; train the c2i GPT, the t2i GPTs (plain and label-smoothed) and the under-capacity c2i
GPTs on the tokens; train `shapes-var` (its own multi-scale VQ-VAE and VAR: var_build.py); train
the reward and feature networks; measure the quality figures through
the registered generators' own code path (a CFG sweep). Files are written to a staging folder
inside the output directory and moved into place only once everything succeeded, manifest last,
so an interrupted build never leaves a zoo whose files disagree.

Every random draw derives from the build seed, so two builds with the same seed on the same
machine and thread count produce byte-identical weights.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from vapi_bench.precision import cpu_has_native_bf16
from vapi_bench.progress import make_progress
from vapi_bench.seeding import derive_seed
from vapi_bench.store import atomic_write_json

from ...llamagen.gpt import GPT, GPTConfig
from ...llamagen.vq import VQConfig, VQModel
from ..data import class_dataset
from ..features import save_feature_net, train_feature_net
from ..vocab import NUM_CLASSES
from ..words import ShapesWordEncoder
from .config import ZooConfig, preset
from .files import FILES, FORMAT, MANIFEST, MAX_TOTAL_BYTES, file_record, save_module, zoo_dir_or_default
from .quality import measure_quality, measure_var_quality
from .stages import Stages, finish_bar, loss_bar
from .train import OptimConfig, encode_dataset, train_gpt, train_vq
from .training_sets import CaptionConditions, render_sets, t2i_training_set
from .var_build import train_shapes_var


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".zoo-build-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_zoo(
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    quick: bool = False,
    config: ZooConfig | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train every zoo model from scratch into out_dir (default: the packaged zoo); returns the manifest."""
    cfg = config or preset(quick)
    root = zoo_dir_or_default(out_dir)
    started = time.time()
    progress = make_progress(disable=not show_progress)
    stages = Stages(progress)
    # fork_rng: the build seeds torch's global generator per stage; the caller's state survives
    with torch.random.fork_rng(devices=[]), progress, _staging(root) as staging:
        manifest = {"format": FORMAT, "seed": seed, "quick": quick, "config": cfg.as_dict(),
                    **train_models(cfg, seed, stages, staging)}
        manifest["files"] = {FILES[k]: file_record(staging / FILES[k]) for k in FILES}
        total = sum(r["bytes"] for r in manifest["files"].values())
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"the zoo weighs {total} bytes, over the {MAX_TOTAL_BYTES} bytes the repository allows.")
        atomic_write_json(staging / MANIFEST, manifest)  # the generators below load the staged zoo
        manifest["quality"] = {**measure_quality(staging, cfg, seed, stages),
                               "var": measure_var_quality(staging, cfg, seed, stages)}
        manifest["build"] = {
            "wall_seconds": {**stages.walls, "total": round(time.time() - started, 2)},
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        }
        for name in manifest["files"]:
            os.replace(staging / name, root / name)
        atomic_write_json(root / MANIFEST, manifest)
    return manifest


def train_models(cfg: ZooConfig, seed: int, stages: Stages, out: Path) -> dict[str, Any]:
    """Render the data and train every zoo model into `out`; returns the manifest's
    models / data / losses sections."""
    with stages.stage("render data", cfg.n_class_images + cfg.n_caption_images) as step:
        sets = render_sets(cfg, seed, step)

    vq_cfg = VQConfig(**cfg.vq)
    torch.manual_seed(derive_seed(seed, 0, "zoo/vq"))
    vq = VQModel(vq_cfg)
    images = torch.cat([sets.class_images, sets.caption_images])
    with stages.stage("train VQ", cfg.vq_optim.steps) as step:
        vq_losses = train_vq(vq, images, cfg.vq_optim, derive_seed(seed, 1, "zoo/vq"),
                             restart_every=cfg.vq_restart_every, edge_boost=cfg.vq_edge_boost,
                             on_step=loss_bar(step))
        finish_bar(step, cfg.vq_optim)
    save_module(out / FILES["vq"], vq)

    with stages.stage("tokenize", len(images)) as step:
        class_tokens = encode_dataset(vq, sets.class_images, on_batch=step)
        caption_tokens = encode_dataset(vq, sets.caption_images, on_batch=step)
    side = vq.grid_size(cfg.image_size)

    c2i_cfg = GPTConfig(**cfg.gpt, model_type="c2i", num_classes=NUM_CLASSES,
                        vocab_size=vq_cfg.codebook_size, block_size=side * side)
    labels = sets.class_labels
    c2i, c2i_losses = _train_gpt_stage(stages, "train c2i GPT", c2i_cfg, class_tokens, lambda rows: labels[rows],
                                       cfg.c2i_optim, cfg.bf16, derive_seed(seed, 0, "zoo/c2i"))
    save_module(out / FILES["c2i"], c2i)

    encoder = ShapesWordEncoder(max_words=cfg.max_words)
    t2i_tokens, captions = t2i_training_set(cfg, encoder, sets, class_tokens, caption_tokens)
    t2i = {"models": {}, "losses": {}}
    for kind in T2I_GPTS:
        part = train_t2i(cfg, seed, stages, out, kind, encoder, captions, t2i_tokens, c2i, vq_cfg.codebook_size, side)
        t2i["models"].update(part["models"])
        t2i["losses"].update(part["losses"])

    c2i_small = {"models": {}, "losses": {}}
    for kind in SMALL_GPTS:
        part = train_c2i_small(cfg, seed, stages, out, vq_cfg.codebook_size, side, class_tokens, labels, kind)
        c2i_small["models"].update(part["models"])
        c2i_small["losses"].update(part["losses"])
    var = train_shapes_var(cfg, seed, stages, out)
    reward = train_reward_net(cfg, seed, stages, out)

    featnet_seed = derive_seed(seed, 0, "zoo/featnet")
    featnet_losses: list[float] = []

    def featnet_step(index: int, loss: float) -> None:
        featnet_losses.append(loss)
        step(1, f"loss {loss:.4f}")

    with stages.stage("train feature net", cfg.featnet_steps) as step:
        state = train_feature_net(class_dataset("train", cfg.n_class_images, cfg.image_size, seed),
                                  steps=cfg.featnet_steps, seed=featnet_seed, on_step=featnet_step)
    save_feature_net(state, out / FILES["featnet"], meta={"seed": featnet_seed, "steps": cfg.featnet_steps})
    tail = featnet_losses[-max(len(featnet_losses) // 10, 1):]

    train_split = {"split": "train", "size": cfg.image_size, "seed": seed}
    return {
        "models": {
            "vq": {"config": {**vq_cfg.__dict__, "ch_mult": list(vq_cfg.ch_mult)}},
            "c2i": {"config": c2i_cfg.as_dict()},
            **t2i["models"], **c2i_small["models"], **var["models"], **reward["models"],
        },
        "data": {
            "sha256": sets.sha256,
            "class_images": {"dataset": "shapes-c2i", "n": cfg.n_class_images, **train_split},
            "caption_images": {"dataset": "shapes-captions", "n": cfg.n_caption_images, **train_split},
            "distinct_captions": captions.distinct,
            "t2i_class_captions": cfg.t2i_class_captions,
        },
        "losses": {
            "vq": vq_losses,
            "c2i": c2i_losses,
            **t2i["losses"],
            "featnet": {"loss": sum(tail) / len(tail)} if tail else {},
            **c2i_small["losses"], **var["losses"], **reward["losses"],
        },
    }


#: the under-capacity c2i GPTs: one trained by maximum likelihood, one with label smoothing
SMALL_GPTS = ("c2i-small", "c2i-small-ls")
#: the t2i GPTs: `shapes-t2i`, and `shapes-t2i-ls` trained the same way with label smoothing
T2I_GPTS = ("t2i", "t2i-ls")


def train_t2i(cfg: ZooConfig, seed: int, stages: Stages, out: Path, kind: str, encoder: ShapesWordEncoder,
              captions: CaptionConditions, tokens: torch.Tensor, c2i: GPT, vocab_size: int,
              side: int) -> dict[str, Any]:
    """A t2i GPT warm-started from the c2i GPT (`shapes-t2i`, or with label smoothing
    `shapes-t2i-ls`: the same initialisation, warm start and batches, only the targets differ);
    returns its manifest models / losses entries."""
    smoothing = cfg.t2i_ls_label_smoothing if kind == "t2i-ls" else 0.0
    t2i_cfg = GPTConfig(**cfg.gpt, model_type="t2i", caption_dim=encoder.feature_dim,
                        cls_token_num=encoder.num_tokens, vocab_size=vocab_size, block_size=side * side)
    gpt, losses = _train_gpt_stage(stages, f"train {kind} GPT", t2i_cfg, tokens, captions, cfg.t2i_optim,
                                   cfg.bf16, derive_seed(seed, 0, "zoo/t2i"),
                                   warm_start=c2i if cfg.t2i_from_c2i else None, label_smoothing=smoothing)
    save_module(out / FILES[kind], gpt)
    record: dict[str, Any] = {"config": t2i_cfg.as_dict(), "text_encoder": encoder.describe(),
                              "warm_start": "c2i" if cfg.t2i_from_c2i else None}
    if kind == "t2i-ls":  # kept out of `t2i`'s record, so the shipped t2i's manifest entry is unchanged
        record.update(label_smoothing=smoothing, bf16_autocast=cfg.bf16 and cpu_has_native_bf16())
    return {"models": {kind: record}, "losses": {kind: losses}}


def train_c2i_small(cfg: ZooConfig, seed: int, stages: Stages, out: Path, vocab_size: int, side: int,
                    class_tokens: torch.Tensor, labels: torch.Tensor, kind: str = "c2i-small") -> dict[str, Any]:
    """An under-capacity c2i GPT on the zoo's class tokens (`shapes-c2i-small`, or with label
    smoothing `shapes-c2i-small-ls`: the same initialisation and batches, only the targets
    differ); returns its manifest models / losses entries."""
    smoothing = cfg.c2i_small_ls_label_smoothing if kind == "c2i-small-ls" else 0.0
    small_cfg = GPTConfig(**cfg.c2i_small_gpt, model_type="c2i", num_classes=NUM_CLASSES,
                          vocab_size=vocab_size, block_size=side * side)
    gpt, losses = _train_gpt_stage(stages, f"train {kind} GPT", small_cfg, class_tokens, lambda rows: labels[rows],
                                   cfg.c2i_small_optim, cfg.bf16, derive_seed(seed, 0, "zoo/c2i-small"),
                                   label_smoothing=smoothing)
    save_module(out / FILES[kind], gpt)
    return {"models": {kind: {"config": small_cfg.as_dict(), "label_smoothing": smoothing,
                              "bf16_autocast": cfg.bf16 and cpu_has_native_bf16()}},
            "losses": {kind: losses}}


def train_reward_net(cfg: ZooConfig, seed: int, stages: Stages, out: Path) -> dict[str, Any]:
    """The perceptual reward's own feature network: narrower than featnet, its own initialisation
    and its own draw of training images; returns its manifest models / losses entries."""
    net_seed = derive_seed(seed, 0, "zoo/rewardnet")
    data_seed = seed + cfg.rewardnet_data_seed_offset
    losses: list[float] = []
    with stages.stage("train reward net", cfg.rewardnet_steps) as step:
        def on_step(index: int, loss: float) -> None:
            losses.append(loss)
            step(1, f"loss {loss:.4f}")

        state = train_feature_net(class_dataset("train", cfg.n_class_images, cfg.image_size, data_seed),
                                  steps=cfg.rewardnet_steps, seed=net_seed, widths=cfg.rewardnet_widths,
                                  on_step=on_step)
    meta = {"seed": net_seed, "data_seed": data_seed, "steps": cfg.rewardnet_steps,
            "widths": list(cfg.rewardnet_widths), "role": "perceptual reward (shapes-perceptual)"}
    save_feature_net(state, out / FILES["rewardnet"], meta=meta)
    tail = losses[-max(len(losses) // 10, 1):]
    return {"models": {"rewardnet": meta}, "losses": {"rewardnet": {"loss": sum(tail) / len(tail)} if tail else {}}}


#: stages `zoo build --only` can (re)build into an existing zoo, leaving its other files alone, and
#: the zoo files (FILES keys) each one writes
EXTRA_FILES: dict[str, tuple[str, ...]] = {"reward-net": ("rewardnet",), **{k: (k,) for k in SMALL_GPTS},
                                           "t2i-ls": ("t2i-ls",), "var": ("var-vae", "var")}
EXTRA_STAGES = tuple(EXTRA_FILES)


def build_extra(out_dir: str | Path | None, only: str, *, config: ZooConfig | None = None,
                show_progress: bool = True) -> dict[str, Any]:
    """Train one extra model of an existing zoo (its build seed; the zoo's VQ for c2i-small) and add
    it to the manifest (with its quality figures, for var); the zoo's other files are untouched."""
    from .files import read_manifest, verify_file

    if only not in EXTRA_STAGES:
        raise ValueError(f"zoo build --only: choose one of {', '.join(EXTRA_STAGES)}, got {only!r}.")
    root = zoo_dir_or_default(out_dir)
    manifest = read_manifest(root, verify=False)
    rebuilt = [FILES[kind] for kind in EXTRA_FILES[only]]
    for name, record in manifest["files"].items():
        if name not in rebuilt:  # the files being (re)built may be missing or stale
            verify_file(root / name, record)
    cfg = config or preset(bool(manifest.get("quick")))
    seed = int(manifest["seed"])
    progress = make_progress(disable=not show_progress)
    stages = Stages(progress)
    with torch.random.fork_rng(devices=[]), progress, _staging(root) as staging:
        if only == "reward-net":
            part = train_reward_net(cfg, seed, stages, staging)
        elif only == "var":
            part = train_shapes_var(cfg, seed, stages, staging)
        else:
            from .files import load_gpt, load_vq, word_encoder

            with stages.stage("render data", cfg.n_class_images + cfg.n_caption_images) as step:
                sets = render_sets(cfg, seed, step)
            if sets.sha256 != manifest["data"]["sha256"]:
                raise ValueError(f"zoo build --only {only}: the rendered training data differ from the zoo's "
                                 "(another renderer or config); rebuild the whole zoo.")
            vq = load_vq(root, manifest)
            side = vq.grid_size(cfg.image_size)
            if only == "t2i-ls":
                with stages.stage("tokenize", len(sets.class_images) + len(sets.caption_images)) as step:
                    tokens = encode_dataset(vq, sets.class_images, on_batch=step)
                    caption_tokens = encode_dataset(vq, sets.caption_images, on_batch=step)
                encoder = word_encoder(manifest)
                t2i_tokens, captions = t2i_training_set(cfg, encoder, sets, tokens, caption_tokens)
                part = train_t2i(cfg, seed, stages, staging, only, encoder, captions, t2i_tokens,
                                 load_gpt(root, manifest, "c2i"), vq.config.codebook_size, side)
            else:
                with stages.stage("tokenize", len(sets.class_images)) as step:
                    tokens = encode_dataset(vq, sets.class_images, on_batch=step)
                part = train_c2i_small(cfg, seed, stages, staging, vq.config.codebook_size, side, tokens,
                                       sets.class_labels, only)
        manifest["files"].update({name: file_record(staging / name) for name in rebuilt})
        manifest["models"].update(part["models"])
        manifest["losses"].update(part["losses"])
        manifest["config"] = {**manifest["config"], **{k: v for k, v in cfg.as_dict().items()
                                                       if k.startswith(("rewardnet", "c2i_small", "t2i_ls", "var",
                                                                        "n_var"))}}
        # only the new model's own stages: rendering and tokenizing here are the full build's steps again,
        # except var's (its own class set and tokenizer)
        manifest.setdefault("build", {}).setdefault("wall_seconds", {}).update(
            {k: v for k, v in stages.walls.items() if k.startswith("train ") or "VAR" in k})
        total = sum(r["bytes"] for r in manifest["files"].values())
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"the zoo would weigh {total} bytes, over the {MAX_TOTAL_BYTES} bytes the repository allows.")
        for name in rebuilt:
            os.replace(staging / name, root / name)
        atomic_write_json(root / MANIFEST, manifest)
        if only == "var":  # measured through the registered generator, which reads the written zoo
            manifest.setdefault("quality", {})["var"] = measure_var_quality(root, cfg, seed, stages)
            atomic_write_json(root / MANIFEST, manifest)
    return manifest


def _train_gpt_stage(stages: Stages, name: str, gpt_cfg: GPTConfig, tokens: torch.Tensor, conditions: Any,
                     optim: OptimConfig, bf16: bool, seed: int,
                     warm_start: GPT | None = None, label_smoothing: float = 0.0) -> tuple[GPT, dict[str, float]]:
    torch.manual_seed(seed)  # initialisation and class / caption dropout draws
    gpt = GPT(gpt_cfg)
    if warm_start is not None:
        copy_trunk(warm_start, gpt)
    with stages.stage(name, optim.steps) as step:
        losses = train_gpt(gpt, tokens, conditions, optim, seed, bf16=bf16 and cpu_has_native_bf16(),
                           label_smoothing=label_smoothing, on_step=loss_bar(step))
        finish_bar(step, optim)
    return gpt, losses


def copy_trunk(source: GPT, target: GPT) -> list[str]:
    """Copy every tensor of `source` into `target` whose name and shape match, except the
    condition embedder: the t2i GPT starts from the c2i GPT's token embeddings, transformer and
    head, which already model the same VQ tokens, and only has to learn to read captions."""
    own = target.state_dict()
    theirs = source.state_dict()
    copied = [k for k, v in own.items()
              if not k.startswith("cls_embedding.") and k in theirs and theirs[k].shape == v.shape]
    target.load_state_dict({**own, **{k: theirs[k] for k in copied}})
    return copied


