"""`vapi-bench report`: built from real tiny shapes runs (not hand-written rows), checked structurally
with the stdlib HTML parser and rendered in headless Chromium.

The browser test skips only when Chromium is absent outside CI; in CI (CI=true) a missing browser
fails it, since .ci/run installs one.
"""
from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from vapi_bench import leaderboard as lb
from vapi_bench import store
from vapi_bench.errors import UsageError
from vapi_bench.report import collect, write_report
from vapi_bench.report.browser import dump_dom, find_chromium, screenshot
from vapi_bench.report.panel import SEED_LEVEL, build_panels
from vapi_bench.report.table import build_board, main_rows
from vapi_bench.runner import RunRequest, Runner

FID = {"n": "8", "reference_n": "16"}
ARTEFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "test-artifacts"))


def _run(root: Path, model: str, method: str, task: str, overrides: dict, seed: int = 0, limit: int | None = None):
    return Runner(RunRequest(model=model, method=method, task=task, overrides=overrides, seed=seed, limit=limit,
                             runs_dir=root / "runs", results_dir=root / "results", quiet=True)).run()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Real tiny runs: shapes-fid base (seeds 0, 1) and SFT (2 steps, seed 0); shapes-geneval base."""
    root = tmp_path_factory.mktemp("report-lab")
    _run(root, "shapes-c2i", "none", "shapes-fid", FID, seed=0)
    _run(root, "shapes-c2i", "none", "shapes-fid", FID, seed=1)
    _run(root, "shapes-c2i", "sft", "shapes-fid", {**FID, "steps": "2"}, seed=0)
    _run(root, "shapes-t2i", "none", "shapes-geneval", {"images_per_prompt": "1"}, limit=6)
    from vapi_bench import leaderboard as lb

    for task in ("shapes-fid", "shapes-geneval"):
        collect(lb.load(root / "results", task), task, root / "runs", root / "results", images_per_grid=6)
    pages = {(task, fmt): write_report(task, root / "results", root / "reports", fmt)
             for task in ("shapes-fid", "shapes-geneval") for fmt in ("html", "md")}
    return root, pages


class Page(HTMLParser):
    """The parts of a report page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.grid_rows: list[tuple[str, list[str]]] = []
        self.cells: list[dict] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._table: str | None = None
        self._variant = ""
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a.get("id") or a.get("data-variant")
            self._variant = a.get("data-variant", "")
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "th" and "data-col" in a:
            self.headers[self._table].append(a["data-col"])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[self._table].append([])
            if "data-run" in a:
                self.grid_rows.append((self._variant, []))
        elif tag == "td" and self._in_body:
            self.tables[self._table][-1].append(a)
        elif tag == "figure":
            self.grid_rows[-1][1].append(a["data-index"])
            self.cells.append(a)
        elif tag == "img":
            self.images.append(a)
        if "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_leaderboard_has_one_row_per_configuration_with_mean_and_std(lab):
    root, pages = lab
    page = parse(pages["shapes-fid", "html"].read_text())
    df = pd.read_csv(root / "results" / "leaderboard-shapes-fid.csv")
    assert len(page.tables["leaderboard"]) == df.groupby(["method", "variant"]).ngroups == 4
    text = pages["shapes-fid", "html"].read_text()
    base = df[(df.method == "none") & (df.variant == "no-cfg")]["fid"]
    assert f"{base.mean():.4g} ± {base.std():.2g}" in text  # two seeds of the base model
    fid = page.headers["leaderboard"].index("fid")
    assert all("data-sort" in row[fid] for row in page.tables["leaderboard"])  # the fid column sorts numerically


def test_grids_show_the_same_sample_indices_for_every_method(lab):
    _, pages = lab
    page = parse(pages["shapes-fid", "html"].read_text())
    by_variant: dict[str, list[list[str]]] = {}
    for variant, indices in page.grid_rows:
        by_variant.setdefault(variant, []).append(indices)
    assert sorted(by_variant) == ["cfg", "no-cfg"]
    for rows in by_variant.values():
        assert len(rows) == 2 and rows[0] == rows[1] and len(rows[0]) == 6  # none and sft, 6 of 8 indices
        assert rows[0] == sorted(rows[0], key=int)


def test_grid_shows_the_seed_every_method_has(lab):
    root, _ = lab
    bundle = json.loads((root / "results" / "report" / "shapes-fid" / "bundle.json").read_text())
    assert {g["seed"] for g in bundle["grids"]} == {0}  # the base has seeds 0 and 1, SFT only 0


def test_geneval_cells_carry_the_detector_verdict_and_reason(lab):
    root, pages = lab
    page = parse(pages["shapes-geneval", "html"].read_text())
    bundle = json.loads((root / "results" / "report" / "shapes-geneval" / "bundle.json").read_text())
    per_sample = {}
    for path in (root / "runs" / "scores").glob("*/per-sample.jsonl"):
        per_sample.update({r["index"]: r for r in store.read_jsonl(path) if "reason" in r})
    assert len(page.cells) == len(bundle["grids"][0]["cells"]) == 6
    for cell in page.cells:
        record = per_sample[int(cell["data-index"])]
        assert ("ok" in cell["class"]) == record["correct"]
        if not record["correct"]:
            assert record["reason"] in cell["title"]
    assert {("ok" in c["class"]) for c in page.cells} == {True, False}  # the tiny run has both


def test_training_curves_for_fine_tuned_methods_only(lab):
    _, pages = lab
    page = parse(pages["shapes-fid", "html"].read_text())
    assert [i["data-figure"] for i in page.images if "data-figure" in i] == ["training-sft"]


def test_page_is_self_contained(lab):
    _, pages = lab
    for task in ("shapes-fid", "shapes-geneval"):
        page = parse(pages[task, "html"].read_text())
        assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)
        assert not any(tag in {"link", "iframe"} or (tag == "script" and "src" in a) for tag, a in page.tags)
        assert not [h for h in page.links if h.startswith(("http:", "https:", "//"))]
        for href in page.links:  # run.json links resolve next to the page
            assert (pages[task, "html"].parent / href).exists(), href


def test_report_is_rebuilt_identically_from_results_alone(lab, tmp_path):
    """A clean clone has results/ but no runs/: the same page comes out."""
    root, pages = lab
    clone = tmp_path / "clone"
    shutil.copytree(root / "results", clone / "results")
    page = write_report("shapes-fid", clone / "results", clone / "reports", "html")
    original = pages["shapes-fid", "html"].read_text().replace(str(root), "")
    assert page.read_text().replace(str(clone), "") == original
    size = sum(p.stat().st_size for p in (clone / "results" / "report").rglob("*") if p.is_file())
    assert size < 200_000


def test_collected_bundle_is_not_git_ignored(lab):
    """Committed under results/, every collected file must survive `git add` (e.g. no runs/ folder)."""
    root, _ = lab
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("needs git and the repository checkout")
    import subprocess

    files = [f"results/{p.relative_to(root / 'results').as_posix()}" for p in (root / "results" / "report").rglob("*")
             if p.is_file()]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=repo, capture_output=True, text=True)
    assert files and ignored.stdout == ""


def test_cli_collects_and_builds_every_task(lab, tmp_path):
    root, pages = lab
    from vapi_bench.cli import main

    shutil.copytree(root / "results", tmp_path / "results")
    shutil.rmtree(tmp_path / "results" / "report")
    main(["report", "--collect", "--images", "6", "--runs-dir", str(root / "runs"), "--results-dir",
          str(tmp_path / "results"), "--out", str(tmp_path / "reports")])
    for task in ("shapes-fid", "shapes-geneval"):
        made = (tmp_path / "reports" / f"{task}.html").read_text().replace(str(tmp_path), "")
        assert made == pages[task, "html"].read_text().replace(str(root), "")


def test_markdown_variant(lab):
    _, pages = lab
    text = pages["shapes-fid", "md"].read_text()
    table = [line for line in text.splitlines() if line.startswith("| shapes-c2i |")]
    assert len(table) == 4
    images = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(images) == 5  # 2 methods x 2 variants of samples + the SFT training figure
    assert all((pages["shapes-fid", "md"].parent / p).stat().st_size > 0 for p in images)


def test_confidence_interval_columns_are_shown_and_marked(lab):
    root, _ = lab
    df = pd.read_csv(root / "results" / "leaderboard-shapes-fid.csv")
    df["delta_fid_vs_none"] = df["fid"] - df.groupby("variant")["fid"].transform("min")
    df["delta_fid_vs_none_ci_low"] = df["delta_fid_vs_none"] - 0.5
    df["delta_fid_vs_none_ci_high"] = df["delta_fid_vs_none"] + 0.5
    board = build_board(df)
    assert "delta_fid_vs_none (95% CI)" in board.columns and "delta_fid_vs_none_ci_low" not in board.columns
    for row in board.rows:
        cell = row["delta_fid_vs_none (95% CI)"]
        lo, hi = (float(x) for x in cell.text.split("[")[1].rstrip("]").split(","))
        assert cell.significant == (lo > 0 or hi < 0)


def test_lab_summary_with_paired_intervals_gets_its_own_table(lab, tmp_path):
    """`lab tune` writes results/lab-<model>-<task>.csv (mean/std per label, delta_*_ci_low/high)."""
    root, _ = lab
    shutil.copytree(root / "results", tmp_path / "results")
    df = pd.read_csv(root / "results" / "leaderboard-shapes-fid.csv")
    summary = df.groupby(["method", "variant"], sort=False)["fid"].agg(["mean", "std"]).reset_index()
    summary = summary.rename(columns={"method": "label", "mean": "fid_mean", "std": "fid_std"})
    base = summary[summary.label == "none"].set_index("variant")["fid_mean"]
    summary["delta_fid_vs_none"] = summary["fid_mean"] - summary["variant"].map(base)
    summary["delta_fid_vs_none_ci_low"] = summary["delta_fid_vs_none"] - 0.2
    summary["delta_fid_vs_none_ci_high"] = summary["delta_fid_vs_none"] + 0.2
    summary["real_vs_none"] = summary["delta_fid_vs_none"].abs() > 0.2
    summary.to_csv(tmp_path / "results" / "lab-shapes-c2i-shapes-fid.csv", index=False)
    page = write_report("shapes-fid", tmp_path / "results", tmp_path / "reports", "html")
    parsed = parse(page.read_text())
    rows = parsed.tables["summary-0"]
    assert len(rows) == len(summary) == 4
    header = [a["data-col"] for tag, a in parsed.tags if tag == "th" and "data-col" in a]
    assert {"fid", "delta_fid_vs_none (95% CI)"} <= set(header) and "real_vs_none" not in header
    column = list(summary.columns.drop(["fid_mean", "fid_std", "delta_fid_vs_none", "delta_fid_vs_none_ci_low",
                                        "delta_fid_vs_none_ci_high", "real_vs_none"])) + ["fid", "delta"]
    marked = [("sig" in row[column.index("delta")].get("class", "")) for row in rows]
    assert marked == list(summary["real_vs_none"])
    md = write_report("shapes-fid", tmp_path / "results", tmp_path / "reports", "md").read_text()
    assert "## shapes-c2i: every label, tuned lr, paired differences" in md


def test_metric_against_steps_curve_from_lab_compare(lab, tmp_path):
    """results/curve-<task>.csv (as `lab compare --curve-steps` writes it) becomes a figure per metric."""
    root, _ = lab
    shutil.copytree(root / "results", tmp_path / "results")
    df = pd.read_csv(root / "results" / "leaderboard-shapes-fid.csv")
    seed0 = df[df.seed == 0]
    base = seed0[seed0.method == "none"].assign(method="sft", steps=0)  # step 0 of a curve is the base model
    curve = pd.concat([base, seed0[seed0.method == "sft"].assign(steps=2)])[["method", "variant", "steps", "seed", "fid"]]
    curve.to_csv(tmp_path / "results" / "curve-shapes-fid.csv", index=False)
    page = parse(write_report("shapes-fid", tmp_path / "results", tmp_path / "reports", "html").read_text())
    assert [i["data-figure"] for i in page.images if "data-figure" in i] == ["training-sft", "curve-fid"]


def test_collect_without_runs_is_a_clear_error(lab, tmp_path):
    root, _ = lab
    from vapi_bench import leaderboard as lb

    with pytest.raises(UsageError, match="run.json"):
        collect(lb.load(root / "results", "shapes-fid"), "shapes-fid", tmp_path / "no-runs", tmp_path / "results")


def test_page_renders_in_chromium(lab):
    """Headless Chromium: the table, grids and curves are laid out at a real size; screenshot kept."""
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI; .ci/run installs it (apt-get install -y chromium).")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check needs it.")
    _, pages = lab
    html = pages["shapes-fid", "html"]
    page = parse(dump_dom(html, fragment="sort=fid"))
    assert any(tag == "body" and a.get("data-rendered") == "true" for tag, a in page.tags)  # the page's JS ran
    samples = [i for i in page.images if "data-figure" not in i]
    assert len(samples) == 2 * 2 * 6 and all(int(i["data-rendered-width"]) >= 64 for i in samples)
    assert all(int(i["data-natural-width"]) > 0 for i in page.images)
    figure = next(i for i in page.images if i.get("data-figure") == "training-sft")
    assert int(figure["data-rendered-width"]) > 300 and int(figure["data-rendered-height"]) > 100
    fid = page.headers["leaderboard"].index("fid")
    fids = [float(row[fid]["data-sort"]) for row in page.tables["leaderboard"]]
    assert len(fids) == 4 and fids == sorted(fids)  # #sort=fid sorted the table ascending
    shot = screenshot(html, ARTEFACTS / "report-shapes-fid.png", height=1600)
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 1600) and len(img.convert("L").getcolors(1 << 16) or []) > 50


# ---- the first screen: the answer -----------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _lab_table(**extra) -> pd.DataFrame:
    """A lab summary: va-pi better than the base, cca worse than SFT (both significant)."""
    rows = [{"model": "m", "task": "shapes-fid", "label": "none", "variant": "no-cfg", "seeds": 3, "fid_mean": 1.0,
             "fid_std": 0.1},
            {"model": "m", "task": "shapes-fid", "label": "cca", "variant": "no-cfg", "seeds": 3, "fid_mean": 1.5,
             "fid_std": 0.1, "delta_fid_vs_none": 0.5, "delta_fid_vs_none_ci_low": 0.2,
             "delta_fid_vs_none_ci_high": 0.8, "real_vs_none": True},
            {"model": "m", "task": "shapes-fid", "label": "va-pi", "variant": "no-cfg", "seeds": 3, "fid_mean": 0.6,
             "fid_std": 0.1, "delta_fid_vs_none": -0.4, "delta_fid_vs_none_ci_low": -0.6,
             "delta_fid_vs_none_ci_high": -0.2, "real_vs_none": True}]
    return pd.DataFrame([{**r, **(extra.get(r["label"], {}))} for r in rows])


def test_panel_colours_by_direction_and_puts_va_pi_first():
    panel = build_panels(_lab_table(), {"fid": "lower"})[0]
    assert [r.label for r in panel.rows] == ["va-pi", "cca", "none"]
    assert panel.rows[0].deltas["none"].word == "better" and panel.rows[1].deltas["none"].word == "worse"
    flipped = build_panels(_lab_table(), {"fid": "higher"})[0]  # the same numbers on a higher-is-better metric
    assert flipped.rows[0].deltas["none"].word == "worse"


def test_panel_leaves_controls_curves_and_matched_lr_rows_to_the_full_table():
    extra = [{"model": "m", "task": "shapes-fid", "label": label, "variant": "no-cfg", "seeds": 3, "fid_mean": 0.9,
              "fid_std": 0.1} for label in ("T-control:va-pi", "T-curve:va-pi@T=0.95", "cca@lr=3e-05")]
    panel = build_panels(pd.concat([_lab_table(), pd.DataFrame(extra)], ignore_index=True), {"fid": "lower"})[0]
    assert [r.label for r in panel.rows] == ["va-pi", "cca", "none"]


def test_panel_prefers_the_seed_level_interval_and_holm_decides():
    """New lab tables: seed-level t interval, and real_vs_* (Holm p < 0.05) must agree."""
    seed_level = {"va-pi": {"delta_fid_vs_none_t_low": -0.7, "delta_fid_vs_none_t_high": -0.1, "real_vs_none": False},
                  "cca": {"delta_fid_vs_none_t_low": 0.1, "delta_fid_vs_none_t_high": 0.9, "real_vs_none": True}}
    panel = build_panels(_lab_table(**seed_level), {"fid": "lower"})[0]
    va_pi, cca = panel.rows[0].deltas["none"], panel.rows[1].deltas["none"]
    assert va_pi.seed_level and (va_pi.low, va_pi.high) == (-0.7, -0.1) and va_pi.word == "not resolved at this n"
    assert cca.word == "worse" and SEED_LEVEL in panel.interval


def test_main_table_leaves_out_unrecorded_rows_and_counts_duplicates_once(lab):
    root, _ = lab
    df = pd.read_csv(root / "results" / "leaderboard-shapes-fid.csv", dtype={"config": str})
    twin = df.iloc[[0]].assign(config="0000twin0000", settings="task.cfg=without")  # same values, second hash
    old = df.iloc[[1]].assign(config=None, run_id="old-run")  # a row from before rows recorded a config
    main, notes = main_rows(pd.concat([df, twin, old], ignore_index=True))
    assert len(main) == len(df) and "old-run" not in set(main["run_id"]) and len(notes) == 2
    assert (main["config"] == "0000twin0000").sum() == 1  # the later of the two is kept


def test_worse_and_better_cells_render_differently_and_headers_say_the_direction(lab, tmp_path):
    root, _ = lab
    shutil.copytree(root / "results", tmp_path / "results")
    _lab_table().assign(model="shapes-c2i").to_csv(tmp_path / "results" / "lab-shapes-c2i-shapes-fid.csv", index=False)
    text = write_report("shapes-fid", tmp_path / "results", tmp_path / "reports", "html").read_text()
    page = parse(text)
    verdicts = {a["data-verdict"]: a["class"] for tag, a in page.tags if tag == "td" and "data-verdict" in a}
    assert "better" in verdicts["better"].split() and "worse" in verdicts["worse"].split()
    assert text.index("id=\"verdict-0\"") < text.index("<h2>Samples") < text.index("<h2>Leaderboard")
    assert "fid ↓" in text and "class_accuracy ↑" in text


def test_committed_report_opens_on_the_verdict_in_chromium(tmp_path):
    """The committed bundle: the verdict panel and its first interval in a 1400×900 viewport, a
    worse-and-significant cell coloured unlike a better one, no superseded or duplicate row."""
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI; .ci/run installs it (apt-get install -y chromium).")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check needs it.")
    results = REPO / "results" / "head-scale"
    html = write_report("shapes-fid", results, tmp_path, "html")
    page = parse(dump_dom(html, width=1400, height=900))
    title = next(a for tag, a in page.tags if tag == "h2" and "data-top" in a)
    cells = [a for tag, a in page.tags if tag == "td" and "data-verdict" in a]
    first = cells[0]
    assert int(title["data-bottom"]) <= 900 and int(first["data-bottom"]) <= 900 and int(first["data-right"]) <= 1400
    colours = {a["data-verdict"]: (a["data-colour"], a["data-background"]) for a in cells}
    assert colours["worse"] != colours["better"]
    superseded = pd.read_csv(REPO / "results" / "superseded" / "leaderboard-shapes-fid.csv", dtype=str)
    board = lb.load(results, "shapes-fid")
    text = html.read_text()
    assert not any(f"<td>{c}</td>" in text for c in superseded["config"].dropna())
    assert len(page.tables["leaderboard"]) == len(build_board(main_rows(board)[0]).rows)  # one row a configuration
    assert screenshot(html, ARTEFACTS / "report-first-screen.png", height=900).exists()


def test_committed_main_table_has_no_superseded_or_duplicate_row(tmp_path):
    """results/: no withdrawn or duplicate row in the page's leaderboard, and none on the board."""
    superseded = pd.read_csv(REPO / "results" / "superseded" / "leaderboard-shapes-fid.csv", dtype=str)
    board = pd.read_csv(REPO / "results" / "leaderboard-shapes-fid.csv", dtype=str)
    assert board["config"].notna().all() and not (set(board["run_id"]) & set(superseded["run_id"].dropna()))
    assert main_rows(board)[1] == []  # the committed board itself holds no duplicate
    text = write_report("shapes-fid", REPO / "results", tmp_path, "html").read_text()
    page = parse(text)
    assert len(page.tables["leaderboard"]) == board.groupby(["model", "label", "variant", "config"]).ngroups
    assert not any(f"<td>{c}</td>" in text for c in superseded["config"].dropna())


def test_cached_stages_are_marked_in_provenance():
    from vapi_bench.report.html_page import wall_text

    assert wall_text("sample[cfg=1]", 0.02, {"sample[cfg=1]": True}) == "sample[cfg=1] cached"
    assert wall_text("sample[cfg=1]", 8.61, {"sample[cfg=1]": False}) == "sample[cfg=1] 8.6s"
    assert wall_text("score[cfg=1]", 0.001, None) == "score[cfg=1] cached"  # recorded before run.json said so
    assert wall_text("score[cfg=1]", 3.7, None) == "score[cfg=1] 3.7s"
