"""`vapi-bench lab`: the evidence and ablation experiments of the paper, rerun on any model/task.

`lab tune` is the fair protocol (protocol.py, tune.py): the same lr grid, steps and images
for every method (and as many temperatures for the base), chosen on a validation reference over
tune seeds, then test seeds disjoint from them, with temperature controls, matched-lr rows and
seed-level intervals (Holm). `lab compare` runs several methods x seeds
through the ordinary runner (every row lands on the task's leaderboard) and, with --curve-steps,
re-runs the tuned methods at intermediate step budgets to draw the metric-against-step plot.
`lab ablate NAME` runs the ablations a method declares (its registry entry's `ablations`; VA-π's:
reward composition (Table 4), regulariser weight and CE vs KL (Fig. 4), context noise ξ (Table 5)).
Every ablation row is appended to results/ablations-<task>.csv with its setting. `lab cost` prices
tables already on disk from the stage times their runs recorded (cost.py). The lab reads
methods, variants and ablations from the registry and imports no method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UsageError
from ..leaderboard import append_rows
from ..progress import console
from ..registry import get_registry
from ..runner import RunRequest, Runner, default_results_dir

RESULTS_HELP = "where the rows and curves go (default: <runs-dir>/results; the committed evidence: --results-dir results)"
PRECISION_HELP = ("auto | fp32 | bf16 for every run (auto = bf16 on CUDA and native-bf16 CPUs, else fp32); runs of "
                  "different precisions are different configurations")

lab_app = typer.Typer(help="Paper experiments: method comparison with curves, and ablations.", no_args_is_help=True)

def _run(model: str, method: str, task: str, seed: int, overrides: dict[str, str], runs_dir: Path,
         results_dir: Path, device: str, leaderboard: bool, batch_size: int = 16,
         precision: str = "auto") -> list[dict[str, Any]]:
    """Leaderboard rows of one run, each with the number of optimizer steps it was tuned for."""
    req = RunRequest(model=model, method=method, task=task, overrides=overrides, seed=seed, runs_dir=runs_dir,
                     results_dir=results_dir, device=device, leaderboard=leaderboard, batch_size=batch_size,
                     precision=precision)
    result = Runner(req).run()
    return [{**r, "steps": int(result.finetune_summary.get("steps", 0))} for r in result.rows]


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _parse_sets(items: list[str]) -> dict[str, str]:
    from ..params import parse_set_options

    return parse_set_options(items)


@lab_app.command("compare")
def compare(
    model: str = typer.Option("shapes-c2i", "--model", "-m"),
    task: str = typer.Option("shapes-fid", "--task", "-t"),
    methods: str = typer.Option("none,va-pi,sft,post-train-tokenizer,ste,ar-grpo,cca", "--methods"),
    seeds: str = typer.Option("0,1,2", "--seeds"),
    curve_steps: str = typer.Option("", "--curve-steps", help="e.g. 15,30,45: extra runs at these step budgets"),
    curve_metric: str = typer.Option("fid", "--curve-metric"),
    set_: list[str] = typer.Option([], "--set"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    device: str = typer.Option("cpu", "--device"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Every method x seed on one task (leaderboard rows), plus an optional metric-vs-step curve."""
    overrides = _parse_sets(set_)
    results_dir = results_dir or default_results_dir(runs_dir)
    curve_rows: list[dict[str, Any]] = []
    for seed in map(int, _split(seeds)):
        for method in _split(methods):
            rows = _run(model, method, task, seed, overrides, runs_dir, results_dir, device, leaderboard=True,
                        precision=precision)
            console.print(f"{method} seed {seed}: " + ", ".join(f"{r['variant']} {curve_metric}={r.get(curve_metric)}" for r in rows))
            curve_rows += rows
            if method == "none" or not curve_steps:
                continue
            for steps in _split(curve_steps):
                curve_rows += _run(model, method, task, seed, {**overrides, "method.steps": steps}, runs_dir,
                                   results_dir, device, leaderboard=False, precision=precision)
    if curve_steps:
        _write_curve(curve_rows, methods, task, curve_metric, results_dir)


def _write_curve(rows: list[dict[str, Any]], methods: str, task: str, metric: str, results_dir: Path) -> None:
    """results/curve-<task>.csv and .png: metric against optimizer steps, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..store import atomic_write, atomic_write_text

    df = pd.DataFrame(rows)
    none = df[df["method"] == "none"]
    expanded = [df]
    for method in _split(methods):  # the base model is step 0 of every method's curve
        if method != "none" and not none.empty:
            expanded.append(none.assign(method=method, steps=0))
    curve = pd.concat(expanded, ignore_index=True)
    curve = curve[curve["method"] != "none"]
    keep = ["method", "variant", "steps", "seed", metric]
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / f"curve-{task}.csv", curve[keep].sort_values(keep[:4]).to_csv(index=False))
    variants = sorted(curve["variant"].unique())
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        part = curve[curve["variant"] == variant]
        for method, group in part.groupby("method"):
            stats = group.groupby("steps")[metric].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["steps"], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=method)
        ax.set_title(f"{task} ({variant})")
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(results_dir / f"curve-{task}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    console.print(f"wrote {results_dir / f'curve-{task}.png'}")


def baseline_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """The --set overrides the base-model row of an ablation shares with its VA-π rows: the task's
    and the model's (e.g. task.n), so every row is scored the same way; method keys do not apply
    to `none`. Unqualified keys must name their plugin here (model./task.), or they are dropped."""
    return {k: v for k, v in overrides.items() if k.startswith(("task.", "model."))}


@lab_app.command("ablate")
def ablate(
    which: str = typer.Argument(..., help="an ablation the method declares (va-pi: reward | beta | xi)"),
    method: str = typer.Option("va-pi", "--method", "-a", help="the method whose declared ablation runs"),
    model: str = typer.Option("shapes-c2i", "--model", "-m"),
    task: str = typer.Option("shapes-fid", "--task", "-t"),
    seeds: str = typer.Option("0", "--seeds"),
    set_: list[str] = typer.Option([], "--set"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    device: str = typer.Option("cpu", "--device"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    baseline: Optional[bool] = typer.Option(True, "--baseline/--no-baseline", help="also score the base model"),
) -> None:
    """One paper ablation on any model/task (e.g. `xi` on shapes-t2i + shapes-geneval, as Table 5)."""
    entry = get_registry().get("methods", method)
    if which not in entry.ablations:
        raise typer.BadParameter(f"method '{entry.name}' declares the ablations: {', '.join(entry.ablations) or 'none'}")
    overrides = _parse_sets(set_)
    results_dir = results_dir or default_results_dir(runs_dir)
    unqualified = [k for k in overrides if "." not in k]
    if baseline and unqualified:
        console.print(f"[yellow]the base-model row ignores the unqualified --set {', '.join(unqualified)}; write "
                      "task.<key> / model.<key> for settings it must share with the VA-π rows[/yellow]")
    rows: list[dict[str, Any]] = []
    for seed in map(int, _split(seeds)):
        if baseline:
            rows += [{**r, "ablation": which, "setting": "base model"}
                     for r in _run(model, "none", task, seed, baseline_overrides(overrides), runs_dir, results_dir,
                                   device, leaderboard=False, precision=precision)]
        for label, setting in entry.ablations[which]:
            got = _run(model, entry.name, task, seed, {**overrides, **{f"method.{k}": v for k, v in setting.items()}},
                       runs_dir, results_dir, device, leaderboard=False, precision=precision)
            rows += [{**r, "ablation": which, "setting": label} for r in got]
            console.print(f"{which} / {label} / seed {seed}: done")
    # one run can be a row of two ablations (the base model; β=0.1 is also the full reward)
    append_rows(results_dir / f"ablations-{task}.csv", rows, identity=("ablation", "setting", "run_id", "variant"))
    console.print(f"appended {len(rows)} rows to {results_dir / f'ablations-{task}.csv'}")


@lab_app.command("tune")
def tune(
    model: str = typer.Option("shapes-c2i", "--model", "-m"),
    task: str = typer.Option("shapes-fid", "--task", "-t"),
    methods: str = typer.Option("sft,va-pi,va-pi:reward-only,va-pi:prior-only,post-train-tokenizer,ste", "--methods",
                                help="registered methods, or METHOD:VARIANT for a variant a method declares "
                                "(va-pi:reward-only / va-pi:prior-only, Table 4)"),
    lr_factors: str = typer.Option("0.333,1,3", "--lr-factors", help="the grid: recipe lr x each factor"),
    lr_center: Optional[float] = typer.Option(None, "--lr-center", help="grid centre (default: the family recipe lr)"),
    tune_seeds: str = typer.Option("1000,1001", "--tune-seeds", help="seeds of the validation tries (each try runs "
                                   "on all; the choice is their mean); never a test seed"),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="test seeds of the chosen settings"),
    temperatures: str = typer.Option("1.0,0.9,0.8", "--temperatures",
                                     help="the base's sampling-temperature tries (tuned-T): as many as lr factors"),
    matched_lr_to: str = typer.Option("va-pi", "--matched-lr-to", help="every other method also runs at this "
                                      "method's chosen lr (matched-lr rows; one that chose it is compared in its "
                                      "own row); '' = none"),
    control_curve: float = typer.Option(0.02, "--control-curve", help="also sample the base at each control "
                                        "temperature ± this (0 = the match only)"),
    budget_images: Optional[int] = typer.Option(None, "--budget-images", help="training images per method: its "
                                                "steps become ceil(images / its batch size) (the paper: 12,800)"),
    select_metric: Optional[str] = typer.Option(None, "--select-metric",
                                                help="default: the task's (shapes-fid: fid; shapes-geneval: overall)"),
    select_variant: Optional[str] = typer.Option(None, "--select-variant",
                                                 help="default: the task's (shapes-fid: no-cfg; shapes-geneval: its one row)"),
    select_mode: Optional[str] = typer.Option(None, "--select-mode",
                                              help="min or max; default: the task's (fid: min, overall: max)"),
    validate: Optional[list[str]] = typer.Option(
        None, "--validate", help="--set overrides that turn the task into its validation setting; default: the "
        "task's (shapes-fid: task.reference_split=val task.cfg=without; shapes-geneval: task.split=val)"),
    set_: list[str] = typer.Option([], "--set", help="overrides of every run (e.g. task.n=1000)"),
    controls: bool = typer.Option(True, "--controls/--no-controls",
                                  help="sample the base at each method's entropy-matched temperature"),
    control_n: int = typer.Option(1000, "--control-n", help="held-out images for the teacher-forced entropy"),
    ci_reps: int = typer.Option(1000, "--ci-reps", help="bootstrap replicates of the paired differences"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    device: str = typer.Option("cpu", "--device"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    batch_size: int = typer.Option(16, "--batch-size", help="sampling batch size (does not change results)"),
) -> None:
    """The fair protocol: the same tries per method and for the base's temperature, chosen on validation over
    tune seeds, then 5 disjoint test seeds, matched-lr rows, temperature controls, seed-level CIs (Holm)."""
    results_dir = results_dir or default_results_dir(runs_dir)
    from .protocol import resolve_selection
    from .tune import TuneSetup, load_task_of, run_tune

    overrides = _parse_sets(set_)
    selection = resolve_selection(load_task_of(task, overrides), task, _parse_sets(validate) if validate else None,
                                  select_metric, select_mode, select_variant)
    setup = TuneSetup(
        model=model, task=task, methods=_split(methods), lr_factors=[float(f) for f in _split(lr_factors)],
        lr_center=lr_center, tune_seeds=[int(x) for x in _split(tune_seeds)], seeds=[int(x) for x in _split(seeds)],
        temperatures=[float(t) for t in _split(temperatures)], matched_lr_to=matched_lr_to or None,
        control_curve=control_curve, budget_images=budget_images,
        select_metric=selection.metric, select_variant=selection.variant, select_mode=selection.mode,
        validate=selection.validate, overrides=overrides, controls=controls, control_n=control_n,
        ci_reps=ci_reps, runs_dir=runs_dir, results_dir=results_dir, device=device, batch_size=batch_size,
        precision=precision,
    )
    run_tune(setup, run=_run)


@lab_app.command("temperature")
def temperature_sweep(
    model: str = typer.Option("shapes-c2i", "--model", "-m"),
    task: str = typer.Option("shapes-fid", "--task", "-t"),
    temperatures: str = typer.Option("1.0,0.9,0.8", "--temperatures"),
    seeds: str = typer.Option("0", "--seeds"),
    set_: list[str] = typer.Option([], "--set", help="task./model. overrides (e.g. task.n=1000, task.cfg=without)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    device: str = typer.Option("cpu", "--device"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    batch_size: int = typer.Option(16, "--batch-size", help="sampling batch size (does not change results)"),
) -> None:
    """The base model sampled at several temperatures: how much headroom does sharpening alone give?
    Writes <results-dir>/temperature-<model>-<task>.csv (appending; one row per temperature x seed x variant)."""
    results_dir = results_dir or default_results_dir(runs_dir)
    overrides = baseline_overrides(_parse_sets(set_))
    from .tune import load_task_of

    declared = load_task_of(task, overrides).validation
    metric = declared.metric if declared else "fid"  # the task's own headline (GenEval: overall)
    rows: list[dict[str, Any]] = []
    for seed in map(int, _split(seeds)):
        for temperature in _split(temperatures):
            got = _run(model, "none", task, seed, {**overrides, "sampling.temperature": temperature}, runs_dir,
                       results_dir, device, leaderboard=False, batch_size=batch_size, precision=precision)
            rows += [{**r, "sweep_temperature": float(temperature)} for r in got]
            console.print(f"{model} T={temperature} seed {seed}: "
                          + ", ".join(f"{r['variant']} {metric}={r[metric]:.4g}" for r in got if metric in r))
    append_rows(results_dir / f"temperature-{model}-{task}.csv", rows)
    console.print(f"appended {len(rows)} rows to {results_dir / f'temperature-{model}-{task}.csv'}")



@lab_app.command("cost")
def cost(
    results_dir: Path = typer.Option(..., "--results-dir", help="a folder holding lab-<model>-<task>.csv tables"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="the runs directory that made them"),
) -> None:
    """Price the lab tables of a folder from the stages their rows used (no run is repeated): writes
    lab-<model>-<task>-cost.csv beside each table, as `lab tune` does."""
    import pandas as pd

    from .cost import cost_sentence, write_cost
    from .results import lab_tables

    tables = lab_tables(results_dir)
    if not tables:
        raise UsageError(f"lab cost: no lab-<model>-<task>-seeds.csv under {results_dir}")
    for paths in tables:
        rows = {name: pd.read_csv(path, usecols=["label", "run_id"], dtype=str).to_dict("records")
                if path.exists() else [] for name, path in (("validation", paths.validation), ("test", paths.seeds))}
        missing = sorted({r["run_id"] for part in rows.values() for r in part
                          if not (runs_dir / r["run_id"] / "run.json").exists()})
        if missing:
            raise UsageError(f"lab cost: {paths.seeds} names {len(missing)} run(s) not under {runs_dir} "
                             f"(e.g. {missing[0]}); pass the --runs-dir that made it")
        total = write_cost(paths.cost, runs_dir, rows["validation"], rows["test"])
        console.print(f"{paths.cost}: {cost_sentence(total)}")
