"""Typed, documented plugin parameters and `--set key=value` validation.

Every generator, method, task, scorer and dataset declares its parameters as `Param`s. The CLI
validates user overrides against them so that a typo lists the valid keys with types and defaults
instead of failing deep inside a training loop.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a plugin.

    `type` is one of bool, int, float, str (or `tuple` for comma-separated floats/ints given as a
    tuple default). `choices` restricts string values. `affects` is informational.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        extra = f" one of {list(self.choices)}" if self.choices else ""
        return f"{self.name} ({self.type.__name__}, default {self.default!r}){extra}: {self.help}"

    def coerce(self, value: Any, where: str) -> Any:
        """Convert a CLI string (or Python value) to this parameter's type, or raise UsageError."""
        try:
            out = _coerce(self.type, value, self.default)
        except (TypeError, ValueError):
            raise UsageError(
                f"{where}: {self.name}={value!r} is not a valid {self.type.__name__}. "
                f"Expected {self.describe()}"
            ) from None
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{where}: {self.name}={value!r} must be one of {list(self.choices)}.")
        return out


def _coerce(kind: type, value: Any, default: Any) -> Any:
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    if kind is float:
        return float(value)
    if kind is tuple:
        if isinstance(value, (tuple, list)):
            items = list(value)
        else:
            items = [v for v in str(value).split(",") if v.strip()]
        elem = type(default[0]) if default else float
        return tuple(elem(v) for v in items)
    if kind is str:
        return str(value)
    return kind(value)


def resolve_params(
    declared: Sequence[Param], overrides: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    """Return {name: value} with defaults filled in and overrides validated.

    Raises UsageError naming the unknown key, the nearest valid keys, and every valid key with its
    type and default.
    """
    by_name = {p.name: p for p in declared}
    values = {p.name: p.default for p in declared}
    for key, raw in (overrides or {}).items():
        if key not in by_name:
            near = difflib.get_close_matches(key, list(by_name), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            listing = "\n  ".join(p.describe() for p in declared) or "(none)"
            raise UsageError(f"{where} has no parameter '{key}'.{hint}\nValid keys:\n  {listing}")
        values[key] = by_name[key].coerce(raw, where)
    return values


def parse_set_options(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated `--set key=value` strings into a dict (later wins)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}.")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def split_overrides(
    overrides: Mapping[str, Any], groups: Mapping[str, Sequence[Param]]
) -> dict[str, dict[str, Any]]:
    """Route `--set` keys to the plugin that declares them.

    A key may be qualified (`method.lr=1e-6`) or bare; a bare key goes to every group declaring
    it. Unknown keys raise UsageError listing all valid keys per group.
    """
    routed: dict[str, dict[str, Any]] = {g: {} for g in groups}
    for key, value in overrides.items():
        if "." in key and key.split(".", 1)[0] in groups:
            group, name = key.split(".", 1)
            routed[group][name] = value
            continue
        owners = [g for g, ps in groups.items() if any(p.name == key for p in ps)]
        if not owners:
            every = [f"{g}.{p.name}" for g, ps in groups.items() for p in ps]
            bare = [p.name for ps in groups.values() for p in ps]
            near = difflib.get_close_matches(key, bare + every, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            listing = "\n".join(
                f"  [{g}]\n    " + ("\n    ".join(p.describe() for p in ps) or "(none)")
                for g, ps in groups.items()
            )
            raise UsageError(f"Unknown --set key '{key}'.{hint}\nValid keys:\n{listing}")
        for g in owners:
            routed[g][key] = value
    return routed
