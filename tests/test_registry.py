"""Plugin loading: entry points, fail-soft, allow-list, misspelled hooks, collisions, lookups."""
import importlib.metadata

import pytest

from vapi_bench import Entry, hookimpl
from vapi_bench.errors import UsageError
from vapi_bench.registry import DuplicateNameError, build_registry


class _Plugin:
    """A plugin object registering one generator name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def register_generators(self, register):
        register(Entry(self.name, factory=lambda **kw: None, summary="test"))


class _Raising:
    @hookimpl
    def register_tasks(self, register):
        raise RuntimeError("boom in registration")


class _Misspelled:
    @hookimpl
    def register_generatorz(self, register):  # typo on purpose
        pass


def test_third_party_entry_point_is_loaded_like_builtins():
    reg = build_registry()
    entry = reg.get("generators", "fixture-palette")
    assert entry.provider == "fixture"
    assert reg.get("tasks", "fixture-colour").provider == "fixture"
    assert "fixture" in reg.plugins


def test_lookup_is_case_insensitive_and_suggests_near_names():
    reg = build_registry()
    assert reg.get("generators", "FIXTURE-Palette").name == "fixture-palette"
    with pytest.raises(UsageError, match="Did you mean: fixture-palette"):
        reg.get("generators", "fixture-palete")


def test_registration_error_is_reported_and_skipped():
    reg = build_registry(extra_plugins=[("bad", _Raising()), ("good", _Plugin("good-model"))])
    assert reg.get("generators", "good-model").provider == "good"
    failures = [f for f in reg.failures if f.plugin == "bad"]
    assert len(failures) == 1 and "boom in registration" in failures[0].error


def test_import_error_is_reported_and_skipped(monkeypatch):
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz_123", group="vapi_bench")
    real = importlib.metadata.entry_points

    def fake_entry_points(group):
        return list(real(group=group)) + [broken]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = build_registry()
    assert [f.plugin for f in reg.failures if f.plugin == "broken"] == ["broken"]
    assert "no_such_module_xyz_123" in [f for f in reg.failures if f.plugin == "broken"][0].error
    assert reg.get("generators", "fixture-palette")  # the rest still works


def test_misspelled_hook_is_an_error_naming_it():
    reg = build_registry(extra_plugins=[("typo", _Misspelled())])
    failure = [f for f in reg.failures if f.plugin == "typo"]
    assert failure and "register_generatorz" in failure[0].error


def test_duplicate_names_name_both_providers():
    with pytest.raises(DuplicateNameError) as info:
        build_registry(extra_plugins=[("first", _Plugin("same")), ("second", _Plugin("SAME"))])
    assert "first" in str(info.value) and "second" in str(info.value)


def test_allow_list_env_var(monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_PLUGINS", "fixture")
    reg = build_registry()
    assert set(reg.plugins) == {"fixture"}
    assert reg.names("generators") == ["fixture-palette"]
