"""Typed, documented plugin parameters and `--set key=value` validation.

Every generator, method, task, scorer and dataset declares its parameters as `Param`s. The CLI
validates user overrides against them so that a typo lists the valid keys with types and defaults
instead of failing deep inside a training loop.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import UsageError, shorten

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a plugin.

    `type` is one of bool, int, float, str (or `tuple` for comma-separated floats/ints given as a
    tuple default). `choices` restricts string values. `from_recipe` marks a method parameter whose
    default (None) comes from the recipe lookup by (family, method) (vapi_bench.training.recipes);
    the runner resolves it before any stage runs, or stops naming every key nothing fills.
    `keyed_at_default=False` marks a parameter added after runs were recorded whose default
    reproduces the old behaviour: at its default it is left out of the run's recorded parameters
    (and so of its stage keys and leaderboard identity), and those runs keep their keys.

    The range is declared, not coded in each plugin, so that a bad number stops the command before
    any stage runs instead of being trained on and cached as a result (a negative clipping norm is
    gradient ascent): `minimum` / `maximum` are inclusive bounds, `exclusive_minimum` /
    `exclusive_maximum` strict ones, `length` the number of items of a tuple; the bounds apply to
    each item of a tuple. Every float (and every item of a float tuple) must also be finite unless
    `allow_nonfinite=True` says that inf or nan means something for this parameter.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    from_recipe: bool = False
    keyed_at_default: bool = True
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None
    length: int | None = None
    allow_nonfinite: bool = False

    def describe(self) -> str:
        extra = f" one of {list(self.choices)}" if self.choices else ""
        bounds = self.range_words()
        extra += f" {bounds}" if bounds else ""
        default = "default: the recipe's" if self.from_recipe else f"default {self.default!r}"
        return f"{self.name} ({self.type.__name__}, {default}){extra}: {self.help}"

    def range_words(self) -> str:
        """The declared range as the error messages say it: '> 0', 'in [0, 1)', '' when unbounded."""
        low = _bound(self.minimum, self.exclusive_minimum, "[", "(")
        high = _bound(self.maximum, self.exclusive_maximum, "]", ")")
        if low and high:
            return f"in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
        if low:
            return f"{'>=' if low[1] == '[' else '>'} {_number(low[0])}"
        if high:
            return f"{'<=' if high[1] == ']' else '<'} {_number(high[0])}"
        return ""

    def coerce(self, value: Any, where: str) -> Any:
        """Convert a CLI string (or Python value) to this parameter's type, or raise UsageError."""
        given = f"{self.name}={repr(shorten(value)) if isinstance(value, str) else shorten(repr(value))}"
        try:
            out = _coerce(self.type, value, self.default)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(
                f"{where}: {given} is not a valid {self.type.__name__}. Expected {self.describe()}"
            ) from None
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{where}: {given} must be one of {list(self.choices)}.")
        if out is not None:
            self._check_range(out, f"{where}: {given} is out of range")
        return out

    def _check_range(self, value: Any, context: str) -> None:
        """Raise UsageError unless `value` (each item of a tuple) is finite and within the declared range."""
        items = value if isinstance(value, tuple) else (value,)
        if self.length is not None and isinstance(value, tuple) and len(value) != self.length:
            raise UsageError(f"{context}: {self.name} must have {self.length} values, got {len(value)}.")
        numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        words = self.range_words()
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number) and not self.allow_nonfinite:
                raise UsageError(f"{context}: {self.name} must be {words + ' and ' if words else ''}finite.")
            if words and not self._within(number):
                raise UsageError(f"{context}: {self.name} must be {words}.")

    def _within(self, number: float) -> bool:
        return ((self.minimum is None or number >= self.minimum)
                and (self.exclusive_minimum is None or number > self.exclusive_minimum)
                and (self.maximum is None or number <= self.maximum)
                and (self.exclusive_maximum is None or number < self.exclusive_maximum))


def _number(value: float) -> str:
    """A bound as a person writes it: 1000000 and 0, not 1e+06 and 0.0."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


def _bound(inclusive: float | None, exclusive: float | None, closed: str, open_: str) -> tuple[float, str] | None:
    """(value, bracket) of one side of a range; an exclusive bound wins if both are declared."""
    if exclusive is not None:
        return exclusive, open_
    if inclusive is not None:
        return inclusive, closed
    return None


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


def keyed_params(declared: Sequence[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved values that identify a run: all of them except parameters declared with
    keyed_at_default=False that hold their default (see Param)."""
    unkeyed = {p.name: p.default for p in declared if not p.keyed_at_default}
    return {k: v for k, v in values.items() if k not in unkeyed or v != unkeyed[k]}


def parse_set_options(items: Iterable[str]) -> dict[str, str]:
    """Parse repeated `--set key=value` strings into a dict (later wins)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}.")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def route_overrides(
    overrides: Mapping[str, Any], plugins: Mapping[str, Mapping[str, Sequence[Param]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Route `--set` keys to the plugins of a run that declare them.

    `plugins` maps a kind (model, method, task, sampling) to {plugin name: its params}; the result
    maps kind -> plugin name -> {key: value}. A key is
    - qualified by a kind (`method.lr`): it goes to every plugin of that kind declaring it, so
      with several methods each one that has `lr` gets it;
    - qualified by a plugin name (`va-pi.group_size`, `sft.lr`): it goes to that plugin only;
    - bare (`steps`): it goes to every plugin declaring it, provided they are all of one kind.
      A bare key declared by plugins of different kinds (`temperature`: the sampling recipe and
      VA-π's training temperature) is ambiguous and raises UsageError naming the qualified forms,
      because guessing would silently change a stage the user did not mean to change.
    A key nobody declares raises UsageError listing every valid key, per plugin.
    """
    routed = {kind: {name: {} for name in named} for kind, named in plugins.items()}
    for key, value in overrides.items():
        qualifier, _, name = key.rpartition(".")
        if qualifier:
            targets = _qualified_targets(qualifier, name, plugins, key)
        else:
            targets = [(k, n) for k, named in plugins.items() for n, ps in named.items() if _declares(ps, key)]
            kinds = list(dict.fromkeys(k for k, _ in targets))
            if len(kinds) > 1:
                candidates = ", ".join(f"{k}.{key}" for k in kinds)
                owners = ", ".join(_owner(k, [n for kk, n in targets if kk == k]) for k in kinds)
                raise UsageError(
                    f"--set {key} is ambiguous: it is declared by more than one part of this run ({owners}). "
                    f"Qualify it: {candidates}."
                )
            if not targets:
                raise UsageError(f"Unknown --set key '{key}'.{_near(key, plugins)}\nValid keys:\n{_listing(plugins)}")
        for kind, plugin in targets:
            routed[kind][plugin][name] = value
    return routed


def _owner(kind: str, names: list[str]) -> str:
    named = [n for n in names if n != kind]
    return f"{kind} ({', '.join(named)})" if named else kind


def _declares(params: Sequence[Param], key: str) -> bool:
    return any(p.name == key for p in params)


def _qualified_targets(qualifier: str, key: str, plugins: Mapping[str, Mapping[str, Sequence[Param]]],
                       given: str) -> list[tuple[str, str]]:
    if qualifier in plugins:
        scope = [(qualifier, n) for n in plugins[qualifier]]
        if not scope:
            raise UsageError(f"--set {given}: this command has no {qualifier}.")
    else:
        scope = [(k, n) for k, named in plugins.items() for n in named if n.lower() == qualifier.lower()]
    if not scope:
        names = [n for named in plugins.values() for n in named if n not in plugins]
        near = difflib.get_close_matches(qualifier, list(plugins) + names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise UsageError(
            f"--set {given}: '{qualifier}' is neither a kind ({', '.join(_kinds(plugins))}) nor a plugin of this run "
            f"({', '.join(dict.fromkeys(names)) or 'none'}).{hint}"
        )
    targets = [(k, n) for k, n in scope if _declares(plugins[k][n], key)]
    if not targets:
        subset = {k: {n: plugins[k][n] for kk, n in scope if kk == k} for k in dict.fromkeys(k for k, _ in scope)}
        raise UsageError(f"Unknown --set key '{given}': {qualifier} has no parameter '{key}'.{_near(key, subset)}"
                         f"\nValid keys:\n{_listing(subset)}")
    return targets


def _kinds(plugins: Mapping[str, Any]) -> list[str]:
    """The kind qualifiers to suggest (a run's `dataset.` keys are routed once the dataset is known)."""
    return list(plugins) + (["dataset"] if "method" in plugins and "dataset" not in plugins else [])


def _near(key: str, plugins: Mapping[str, Mapping[str, Sequence[Param]]]) -> str:
    bare = [p.name for named in plugins.values() for ps in named.values() for p in ps]
    near = difflib.get_close_matches(key, list(dict.fromkeys(bare)), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(near)}?" if near else ""


def _listing(plugins: Mapping[str, Mapping[str, Sequence[Param]]]) -> str:
    """Every valid key, under a `[kind] plugin` header per plugin (plain text: the CLI escapes it)."""
    blocks = []
    for kind, named in plugins.items():
        for name, params in named.items():
            header = f"  [{kind}]" if name == kind else f"  [{kind}] {name}"
            blocks.append(header + "\n    " + ("\n    ".join(p.describe() for p in params) or "(none)"))
    return "\n".join(blocks)


def split_overrides(
    overrides: Mapping[str, Any], groups: Mapping[str, Sequence[Param]]
) -> dict[str, dict[str, Any]]:
    """`route_overrides` for one plugin per group: {group: {key: value}} (bare or `group.key`)."""
    routed = route_overrides(overrides, {g: {g: ps} for g, ps in groups.items()})
    return {g: routed[g][g] for g in groups}
