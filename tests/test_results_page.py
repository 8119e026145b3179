"""docs/results.md is generated from results/: the committed page must be what the command makes."""
from __future__ import annotations

from pathlib import Path

from vapi_bench.cli import main
from vapi_bench.report.results_page import evidence_folders, render_results_page

REPO = Path(__file__).resolve().parents[1]


def test_committed_results_page_is_what_the_command_writes(tmp_path):
    page = tmp_path / "results.md"
    main(["report", "--results-dir", str(REPO / "results"), "--results-page", str(page)])
    assert page.read_bytes() == (REPO / "docs" / "results.md").read_bytes(), (
        "docs/results.md is stale: run `vapi-bench report --results-dir results --results-page docs/results.md`")


def test_page_changes_with_the_csvs_and_leaves_out_superseded_rows(tmp_path):
    results = tmp_path / "results"
    (results / "superseded").mkdir(parents=True)
    (results / "superseded" / "leaderboard-shapes-fid.csv").write_text(
        "model,method,task,variant,fid,seed,config\nold,none,shapes-fid,no-cfg,9.99,0,aaa\n")
    (results / "lab-m-shapes-fid.csv").write_text(
        "model,task,label,variant,seeds,fid_mean,fid_std,delta_fid_vs_none,delta_fid_vs_none_ci_low,"
        "delta_fid_vs_none_ci_high\nm,shapes-fid,none,no-cfg,3,1.0,0.1,,,\n"
        "m,shapes-fid,va-pi,no-cfg,3,0.5,0.1,-0.5,-0.7,-0.3\n")
    assert evidence_folders(results) == [results]
    text = render_results_page(results)
    assert "−0.500 [−0.700, −0.300] **better**" in text and "9.99" not in text
    (results / "lab-m-shapes-fid.csv").write_text(
        (results / "lab-m-shapes-fid.csv").read_text().replace("-0.3\n", "0.1\n"))
    assert "not resolved" in render_results_page(results)
