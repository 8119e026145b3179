"""Typed --set validation: coercion, unknown keys with the valid list, routing by plugin."""
import pytest

from vapi_bench.errors import UsageError
from vapi_bench.params import Param, parse_set_options, resolve_params, split_overrides

PARAMS = (
    Param("lr", float, 1e-6, "learning rate"),
    Param("steps", int, 100, "optimizer steps"),
    Param("use_kl", bool, False, "add the k3 KL"),
    Param("mode", str, "shared", "update mode", choices=("shared", "per-row")),
    Param("betas", tuple, (0.9, 0.999), "AdamW betas"),
)


def test_defaults_and_coercion():
    values = resolve_params(PARAMS, {"lr": "3e-4", "steps": "7", "use_kl": "yes", "betas": "0.8,0.95"}, "m")
    assert values == {"lr": 3e-4, "steps": 7, "use_kl": True, "mode": "shared", "betas": (0.8, 0.95)}


@pytest.mark.parametrize("key,value", [("steps", "1.5"), ("use_kl", "maybe"), ("mode", "both"), ("lr", "fast")])
def test_bad_values_name_the_key_and_type(key, value):
    with pytest.raises(UsageError, match=key):
        resolve_params(PARAMS, {key: value}, "method 'x'")


def test_unknown_key_lists_valid_keys_with_types_and_defaults():
    with pytest.raises(UsageError) as info:
        resolve_params(PARAMS, {"step": "3"}, "method 'x'")
    text = str(info.value)
    assert "Did you mean steps" in text
    assert "lr (float, default 1e-06)" in text and "mode (str, default 'shared') one of" in text


def test_split_overrides_routes_bare_and_qualified_keys():
    groups = {"method": PARAMS, "task": (Param("n", int, 10, "samples"),)}
    routed = split_overrides({"lr": "1", "task.n": "5"}, groups)
    assert routed == {"method": {"lr": "1"}, "task": {"n": "5"}}
    with pytest.raises(UsageError, match=r"\[task\]"):
        split_overrides({"nn": "5"}, groups)


def test_parse_set_options():
    assert parse_set_options(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(UsageError, match="key=value"):
        parse_set_options(["novalue"])
