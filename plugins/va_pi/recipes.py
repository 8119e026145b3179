"""VA-π's own recipe values, lab variants and ablations.

The post-training budget (lr, steps, images per step, the perceptual scorer) is the model
family's, declared by each model's plugin, so every method of a comparison gets the same one
(vapi_bench.training.recipes). What VA-π adds is its own: G, β and the advantage clip for every
family (paper Table 7, the same for LlamaGen and Janus-Pro) and the context noise ξ per family
(0 for class-to-image, 0.5 for LlamaGen-XL T2I, 0.95 for Janus-Pro: paper §4 / Table 7; the
official Janus script uses 1.0; docs/reference/vapi.md §2).
"""
from __future__ import annotations

from vapi_bench.interfaces import Recipe
from vapi_bench.training import ANY_FAMILY

SOURCE = "VA-π paper Table 7 and the official launch scripts (docs/reference/vapi.md §2)"

#: G, β and the advantage clip: the method's, for every family
METHOD_WIDE = {"group_size": 8, "beta": 0.1, "adv_clip": 5.0}

#: context noise ξ per family (the shapes world follows the paper's c2i / t2i split)
CONTEXT_NOISE = {
    "llamagen-c2i": 0.0, "llamagen-t2i": 0.5, "janus-pro": 0.95,
    "var": 0.0,  # class-to-image, as LlamaGen C2I (VA-π was not run on VAR: docs/var.md)
    "shapes-c2i": 0.0, "shapes-c2i-small": 0.0, "shapes-c2i-small-ls": 0.0, "shapes-var": 0.0,
    "shapes-t2i": 0.5, "shapes-t2i-ls": 0.5,
}


def recipes() -> list[Recipe]:
    """VA-π's recipes as registry entries (hook `register_recipes`)."""
    return [Recipe("va-pi", ANY_FAMILY, dict(METHOD_WIDE), source=SOURCE)] + [
        Recipe("va-pi", family, {"xi": xi}, source=SOURCE) for family, xi in CONTEXT_NOISE.items()
    ]


#: Table 4 of the paper as lab variants (`lab tune --methods va-pi:reward-only`); "both terms" is va-pi
VARIANTS: dict[str, dict[str, str]] = {
    "reward-only": {"beta": "0"},
    "prior-only": {"w_mse": "0", "w_perceptual": "0"},
}

#: Table 4 (reward terms), Fig. 4 (β, CE vs KL) and Table 5 (ξ) as fixed settings (`lab ablate NAME`)
ABLATIONS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "reward": [
        ("perceptual only", {"w_mse": "0", "w_perceptual": "1", "beta": "0"}),
        ("mse + perceptual", {"w_mse": "1", "w_perceptual": "1", "beta": "0"}),
        ("prior (CE) only", {"w_mse": "0", "w_perceptual": "0", "beta": "0.1"}),
        ("mse + perceptual + prior", {"w_mse": "1", "w_perceptual": "1", "beta": "0.1"}),
    ],
    "beta": [
        *[(f"CE beta={b}", {"beta": b}) for b in ("0.01", "0.1", "1.0")],
        *[(f"KL beta={b}", {"beta": "0", "use_kl": "true", "kl_coef": b}) for b in ("0.01", "0.1", "1.0")],
    ],
    "xi": [(f"xi={x}", {"xi": x}) for x in ("0", "0.25", "0.5", "0.75", "0.95")],
}
