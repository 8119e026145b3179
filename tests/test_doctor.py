"""`vapi-bench doctor`: every optional piece named with the commands that need it, no hard dependency."""
from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

from rich.console import Console

from vapi_bench import doctor

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()


def test_every_optional_extra_is_named_and_no_hard_dependency_is():
    listed = {piece.name.lower() for piece in doctor.OPTIONAL}
    hard = {_name(r) for r in _project()["dependencies"]}
    extras = {_name(r) for group, reqs in _project()["optional-dependencies"].items() if group != "dev"
              for r in reqs if _name(r) not in {"sentencepiece", "ftfy", "mmengine"}}
    assert extras <= listed, extras - listed
    assert not (hard & listed) and {"chromium", "tensorboard", "wandb", "datasets", "transformers"} <= listed
    assert all(piece.needed_by and piece.how for piece in doctor.OPTIONAL)


def test_a_missing_piece_says_which_commands_need_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    console = Console(width=200, record=True, color_system=None)
    doctor.report(console)
    lines = console.export_text().splitlines()
    wandb = next(line for line in lines if line.startswith("│ wandb"))
    assert "missing" in wandb and "logger=wandb" in wandb and "vapi-bench[wandb]" in wandb
    chromium = next(line for line in lines if line.startswith("│ Chromium"))
    assert "missing" in chromium and "apt-get install -y chromium" in chromium
    assert not any(line.startswith(("│ lpips", "│ torch-fidelity", "│ clean-fid")) for line in lines)
