"""GenEval's own detector weights on transformers: OpenMMLab Mask2Former -> Mask2FormerForUniversalSegmentation.

GenEval scores with the OpenMMLab Mask2Former Swin-S COCO instance checkpoint
(`..._20220504_001756`, released for mmdet 2.x as `-743b7d99.pth` and re-keyed for mmdet 3.x as
`-c9d0c4f2.pth`, the file GenEval's `download_models.sh` fetches). transformers ships the same
architecture, so the weights can run there without mmcv's compiled ops. This module is the bridge:

- `key_table(config)`: an explicit table, one `KeyRule` per tensor, from the mmdet-3 key layout to
  transformers' (5.x) keys, expanded over the configuration's depths and layer counts. Every mmdet
  key and every HF key appears in exactly one rule; `convert_state_dict` raises naming any key the
  table does not account for, so a different checkpoint or transformers layout fails loudly.
- `mmdet2_to_mmdet3_key`: the mmdet 2.x names of the same tensors (mmcv 1.x `BaseTransformerLayer`
  keeps attentions and FFNs in lists: `attentions.0`, `ffns.0`), mapped onto the 3.x names.
- Tensor operations where the two layouts differ: fused q/k/v projections (Swin window attention,
  decoder self-attention) split into HF's separate projections; Swin patch merging, whose 4C channel
  order differs (mmdet concatenates the 2x2 neighbourhood through `nn.Unfold`: channel-major,
  row-major positions; HF/original Swin: position-major in the order (0,0), (1,0), (0,1), (1,1)).
- Two HF-only tensors the checkpoint cannot hold: SwinModel's final `layernorm` (not used by the
  backbone's feature maps; transformers itself ignores it when missing) and the loss's class weights
  `criterion.empty_weight` (training only; filled with mmdet's class_weight, no-object = 0.1).
  mmdet's Swin saves `relative_position_index` buffers, which HF recomputes: they are checked
  against the standard Swin index and dropped.
- `load_openmmlab_checkpoint`: reads the `.pth` with `torch.load(weights_only=True)`; non-tensor
  metadata objects (mmengine/mmcv classes in `meta`) are replaced by inert placeholders, so no code
  named by the pickle is ever imported or run.
- `convert_checkpoint_to_safetensors`: the cache file `vapi-bench prepare` writes and runs read.

`hf_to_mmdet_state_dict` is the inverse (HF -> mmdet 3 layout), used by the tests to derive an
mmdet-layout checkpoint from a random HF model and check that converting it back reproduces the
model's outputs exactly.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from vapi_bench.errors import CheckpointError

WEIGHT_BIAS = ("weight", "bias")
QKV = ("q", "k", "v")
#: prefixes of the HF model's state dict
SWIN = "model.pixel_level_module.encoder."
PIXEL_DECODER = "model.pixel_level_module.decoder."
TRANSFORMER = "model.transformer_module."
#: what each op does; the inverse (HF -> mmdet) of each is in `_to_mmdet`
OPS = ("copy", "split_qkv", "merge_reduction", "merge_norm", "window_index", "unused_layernorm", "loss_class_weight")
#: mmdet 2.x -> 3.x renames inside the two transformer stacks (mmdet 3's own 2.x->3.x converter rules)
MMDET2_RENAMES = {
    "panoptic_head.pixel_decoder.encoder.layers.": (("attentions.0.", "self_attn."), ("ffns.0.", "ffn.")),
    "panoptic_head.transformer_decoder.layers.": (
        ("attentions.0.", "cross_attn."),
        ("attentions.1.", "self_attn."),
        ("ffns.0.", "ffn."),
    ),
}
#: feature levels of the deformable-attention encoder (fixed in both implementations)
FEATURE_LEVELS = 3
SAFETENSORS_FORMAT = "vapi-bench mask2former from openmmlab v1"


@dataclass(frozen=True)
class KeyRule:
    """One tensor's journey: mmdet-3 keys consumed, HF keys produced, and the operation between.

    `mmdet` is empty for HF-only tensors, `hf` empty for mmdet buffers HF recomputes.
    """

    mmdet: tuple[str, ...]
    hf: tuple[str, ...]
    op: str = "copy"


def key_table(config: Any) -> list[KeyRule]:
    """The full table for a `Mask2FormerConfig` with a Swin backbone (GenEval's: Swin-S, 6 pixel-decoder
    layers, 9 decoder layers, 3 feature levels)."""
    rules: list[KeyRule] = []

    def add(mmdet: Iterable[str], hf: Iterable[str], op: str = "copy") -> None:
        rules.append(KeyRule(tuple(mmdet), tuple(hf), op))

    def linear(mmdet: str, hf: str) -> None:
        for p in WEIGHT_BIAS:
            add([f"{mmdet}.{p}"], [f"{hf}.{p}"])

    depths = list(config.backbone_config.depths)
    # ---- Swin backbone -------------------------------------------------------------------------
    linear("backbone.patch_embed.projection", f"{SWIN}swin.embeddings.patch_embeddings.projection")
    linear("backbone.patch_embed.norm", f"{SWIN}swin.embeddings.norm")
    for stage, depth in enumerate(depths):
        for block in range(depth):
            mm = f"backbone.stages.{stage}.blocks.{block}"
            hf = f"{SWIN}swin.encoder.layers.{stage}.blocks.{block}"
            linear(f"{mm}.norm1", f"{hf}.layernorm_before")
            for p in WEIGHT_BIAS:
                add([f"{mm}.attn.w_msa.qkv.{p}"], [f"{hf}.attention.{x}_proj.{p}" for x in QKV], "split_qkv")
            add([f"{mm}.attn.w_msa.relative_position_bias_table"],
                [f"{hf}.attention.relative_position_bias.relative_position_bias_table"])
            add([f"{mm}.attn.w_msa.relative_position_index"], [], "window_index")
            linear(f"{mm}.attn.w_msa.proj", f"{hf}.attention.o_proj")
            linear(f"{mm}.norm2", f"{hf}.layernorm_after")
            linear(f"{mm}.ffn.layers.0.0", f"{hf}.mlp.fc1")
            linear(f"{mm}.ffn.layers.1", f"{hf}.mlp.fc2")
        if stage < len(depths) - 1:
            mm, hf = f"backbone.stages.{stage}.downsample", f"{SWIN}swin.encoder.layers.{stage}.downsample"
            add([f"{mm}.reduction.weight"], [f"{hf}.reduction.weight"], "merge_reduction")
            for p in WEIGHT_BIAS:
                add([f"{mm}.norm.{p}"], [f"{hf}.norm.{p}"], "merge_norm")
        linear(f"backbone.norm{stage}", f"{SWIN}hidden_states_norms.stage{stage + 1}")
    for p in WEIGHT_BIAS:
        add([], [f"{SWIN}swin.layernorm.{p}"], "unused_layernorm")
    # ---- pixel decoder (multi-scale deformable attention encoder + FPN) ------------------------
    mm, hf = "panoptic_head.pixel_decoder", PIXEL_DECODER.rstrip(".")
    for level in range(FEATURE_LEVELS):
        linear(f"{mm}.input_convs.{level}.conv", f"{hf}.input_projections.{level}.0")
        linear(f"{mm}.input_convs.{level}.gn", f"{hf}.input_projections.{level}.1")
    add([f"{mm}.level_encoding.weight"], [f"{hf}.level_embed"])
    for layer in range(config.encoder_layers):
        mml, hfl = f"{mm}.encoder.layers.{layer}", f"{hf}.encoder.layers.{layer}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            linear(f"{mml}.self_attn.{name}", f"{hfl}.self_attn.{name}")
        linear(f"{mml}.norms.0", f"{hfl}.self_attn_layer_norm")
        linear(f"{mml}.ffn.layers.0.0", f"{hfl}.fc1")
        linear(f"{mml}.ffn.layers.1", f"{hfl}.fc2")
        linear(f"{mml}.norms.1", f"{hfl}.final_layer_norm")
    add([f"{mm}.lateral_convs.0.conv.weight"], [f"{hf}.adapter_1.0.weight"])  # bias-free conv before GN
    linear(f"{mm}.lateral_convs.0.gn", f"{hf}.adapter_1.1")
    add([f"{mm}.output_convs.0.conv.weight"], [f"{hf}.layer_1.0.weight"])
    linear(f"{mm}.output_convs.0.gn", f"{hf}.layer_1.1")
    linear(f"{mm}.mask_feature", f"{hf}.mask_projection")
    # ---- transformer decoder (masked attention) and heads --------------------------------------
    mm, hf = "panoptic_head.transformer_decoder", f"{TRANSFORMER}decoder"
    for layer in range(config.decoder_layers - 1):  # HF counts the query-only prediction as a layer
        mml, hfl = f"{mm}.layers.{layer}", f"{hf}.layers.{layer}"
        add([f"{mml}.cross_attn.attn.in_proj_weight"], [f"{hfl}.cross_attn.in_proj_weight"])
        add([f"{mml}.cross_attn.attn.in_proj_bias"], [f"{hfl}.cross_attn.in_proj_bias"])
        linear(f"{mml}.cross_attn.attn.out_proj", f"{hfl}.cross_attn.out_proj")
        linear(f"{mml}.norms.0", f"{hfl}.cross_attn_layer_norm")
        add([f"{mml}.self_attn.attn.in_proj_weight"], [f"{hfl}.self_attn.{x}_proj.weight" for x in QKV], "split_qkv")
        add([f"{mml}.self_attn.attn.in_proj_bias"], [f"{hfl}.self_attn.{x}_proj.bias" for x in QKV], "split_qkv")
        linear(f"{mml}.self_attn.attn.out_proj", f"{hfl}.self_attn.out_proj")
        linear(f"{mml}.norms.1", f"{hfl}.self_attn_layer_norm")
        linear(f"{mml}.ffn.layers.0.0", f"{hfl}.fc1")
        linear(f"{mml}.ffn.layers.1", f"{hfl}.fc2")
        linear(f"{mml}.norms.2", f"{hfl}.final_layer_norm")
    linear(f"{mm}.post_norm", f"{hf}.layernorm")
    add(["panoptic_head.query_embed.weight"], [f"{TRANSFORMER}queries_embedder.weight"])
    add(["panoptic_head.query_feat.weight"], [f"{TRANSFORMER}queries_features.weight"])
    add(["panoptic_head.level_embed.weight"], [f"{TRANSFORMER}level_embed.weight"])
    linear("panoptic_head.cls_embed", "class_predictor")
    for index in range(3):  # mmdet: Sequential(Linear, ReLU, Linear, ReLU, Linear)
        linear(f"panoptic_head.mask_embed.{2 * index}", f"{hf}.mask_predictor.mask_embedder.{index}.0")
    add([], ["criterion.empty_weight"], "loss_class_weight")
    return rules


def mmdet2_to_mmdet3_key(key: str) -> str:
    """The mmdet 3.x name of an mmdet 2.x Mask2Former key (unchanged outside the transformer stacks)."""
    for prefix, renames in MMDET2_RENAMES.items():
        if key.startswith(prefix):
            layer, _, rest = key[len(prefix):].partition(".")
            for old, new in renames:
                if rest.startswith(old):
                    return f"{prefix}{layer}.{new}{rest[len(old):]}"
    return key


def is_mmdet2_layout(keys: Iterable[str]) -> bool:
    """True for mmdet 2.x key names (mmcv 1.x transformer layers: `attentions.N`, `ffns.N`)."""
    return any(".attentions." in key or ".ffns." in key for key in keys)


def window_relative_position_index(window: int) -> torch.Tensor:
    """The standard Swin relative position index [window**2, window**2] (what HF computes)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def _merging_order(channels4: int) -> torch.Tensor:
    """For each position of HF's 4C patch-merging vector, its index in mmdet's.

    HF concatenates the 2x2 neighbours position-major, (row, col) = (0,0), (1,0), (0,1), (1,1):
    index q * C + c. mmdet's nn.Unfold is channel-major with row-major positions: index c * 4 + 2 * row + col.
    """
    channel = torch.arange(channels4 // 4)
    return torch.cat([channel * 4 + unfold_position for unfold_position in (0, 2, 1, 3)])


def _to_hf(rule: KeyRule, tensors: list[torch.Tensor], config: Any) -> list[torch.Tensor]:
    op = rule.op
    if op == "copy":
        return tensors
    if op == "split_qkv":
        return list(tensors[0].chunk(3, dim=0))
    if op == "merge_reduction":
        return [tensors[0][:, _merging_order(tensors[0].shape[1])]]
    if op == "merge_norm":
        return [tensors[0][_merging_order(tensors[0].shape[0])]]
    if op == "window_index":
        expected = window_relative_position_index(config.backbone_config.window_size)
        if not torch.equal(tensors[0].long(), expected):
            raise CheckpointError(
                f"{rule.mmdet[0]} is not the standard Swin relative position index for window "
                f"{config.backbone_config.window_size}; the checkpoint does not match GenEval's Swin-S (window 7)."
            )
        return []
    if op == "unused_layernorm":
        size = config.backbone_config.embed_dim * 2 ** (len(config.backbone_config.depths) - 1)
        return [torch.ones(size) if rule.hf[0].endswith("weight") else torch.zeros(size)]
    if op == "loss_class_weight":
        weight = torch.ones(config.num_labels + 1)
        weight[-1] = config.no_object_weight
        return [weight]
    raise ValueError(f"unknown key-table op {op!r}")


def _to_mmdet(rule: KeyRule, tensors: list[torch.Tensor], config: Any) -> list[torch.Tensor]:
    op = rule.op
    if op == "copy":
        return tensors
    if op == "split_qkv":
        return [torch.cat(tensors, dim=0)]
    if op in ("merge_reduction", "merge_norm"):
        order = _merging_order(tensors[0].shape[-1])
        restored = torch.empty_like(tensors[0])
        restored[..., order] = tensors[0]
        return [restored]
    if op == "window_index":
        return [window_relative_position_index(config.backbone_config.window_size)]
    if op in ("unused_layernorm", "loss_class_weight"):
        return []
    raise ValueError(f"unknown key-table op {op!r}")


def _check_keys(have: Iterable[str], want: Iterable[str], what: str) -> None:
    have, want = set(have), set(want)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        def listing(label: str, keys: list[str]) -> str:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            return f"{label}: {shown}"

        parts = [listing("missing", missing)] if missing else []
        parts += [listing("unexpected", unexpected)] if unexpected else []
        raise CheckpointError(f"{what} does not match GenEval's Mask2Former Swin-S layout; " + "; ".join(parts))


def convert_state_dict(state: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """mmdet (2.x or 3.x key layout) state dict -> HF Mask2FormerForUniversalSegmentation state dict.

    Raises CheckpointError naming every missing or unexpected mmdet key.
    """
    if is_mmdet2_layout(state):
        state = {mmdet2_to_mmdet3_key(key): value for key, value in state.items()}
    table = key_table(config)
    _check_keys(state, (key for rule in table for key in rule.mmdet), "The mmdet checkpoint")
    converted: dict[str, torch.Tensor] = {}
    for rule in table:
        outputs = _to_hf(rule, [state[key] for key in rule.mmdet], config)
        converted.update({key: tensor.contiguous() for key, tensor in zip(rule.hf, outputs)})
    return converted


def hf_to_mmdet_state_dict(state: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """The inverse of `convert_state_dict`: HF state dict -> mmdet 3.x layout."""
    table = key_table(config)
    _check_keys(state, (key for rule in table for key in rule.hf), "The HF state dict")
    converted: dict[str, torch.Tensor] = {}
    for rule in table:
        outputs = _to_mmdet(rule, [state[key] for key in rule.hf], config)
        converted.update({key: tensor.contiguous() for key, tensor in zip(rule.mmdet, outputs)})
    return converted


class _OpaqueObject:
    """Stands in for a non-tensor object in an OpenMMLab checkpoint (mmengine/mmcv/numpy classes in
    `meta` or a message hub). It records what the pickle passes to it and runs nothing else."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_OpaqueObject":
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_openmmlab_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of an OpenMMLab `.pth`, read with `torch.load(weights_only=True)`.

    Globals the weights-only unpickler does not know (mmengine/mmcv/numpy objects in the metadata)
    are bound to an inert placeholder class, so nothing the file names is imported or executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mmdet checkpoint {path} does not exist or is not a file.")
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip checkpoint, truncated file
        raise CheckpointError(
            f"mmdet checkpoint {path} could not be read ({type(exc).__name__}: {exc}); "
            "it is probably truncated or corrupt, download it again."
        ) from None
    placeholders = [(_OpaqueObject, name) for name in unknown]
    try:
        with torch.serialization.safe_globals(placeholders):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"mmdet checkpoint {path} could not be read safely ({exc}).") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"mmdet checkpoint {path} holds no 'state_dict' of tensors.")
    return dict(state)


def convert_checkpoint_to_safetensors(
    checkpoint: str | Path, target: str | Path, config: Any, extra_metadata: Mapping[str, str] | None = None
) -> Path:
    """Convert an OpenMMLab Mask2Former `.pth` into an HF-layout safetensors file, atomically."""
    from safetensors.torch import save_file

    state = convert_state_dict(load_openmmlab_checkpoint(checkpoint), config)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        metadata = {"format": SAFETENSORS_FORMAT, "source": Path(checkpoint).name, **(extra_metadata or {})}
        save_file(state, temporary, metadata=metadata)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target
