"""The plugin manager: loads the `vapi_bench` entry-point group fail-soft and looks names up.

Built-in plugins are entry points of this very distribution, so they load exactly as a
third-party package would. A plugin that fails to import or register is reported once and
skipped; `VAPI_BENCH_PLUGINS=a,b` restricts loading to the named entry points.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .errors import UsageError
from .interfaces import Entry

ENTRY_POINT_GROUP = "vapi_bench"
KINDS = ("generators", "methods", "tasks", "scorers", "datasets")
_SINGULAR = {"generators": "model", "methods": "method", "tasks": "task", "scorers": "scorer",
             "datasets": "dataset"}


class DuplicateNameError(UsageError):
    """Two plugins registered the same name for the same kind."""


@dataclass
class PluginFailure:
    plugin: str
    stage: str  # "import" | "register"
    error: str


@dataclass
class Registry:
    """All registered entries by kind, plus what failed to load."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> version
    manager: pluggy.PluginManager | None = None

    def add(self, kind: str, entry: Entry, provider: str) -> None:
        if not isinstance(entry, Entry):
            raise TypeError(f"register() expects a vapi_bench.Entry, got {type(entry).__name__}")
        entry = replace(entry, provider=provider)
        table = self.entries[kind]
        for key in (entry.name, *entry.aliases):
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
        raise UsageError(
            f"Unknown {_SINGULAR[kind]} '{name}'.{hint} Available: {available}. "
            f"(`vapi-bench list {kind}` shows them all.)"
        )


def _allowed(name: str) -> bool:
    allow = os.environ.get("VAPI_BENCH_PLUGINS")
    if not allow:
        return True
    return name in {p.strip() for p in allow.split(",") if p.strip()}


def build_registry(extra_plugins: Iterable[tuple[str, Any]] = ()) -> Registry:
    """Load every entry point of the `vapi_bench` group (plus `extra_plugins`) into a Registry."""
    registry = Registry()
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
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
            staged: list[Entry] = []
            try:
                impl.function(register=staged.append)
                for entry in staged:
                    registry.add(kind, entry, provider)
            except DuplicateNameError:
                raise
            except Exception as exc:
                registry.failures.append(PluginFailure(provider, f"register_{kind}", _one_line(exc)))
    return registry


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
            print(
                f"vapi-bench: plugin '{failure.plugin}' failed at {failure.stage} and was skipped: "
                f"{failure.error}",
                file=sys.stderr,
            )
    return _REGISTRY
