"""The `vapi-bench` command line (Typer + rich).

User errors (VapiError, bad options) print one or two plain sentences and exit non-zero (2 for
bad names/options, 130 for Ctrl-C, 143 for SIGTERM); so do OS failures (a read-only folder, a full
disk), naming the path. `--debug` (or VAPI_BENCH_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from . import comparison
from .signals import Stop, sigterm_as_interrupt
from .demo import DEFAULT_MODEL, DEFAULT_TASK, plan_run
from .errors import Interrupted, UsageError, VapiError, shorten_quoted
from .params import parse_set_options
from .progress import console, out

KIND_ALIASES = {"models": "generators", "generators": "generators", "methods": "methods", "tasks": "tasks",
                "scorers": "scorers", "datasets": "datasets", "families": "families", "recipes": "recipes"}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark post-training methods (VA-π and baselines) for AR image generators.")

SetOpt = typer.Option([], "--set", help="key=value parameter override (repeatable); `method.key=` to target one plugin")
RunsDirOpt = typer.Option(Path("runs"), "--runs-dir", help="where run directories and stage caches live")
ResultsDirOpt = typer.Option(
    None, "--results-dir",
    help="where leaderboard CSVs are written (default: <runs-dir>/results, your own; the committed evidence in "
         "results/ is written only when asked: --results-dir results)")
ShowResultsDirOpt = typer.Option(
    Path("runs/results"), "--results-dir",
    help="the folder of leaderboard CSVs to show (`run` writes to <runs-dir>/results; `--results-dir results` "
         "shows the committed evidence)")
BatchSizeOpt = typer.Option(
    None, "--batch-size",
    help="images per sampling batch; does not change results (default: the generator's choice, else 16)")
PrecisionOpt = typer.Option(
    "auto", "--precision",
    help="auto | fp32 | bf16 (autocast); auto = bf16 on CUDA with bf16 and on CPUs with native bf16 "
         "(AVX512-BF16 / AMX), fp32 elsewhere")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars or notes (also off when stdout is not a terminal)")


@app.command("list")
def list_cmd(kind: str = typer.Argument("all", help="models | methods | tasks | scorers | datasets | families | recipes | all")) -> None:
    """List what the installed plugins offer."""
    from .registry import KINDS, get_registry

    reg = get_registry()
    if kind != "all" and kind not in KIND_ALIASES:
        raise UsageError(f"Unknown kind '{kind}'. Use one of: {', '.join(KIND_ALIASES)} or all.")
    kinds = KINDS if kind == "all" else (KIND_ALIASES[kind],)
    for k in kinds:
        table = Table(title="models" if k == "generators" else k, title_justify="left")
        for col in ("name", "provider", "summary"):
            table.add_column(col)
        for entry in reg.list(k):
            table.add_row(entry.name, entry.provider, entry.summary)
        out.print(table)


def _request(**kw: Any) -> Any:
    from .runner import RunRequest

    overrides = parse_set_options(kw.pop("set_") or [])
    return RunRequest(overrides=overrides, **kw)


def _execute(requests: list[Any]) -> list[Any]:
    """Run each request; the RunResults in order (the rows, and what the verdict pairs)."""
    from .runner import Runner

    results = []
    for req in requests:
        result = Runner(req).run()
        results.append(result)
        if result.rows and not req.quiet:
            console.print(f"[dim]run {result.run_id} -> {result.run_dir / 'run.json'}[/dim]", highlight=False)
    return results


def _print_rows(results: list[Any]) -> None:
    """The key-metric table (Δ vs base) of the rows the command produced."""
    from .run_output import results_table

    rows = [row for result in results for row in result.rows]
    if not rows:
        return
    task = next((r.task for r in results if r.task is not None), None)
    model = rows[0].get("model", "")
    out.print(results_table(rows, getattr(task, "key_metrics", ()), title=f"{model} on {rows[0].get('task', '')}"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@app.command()
def run(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=f"generator name (`vapi-bench list models`; "
                                        f"default {DEFAULT_MODEL})"),
    method: list[str] = typer.Option([], "--method", "-a", help="alignment method(s), repeatable (default none, "
                                     "va-pi)"),
    task: Optional[str] = typer.Option(None, "--task", "-t", help=f"evaluation task (default {DEFAULT_TASK})"),
    set_: list[str] = SetOpt,
    tuned_temperature: Optional[float] = typer.Option(
        None, "--tuned-temperature", help="also run the base model at this sampling temperature (row 'tuned-T'): "
        "the control that asks whether sampling colder does as well as fine-tuning"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="local path, URL or hf://repo/file"),
    seed: list[int] = typer.Option([0], "--seed", help="global seed(s), repeatable"),
    runs_dir: Path = RunsDirOpt,
    results_dir: Optional[Path] = ResultsDirOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="cap the number of samples/steps (smoke runs)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    precision: str = PrecisionOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    force: bool = typer.Option(False, "--force", help="recompute every stage"),
    no_leaderboard: bool = typer.Option(False, "--no-leaderboard", help="do not append to the leaderboard"),
    offline: bool = typer.Option(False, "--offline", help="never touch the network (missing files are named)"),
    report: bool = typer.Option(True, "--report/--no-report", help="after a comparison (two or more methods), "
                                "build <runs-dir>/reports/<task>.html from your rows (only when they go to your "
                                "own results folder, the default)"),
    quiet: bool = QuietOpt,
) -> None:
    """Fine-tune, sample and score; append the rows to the task's leaderboard; say who wins.

    With no options: the demo (vapi_bench/demo.py)."""
    if offline:
        os.environ["VAPI_BENCH_OFFLINE"] = "1"
    plan = plan_run(model, method, task, set_, tuned_temperature)
    if plan.demo and not quiet:
        console.print(f"[bold]demo:[/bold] {plan.model} ({' '.join(plan.sets)}): {', '.join(plan.methods)} and the "
                      f"base at T={plan.tuned_temperature:g} on {plan.task}", highlight=False, soft_wrap=True)
    common = dict(model=plan.model, task=plan.task, checkpoint=checkpoint, runs_dir=runs_dir, results_dir=results_dir,
                  limit=limit, device=device, force=force, batch_size=batch_size, precision=precision,
                  leaderboard=not no_leaderboard, methods=tuple(plan.methods), quiet=quiet)
    requests = [_request(method=m, set_=plan.sets, seed=s, **common) for s in seed for m in plan.methods]
    if plan.tuned_temperature is not None:  # the same --set keys (routed as for every method), colder
        requests += [_request(method="none", set_=[*plan.sets, f"sampling.temperature={plan.tuned_temperature:g}"],
                              seed=s, label="tuned-T", **common) for s in seed]
    results = _execute(requests)
    _print_rows(results)
    verdict = comparison.verdict_of(results, device)
    # a comparison's page, in your own folders only: the committed evidence is collected by `report --collect`
    building = verdict is not None and report and not no_leaderboard and results_dir is None
    if building:
        comparison.keep_verdict(verdict, results, runs_dir)
    page = comparison.build_report(plan.task, runs_dir, quiet) if building else None
    comparison.print_verdict(verdict, page)


@app.command()
def finetune(
    model: str = typer.Option(..., "--model", "-m"),
    method: str = typer.Option(..., "--method", "-a"),
    set_: list[str] = SetOpt,
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint"),
    seed: int = typer.Option(0, "--seed"),
    runs_dir: Path = RunsDirOpt,
    limit: Optional[int] = typer.Option(None, "--limit"),
    device: str = typer.Option("cpu", "--device"),
    precision: str = PrecisionOpt,
    force: bool = typer.Option(False, "--force", help="fine-tune again from scratch"),
    quiet: bool = QuietOpt,
) -> None:
    """Run only the fine-tuning stage (cached by its hash)."""
    _execute([_request(model=model, method=method, task=None, set_=set_, checkpoint=checkpoint, seed=seed,
                       runs_dir=runs_dir, limit=limit, device=device, precision=precision, force=force,
                       stages=("finetune",), leaderboard=False, quiet=quiet)])


def _stage_command(stage: str, doc: str) -> None:
    def command(
        model: str = typer.Option(..., "--model", "-m"),
        method: str = typer.Option("none", "--method", "-a"),
        task: str = typer.Option(..., "--task", "-t"),
        set_: list[str] = SetOpt,
        checkpoint: Optional[str] = typer.Option(None, "--checkpoint"),
        seed: int = typer.Option(0, "--seed"),
        runs_dir: Path = RunsDirOpt,
        results_dir: Optional[Path] = ResultsDirOpt,
        limit: Optional[int] = typer.Option(None, "--limit"),
        device: str = typer.Option("cpu", "--device"),
        precision: str = PrecisionOpt,
        batch_size: Optional[int] = BatchSizeOpt,
        force: bool = typer.Option(False, "--force", help=f"redo the {stage} stage (the others are reused)"),
        quiet: bool = QuietOpt,
    ) -> None:
        results = _execute([_request(model=model, method=method, task=task, set_=set_, checkpoint=checkpoint,
                                  seed=seed, runs_dir=runs_dir, results_dir=results_dir, limit=limit,
                                  device=device, batch_size=batch_size, force=force, precision=precision,
                                  stages=("sample",) if stage == "sample" else ("score",),
                                  leaderboard=stage == "score", quiet=quiet)])
        _print_rows(results)

    command.__doc__ = doc
    app.command(stage)(command)


_stage_command("sample", "Run only the sampling stage (needs the fine-tune stage cached unless --method none).")
_stage_command("score", "Run only the scoring stage on cached samples; appends to the leaderboard.")


@app.command()
def leaderboard(
    task: Optional[str] = typer.Option(None, "--task", "-t"),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | md | json"),
    results_dir: Path = ShowResultsDirOpt,
    raw: bool = typer.Option(False, "--raw", help="every row instead of mean ± std over seeds"),
) -> None:
    """Show a task's leaderboard (mean ± std over seeds by default)."""
    from . import leaderboard as lb
    from .registry import get_registry

    if fmt not in {"table", "csv", "md", "json"}:
        raise UsageError(f"--format must be table, csv, md or json, not '{fmt}'.")
    if task:
        lb.check_task_name(results_dir, task, get_registry().names("tasks"))
    df = lb.load(results_dir, task)
    if df.empty:
        raise VapiError(f"No leaderboard rows in {results_dir}" + (f" for task '{task}'." if task else "."))
    if not raw and fmt in {"table", "md"}:
        df = lb.summarize(df)
        for note in df.attrs.get("notes", []):
            console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    if fmt != "table":
        sys.stdout.write(lb.render(df, fmt))
        return
    table = Table(title=f"leaderboard{': ' + task if task else ''}", title_justify="left")
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.iterrows():
        table.add_row(*[_fmt(v) for v in row.tolist()])
    out.print(table)


@app.command()
def report(
    task: list[str] = typer.Option([], "--task", "-t", help="task(s) to report (default: every task in results/)"),
    out: Path = typer.Option(Path("reports"), "--out", help="where the pages are written"),
    results_dir: Optional[Path] = ResultsDirOpt,
    runs_dir: Path = RunsDirOpt,
    fmt: str = typer.Option("html", "--format", "-f", help="html | md"),
    collect: bool = typer.Option(False, "--collect", help="first copy samples, training logs and provenance from "
                                 "--runs-dir into results/report/<task>/ (commit it to rebuild the page anywhere)"),
    images: int = typer.Option(16, "--images", help="with --collect: samples per grid (same indices for every method)"),
    results_page: Optional[Path] = typer.Option(
        None, "--results-page", help="instead: write one Markdown page of every lab table under --results-dir and "
        "its evidence subfolders (docs/results.md is this, from --results-dir results)"),
) -> None:
    """Build a static page per task: verdict panels, side-by-side samples, training curves, leaderboard, provenance."""
    from . import leaderboard as lb
    from . import report as rp
    from .runner import default_results_dir

    results_dir = results_dir or default_results_dir(runs_dir)
    if results_page is not None:
        from . import store
        from .report.results_page import render_results_page

        store.atomic_write_text(results_page, render_results_page(results_dir))
        console.print(f"[green]results page[/green] -> {results_page}")
        return
    tasks = task or rp.tasks_on_board(results_dir)
    if not tasks:
        raise VapiError(f"No leaderboard CSVs in {results_dir}; run `vapi-bench run` first.")
    for name in tasks:
        if collect:
            folder = rp.collect(lb.load(results_dir, name), name, runs_dir, results_dir, images)
            console.print(f"collected {name} -> {folder}")
        page = rp.write_report(name, results_dir, out, fmt)
        console.print(f"[green]report[/green] {name} -> {page}")


def _requirements(model: str | None, method: str | None, task: str | None, overrides: dict[str, str],
                  checkpoint: str | None, scorer: str | None = None) -> list[Any]:
    """Every WeightRequirement the named plugins declare (via Entry.requirements or .requirements())."""
    from .params import resolve_params, split_overrides
    from .registry import get_registry

    reg = get_registry()
    chosen = [(k, n) for k, n in (("generators", model), ("methods", method), ("tasks", task), ("scorers", scorer))
              if n]
    entries = {k: reg.get(k, n) for k, n in chosen}
    routed = split_overrides(overrides, {k: e.params for k, e in entries.items()})
    found: list[Any] = []
    for kind, entry in entries.items():
        params = resolve_params(entry.params, routed[kind], f"{kind[:-1]} '{entry.name}'")
        extra = {"checkpoint": checkpoint} if kind == "generators" else {}
        if entry.requirements is not None:
            found += entry.requirements(**extra, **params)
        elif kind != "generators":
            obj = entry.factory(**params)
            found += obj.requirements() if hasattr(obj, "requirements") else []
    return found


@app.command()
def prepare(
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    method: Optional[str] = typer.Option(None, "--method", "-a"),
    task: Optional[str] = typer.Option(None, "--task", "-t"),
    scorer: Optional[str] = typer.Option(None, "--scorer", "-s", help="a scorer (reward or metric network)"),
    set_: list[str] = SetOpt,
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint"),
    offline: bool = typer.Option(False, "--offline", help="only check the cache; never touch the network"),
) -> None:
    """Fetch every file a (model, method, task, scorer) needs into the cache, for later --offline runs."""
    from .prepare import prepare as fetch_all
    from .weights import cache_dir, hub_cache_dir

    if not (model or method or task or scorer):
        raise UsageError("Name at least one of --model, --method, --task, --scorer.")
    needed = _requirements(model, method, task, parse_set_options(set_), checkpoint, scorer)
    outcomes = fetch_all(needed, offline=offline)
    table = Table(title=f"prepare (cache: {cache_dir()}; Hugging Face files: {hub_cache_dir()})", title_justify="left")
    for col in ("what", "status", "path", "note"):
        table.add_column(col)
    for o in outcomes:
        colour = "green" if o.ok else "red"
        table.add_row(o.requirement.what, f"[{colour}]{o.status}[/{colour}]", str(o.path), o.message)
    out.print(table)
    missing = [o for o in outcomes if not o.ok]
    if missing:
        raise VapiError(f"{len(missing)} of {len(outcomes)} files are not available; see the table above.")


@app.command()
def doctor() -> None:
    """Versions, device, optional backends and cached weights: what is there and what is missing."""
    from .doctor import report

    report(out)


def build_app() -> typer.Typer:
    """The app with the lab and every plugin's extra commands (register_commands hook) attached."""
    from .lab.commands import lab_app
    from .registry import get_registry

    if not any(group.name == "lab" for group in app.registered_groups):
        app.add_typer(lab_app, name="lab")
    reg = get_registry()
    if reg.manager is not None:
        reg.manager.hook.register_commands(app=app)
    return app


def use_the_cores() -> None:
    """At least min(2, usable cores) torch threads unless OMP_NUM_THREADS says otherwise.

    torch counts physical cores and can settle on one thread (a container's CPU quota, one core
    with two hyper-threads); the embedded default's matrix work splits well over two.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = max(torch.get_num_threads(), min(2, usable))
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    use_the_cores()
    debug = "--debug" in argv or os.environ.get("VAPI_BENCH_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    with sigterm_as_interrupt() as stop:
        _run_command(argv, debug, stop)


def _run_command(argv: list[str], debug: bool, stop: Stop) -> None:
    """Run the command; turn every user-facing failure into its message and exit code."""
    try:
        command = typer.main.get_command(build_app())
        code = command.main(args=argv, prog_name="vapi-bench", standalone_mode=False)
    except Interrupted as exc:
        console.print(f"[bold yellow]interrupted:[/bold yellow] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(stop.exit_code(exc.exit_code)) from None
    except VapiError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/bold red] {escape(shorten_quoted(str(exc)))}", highlight=False,
                      soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:  # a failure of the machine, not of the code: name the path, say what to do
        if debug:
            raise
        console.print(f"[bold red]error:[/bold red] {_os_error_message(exc)}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except typer.Abort:
        _say_interrupted()
        raise SystemExit(stop.exit_code()) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        if debug:
            raise
        exc.show()
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    if code == 130:  # click turned a Ctrl-C (or SIGTERM) outside any stage into its return value
        _say_interrupted()
        raise SystemExit(stop.exit_code())


def _say_interrupted() -> None:
    console.print("[bold yellow]interrupted:[/bold yellow] stopped; every finished stage is cached in the runs folder, "
                  "so running the same command again goes on from there.", highlight=False, soft_wrap=True)


def _os_error_message(exc: OSError) -> str:
    """One sentence for an OSError: what failed on which path, and what to do."""
    from .store import os_error_remedy

    path = exc.filename or "a file"
    what = exc.strerror or str(exc)
    todo = os_error_remedy(exc)
    return (f"{what}: {path}. {todo[0].upper() + todo[1:]}, then run the same command again: finished stages are "
            "cached under the runs folder and reused.")


if __name__ == "__main__":
    main()
