"""Record the key/shape list of GenEval's Mask2Former Swin-S checkpoint layout (needs mmdet 3.3).

Writes tasks/geneval/mmdet_mask2former_swin_s_keys.tsv, which CI checks the converter's key table
against without mmdet. The mmdet 3.x keys and shapes come from mmdet's own model, built from its
packaged config (`init_detector`, random weights: the state dict layout is what the released
checkpoint holds). The mmdet 2.x names follow mmdet 2.28's config for the same model: mmcv 1.x
`BaseTransformerLayer` keeps its attentions in a list in `operation_order` — pixel decoder
('self_attn', 'norm', 'ffn', 'norm'), transformer decoder ('cross_attn', 'norm', 'self_attn',
'norm', 'ffn', 'norm') — and its FFNs as `ffns.0`; everything else has the same name in 2.x.

    python scripts/record_mmdet_mask2former_keys.py
"""
from __future__ import annotations

from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "tasks" / "geneval" / "mmdet_mask2former_swin_s_keys.tsv"
CONFIG = ".mim/configs/mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"
#: mmdet 2.x operation_order of each transformer stack: the n-th attention is `attentions.{n}`
OPERATION_ORDERS = {
    "panoptic_head.pixel_decoder.encoder.layers.": ("self_attn", "norm", "ffn", "norm"),
    "panoptic_head.transformer_decoder.layers.": ("cross_attn", "norm", "self_attn", "norm", "ffn", "norm"),
}


def mmdet2_name(key: str) -> str:
    for prefix, order in OPERATION_ORDERS.items():
        if not key.startswith(prefix):
            continue
        layer, _, rest = key[len(prefix):].partition(".")
        module, _, tail = rest.partition(".")
        attentions = [op for op in order if op.endswith("attn")]
        if module in attentions:
            return f"{prefix}{layer}.attentions.{attentions.index(module)}.{tail}"
        if module == "ffn":
            return f"{prefix}{layer}.ffns.0.{tail}"
    return key


def main() -> None:
    import mmdet
    from mmdet.apis import init_detector

    model = init_detector(str(Path(mmdet.__file__).parent / CONFIG), None, device="cpu")
    lines = [
        f"# GenEval's Mask2Former Swin-S COCO checkpoint layout; written by {Path(__file__).name} from mmdet "
        f"{mmdet.__version__}'s own model ({CONFIG}).",
        "# mmdet3_key: the mmdet 3.x release (-c9d0c4f2); mmdet2_key: the mmdet 2.x release (-743b7d99).",
        "mmdet3_key\tmmdet2_key\tshape\tdtype",
    ]
    for key, tensor in model.state_dict().items():
        shape = "x".join(str(size) for size in tensor.shape)
        lines.append(f"{key}\t{mmdet2_name(key)}\t{shape}\t{str(tensor.dtype).removeprefix('torch.')}")
    OUTPUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 3} keys to {OUTPUT}")


if __name__ == "__main__":
    main()
