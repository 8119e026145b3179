"""The `drawbench` task (alias `drawbench-clip`): prompt file parsing, CLIP-score and HPS columns,
fetching, scoring."""
import functools
import http.server
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from geneval_testing import register_tiny_clip, register_tiny_hps, write_tiny_hps_checkpoint
from PIL import Image

import vapi_bench
from vapi_bench.errors import DataError, OfflineError, UsageError
from vapi_bench.interfaces import StageContext
from vapi_bench.tasks.geneval import drawbench
from vapi_bench.tasks.geneval.drawbench import DrawBenchTask, read_drawbench_prompts

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


@pytest.fixture(scope="module")
def tiny_scorers(tmp_path_factory):
    """The two scorers DrawBench loads, as tiny random models: {scorer name: scorer}."""
    torch.manual_seed(0)
    clip = vapi_bench.load_scorer("clip-score", arch=register_tiny_clip(), weights="random")
    checkpoint = tmp_path_factory.mktemp("hps") / "hps.pt"
    write_tiny_hps_checkpoint(checkpoint, seed=1)
    hps = vapi_bench.load_scorer("hpsv2.1", weights=str(checkpoint), arch=register_tiny_hps())
    return {"clip-score": clip, "hpsv2.1": hps}


def test_metrics_parameter_chooses_columns():
    assert DrawBenchTask().metrics == ("clip", "hps")
    assert DrawBenchTask(metrics="hps").metrics == ("hps",)
    with pytest.raises(UsageError, match="metrics='fid'"):
        DrawBenchTask(metrics="fid")
    assert vapi_bench.load_task("drawbench-clip", metrics="clip").metrics == ("clip",)  # the old name still works


def test_missing_prompts_offline_names_the_url(monkeypatch, tmp_path):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError, match="docs.google.com"):
        DrawBenchTask().items(TEXT_MODEL)


def test_prepare_downloads_the_csv_into_the_cache(monkeypatch, tmp_path, prompts_file):
    from vapi_bench.prepare import prepare

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(prompts_file.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(drawbench, "DRAWBENCH_CSV_URL", f"http://127.0.0.1:{server.server_port}/drawbench.csv")
        monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
        task = DrawBenchTask(metrics="clip", clip_weights="random")
        assert [r.what for r in task.requirements()] == ["drawbench"]
        outcomes = prepare(task.requirements(), offline=False)
    finally:
        server.shutdown()
    assert [o.status for o in outcomes] == ["downloaded"]
    assert outcomes[0].path == tmp_path / "cache" / "drawbench" / "drawbench.csv"
    assert outcomes[0].path.read_text() == CSV
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")  # now served from the cache
    assert len(DrawBenchTask().items(TEXT_MODEL)) == 3
    assert [r.what for r in DrawBenchTask().requirements()] == ["drawbench", "clip", "hpsv2.1"]
    assert [r.what for r in DrawBenchTask(metrics="hps", hps_version="v2.0").requirements()] == ["drawbench", "hpsv2"]


def test_task_reports_clip_score_and_hps_side_by_side(monkeypatch, tmp_path, prompts_file, tiny_scorers):
    """clip_score = max(100 cos, 0) and hpsv2.1 = 100 cos, each image against its own prompt, per
    category too; the images are read back from PNG exactly as the scorers see decoded tensors."""
    monkeypatch.setattr(drawbench, "load_scorer", lambda name, **params: tiny_scorers[name])
    task = vapi_bench.load_task("drawbench-clip", prompts_file=str(prompts_file), images_per_prompt=2, batch_size=4)
    items = task.items(TEXT_MODEL)
    assert [i.condition for i in items][:3] == ["A red colored car.", "A red colored car.", "A cat, sitting on a mat."]
    images = torch.rand(len(items), 3, 20, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pixels = torch.clamp(127.5 * images + 128, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for item, image in zip(items, pixels):
        path = task.image_path(tmp_path, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    result = task.score(tmp_path, items, StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0))
    prompts = [i.condition for i in items]
    clip_cos = tiny_scorers["clip-score"](images, conditions=prompts)
    hps_cos = tiny_scorers["hpsv2.1"](images, conditions=prompts)
    expected = {"clip_score": (100 * clip_cos).clamp(min=0), "hpsv2.1": 100 * hps_cos}
    for column, values in expected.items():
        np.testing.assert_allclose([r[column] for r in result.per_sample], values.numpy(), rtol=1e-5, atol=1e-4)
        assert result.metrics[column] == pytest.approx(float(values.mean()), abs=1e-4)
        assert result.metrics[f"{column}/Counting"] == pytest.approx(float(values[4:6].mean()), abs=1e-4)
    assert set(result.extra) == {"clip_score", "hpsv2.1", "prompts_sha256"}
    assert len(result.extra["prompts_sha256"]) == 64


def test_clip_column_clamps_negative_cosines_to_zero(monkeypatch, tmp_path, prompts_file, tiny_scorers):
    clip = tiny_scorers["clip-score"]
    monkeypatch.setattr(drawbench, "load_scorer", lambda name, **params: clip)
    task = DrawBenchTask(prompts_file=str(prompts_file), metrics="clip")
    items = task.items(TEXT_MODEL)
    for item in items:
        path = task.image_path(tmp_path, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 40 * item.index, np.uint8)).save(path)
    ctx = StageContext(out_dir=tmp_path / "s", device=torch.device("cpu"), seed=0)
    assert all(r["clip_score"] > 0 for r in task.score(tmp_path, items, ctx).per_sample)
    projection = clip.model.text_projection.detach().clone()
    try:
        with torch.no_grad():
            clip.model.text_projection.neg_()  # every cosine flips sign: all scores clamp to 0
        result = task.score(tmp_path, items, ctx)
    finally:
        with torch.no_grad():
            clip.model.text_projection.copy_(projection)
    assert [r["clip_score"] for r in result.per_sample] == [0.0, 0.0, 0.0]
    assert set(result.metrics) == {"clip_score", "clip_score/Colors", "clip_score/Counting", "clip_score/Positional"}
