"""GenEval's CLIP colour classifier: crops, zero-shot maths, and weight loading."""
import numpy as np
import pytest
import torch
from geneval_testing import TINY_CLIP_ARCH, register_tiny_clip, tiny_clip

from vapi_bench.errors import CheckpointError, OfflineError
from vapi_bench.tasks.geneval.clip_models import DEFAULT_CLIP_ARCH, load_clip
from vapi_bench.tasks.geneval.colour import ClipColourClassifier, geneval_colour_templates, isolate_object
from vapi_bench.tasks.geneval.prompts import GENEVAL_COLOURS


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def test_templates_are_genevals():
    assert [t("red") for t in geneval_colour_templates("teddy bear")] == [
        "a photo of a red teddy bear", "a photo of a red-colored teddy bear", "a photo of a red object"]


def clip_benchmark_weights(clip, class_name):
    """clip_benchmark's zero_shot_classifier, written out: per colour, normalise each template
    embedding, average, re-normalise; stack as columns."""
    columns = []
    with torch.no_grad():
        for colour in GENEVAL_COLOURS:
            texts = [f"a photo of a {colour} {class_name}", f"a photo of a {colour}-colored {class_name}",
                     f"a photo of a {colour} object"]
            emb = clip.model.encode_text(clip.tokenizer(texts))
            emb = torch.nn.functional.normalize(emb, dim=-1).mean(dim=0)
            columns.append(emb / emb.norm())
    return torch.stack(columns, dim=1)


def test_text_classifier_matches_clip_benchmark_and_open_clip(clip):
    from open_clip import build_zero_shot_classifier

    ours = ClipColourClassifier(clip).text_weights("cat", GENEVAL_COLOURS)
    assert ours.shape == (32, 10)
    torch.testing.assert_close(ours, clip_benchmark_weights(clip, "cat"), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        reference = build_zero_shot_classifier(
            clip.model, clip.tokenizer, list(GENEVAL_COLOURS),
            ["a photo of a {} cat", "a photo of a {}-colored cat", "a photo of a {} object"], num_classes_per_batch=3)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_isolate_object_composites_over_grey_and_crops_like_pil():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 4:12] = True
    crop = np.asarray(isolate_object(image, mask, np.array([3.6, 4.4, 12.5, 15.2, 0.9])))
    # PIL rounds the box: (4, 4, 12, 15); round-half-even takes 12.5 to 12
    expected = np.where(mask[..., None], image, np.uint8(0x99))[4:15, 4:12]
    np.testing.assert_array_equal(crop, expected)
    whole = np.asarray(isolate_object(image, mask, [0, 0, 30, 20], bgcolor="original"))
    np.testing.assert_array_equal(whole, image)
    np.testing.assert_array_equal(np.asarray(isolate_object(image, None, [0, 0, 30, 20], crop=False)), image)
    with pytest.raises(ValueError, match="mask shape"):
        isolate_object(image, mask[:10], [0, 0, 5, 5])


def test_classification_is_argmax_of_100_cos(clip):
    classifier = ClipColourClassifier(clip)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.ones((40, 40), bool)
    bbox = np.array([0, 0, 40, 40, 0.9])
    crop = isolate_object(image, mask, bbox)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(clip.model.encode_image(clip.preprocess(crop)[None]), dim=-1)
    logits = 100 * feats @ clip_benchmark_weights(clip, "dog")
    torch.testing.assert_close(classifier.logits([crop], "dog", GENEVAL_COLOURS), logits, rtol=1e-4, atol=1e-4)
    expected = GENEVAL_COLOURS[int(logits.argmax())]
    assert classifier.for_class("dog")(image, mask, bbox, list(GENEVAL_COLOURS)) == expected


def test_local_weights_load_strictly(tmp_path, clip):
    path = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_clip(TINY_CLIP_ARCH, str(path), "cpu")
    for key, value in clip.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    assert loaded.description["weights_sha256"] and loaded.description["arch"] == TINY_CLIP_ARCH
    bad = {k: v for k, v in clip.model.state_dict().items() if not k.startswith("visual.")}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_clip(TINY_CLIP_ARCH, str(tmp_path / "bad.pt"), "cpu")
    with pytest.raises(OfflineError, match="does not exist"):
        load_clip(TINY_CLIP_ARCH, str(tmp_path / "missing.pt"), "cpu")


def test_default_architecture_builds_quickgelu():
    import open_clip

    register_tiny_clip()
    assert DEFAULT_CLIP_ARCH == "ViT-L-14-quickgelu"
    assert open_clip.get_model_config(DEFAULT_CLIP_ARCH)["quick_gelu"] is True
    assert isinstance(tiny_clip().model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
