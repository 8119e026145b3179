"""--set across several methods: union validation, routing to every declaring method, per-plugin
qualifiers, and ambiguity across kinds (issue 14 item 2, issue 11 defect 2 and the markup bug)."""
import pytest

from vapi_bench.cli import main
from vapi_bench.errors import UsageError
from vapi_bench.params import Param, route_overrides
from vapi_bench.runner import RunRequest, Runner

TRAIN = (Param("lr", float, None, "lr"), Param("steps", int, None, "steps"), Param("temperature", float, 1.0, "t"))
PLUGINS = {
    "model": {"tiny-gru": (Param("hidden", int, 64, "width"),)},
    "method": {"none": (), "sft": TRAIN[:2], "va-pi": TRAIN + (Param("group_size", int, None, "G"),)},
    "task": {"shapes-fid": (Param("n", int, 5000, "samples"),)},
    "sampling": {"sampling": (Param("temperature", float, None, "sampling temperature"),)},
}


def test_a_key_of_several_methods_routes_to_each_and_plugin_qualifiers_pick_one():
    routed = route_overrides({"steps": "2", "va-pi.group_size": "4", "sft.lr": "3e-5", "method.lr": "1e-6",
                              "task.n": "16", "hidden": "8"}, PLUGINS)
    # later keys win, as --set does: method.lr is given after sft.lr
    assert routed["method"] == {"none": {}, "sft": {"steps": "2", "lr": "1e-6"},
                                "va-pi": {"steps": "2", "group_size": "4", "lr": "1e-6"}}
    assert routed["task"] == {"shapes-fid": {"n": "16"}} and routed["model"] == {"tiny-gru": {"hidden": "8"}}
    routed = route_overrides({"method.lr": "1e-6", "sft.lr": "3e-5"}, PLUGINS)
    assert routed["method"]["sft"] == {"lr": "3e-5"} and routed["method"]["va-pi"] == {"lr": "1e-6"}


def test_a_key_of_the_method_and_the_sampling_recipe_is_ambiguous():
    with pytest.raises(UsageError) as info:
        route_overrides({"temperature": "0.9"}, PLUGINS)
    text = str(info.value)
    assert "ambiguous" in text and "method.temperature" in text and "sampling.temperature" in text
    assert "va-pi" in text  # names who declares it
    routed = route_overrides({"sampling.temperature": "0.9", "va-pi.temperature": "1.5"}, PLUGINS)
    assert routed["sampling"]["sampling"] == {"temperature": "0.9"}
    assert routed["method"]["va-pi"] == {"temperature": "1.5"}


def test_qualifier_mistakes_are_named():
    with pytest.raises(UsageError, match=r"'vapi' is neither a kind .*Did you mean va-pi"):
        route_overrides({"vapi.group_size": "4"}, PLUGINS)
    with pytest.raises(UsageError, match=r"sft has no parameter 'group_size'"):
        route_overrides({"sft.group_size": "4"}, PLUGINS)
    with pytest.raises(UsageError, match=r"Unknown --set key 'stepz'.*Did you mean steps"):
        route_overrides({"stepz": "4"}, PLUGINS)


def _resolved(tmp_path, method, overrides):
    req = RunRequest(model="tiny-gru", method=method, task="shapes-fid", methods=("none", "sft", "va-pi"),
                     overrides=overrides, runs_dir=tmp_path / "runs", results_dir=tmp_path / "res", quiet=True)
    return Runner(req)._resolve()[3]


def test_the_runner_validates_against_every_method_of_the_run(tmp_path):
    overrides = {"steps": "2", "va-pi.group_size": "4", "sft.lr": "3e-5", "model.hidden": "8"}
    assert _resolved(tmp_path, "none", overrides).method_params == {}  # `none` ignores the others' keys
    sft = _resolved(tmp_path, "sft", overrides).method_params
    vapi = _resolved(tmp_path, "va-pi", overrides).method_params
    assert (sft["steps"], sft["lr"]) == (2, 3e-5) and "group_size" not in sft
    assert (vapi["steps"], vapi["group_size"], vapi["lr"]) == (2, 4, None)
    with pytest.raises(UsageError, match="sampling.temperature"):
        _resolved(tmp_path, "none", {"temperature": "0.9"})  # never silently retrains va-pi
    assert not (tmp_path / "runs").exists()


def test_cli_error_shows_the_group_headers(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["run", "-m", "fixture-palette", "-a", "none", "-a", "fixture-sft", "-t", "fixture-colour",
              "--set", "nope=1", "--runs-dir", str(tmp_path)])
    text = capsys.readouterr().err
    assert info.value.code == 2
    assert "[model] fixture-palette" in text and "[method] fixture-sft" in text and "[task] fixture-colour" in text
