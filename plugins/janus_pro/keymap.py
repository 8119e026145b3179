"""deepseek-ai's original Janus-Pro checkpoint layout <-> transformers' `JanusForConditionalGeneration`.

The released deepseek-ai/Janus-Pro-{1B,7B} repositories store a `MultiModalityCausalLM` state dict
(`language_model.*`, `gen_vision_model.*`, `gen_head.*`, a timm SigLIP `vision_model.*`...), and
the official `janus` package no longer imports under transformers 5. This module is our own key
table (the facts match transformers' conversion script, which is not shipped in the wheel), so
those files load into the transformers model with no missing and no unexpected key:

- renames, written once as (official template, transformers template) pairs and applied in both
  directions, so the export used by tests and by `hf_to_official` cannot drift from the import;
- the SigLIP `attn.qkv` tensors are split into q/k/v projections (and merged back on export);
- `pos_embed` (1, N, C) becomes the (N, C) position-embedding table;
- the VQ tokenizer keys go through the LlamaGen plugin's `to_janus_keys` / `from_janus_keys`
  (same network, different names);
- `vision_model.vision_tower.attn_pool.*` (unused by Janus) and `quantize.codebook_used` (a
  training statistic) are dropped.

It also turns the official `config.json` into a `JanusConfig` (`janus_config_from_official`).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from vapi_bench.errors import CheckpointError
from vapi_bench.plugins.llamagen.vq import from_janus_keys, to_janus_keys

_VQ_OFFICIAL, _VQ_HF = "gen_vision_model.", "model.vqmodel."
_QKV_OFFICIAL = re.compile(r"^vision_model\.vision_tower\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_HF = re.compile(r"^model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_POS_OFFICIAL = "vision_model.vision_tower.pos_embed"
_POS_HF = "model.vision_model.embeddings.position_embedding.weight"
_DROPPED_OFFICIAL = (re.compile(r"^vision_model\.vision_tower\.attn_pool\."), re.compile(r"^gen_vision_model\.quantize\.codebook_used$"))
# MlpProjector(mlp_gelu, depth d) is Sequential[Linear, GELU, Linear, ...]: layer 0 is `fc1`, layer
# 2k (k >= 1) is `hidden_layers.{k-1}` in transformers.
_PROJECTOR_OFFICIAL = re.compile(r"^(gen_aligner|aligner)\.layers\.(\d+)\.(weight|bias)$")
_PROJECTOR_HF = re.compile(r"^model\.(generation_aligner|aligner)\.(fc1|hidden_layers\.(\d+))\.(weight|bias)$")
_PROJECTOR_NAMES = {"gen_aligner": "generation_aligner", "aligner": "aligner"}
_PROJECTOR_OWNERS = {hf: official for official, hf in _PROJECTOR_NAMES.items()}

#: (official template, transformers template); {rest} matches anything, other fields one key part
RENAMES: tuple[tuple[str, str], ...] = (
    ("language_model.model.{rest}", "model.language_model.{rest}"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("gen_embed.weight", "model.generation_embeddings.weight"),
    ("gen_head.output_mlp_projector.{p}", "model.generation_head.proj_out.{p}"),
    ("gen_head.vision_head.{p}", "model.generation_head.vision_head.{p}"),
    ("vision_model.vision_tower.patch_embed.proj.{p}", "model.vision_model.embeddings.patch_embedding.{p}"),
    ("vision_model.vision_tower.blocks.{i}.norm1.{p}", "model.vision_model.encoder.layers.{i}.layer_norm1.{p}"),
    ("vision_model.vision_tower.blocks.{i}.norm2.{p}", "model.vision_model.encoder.layers.{i}.layer_norm2.{p}"),
    ("vision_model.vision_tower.blocks.{i}.attn.proj.{p}",
     "model.vision_model.encoder.layers.{i}.self_attn.projection_layer.{p}"),
    ("vision_model.vision_tower.blocks.{i}.mlp.{fc}.{p}", "model.vision_model.encoder.layers.{i}.mlp.{fc}.{p}"),
    ("vision_model.vision_tower.norm.{p}", "model.vision_model.post_layernorm.{p}"),
)


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1]
            out.append(f"(?P<{name}>.+)" if name == "rest" else f"(?P<{name}>[^.]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


_FORWARD = [(_template_regex(src), dst) for src, dst in RENAMES]
_BACKWARD = [(_template_regex(dst), src) for src, dst in RENAMES]


def _apply_renames(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `MultiModalityCausalLM` keys -> `JanusForConditionalGeneration` keys.

    Raises CheckpointError naming every key the table does not know (a different architecture).
    """
    out: dict[str, torch.Tensor] = {}
    vq: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if any(p.search(key) for p in _DROPPED_OFFICIAL):
            continue
        if key.startswith(_VQ_OFFICIAL):
            vq[key[len(_VQ_OFFICIAL):]] = tensor
        elif key == _POS_OFFICIAL:
            out[_POS_HF] = tensor.squeeze(0)
        elif match := _QKV_OFFICIAL.match(key):
            layer, kind = match.groups()
            for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                out[f"model.vision_model.encoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = part
        elif match := _PROJECTOR_OFFICIAL.match(key):
            owner, index, kind = match.groups()
            out[f"model.{_PROJECTOR_NAMES[owner]}.{_projector_layer_to_hf(int(index), key)}.{kind}"] = tensor
        elif (new := _apply_renames(key, _FORWARD)) is not None:
            out[new] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} keys of the deepseek Janus checkpoint are not in the conversion table "
            f"(is this a Janus-Pro checkpoint?): {unknown[:8]}"
        )
    out.update({_VQ_HF + k: v for k, v in to_janus_keys(vq).items()})
    return out


def hf_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers Janus keys -> the official layout (for deepseek's and VA-π's own scripts).

    The inverse of `convert_official_state_dict` except for what the import drops: `attn_pool` is
    absent (Janus never uses it) and `quantize.codebook_used` is an all-zero window.
    """
    out: dict[str, torch.Tensor] = {}
    vq: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(_VQ_HF):
            vq[key[len(_VQ_HF):]] = tensor
        elif key == _POS_HF:
            out[_POS_OFFICIAL] = tensor.unsqueeze(0)
        elif match := _QKV_HF.match(key):
            layer, name, kind = match.groups()
            qkv.setdefault((layer, kind), {})[name] = tensor
        elif match := _PROJECTOR_HF.match(key):
            owner, layer, hidden_index, kind = match.groups()
            index = 0 if layer == "fc1" else 2 * (int(hidden_index) + 1)
            out[f"{_PROJECTOR_OWNERS[owner]}.layers.{index}.{kind}"] = tensor
        elif (new := _apply_renames(key, _BACKWARD)) is not None:
            out[new] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"keys with no official Janus name: {unknown[:8]}")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"vision layer {layer} {kind}: q/k/v projections incomplete ({sorted(parts)}).")
        out[f"vision_model.vision_tower.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in "qkv"])
    out.update({_VQ_OFFICIAL + k: v for k, v in from_janus_keys(vq).items()})
    return out


def _projector_layer_to_hf(index: int, key: str) -> str:
    if index == 0:
        return "fc1"
    if index % 2:
        raise CheckpointError(f"{key}: odd MlpProjector layers are activations and hold no weights.")
    return f"hidden_layers.{index // 2 - 1}"


#: the SigLIP towers deepseek's `create_siglip_vit` builds, as JanusVisionConfig fields
SIGLIP_TOWERS: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                 "patch_size": 16, "mlp_ratio": 4.0},
}
_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta")


def janus_config_from_official(config: Mapping[str, Any], *, bos_token_id: int, eos_token_id: int,
                               pad_token_id: int, image_token_id: int) -> Any:
    """A `JanusConfig` for an official `multi_modality` config.json (token ids from its tokenizer).

    Word embeddings are never tied: Janus-Pro's `lm_head` and `embed_tokens` differ, and
    transformers' default (tied) would silently overwrite the prompt embeddings.
    """
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    try:
        language = config["language_config"]
        vision = config["vision_config"]["params"]
        aligner = config["aligner_config"]["params"]
        gen_vision = config["gen_vision_config"]["params"]
        gen_aligner = config["gen_aligner_config"]["params"]
        gen_head = config["gen_head_config"]["params"]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"official Janus config.json lacks {exc}; is this a multi_modality config?") from None
    tower = vision.get("model_name", "siglip_large_patch16_384")
    if tower not in SIGLIP_TOWERS:
        raise CheckpointError(f"unknown SigLIP tower {tower!r}; known: {sorted(SIGLIP_TOWERS)}.")
    hidden = language["hidden_size"]
    if gen_head["n_embed"] != hidden or gen_head["image_token_embed"] != gen_aligner["n_embed"]:
        raise CheckpointError(
            "transformers' Janus head needs gen_head n_embed == LM hidden size and image_token_embed == "
            f"gen_aligner n_embed; got {gen_head} with hidden size {hidden} and gen_aligner {gen_aligner}."
        )
    image_size = int(vision.get("image_size", 384))
    tower_fields = SIGLIP_TOWERS[tower]
    text_config = LlamaConfig(
        **{k: language[k] for k in _TEXT_FIELDS if k in language},
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    vision_config = JanusVisionConfig(
        **tower_fields, image_size=image_size, projection_dim=aligner["n_embed"], depth=aligner.get("depth", 2),
        num_image_tokens=(image_size // tower_fields["patch_size"]) ** 2,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=gen_vision["n_embed"], num_embeddings=gen_vision["image_token_size"],
        projection_dim=gen_aligner["n_embed"], num_hidden_layers=gen_aligner.get("depth", 2),
        image_token_embed_dim=hidden,
    )
    return JanusConfig(text_config=text_config, vision_config=vision_config, vq_config=vq_config,
                       image_token_id=image_token_id, tie_word_embeddings=False)
