"""`vapi-bench zoo build` and `vapi-bench zoo show` (added to the CLI by the shapes plugin)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from vapi_bench.errors import CheckpointError, UsageError
from vapi_bench.progress import console, out

from .files import MANIFEST, read_manifest, verify_file, zoo_dir_or_default

zoo_app = typer.Typer(no_args_is_help=True, help="Build or inspect the shapes world's model zoo.")


@zoo_app.command("build")
def build_command(
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output directory (default: the shipped zoo)"),
    seed: int = typer.Option(0, "--seed", help="build seed: data, initialisation and batch order"),
    quick: bool = typer.Option(False, "--quick", help="toy sizes and step counts (tests; under a minute)"),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)"),
    only: Optional[str] = typer.Option(None, "--only", help="build one extra model into an existing zoo and "
                                       "leave its other files alone: reward-net | c2i-small | c2i-small-ls | t2i-ls | var"),
) -> None:
    """Train the VQ tokenizer, the c2i, c2i-small, c2i-small-ls, t2i and t2i-ls GPTs, the VAR and its
    multi-scale VQ-VAE, the evaluation feature network and the reward network from scratch (or, with
    --only, one extra model of an existing zoo)."""
    import torch

    from .build import EXTRA_STAGES, build_extra, build_zoo

    if threads < 0:
        raise UsageError(f"--threads must be >= 0, got {threads}.")
    if only is not None and only not in EXTRA_STAGES:
        raise UsageError(f"--only must be one of {', '.join(EXTRA_STAGES)}, got {only!r}.")
    if threads:
        torch.set_num_threads(threads)
    if only:
        manifest = build_extra(out_dir, only, config=_quick_or_none(quick))
    else:
        manifest = build_zoo(out_dir, seed=seed, quick=quick)
    out.print(_summary(manifest, zoo_dir_or_default(out_dir)))


def _quick_or_none(quick: bool) -> Any:
    """--quick with --only forces the toy sizes; otherwise the zoo's own preset (read from its manifest)."""
    from .config import QUICK

    return QUICK if quick else None


@zoo_app.command("show")
def show_command(
    zoo_dir: Optional[Path] = typer.Option(None, "--dir", help="zoo directory (default: the shipped zoo)"),
) -> None:
    """Print a zoo's files (checked against their sha256), losses and quality figures."""
    root = zoo_dir_or_default(zoo_dir)
    manifest = read_manifest(root, verify=False)
    files = Table(title=f"zoo {root}", title_justify="left")
    for column in ("file", "bytes", "sha256", "status"):
        files.add_column(column)
    for name, record in manifest["files"].items():
        try:
            verify_file(root / name, record)
            status = "[green]ok[/green]"
        except CheckpointError as exc:
            status = f"[red]{'missing' if not (root / name).exists() else 'changed'}[/red]"
            console.print(f"[red]{exc}[/red]")
        files.add_row(name, str(record["bytes"]), record["sha256"][:16], status)
    out.print(files)
    out.print(_summary(manifest, root))


def _summary(manifest: dict[str, Any], root: Path) -> Table:
    """Seed, final losses, quality gates and build time of a manifest, as a table."""
    table = Table(title=f"{root / MANIFEST}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("seed", f"{manifest['seed']}{' (quick)' if manifest.get('quick') else ''}")
    table.add_row("data sha256", manifest["data"]["sha256"][:16])
    for stage, losses in manifest["losses"].items():
        table.add_row(f"loss {stage}", ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    gates = manifest.get("quality", {}).get("gates", {})
    for name, value in gates.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.3f}")
    walls = manifest.get("build", {}).get("wall_seconds", {})
    if walls:
        table.add_row("build time", f"{walls.get('total', 0.0) / 60:.1f} min "
                      f"({manifest['build'].get('torch_threads')} threads)")
    return table
