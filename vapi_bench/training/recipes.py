"""Recipes: the hyper-parameters a method gets on a model family, looked up by (family, method).

A method parameter declared with `Param(..., from_recipe=True)` (default None) takes its value, in
this order, from:

1. the user (`--set`);
2. the method's own recipe for the generator's family (`Recipe`, hook `register_recipes`, declared
   by the method's plugin: VA-π's ξ per family; AR-GRPO's and CCA's whole tables);
3. the family's shared defaults (`Family`, hook `register_families`, declared by the MODEL's plugin:
   the post-training budget every method of the comparison gets, lr, steps, images per step, and
   the perceptual scorer suited to its images);
4. the method's recipe for every family (`Recipe(method, ANY_FAMILY, ...)`: values that belong to
   the method, not the model, such as VA-π's group size G and β);
5. the engine's defaults for engine knobs (`ENGINE_DEFAULTS`: micro-batch, checkpoint interval,
   decode chunk), which change speed and memory, not what is computed.

The runner resolves every method of a run once, before any stage (`resolve_run_recipes`); a key
nothing fills is ONE error listing every missing key of every method, with the values of the
closest known family as an example, never a silent fallback to another model's recipe.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence

from ..errors import UsageError
from ..interfaces import Family, Recipe
from ..params import Param

#: the family name of a method's recipe for every family (its method-wide values)
ANY_FAMILY = "*"

#: knobs of the training engine, with defaults that need no science (a family may override them)
ENGINE_DEFAULTS: Mapping[str, Any] = {"micro_batch": 1, "ckpt_every": 25, "decode_chunk": 8}

#: The paper's post-training learning rate as a fraction of the learning rate pre-training ended at:
#: LlamaGen pre-trains at a constant 1e-4 and VA-π post-trains it at 1e-6 (paper Table 7).
LLAMAGEN_PRETRAIN_LR = 1e-4
PAPER_LR_RATIO = 1e-6 / LLAMAGEN_PRETRAIN_LR


def post_training_lr(pretraining_final_lr: float) -> float:
    """The paper's ratio applied to the learning rate where pre-training ENDED (a cosine schedule
    ends at lr x min_lr_ratio, not at its peak): the rule a family without a published recipe follows."""
    return float(f"{pretraining_final_lr * PAPER_LR_RATIO:.6g}")  # 3e-06, not 2.9999999999999997e-06


def recipe_keys(params: Sequence[Param]) -> list[str]:
    """Names of the parameters whose default comes from the recipe lookup."""
    return [p.name for p in params if p.from_recipe]


def _family_keys(generator: Any) -> tuple[str, ...]:
    """The names a generator's family is looked up by: its `family`, then family + '-c2i' / '-t2i'
    by its conditioning (so a plugin may name one family for both kinds of model)."""
    family = getattr(generator, "family", "") or ""
    suffix = "c2i" if getattr(generator, "conditioning", "class") == "class" else "t2i"
    return tuple(k.lower() for k in (family, f"{family}-{suffix}") if family)


def _registry(registry: Any) -> Any:
    from ..registry import get_registry

    return registry or get_registry()


def find_family(generator: Any, registry: Any = None) -> Family | None:
    """The Family declared for the generator, or None."""
    table = _registry(registry).entries["families"]
    return next((table[k] for k in _family_keys(generator) if k in table), None)


def find_recipe(method: str, generator: Any, registry: Any = None, *, any_family: bool = False) -> Recipe | None:
    """The method's own Recipe for the generator's family (any_family: its recipe for every
    family, `ANY_FAMILY`), or None."""
    table = _registry(registry).entries["recipes"]
    keys = (ANY_FAMILY,) if any_family else _family_keys(generator)
    return next((table[f"{method.lower()}@{k}"] for k in keys if f"{method.lower()}@{k}" in table), None)


def recipe_defaults(method: str, generator: Any, registry: Any = None) -> tuple[dict[str, Any], str | None]:
    """Everything the lookup offers `method` on this generator (engine < the method's values for
    every family < the family's < the method's for this family), and the name of the family recipe
    used (None when neither the family nor the method knows this family)."""
    family, own = find_family(generator, registry), find_recipe(method, generator, registry)
    general = find_recipe(method, generator, registry, any_family=True)
    values = {**ENGINE_DEFAULTS, **(general.values if general else {}), **(family.defaults if family else {}),
              **(own.values if own else {})}
    source = own.family if own is not None else family.name if family is not None else None
    return values, source


def resolve_recipe(
    method: str, declared: Sequence[Param], values: Mapping[str, Any], generator: Any, *,
    precision: str, registry: Any = None,
) -> tuple[dict[str, Any], list[str], str | None]:
    """Fill every recipe key left None. Returns (values, keys still missing, recipe source);
    the run-level settings follow the run: `precision` None -> the run's, `dataset` None -> the
    generator's default."""
    offered, source = recipe_defaults(method, generator, registry)
    out, missing = dict(values), []
    for param in (p for p in declared if p.from_recipe):
        if out.get(param.name) is not None:
            continue
        if param.name in offered:  # a recipe's value gets the same type and range checks as a --set one
            out[param.name] = param.coerce(offered[param.name], f"method '{method}' (recipe of '{source}')")
        else:
            missing.append(param.name)
    if "precision" in out and out["precision"] is None:
        out["precision"] = precision
    if "dataset" in out and out["dataset"] is None:
        out["dataset"] = getattr(generator, "default_dataset", "") or None
    return out, missing, source


def resolve_run_recipes(
    methods: Mapping[str, tuple[Sequence[Param], Mapping[str, Any]]], generator: Any, *, precision: str,
    registry: Any = None,
) -> dict[str, tuple[dict[str, Any], str]]:
    """Resolve every method of a run before any stage. Returns {method: (values, recipe source)},
    the source being the family recipe used or "set explicitly". Raises ONE UsageError naming
    every missing key of every method, with an example family's values."""
    resolved, missing = {}, {}
    for name, (declared, values) in methods.items():
        out, lacking, source = resolve_recipe(name, declared, values, generator, precision=precision,
                                              registry=registry)
        resolved[name] = (out, source or "set explicitly")
        if lacking:
            missing[name] = lacking
    if missing:
        raise _missing_recipes(generator, missing, registry)
    return resolved


def resolve_method_params(method: str, values: Mapping[str, Any], generator: Any, *, precision: str = "fp32",
                          registry: Any = None) -> dict[str, Any]:
    """One registered method's values with every recipe key filled: what the runner hands the
    method's factory (for a method built outside a run, e.g. a notebook or a test)."""
    return resolve_outside_a_run(method, values, generator, precision, registry)[0]


def resolve_outside_a_run(method: str, values: Mapping[str, Any], generator: Any, precision: str,
                          registry: Any = None) -> tuple[dict[str, Any], str]:
    """`resolve_run_recipes` for one registered method: (values, recipe source)."""
    entry = _registry(registry).get("methods", method)
    return resolve_run_recipes({entry.name: (entry.params, values)}, generator, precision=precision,
                               registry=registry)[entry.name]


def _missing_recipes(generator: Any, missing: Mapping[str, list[str]], registry: Any) -> UsageError:
    reg = _registry(registry)
    name = getattr(generator, "name", type(generator).__name__)
    family = getattr(generator, "family", "") or "(none)"
    known = reg.names("families")
    lists = "; ".join(f"{method}: {', '.join(keys)}" for method, keys in missing.items())
    example = _closest_family(generator, known)
    hint = ""
    if example is not None:
        probe = type("Probe", (), {"family": example, "conditioning": getattr(generator, "conditioning", "class")})()
        offered = {method: recipe_defaults(method, probe, reg)[0] for method in missing}
        sets: dict[str, None] = {}
        for method, keys in missing.items():
            for key in (k for k in keys if k in offered[method]):
                values = {repr(offered[m][key]) for m, ks in missing.items() if key in ks and key in offered[m]}
                name = key if len(values) == 1 else f"{method}.{key}"  # one --set reaches every method
                sets[f"--set {name}={offered[method][key]}"] = None
        if sets:
            hint = f" For example, family '{example}' uses: {' '.join(sets)}."
    found = find_family(generator, reg)
    cause = (f"family '{found.name}' (plugin '{found.provider}') and the methods' own recipes leave these keys "
             f"without a value" if found is not None else
             f"model '{name}' is of family '{family}', for which no installed plugin declares a recipe")
    return UsageError(
        f"{cause}: {lists}. Set them with --set, or declare the family in the model's plugin (hook "
        f"register_families; a method's own values: register_recipes; docs/plugins.md).{hint} "
        f"Known families: {', '.join(known) or 'none'}."
    )


def _closest_family(generator: Any, known: Iterable[str]) -> str | None:
    """The declared family whose name is closest to the generator's (else the first of its
    conditioning, else the first): the example an error shows."""
    known = list(known)
    if not known:
        return None
    family = (getattr(generator, "family", "") or "").lower()
    near = difflib.get_close_matches(family, known, n=1, cutoff=0.3) if family else []
    if near:
        return near[0]
    suffix = "c2i" if getattr(generator, "conditioning", "class") == "class" else "t2i"
    return next((k for k in known if k.endswith(suffix)), known[0])


def recipe_lr(method: str, generator: Any, registry: Any = None) -> float:
    """The learning rate the lookup gives `method` on this generator (the centre of `lab tune`'s
    grid). Raises UsageError when nothing declares one (then --lr-center says where the grid goes)."""
    offered, _ = recipe_defaults(method, generator, registry)
    if "lr" not in offered:
        raise UsageError(f"no recipe lr for model '{getattr(generator, 'name', '?')}' (family "
                         f"'{getattr(generator, 'family', '')}') and method '{method}'; give --lr-center.")
    return float(offered["lr"])
