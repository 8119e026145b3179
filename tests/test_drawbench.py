"""The `drawbench-clip` task: prompt file parsing, CLIP-score maths, fetching, scoring."""
import functools
import http.server
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from geneval_testing import tiny_clip
from PIL import Image

import vapi_bench
from vapi_bench.errors import DataError, OfflineError
from vapi_bench.interfaces import StageContext
from vapi_bench.tasks.geneval import drawbench
from vapi_bench.tasks.geneval.drawbench import DrawBenchClipTask, clip_scores, read_drawbench_prompts

CSV = 'Prompts,Category\n"A red colored car.",Colors\n"A cat, sitting on a mat.",Positional\n,\n"Five cars on the street.",Counting\n'
TEXT_MODEL = SimpleNamespace(name="t2i", conditioning="text")


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "drawbench.csv"
    path.write_text(CSV)
    return path


def test_reads_prompts_and_categories(prompts_file, tmp_path):
    rows = read_drawbench_prompts(prompts_file)
    assert rows == [{"prompt": "A red colored car.", "category": "Colors"},
                    {"prompt": "A cat, sitting on a mat.", "category": "Positional"},
                    {"prompt": "Five cars on the street.", "category": "Counting"}]
    lower = tmp_path / "lower.csv"
    lower.write_text("prompts\nA pink giraffe.\n")
    assert read_drawbench_prompts(lower) == [{"prompt": "A pink giraffe.", "category": ""}]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("text,label\na,b\n")
    with pytest.raises(DataError, match="Prompts"):
        read_drawbench_prompts(wrong)
    with pytest.raises(DataError, match="does not exist"):
        read_drawbench_prompts(tmp_path / "nope.csv")


def test_clip_score_is_100_cos_clamped_at_zero():
    clip = tiny_clip()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(6)]
    prompts = ["a red car", "a blue sky", "two cats", "a dog", "text", "an apple"]
    with torch.no_grad():
        img = torch.nn.functional.normalize(clip.model.encode_image(torch.stack([clip.preprocess(i) for i in images])), dim=-1)
        txt = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(prompts)), dim=-1)
    cos = (img * txt).sum(-1)
    assert (cos > 0).all()
    torch.testing.assert_close(clip_scores(clip, images, prompts), 100 * cos, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        clip.model.text_projection.neg_()  # every cosine flips sign: all scores clamp to 0
    assert torch.equal(clip_scores(clip, images, prompts), torch.zeros(6))
    with pytest.raises(ValueError):
        clip_scores(clip, images, prompts[:2])


def test_missing_prompts_offline_names_the_url(monkeypatch, tmp_path):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match="docs.google.com"):
        DrawBenchClipTask().items(TEXT_MODEL)


def test_prepare_downloads_the_csv_into_the_cache(monkeypatch, tmp_path, prompts_file):
    from vapi_bench.prepare import prepare

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(prompts_file.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(drawbench, "DRAWBENCH_CSV_URL", f"http://127.0.0.1:{server.server_port}/drawbench.csv")
        monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
        task = DrawBenchClipTask(clip_weights="random")
        assert [r.what for r in task.requirements()] == ["drawbench"]
        outcomes = prepare(task.requirements(), offline=False)
    finally:
        server.shutdown()
    assert [o.status for o in outcomes] == ["downloaded"]
    assert outcomes[0].path == tmp_path / "cache" / "drawbench" / "drawbench.csv"
    assert outcomes[0].path.read_text() == CSV
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")  # now served from the cache
    assert len(DrawBenchClipTask().items(TEXT_MODEL)) == 3
    assert [r.what for r in DrawBenchClipTask().requirements()] == ["drawbench", "clip"]


def test_task_scores_each_image_against_its_prompt(monkeypatch, tmp_path, prompts_file):
    clip = tiny_clip()
    monkeypatch.setattr(drawbench, "load_clip", lambda *a, **k: clip)
    task = vapi_bench.load_task("drawbench-clip", prompts_file=str(prompts_file), images_per_prompt=2, batch_size=4)
    items = task.items(TEXT_MODEL)
    assert [i.condition for i in items][:3] == ["A red colored car.", "A red colored car.", "A cat, sitting on a mat."]
    rng = np.random.default_rng(1)
    images = []
    for item in items:
        path = task.image_path(tmp_path, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        images.append(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)))
        images[-1].save(path)
    result = task.score(tmp_path, items, StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0))
    expected = clip_scores(clip, images, [i.condition for i in items])
    np.testing.assert_allclose([r["clip_score"] for r in result.per_sample], expected.numpy(), rtol=1e-5, atol=1e-4)
    assert result.metrics["clip_score"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert result.metrics["clip_score/Counting"] == pytest.approx(float(expected[4:6].mean()), abs=1e-4)
    assert len(result.extra["prompts_sha256"]) == 64
