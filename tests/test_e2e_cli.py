"""End to end through the CLI on real built-in plugins with tiny random weights (issue 6 "done when").

`vapi-bench run --model llamagen-b --method none --task imagenet-fid --limit N` with a random
generator and a random Inception file writes the leaderboard row and the ADM .npz; the same for
geneval with a tiny text model, a tiny random Mask2Former and a tiny random CLIP. These check
mechanics only: random weights say nothing about quality.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vapi_bench.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from random_inception import random_inception_weights  # noqa: E402
from tiny_dinov2 import tiny_dinov2_folder  # noqa: E402

TINY_LLAMAGEN = ["--set", "random_init=true", "--set", "dim=32", "--set", "n_layer=1", "--set", "n_head=2",
                 "--set", "vq_ch=32", "--set", "vq_z_channels=32", "--set", "model.image_size=64"]


def _main(*args):
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    return info.value.code


def test_imagenet_fid_end_to_end(tmp_path):
    inception = random_inception_weights(tmp_path / "inception.pth")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 255, (8, 256, 256, 3), dtype=np.uint8))
    code = _main("run", "--model", "llamagen-b", "--method", "none", "--task", "imagenet-fid", "--limit", "4",
                 *TINY_LLAMAGEN, "--set", f"inception_weights={inception}", "--set", f"reference={tmp_path / 'ref.npz'}",
                 "--set", f"dinov2_weights={tiny_dinov2_folder(tmp_path / 'dinov2')}",
                 "--set", "cfg=without", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"))
    assert code == 0
    board = pd.read_csv(tmp_path / "res" / "leaderboard-imagenet-fid.csv")
    assert len(board) == 1 and board["model"][0] == "llamagen-b" and np.isfinite(board["fid"][0])
    assert np.isfinite(board["fd_dinov2"][0])
    npz = next((tmp_path / "runs" / "samples").glob("*/samples.npz"))
    arr = np.load(npz)["arr_0"]
    assert arr.shape == (4, 256, 256, 3) and arr.dtype == np.uint8


def test_geneval_end_to_end(tmp_path):
    pytest.importorskip("transformers")
    from geneval_testing import register_tiny_clip, tiny_mask2former
    from test_llamagen_text import WORDS  # the tiny T5's vocabulary
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    import torch

    t5 = tmp_path / "t5"
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(t5)
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(t5)
    detector = tmp_path / "m2f"
    tiny_mask2former().save_pretrained(detector)
    arch = register_tiny_clip()
    code = _main("run", "--model", "llamagen-t2i-xl", "--method", "none", "--task", "geneval", "--limit", "8",
                 *TINY_LLAMAGEN, "--set", f"t5_path={t5}", "--set", "t5_dtype=fp32", "--set", "caption_dim=16",
                 "--set", "cls_token_num=8", "--set", "detector=hf-mask2former", "--set", f"detector_weights={detector}",
                 "--set", "detector_scale=64,64",
                 "--set", f"clip_arch={arch}", "--set", "clip_weights=random", "--set", "cfg_scale=2.0",
                 "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"))
    assert code == 0
    board = pd.read_csv(tmp_path / "res" / "leaderboard-geneval.csv")
    assert len(board) == 1 and 0.0 <= board["overall"][0] <= 1.0
    sample_dir = next((tmp_path / "runs" / "samples").iterdir())
    meta = json.loads((sample_dir / "00000" / "metadata.jsonl").read_text().splitlines()[0])
    assert meta["tag"] == "single_object"
    assert sorted(p.name for p in (sample_dir / "00000" / "samples").glob("*.png")) == [f"{i:04d}.png" for i in range(4)]
    per_sample = next((tmp_path / "runs" / "scores").glob("*/per-sample.jsonl")).read_text().splitlines()
    assert len(per_sample) == 8 and "reason" in json.loads(per_sample[0])
