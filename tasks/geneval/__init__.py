"""GenEval and DrawBench (CLIP score + HPS) tasks (entry point `geneval`).

Modules, each with one job:
- prompts.py: GenEval's prompt generator (any vocabulary; reproduces the official 553 prompts)
- rules.py: GenEval's scoring rules on mmdet-2.x-form detections, and the summary
- layout.py: GenEval's sample-folder layout; images.py: reading generated images
- detectors.py, mask2former.py, mmdet_backend.py: detector backends
- clip_models.py, colour.py: CLIP loading and GenEval's colour classifier
- task.py: the `geneval` task; drawbench.py: the `drawbench` task (alias `drawbench-clip`)

Heavy modules are imported only when a task is built, so listing plugins stays fast.
"""
from __future__ import annotations

from typing import Any

from vapi_bench.hookspecs import hookimpl
from vapi_bench.interfaces import Entry


def _build_geneval(**params: Any) -> Any:
    from .task import GenEvalTask

    return GenEvalTask(**params)


def _build_drawbench(**params: Any) -> Any:
    from .drawbench import DrawBenchTask

    return DrawBenchTask(**params)


@hookimpl
def register_tasks(register: Any) -> None:
    from .drawbench import DRAWBENCH_PARAMS
    from .task import GENEVAL_PARAMS

    register(
        Entry(
            "geneval",
            factory=_build_geneval,
            summary="GenEval: 553 compositional prompts x 4 images, Mask2Former + CLIP rules; overall = mean of 6 tags",
            params=GENEVAL_PARAMS,
        )
    )
    register(
        Entry(
            "drawbench",
            factory=_build_drawbench,
            summary="DrawBench prompts: CLIP score max(100 cos, 0) (OpenAI ViT-L/14) and HPS v2.1 (100 cos), side by side",
            params=DRAWBENCH_PARAMS,
            aliases=("drawbench-clip",),
        )
    )
