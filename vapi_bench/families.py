"""Family defaults: the method hyper-parameters a model family recommends, and the check that a
method gets every one it needs before any stage runs.

A method parameter declared with `Param(..., from_family=True)` (default None) takes its value
from the `Family` registered (hook `register_families`) under the generator's `family`. A family
nobody declared is a clear error listing the known families and the keys to `--set`, never a
silent fallback to another model's recipe.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .errors import UsageError
from .interfaces import Family
from .params import Param


def family_keys(params: Sequence[Param]) -> list[str]:
    """Names of the parameters whose default comes from the generator's family."""
    return [p.name for p in params if p.from_family]


def find_family(generator: Any, registry: Any = None) -> Family | None:
    """The Family declared for `generator.family`, or for family + '-c2i' / '-t2i' by its
    conditioning (so a plugin may name one family for both kinds of model); None if unknown."""
    from .registry import get_registry

    table = (registry or get_registry()).entries["families"]
    family = getattr(generator, "family", "") or ""
    suffix = "c2i" if getattr(generator, "conditioning", "class") == "class" else "t2i"
    for key in (family, f"{family}-{suffix}"):
        if key and key.lower() in table:
            return table[key.lower()]
    return None


def apply_family_defaults(
    values: Mapping[str, Any], needed: Iterable[str], generator: Any, where: str, *,
    qualifier: str = "method", registry: Any = None,
) -> tuple[dict[str, Any], str | None]:
    """Fill every `needed` key whose value is None from the generator's family.

    Returns (values with defaults filled, the family used or None). Raises UsageError naming the
    generator, its family, the keys still missing (as `--set qualifier.key=...`) and the known
    families when the family is undeclared or lacks one of them.
    """
    family = find_family(generator, registry)
    defaults = family.defaults if family is not None else {}
    out = dict(values)
    missing = []
    for key in needed:
        if out.get(key) is not None:
            continue
        if key in defaults:
            out[key] = defaults[key]
        else:
            missing.append(key)
    if missing:
        raise _missing_defaults(generator, family, missing, where, qualifier, registry)
    return out, family.name if family is not None else None


def _missing_defaults(generator: Any, family: Family | None, missing: list[str], where: str, qualifier: str,
                      registry: Any) -> UsageError:
    from .registry import get_registry

    known = (registry or get_registry()).names("families")
    name = getattr(generator, "name", type(generator).__name__)
    sets = " ".join(f"--set {qualifier}.{k}=..." for k in missing)
    if family is None:
        cause = (f"model '{name}' is of family '{getattr(generator, 'family', '') or '(none)'}', for which no "
                 f"installed plugin declares method defaults")
    else:
        cause = f"family '{family.name}' (declared by plugin '{family.provider}') has no default for {', '.join(missing)}"
    return UsageError(
        f"{where}: {cause}. Set {'it' if len(missing) == 1 else 'them'} ({sets}), or declare the family's "
        f"defaults in the model's plugin (hook register_families, docs/plugins.md). "
        f"Known families: {', '.join(known) or 'none'}."
    )
