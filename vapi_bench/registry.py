"""The plugin manager: loads the `vapi_bench` entry-point group fail-soft and looks names up.

Built-in plugins are entry points of this very distribution, so they load exactly as a
third-party package would. A plugin that fails to import or register is reported once and
skipped; `VAPI_BENCH_PLUGINS=a,b` restricts loading to the named entry points. Mistakes are
reported per hook and per entry, so the rest of the plugin still loads: a misspelt hook name gets a
"did you mean", a factory that cannot take the arguments the core passes names the expected
signature.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .errors import UsageError
from .interfaces import Entry, Family, Recipe

ENTRY_POINT_GROUP = "vapi_bench"
KINDS = ("generators", "methods", "tasks", "scorers", "datasets", "families", "recipes")
_SINGULAR = {"generators": "model", "methods": "method", "tasks": "task", "scorers": "scorer",
             "datasets": "dataset", "families": "family", "recipes": "recipe"}
#: every hook a plugin may implement (the hookspecs module's functions)
HOOK_NAMES = tuple(name for name, obj in vars(hookspecs).items()
                   if callable(obj) and getattr(obj, f"{ENTRY_POINT_GROUP}_spec", None) is not None)


class DuplicateNameError(UsageError):
    """Two plugins registered the same name for the same kind."""


@dataclass
class PluginFailure:
    plugin: str
    stage: str  # "import" | "register_<kind>" | "hook name"
    error: str

    def describe(self) -> str:
        if self.stage == "hook name":  # the rest of the plugin loaded
            return f"plugin '{self.plugin}': {self.error}"
        what = "was skipped" if self.stage == "import" else "that registration was skipped"
        return f"plugin '{self.plugin}' failed at {self.stage} and {what}: {self.error}"


@dataclass
class Registry:
    """All registered entries by kind, plus what failed to load."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> version
    manager: pluggy.PluginManager | None = None

    def add(self, kind: str, entry: Entry | Family | Recipe, provider: str) -> None:
        expected = {"families": Family, "recipes": Recipe}.get(kind, Entry)
        if not isinstance(entry, expected):
            raise TypeError(f"register_{kind}'s register() expects a vapi_bench.{expected.__name__}, "
                            f"got {type(entry).__name__}")
        if isinstance(entry, Entry):
            _check_factory(kind, entry, provider)
        entry = replace(entry, provider=provider)
        table = self.entries[kind]
        for key in (entry.name, *getattr(entry, "aliases", ())):
            low = key.lower()
            if low in table:
                other = table[low]
                raise DuplicateNameError(
                    f"The {_SINGULAR[kind]} name '{key}' is registered twice: by plugin "
                    f"'{other.provider}' and by plugin '{provider}'. Uninstall one of them or "
                    f"restrict loading with VAPI_BENCH_PLUGINS."
                )
            table[low] = entry

    def names(self, kind: str) -> list[str]:
        """Canonical names (no aliases), sorted."""
        return sorted({e.name for e in self.entries[kind].values()})

    def list(self, kind: str) -> list[Entry]:
        seen: dict[str, Entry] = {}
        for entry in self.entries[kind].values():
            seen.setdefault(entry.name, entry)
        return [seen[n] for n in sorted(seen)]

    def get(self, kind: str, name: str) -> Entry:
        """Case-insensitive lookup; a miss raises UsageError with the nearest names."""
        table = self.entries[kind]
        entry = table.get(name.lower())
        if entry is not None:
            return entry
        near = difflib.get_close_matches(name.lower(), list(table), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        available = ", ".join(self.names(kind)) or "none"
        skipped = "".join(f" ({f.describe()})" for f in self.failures)
        raise UsageError(
            f"Unknown {_SINGULAR[kind]} '{name}'.{hint} Available: {available}. "
            f"(`vapi-bench list {kind}` shows them all.){skipped}"
        )


def _check_factory(kind: str, entry: Entry, provider: str) -> None:
    """Raise TypeError, naming the plugin and the expected signature, unless `entry.factory` accepts
    the keyword arguments the core will pass (generators: checkpoint and device, plus every
    declared parameter) and requires no other."""
    fixed = ("checkpoint", "device") if kind == "generators" else ()
    names = [*fixed, *(p.name for p in entry.params)]
    try:
        signature = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # builtins and C callables: nothing to check
        return
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        expected = ", ".join(f"{n}=..." for n in names) or "no arguments"
        raise TypeError(
            f"plugin '{provider}': the {_SINGULAR[kind]} '{entry.name}' factory{signature} cannot be called "
            f"as factory({expected}) ({exc}). A {_SINGULAR[kind]} factory takes "
            + ("`checkpoint` and `device` keywords plus " if fixed else "")
            + "one keyword per declared Param."
        ) from None


def _allowed(name: str) -> bool:
    allow = os.environ.get("VAPI_BENCH_PLUGINS")
    if not allow:
        return True
    return name in {p.strip() for p in allow.split(",") if p.strip()}


def build_registry(extra_plugins: Iterable[tuple[str, Any]] = ()) -> Registry:
    """Load every entry point of the `vapi_bench` group (plus `extra_plugins`) into a Registry."""
    registry = Registry()
    pm = _PluginManager(ENTRY_POINT_GROUP, registry)
    pm.add_hookspecs(hookspecs)
    registry.manager = pm

    candidates: list[tuple[str, Callable[[], Any], str]] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        version = ep.dist.version if ep.dist is not None else ""
        candidates.append((ep.name, ep.load, version))
    for name, module in extra_plugins:
        candidates.append((name, (lambda m=module: m), ""))

    for name, load, version in candidates:
        if not _allowed(name):
            continue
        try:
            module = load()
            pm.loading = name
            pm.register(module, name=name)
            pm.check_pending()
        except Exception as exc:  # fail-soft: report once and skip
            if pm.has_plugin(name):
                pm.unregister(name=name)
            registry.failures.append(PluginFailure(name, "import", _one_line(exc)))
            continue
        registry.plugins[name] = version

    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            provider = impl.plugin_name
            staged: list[Any] = []
            try:
                impl.function(register=staged.append)
            except Exception as exc:
                registry.failures.append(PluginFailure(provider, f"register_{kind}", _one_line(exc)))
                continue
            for entry in staged:  # one bad entry does not take its siblings down
                try:
                    registry.add(kind, entry, provider)
                except DuplicateNameError:
                    raise
                except Exception as exc:
                    registry.failures.append(PluginFailure(provider, f"register_{kind}", _one_line(exc)))
    return registry


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, except that a hook implementation whose name is no hook (a typo such as
    `register_task`) is reported with the nearest hook name and skipped, instead of failing the
    whole plugin at `check_pending`."""

    def __init__(self, project_name: str, registry: Registry) -> None:
        super().__init__(project_name)
        self.registry = registry
        self.loading = ""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None or name in HOOK_NAMES:
            return opts
        near = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"the hooks are {', '.join(HOOK_NAMES)}."
        self.registry.failures.append(PluginFailure(
            self.loading or str(getattr(plugin, "__name__", plugin)), "hook name",
            f"'{name}' is not a vapi-bench hook and was ignored; {hint}"))
        return None


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0] if text else type(exc).__name__


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide registry (loaded on first use)."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = build_registry()
        for failure in _REGISTRY.failures:
            print(f"vapi-bench: {failure.describe()}", file=sys.stderr)
    return _REGISTRY
