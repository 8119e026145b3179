"""Shared test settings: keep torch to one thread (the machine is shared and tiny models slow down)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VAPI_BENCH_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

#: the folder options each command takes, pointed at tmp_path by the `cli` fixture
_FOLDERS = {"run": ("runs", "res"), "sample": ("runs", "res"), "score": ("runs", "res"), "finetune": ("runs",),
            "leaderboard": ("res",), "report": ("runs", "res", "out")}
_FLAGS = {"runs": "--runs-dir", "res": "--results-dir", "out": "--out"}


@pytest.fixture
def cli(capsys, tmp_path):
    """cli(*args, dirs=True) -> (exit code, printed text), the command run as a user would; its
    --runs-dir / --results-dir (and report's --out) in tmp_path unless dirs=False."""
    from vapi_bench.cli import main

    def run(*args, dirs=True):
        extra = [item for folder in (_FOLDERS.get(args[0], ()) if dirs else ())
                 for item in (_FLAGS[folder], str(tmp_path / folder))]
        with pytest.raises(SystemExit) as info:
            main([*args, *extra])
            raise SystemExit(0)
        captured = capsys.readouterr()
        return info.value.code, captured.out + captured.err
    return run
