"""The stage runner: finetune -> sample -> score, each cached by the hash of what it depends on.

Layout under runs_dir:
    finetune/<key>/      weights/ (generator.save_finetuned), work/ (method checkpoints),
                         train.jsonl, curves.png, finetune.json (done marker + summary)
    samples/<key>/       images (task layout), samples.jsonl, grid.png, samples.json (done marker)
    scores/<key>/        score.json (done marker), per-sample.jsonl
    <run-id>/run.json    the resolved spec, versions, host, device, stage keys and wall times
A stage whose done marker exists is reused (and the run says so) unless --force.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import store
from .distributed import barrier, device_for, dist_info_from_env, init_process_group
from .errors import UsageError
from .families import apply_family_defaults, family_keys
from .hashing import environment_versions, file_digest, git_commit, stable_hash
from .interfaces import Generator, Method, SamplingRecipe, StageContext, Task
from .leaderboard import append_rows, leaderboard_path
from .params import resolve_params, route_overrides
from .progress import add_task, advance, make_progress
from .registry import Registry, get_registry
from .seeding import derive_seed
from .sampling import rank_and_world, sample_records, sample_to_dir, write_grid
from .spec import SAMPLING_PARAMS, RunSpec, apply_overrides, config_identity, sample_key, score_key

STAGES = ("finetune", "sample", "score")


@dataclass
class RunRequest:
    """What the user asked for (CLI options before resolution)."""

    model: str
    method: str
    task: str | None
    overrides: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    seed: int = 0
    runs_dir: Path = Path("runs")
    results_dir: Path = Path("results")
    limit: int | None = None
    device: str = "cpu"
    force: bool = False
    batch_size: int = 16
    precision: str = "fp32"
    stages: tuple[str, ...] = STAGES
    leaderboard: bool = True
    quiet: bool = False
    #: every method of this invocation (`run -a none -a sft -a va-pi`): --set keys are validated
    #: against all of them and routed to each that declares them; () = just `method`
    methods: tuple[str, ...] = ()


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]]
    reused: dict[str, bool]
    finetune_summary: dict[str, Any] = field(default_factory=dict)


def _resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but CUDA is not available on this machine.")
    return torch.device(name)


class Runner:
    """Resolves a RunRequest into a RunSpec and executes the stages it needs."""

    def __init__(self, request: RunRequest, registry: Registry | None = None) -> None:
        self.req = request
        self.registry = registry or get_registry()
        self.device = _resolve_device(request.device)
        if self.device.type == "cuda" and self.device.index is None and dist_info_from_env().is_distributed:
            self.device = device_for(dist_info_from_env())  # one GPU per torchrun rank
        init_process_group(self.device)
        self.rank, self.world = rank_and_world()
        self.log_lines: list[str] = []

    # ---- resolution -----------------------------------------------------------------------
    def _resolve(self) -> tuple[Generator, Method, Task | None, RunSpec, Any]:
        req, reg = self.req, self.registry
        gen_e = reg.get("generators", req.model)
        meth_e = reg.get("methods", req.method)
        siblings = {e.name: e for e in (reg.get("methods", m) for m in (*req.methods, req.method))}
        task_e = reg.get("tasks", req.task) if req.task else None
        task_declared = task_e.params if task_e else ()
        plugins = {"model": {gen_e.name: gen_e.params}, "method": {n: e.params for n, e in siblings.items()},
                   "task": {task_e.name: task_declared} if task_e else {}, "sampling": {"sampling": SAMPLING_PARAMS}}
        routed = route_overrides({k: v for k, v in req.overrides.items() if not k.startswith("dataset.")}, plugins)
        model_params = resolve_params(gen_e.params, routed["model"][gen_e.name], f"model '{gen_e.name}'")
        every_method = {n: resolve_params(e.params, routed["method"][n], f"method '{n}'") for n, e in siblings.items()}
        method_params = every_method[meth_e.name]
        task_params = resolve_params(task_declared, routed["task"][task_e.name], f"task '{task_e.name}'") if task_e else {}
        sampling = resolve_params(SAMPLING_PARAMS, routed["sampling"]["sampling"], "sampling")
        self._declared = {"model": gen_e.params, "method": meth_e.params, "task": task_declared}

        # random-init weights (tests, smoke runs) must not depend on the process or the rank
        torch.manual_seed(derive_seed(req.seed, 0, stream="init"))
        generator = gen_e.factory(checkpoint=req.checkpoint, device=self.device, **model_params)
        method = meth_e.factory(**method_params)
        task = task_e.factory(**task_params) if task_e else None
        if task_e and task.conditioning != generator.conditioning:
            raise UsageError(
                f"Task '{task_e.name}' needs a {task.conditioning}-conditional model but "
                f"'{gen_e.name}' is {generator.conditioning}-conditional."
            )
        for name, values in every_method.items():  # before any stage: not after SFT has finished
            apply_family_defaults(values, family_keys(siblings[name].params), generator, f"method '{name}'",
                                  qualifier=name, registry=reg)
        identity = {"model": gen_e.name, "params": model_params, "checkpoint": req.checkpoint,
                    "describe": generator.describe()}
        extra: dict[str, Any] = {}
        if req.checkpoint and Path(req.checkpoint).exists():  # the core, not each plugin, hashes it
            extra["checkpoint_sha256"] = identity["checkpoint_sha256"] = file_digest(req.checkpoint)
        fingerprint = stable_hash(identity)
        dataset_name, dataset_params, dataset = None, {}, None
        if not method.is_identity:
            dataset_name = method_params.get("dataset") or generator.default_dataset
            if not dataset_name:
                raise UsageError(f"Method '{meth_e.name}' needs a dataset; pass --set dataset=NAME.")
            ds_e = reg.get("datasets", dataset_name)
            ds_over = {k.split(".", 1)[1]: v for k, v in req.overrides.items() if k.startswith("dataset.")}
            for size_key in ("image_size", "size"):
                if any(p.name == size_key for p in ds_e.params) and size_key not in ds_over:
                    ds_over[size_key] = generator.image_size
            dataset_params = resolve_params(ds_e.params, ds_over, f"dataset '{ds_e.name}'")
            dataset = (ds_e, dataset_params)
            dataset_name = ds_e.name
        spec = RunSpec(
            model=gen_e.name, model_params=model_params, checkpoint=req.checkpoint,
            model_fingerprint=fingerprint, method=meth_e.name, method_params=method_params,
            dataset=dataset_name, dataset_params=dataset_params, task=task_e.name if task_e else "", task_params=task_params,
            sampling_overrides=sampling, seed=req.seed, limit=req.limit, precision=req.precision,
            method_identity=method.is_identity, extra=extra,
        )
        return generator, method, task, spec, dataset

    # ---- stages ---------------------------------------------------------------------------
    def _ctx(self, out_dir: Path, progress: Any, log_path: Path | None = None) -> StageContext:
        def log(record: dict[str, Any]) -> None:
            if log_path is not None and self.rank == 0:
                store.append_jsonl(log_path, record)

        return StageContext(out_dir=out_dir, device=self.device, seed=self.req.seed, progress=progress,
                            log=log, limit=self.req.limit, precision=self.req.precision,  # type: ignore[arg-type]
                            rank=self.rank, world_size=self.world)

    def _finetune(self, generator: Generator, method: Method, spec: RunSpec, dataset: Any,
                  progress: Any) -> tuple[str, dict[str, Any], bool]:
        key = spec.finetune_key()
        if spec.method_identity:
            return key, {"tune_minutes": 0.0}, False
        ft_dir = self.req.runs_dir / "finetune" / key
        marker = ft_dir / "finetune.json"
        if marker.exists() and not self.req.force:
            generator.load_finetuned(ft_dir / "weights")
            self._say(f"finetune: reusing {ft_dir}")
            return key, json.loads(marker.read_text()), True
        if "finetune" not in self.req.stages:
            raise UsageError(f"No fine-tuned weights for this spec yet ({ft_dir}); run `vapi-bench finetune` first.")
        ds_entry, ds_params = dataset
        data = ds_entry.factory(**ds_params)
        start = time.time()
        ctx = self._ctx(ft_dir / "work", progress, ft_dir / "train.jsonl")
        if self.req.force and (ft_dir / "train.jsonl").exists() and self.rank == 0:
            (ft_dir / "train.jsonl").unlink()
        summary = method.finetune(generator, data, ctx) or {}
        minutes = (time.time() - start) / 60
        summary = {**summary, "tune_minutes": minutes}
        if self.rank == 0:
            generator.save_finetuned(ft_dir / "weights")
            _plot_curves(ft_dir / "train.jsonl", ft_dir / "curves.png")
            store.atomic_write_json(marker, summary)
        barrier()
        return key, summary, False

    def _sample(self, generator: Generator, task: Task, items: list, recipe: SamplingRecipe, ft_key: str,
                spec: RunSpec, progress: Any) -> tuple[str, Path, bool]:
        key = sample_key(ft_key, spec.task, items, recipe, spec.seed, task.output_size(generator))
        sdir = self.req.runs_dir / "samples" / key
        marker = sdir / "samples.json"
        if marker.exists() and not self.req.force:
            self._say(f"sample: reusing {sdir}")
            return key, sdir, True
        if "sample" not in self.req.stages:
            raise UsageError(f"No samples for this spec yet ({sdir}); run `vapi-bench sample` first.")
        if self.req.force and self.rank == 0:
            for it in items:
                path = task.image_path(sdir, it)
                if path.exists():
                    path.unlink()
        if self.rank == 0:
            task.write_layout(sdir, items)
        barrier()
        bar = add_task(progress, f"sample cfg={recipe.cfg_scale:g}", len(items) // self.world)
        t0 = time.time()
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            advance(progress, bar, n, rate=f"{done[0] / max(time.time() - t0, 1e-9):.1f} img/s")

        sample_to_dir(generator, task, items, recipe, spec.seed, sdir, batch_size=self.req.batch_size,
                      rank=self.rank, world=self.world, on_batch=on_batch)
        barrier()
        if self.rank == 0:
            store.write_jsonl(sdir / "samples.jsonl", sample_records(items, spec.seed, task, sdir))
            write_grid(task, items, sdir)
            store.atomic_write_json(marker, {"n": len(items), "recipe": recipe.as_dict(), "seed": spec.seed,
                                             "seconds": time.time() - t0})
        return key, sdir, False

    def _score(self, task: Task, items: list, skey: str, sdir: Path, spec: RunSpec,
               progress: Any) -> tuple[dict[str, Any], bool]:
        key = score_key(skey, spec.task, spec.task_params)
        cdir = self.req.runs_dir / "scores" / key
        marker = cdir / "score.json"
        if marker.exists() and not self.req.force:
            self._say(f"score: reusing {cdir}")
            return json.loads(marker.read_text()), True
        t0 = time.time()
        result = task.score(sdir, items, self._ctx(cdir, progress))
        record = {"metrics": result.metrics, "evaluator": result.evaluator,
                  "evaluator_version": result.evaluator_version, "extra": result.extra,
                  "seconds": time.time() - t0, "score_key": key}
        if result.per_sample is not None:
            base = {r["index"]: r for r in store.read_jsonl(sdir / "samples.jsonl")}
            merged = [{**base.get(r.get("index"), {}), **r} for r in result.per_sample]
            store.write_jsonl(cdir / "per-sample.jsonl", merged)
        store.atomic_write_json(marker, record)
        return record, False

    # ---- main -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        t_start = time.time()
        walls: dict[str, float] = {}
        generator, method, task, spec, dataset = self._resolve()
        run_id = spec.run_id()
        run_dir = self.req.runs_dir / run_id
        rows: list[dict[str, Any]] = []
        reused: dict[str, bool] = {}
        with make_progress(disable=self.req.quiet or self.rank != 0) as progress:
            t = time.time()
            ft_key, ft_summary, reused["finetune"] = self._finetune(generator, method, spec, dataset, progress)
            walls["finetune"] = time.time() - t
            if task is None or ("sample" not in self.req.stages and "score" not in self.req.stages):
                self._write_run(run_dir, spec, run_id, walls, t_start, {"finetune": ft_key}, [])
                return RunResult(run_id, run_dir, rows, reused, ft_summary)
            items = task.items(generator, self.req.limit)
            recipes = apply_overrides(task.variants(generator), spec.sampling_overrides)
            keys: dict[str, Any] = {"finetune": ft_key, "variants": []}
            for recipe in recipes:
                t = time.time()
                skey, sdir, reused_s = self._sample(generator, task, items, recipe, ft_key, spec, progress)
                walls[f"sample[cfg={recipe.cfg_scale:g}]"] = time.time() - t
                reused[f"sample[cfg={recipe.cfg_scale:g}]"] = reused_s
                if "score" not in self.req.stages or self.rank != 0:
                    keys["variants"].append({"sample": skey})
                    continue
                t = time.time()
                record, reused_c = self._score(task, items, skey, sdir, spec, progress)
                walls[f"score[cfg={recipe.cfg_scale:g}]"] = time.time() - t
                reused[f"score[cfg={recipe.cfg_scale:g}]"] = reused_c
                keys["variants"].append({"sample": skey, "score": record["score_key"]})
                rows.append(self._row(spec, recipe, record, ft_summary, len(items), run_id))
        if self.rank == 0:
            self._write_run(run_dir, spec, run_id, walls, t_start, keys, rows)
            if self.req.leaderboard and rows:
                append_rows(leaderboard_path(self.req.results_dir, spec.task), rows)
        return RunResult(run_id, run_dir, rows, reused, ft_summary)

    def _row(self, spec: RunSpec, recipe: SamplingRecipe, record: dict[str, Any], ft_summary: dict[str, Any],
             n: int, run_id: str) -> dict[str, Any]:
        variant = "cfg" if recipe.cfg_scale != 1.0 else "no-cfg"
        trained = ft_summary.get("params", {}) if isinstance(ft_summary.get("params"), dict) else {}
        return {
            "model": spec.model, "method": spec.method, "task": spec.task, "variant": variant,
            **{k: v for k, v in record["metrics"].items()},
            "config": config_identity(spec, recipe), "settings": self._settings(spec),
            **({"lr": trained["lr"]} if "lr" in trained else {}),
            "n_samples": n, **recipe.as_dict(), "seed": spec.seed,
            "evaluator": record.get("evaluator", ""), "evaluator_version": record.get("evaluator_version", ""),
            "tune_minutes": round(float(ft_summary.get("tune_minutes", 0.0)), 3), "run_id": run_id,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _settings(self, spec: RunSpec) -> str:
        """The model, method and task parameters that differ from their declared defaults, readable
        (e.g. "method.lr=3e-05 task.n=16"); the `config` column is the exact identity."""
        given = {"model": spec.model_params, "method": spec.method_params, "task": spec.task_params}
        return " ".join(f"{kind}.{p.name}={given[kind][p.name]}" for kind, params in self._declared.items()
                        for p in params if given[kind].get(p.name, p.default) != p.default)

    def _write_run(self, run_dir: Path, spec: RunSpec, run_id: str, walls: dict[str, float], t_start: float,
                   keys: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        record = {
            "run_id": run_id, "spec": spec.as_dict(), "stage_keys": keys, "wall_seconds": walls,
            "total_seconds": time.time() - t_start, "versions": environment_versions(),
            "plugins": self.registry.plugins, "git_commit": git_commit(), "host": socket.gethostname(),
            "platform": platform.platform(), "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor(),
            "world_size": self.world, "seed_policy": "sample i uses derive_seed(seed, i); independent of rank/batch",
            "results": rows,
        }
        store.atomic_write_json(run_dir / "run.json", record)

    def _say(self, text: str) -> None:
        self.log_lines.append(text)
        if not self.req.quiet and self.rank == 0:
            from .progress import console

            console.print(f"[dim]{text}[/dim]")


def _plot_curves(jsonl: Path, png: Path) -> None:
    """Plot every numeric per-step metric of a training log (one panel each)."""
    records = list(store.read_jsonl(jsonl))
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in records[-1] if k != "step" and isinstance(records[-1][k], (int, float))]
    if not keys:
        return
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    steps = [r.get("step", i) for i, r in enumerate(records)]
    for ax, k in zip(axes.flat, keys):
        ax.plot(steps, [r.get(k, float("nan")) for r in records])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    store.atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
