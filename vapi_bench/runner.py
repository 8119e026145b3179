"""The stage runner: finetune -> sample -> score, each cached by the hash of what it depends on.

Layout under runs_dir:
    finetune/<key>/      weights/ (generator.save_finetuned), work/ (method checkpoints),
                         train.jsonl, curves.png, finetune.json (done marker + summary)
    samples/<key>/       images (task layout), samples.jsonl, grid.png, samples.json (done marker)
    scores/<key>/        score.json (done marker), per-sample.jsonl
    <run-id>/run.json    the resolved spec, versions, host, device, stage keys and wall times
A stage whose done marker exists is reused (and the run says so) unless --force. A marker is written
only once the stage's outputs are on disk; a corrupt one, or a fine-tune whose files are missing or
truncated (finetune.json lists them), is named and recomputed (see integrity). Each stage
runs under a per-stage file lock (runs_dir/locks/), so two identical runs started together do the
work once: the second waits, then reuses. Ctrl-C ends a stage with exit 130 and a line saying what
was kept; running the same command again resumes.
"""
from __future__ import annotations

import datetime as _dt
import platform
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from . import integrity, store
from .distributed import barrier, device_for, dist_info_from_env, init_process_group
from .errors import CheckpointError, DataError, Interrupted, StorageError, UsageError
from .checkpoints import check_finite_weights
from .hashing import environment_versions, file_digest, git_commit, stable_hash
from .interfaces import Generator, Method, SamplingRecipe, StageContext, Task
from .leaderboard import append_rows, leaderboard_path
from .loggers import LOGGER_PARAMS, TrainLog, open_logger, preview_conditions, sample_preview
from .params import keyed_params, resolve_params, route_overrides
from .precision import resolve_precision
from .training.recipes import resolve_run_recipes
from .progress import make_progress, stage
from .registry import Registry, get_registry
from .request import (DEFAULT_SAMPLE_BATCH, RunRequest, RunResult, check_folder, check_ranges, default_results_dir,
                      resolve_device)
from .report.figures import write_training_curves
from .seeding import derive_seed
from .sampling import broken_images, rank_and_world, sample_records, sample_to_dir, shard, write_grid
from .spec import SAMPLING_PARAMS, RunSpec, apply_overrides, config_identity, sample_key, score_key

class Runner:
    """Resolves a RunRequest into a RunSpec and executes the stages it needs."""

    def __init__(self, request: RunRequest, registry: Registry | None = None) -> None:
        self.req = request
        if request.results_dir is None:
            request.results_dir = default_results_dir(request.runs_dir)
        check_folder(request.runs_dir, "--runs-dir")
        if request.leaderboard:
            check_folder(request.results_dir, "--results-dir")
        self.registry = registry or get_registry()
        self.device = resolve_device(request.device)
        self.precision, warning = resolve_precision(request.precision, self.device)
        if warning and not request.quiet:
            from .progress import console

            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        if self.device.type == "cuda" and self.device.index is None and dist_info_from_env().is_distributed:
            self.device = device_for(dist_info_from_env())  # one GPU per torchrun rank
        init_process_group(self.device)
        self.rank, self.world = rank_and_world()
        self.log_lines: list[str] = []
        self.log_options: dict[str, Any] = {}  # --set logger=...: how training is mirrored (not in the spec)
        self.recipe_source = ""  # the family recipe the method's parameters came from (resolution fills it)

    # ---- resolution -----------------------------------------------------------------------
    def _resolve(self) -> tuple[Generator, Method, Task | None, RunSpec, Any]:
        req, reg = self.req, self.registry
        gen_e = reg.get("generators", req.model)
        meth_e = reg.get("methods", req.method)
        siblings = {e.name: e for e in (reg.get("methods", m) for m in (*req.methods, req.method))}
        task_e = reg.get("tasks", req.task) if req.task else None
        task_declared = task_e.params if task_e else ()
        plugins = {"model": {gen_e.name: gen_e.params}, "method": {n: e.params for n, e in siblings.items()},
                   "task": {task_e.name: task_declared} if task_e else {}, "sampling": {"sampling": SAMPLING_PARAMS},
                   "logger": {"logger": LOGGER_PARAMS}}
        routed = route_overrides({k: v for k, v in req.overrides.items() if not k.startswith("dataset.")}, plugins)
        self.log_options = resolve_params(LOGGER_PARAMS, routed["logger"]["logger"], "logger")
        model_params = resolve_params(gen_e.params, routed["model"][gen_e.name], f"model '{gen_e.name}'")
        every_method = {n: resolve_params(e.params, routed["method"][n], f"method '{n}'") for n, e in siblings.items()}
        method_params = every_method[meth_e.name]
        task_params = resolve_params(task_declared, routed["task"][task_e.name], f"task '{task_e.name}'") if task_e else {}
        sampling = resolve_params(SAMPLING_PARAMS, routed["sampling"]["sampling"], "sampling")
        self._declared = {"model": gen_e.params, "method": meth_e.params, "task": task_declared}
        check_ranges(req)

        # random-init weights (tests, smoke runs) must not depend on the process or the rank
        torch.manual_seed(derive_seed(req.seed, 0, stream="init"))
        generator = gen_e.factory(checkpoint=req.checkpoint, device=self.device, **model_params)
        check_finite_weights(generator, req.checkpoint)
        task = task_e.factory(**task_params) if task_e else None
        if task_e and task.conditioning != generator.conditioning:
            raise UsageError(
                f"Task '{task_e.name}' needs a {task.conditioning}-conditional model but "
                f"'{gen_e.name}' is {generator.conditioning}-conditional."
            )
        # every method of the invocation, before any stage: not after SFT has finished
        recipes = resolve_run_recipes({n: (siblings[n].params, v) for n, v in every_method.items()}, generator,
                                      precision=self.precision, registry=reg)
        resolved, self.recipe_source = recipes[meth_e.name]
        method = meth_e.factory(**resolved)
        identity = {"model": gen_e.name, "params": keyed_params(gen_e.params, model_params), "checkpoint": req.checkpoint,
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
            model=gen_e.name, model_params=keyed_params(gen_e.params, model_params), checkpoint=req.checkpoint,
            model_fingerprint=fingerprint, method=meth_e.name, method_params=keyed_params(meth_e.params, method_params),
            dataset=dataset_name, dataset_params=dataset_params, task=task_e.name if task_e else "",
            task_params=keyed_params(task_declared, task_params),
            sampling_overrides=sampling, seed=req.seed, limit=req.limit, precision=self.precision,
            method_identity=method.is_identity, extra=extra,
        )
        return generator, method, task, spec, dataset

    # ---- stages ---------------------------------------------------------------------------
    def _ctx(self, out_dir: Path, progress: Any, log_path: Path | None = None,
             mirror: Any = None) -> StageContext:
        train_log = TrainLog(log_path, mirror) if log_path is not None and self.rank == 0 else None
        return StageContext(out_dir=out_dir, device=self.device, seed=self.req.seed, progress=progress,
                            log=train_log.write if train_log else (lambda record: None), limit=self.req.limit,
                            precision=self.precision,  # type: ignore[arg-type]
                            rank=self.rank, world_size=self.world, recipe=self.recipe_source,
                            cache_dir=self.req.runs_dir / "cache")

    def _forced(self, stage: str) -> bool:
        """--force recomputes the stages this command runs; the ones it only reads are reused."""
        return self.req.force and stage in self.req.stages

    @contextmanager
    def _stage_lock(self, stage: str, key: str, collective: bool = True) -> Iterator[None]:
        """Hold the stage's file lock on rank 0 while every rank works on it (see module docstring)."""
        path = self.req.runs_dir / "locks" / f"{stage}-{key}.lock"

        def waiting() -> None:
            self._say(f"{stage}: another process is computing this stage; waiting for it ({path})")

        if self.rank == 0:
            with store.stage_lock(path, on_wait=waiting):
                if collective:
                    barrier()
                yield
        else:
            barrier()
            yield

    def _finetune(self, generator: Generator, method: Method, spec: RunSpec, dataset: Any,
                  progress: Any) -> tuple[str, dict[str, Any], bool]:
        key = spec.finetune_key()
        if spec.method_identity:
            return key, {"tune_minutes": 0.0}, False
        ft_dir = self.req.runs_dir / "finetune" / key
        with self._stage_lock("finetune", key):
            return self._finetune_locked(generator, method, spec, key, ft_dir, dataset, progress)

    def _finetune_locked(self, generator: Generator, method: Method, spec: RunSpec, key: str, ft_dir: Path,
                         dataset: Any, progress: Any) -> tuple[str, dict[str, Any], bool]:
        marker = ft_dir / "finetune.json"
        if not self._forced("finetune"):
            summary = self._finished_finetune(generator, ft_dir)
            if summary is not None:
                self._say(f"finetune: reusing {ft_dir}")
                return key, summary, True
        if "finetune" not in self.req.stages:
            raise UsageError(f"No fine-tuned weights for this spec yet ({ft_dir}); run `vapi-bench finetune` first.")
        ds_entry, ds_params = dataset
        data = ds_entry.factory(**ds_params)
        start = time.time()
        work = ft_dir / "work"
        if self.rank == 0:
            if self._forced("finetune"):  # from scratch: no resuming from the finished checkpoint
                shutil.rmtree(work, ignore_errors=True)
            store.remove_stale_temps(ft_dir)
        barrier()
        mirror = self._training_logger(generator, data, spec, ft_dir)
        ctx = self._ctx(work, progress, ft_dir / "train.jsonl", mirror)
        if mirror is not None:
            mirror.begin()
        try:
            summary = method.finetune(generator, data, ctx) or {}
        except KeyboardInterrupt:
            raise Interrupted(f"Interrupted while fine-tuning: its checkpoints are kept in {work}; run the same "
                              "command again to resume from the last one.") from None
        finally:
            if mirror is not None:
                mirror.close()
        minutes = (time.time() - start) / 60
        summary = {**summary, "tune_minutes": minutes}
        if self.rank == 0:
            written = generator.save_finetuned(ft_dir / "weights")
            write_training_curves(ft_dir / "train.jsonl", ft_dir / "curves.png")
            store.atomic_write_json(marker, {**summary, integrity.FILES_KEY: integrity.file_records(written, ft_dir)})
        barrier()
        return key, summary, False

    def _finished_finetune(self, generator: Generator, ft_dir: Path) -> dict[str, Any] | None:
        """The summary of a finished fine-tune whose files are all there, loaded into `generator`;
        None when there is none, or when its marker or files are damaged (said: it is recomputed).

        The files are checked before anything is loaded, so a recomputation starts from the base
        weights. A fine-tune whose files check out but do not load is an error: its weights may be
        half-loaded by then, and only a fresh process (--force) starts clean.
        """
        summary = integrity.read_marker(ft_dir / "finetune.json", ("tune_minutes",), self._warn)
        if summary is None:
            return None
        damage = integrity.damaged_file(ft_dir, summary.pop(integrity.FILES_KEY, {}))
        if damage and "finetune" not in self.req.stages:
            raise CheckpointError(f"The fine-tune in {ft_dir} is damaged: {damage}. Run `vapi-bench finetune` (or "
                                  "`run`) with the same options to fine-tune again.")
        if damage:
            self._warn(f"{damage}; recomputing the fine-tune in {ft_dir}")
            return None
        try:
            generator.load_finetuned(ft_dir / "weights")
        except CheckpointError as exc:
            raise CheckpointError(f"The fine-tune cached in {ft_dir} does not load ({exc}). Run the same command "
                                  "with --force to fine-tune again.") from None
        return summary

    def _training_logger(self, generator: Generator, data: Any, spec: RunSpec, ft_dir: Path) -> Any:
        """The TensorBoard / wandb mirror of train.jsonl asked for with --set logger=... (rank 0 only).

        Preview grids need the whole model on this rank, so they are drawn on one process only.
        """
        if self.rank != 0 or self.log_options.get("logger", "jsonl") == "jsonl":
            return None
        preview = (sample_preview(generator, preview_conditions(data), spec.seed)
                   if self.world == 1 and self.log_options.get("log_images_every", 0) > 0 else None)
        return open_logger(self.log_options, ft_dir, spec.run_id(), spec.as_dict(), preview)

    def _sample(self, generator: Generator, task: Task, items: list, recipe: SamplingRecipe, ft_key: str,
                spec: RunSpec, progress: Any) -> tuple[str, Path, bool]:
        key = sample_key(ft_key, spec.task, items, recipe, spec.seed, task.output_size(generator))
        sdir = self.req.runs_dir / "samples" / key
        with self._stage_lock("sample", key):
            reused = self._sample_locked(generator, task, items, recipe, spec, sdir, progress)
        return key, sdir, reused

    def _sample_locked(self, generator: Generator, task: Task, items: list, recipe: SamplingRecipe,
                       spec: RunSpec, sdir: Path, progress: Any) -> bool:
        marker = sdir / "samples.json"
        if not self._forced("sample") and integrity.read_marker(marker, ("n",), self._warn) is not None:
            broken = broken_images(task, items, sdir)  # every rank: they must agree on regenerating
            if not broken:
                self._say(f"sample: reusing {sdir}")
                return True
            if "sample" not in self.req.stages:
                raise UsageError(f"{len(broken)} image(s) in {sdir} are unreadable (first: {broken[0]}); run "
                                 "`vapi-bench sample` (or `run`) with the same options to regenerate them.")
            self._say(f"sample: regenerating {len(broken)} unreadable image(s) in {sdir} (first: {broken[0]})")
            if self.rank == 0:
                for path in broken:
                    path.unlink(missing_ok=True)
                marker.unlink(missing_ok=True)
        if "sample" not in self.req.stages:
            raise UsageError(f"No samples for this spec yet ({sdir}); run `vapi-bench sample` first.")
        if self.rank == 0:
            if self._forced("sample"):
                for it in items:
                    task.image_path(sdir, it).unlink(missing_ok=True)
            store.remove_stale_temps(sdir)
            task.write_layout(sdir, items)
        barrier()
        t0 = time.time()
        batch_size = self.req.batch_size or getattr(generator, "sample_batch_size", DEFAULT_SAMPLE_BATCH)
        try:
            with stage(progress, f"sample cfg={recipe.cfg_scale:g}", len(shard(items, self.rank, self.world))) as on_batch:
                sample_to_dir(generator, task, items, recipe, spec.seed, sdir, batch_size=batch_size,
                              rank=self.rank, world=self.world, on_batch=on_batch)
        except KeyboardInterrupt:
            kept = sum(task.image_path(sdir, it).exists() for it in items)
            raise Interrupted(f"Interrupted while sampling: {kept} of {len(items)} images are kept in {sdir}; run "
                              "the same command again to generate only the missing ones.") from None
        barrier()
        if self.rank == 0:
            integrity.check_samples_on_disk(task, items, sdir)
            store.write_jsonl(sdir / "samples.jsonl", sample_records(items, spec.seed, task, sdir))
            write_grid(task, items, sdir)
            store.atomic_write_json(marker, {"n": len(items), "recipe": recipe.as_dict(), "seed": spec.seed,
                                             "seconds": time.time() - t0})
        return False

    def _score(self, task: Task, items: list, skey: str, sdir: Path, spec: RunSpec,
               progress: Any) -> tuple[dict[str, Any], bool]:
        key = score_key(skey, spec.task, spec.task_params)
        with self._stage_lock("score", key, collective=False):
            return self._score_locked(task, items, key, sdir, progress)

    def _score_locked(self, task: Task, items: list, key: str, sdir: Path,
                      progress: Any) -> tuple[dict[str, Any], bool]:
        cdir = self.req.runs_dir / "scores" / key
        marker = cdir / "score.json"
        cached = None if self._forced("score") else integrity.read_marker(marker, ("metrics", "score_key"), self._warn)
        if cached is not None:
            self._say(f"score: reusing {cdir}")
            return cached, True
        t0 = time.time()
        try:
            result = task.score(sdir, items, self._ctx(cdir, progress))
        except KeyboardInterrupt:
            raise Interrupted(f"Interrupted while scoring: the samples are kept in {sdir}; run the same command "
                              "again to score them.") from None
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
                self._write_run(run_dir, spec, run_id, walls, t_start, {"finetune": ft_key}, [], reused)
                return RunResult(run_id, run_dir, rows, reused, ft_summary)
            items = task.items(generator, self.req.limit)
            recipes = apply_overrides(task.variants(generator), spec.sampling_overrides)
            keys: dict[str, Any] = {"finetune": ft_key, "variants": []}
            sample_dirs: dict[str, Path] = {}
            score_dirs: dict[str, Path] = {}
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
                sample_dirs[rows[-1]["variant"]] = sdir
                score_dirs[rows[-1]["variant"]] = self.req.runs_dir / "scores" / record["score_key"]
        if self.rank == 0:
            self._write_run(run_dir, spec, run_id, walls, t_start, keys, rows, reused)
            if self.req.leaderboard and rows:
                self._append_leaderboard(spec.task, rows, run_dir)
        return RunResult(run_id, run_dir, rows, reused, ft_summary, task=task, items=items,
                         sample_dirs=sample_dirs, score_dirs=score_dirs)

    def _append_leaderboard(self, task: str, rows: list[dict[str, Any]], run_dir: Path) -> None:
        """Append the rows; if the board cannot be written, say where the rows are kept."""
        path = leaderboard_path(self.req.results_dir, task)
        try:
            append_rows(path, rows)
        except DataError as exc:
            raise DataError(f"{exc} This run's rows: {run_dir / 'run.json'}.") from None
        except OSError as exc:
            raise StorageError(
                f"Cannot write the leaderboard {path} ({exc.strerror or exc}). The results are kept in "
                f"{run_dir / 'run.json'} and every stage is cached: fix that ({store.os_error_remedy(exc)}), "
                "then run the same command again (it only re-appends the rows)."
            ) from None

    def _row(self, spec: RunSpec, recipe: SamplingRecipe, record: dict[str, Any], ft_summary: dict[str, Any],
             n: int, run_id: str) -> dict[str, Any]:
        variant = "cfg" if recipe.cfg_scale != 1.0 else "no-cfg"
        trained = ft_summary.get("params", {}) if isinstance(ft_summary.get("params"), dict) else {}
        return {
            "model": spec.model, "method": spec.method, **({"label": self.req.label} if self.req.label else {}),
            "task": spec.task, "variant": variant,
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
                   keys: dict[str, Any], rows: list[dict[str, Any]], reused: dict[str, bool]) -> None:
        record = {
            "run_id": run_id, "spec": spec.as_dict(), "stage_keys": keys, "wall_seconds": walls,
            "reused": reused,  # stages taken from the cache: their wall time is the time to check it
            "precision": {"requested": self.req.precision, "resolved": self.precision},
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

    def _warn(self, text: str) -> None:
        """A damaged cache entry and what is done about it: one unwrapped `warning:` line."""
        self.log_lines.append(text)
        if not self.req.quiet and self.rank == 0:
            integrity.warn(text)
