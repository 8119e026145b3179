"""FLAN-T5 caption features for LlamaGen t2i: left padding, pad rows, caching, caption cleaning.

A tiny random T5 encoder and a word-level tokenizer are written to a temporary directory, so the
real loading code (AutoTokenizer / T5EncoderModel.from_pretrained on a local path) is exercised
offline.
"""
import pytest
import torch

from vapi_bench.errors import OfflineError
from vapi_bench.plugins.llamagen.captions import clean_caption
from vapi_bench.plugins.llamagen.text import FlanT5Encoder, TextEncoder, left_pad

WORDS = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "cat", "dog", "red", "blue", "on", "the", "grass"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    path = tmp_path_factory.mktemp("tiny-t5")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(config).save_pretrained(path)
    return path


def direct_features(t5_dir, text: str) -> torch.Tensor:
    """Unpadded T5 run of one (already clean) caption: the valid rows the encoder must reproduce."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer, model = AutoTokenizer.from_pretrained(t5_dir), T5EncoderModel.from_pretrained(t5_dir).eval()
    ids = tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state[0]


def test_left_padded_features_mask_and_cache(t5_dir, tmp_path):
    encoder = FlanT5Encoder(str(t5_dir), max_length=8, dtype="fp32", feature_cache=tmp_path / "cache")
    assert isinstance(encoder, TextEncoder)
    features, mask = encoder.encode(["A Photo of a CAT", "red dog"])
    assert features.shape == (2, 8, 16) and mask.dtype == torch.bool
    # 5 words + </s> and 2 words + </s>, right-aligned
    assert mask.tolist() == [[False, False, True, True, True, True, True, True],
                             [False, False, False, False, False, True, True, True]]
    assert torch.count_nonzero(features[0, :2]) == 0 and torch.count_nonzero(features[1, :5]) == 0
    torch.testing.assert_close(features[0, 2:], direct_features(t5_dir, "a photo of a cat"), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features[1, 5:], direct_features(t5_dir, "red dog"), atol=1e-5, rtol=1e-5)

    cached = FlanT5Encoder(str(t5_dir), max_length=8, dtype="fp32", feature_cache=tmp_path / "cache")
    cached._load = lambda: pytest.fail("a cached prompt must not load T5")
    again, again_mask = cached.encode(["red dog", "A Photo of a CAT"])
    assert torch.equal(again, features.flip(0)) and torch.equal(again_mask, mask.flip(0))


def test_truncation_to_max_length(t5_dir):
    encoder = FlanT5Encoder(str(t5_dir), max_length=4, dtype="fp32", feature_cache=None)
    _, mask = encoder.encode(["a photo of a red cat on the grass"])
    assert mask.tolist() == [[True, True, True, True]]


def test_missing_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = FlanT5Encoder("google/flan-t5-xl", feature_cache=None)
    with pytest.raises(OfflineError, match="could not be loaded"):
        encoder.encode(["a cat"])


def test_left_pad_helper():
    features, mask = left_pad([torch.ones(2, 3), torch.ones(5, 3) * 2, torch.zeros(0, 3)], 4, 3)
    assert mask.tolist() == [[False, False, True, True], [True] * 4, [False] * 4]
    assert features[1].eq(2).all() and features[0, :2].eq(0).all()


@pytest.mark.parametrize("raw,clean", [
    ("A Photo of a CAT", "a photo of a cat"),
    ("  A <b>red</b> car at https://www.example.com/x  ", "a red car at"),
    ("two \u201cdogs\u201d \u2013 on grass...", 'two "dogs" - on grass'),
    ("this-is-a-very-long-slug", "this is a very long slug"),
    ('"Hello World"', "hello world"),
    ("image_123456.jpg of a Dog #12", "of a dog"),
    ("a%20cat", "a cat"),
])
def test_caption_cleaning(raw, clean):
    assert clean_caption(raw) == clean
