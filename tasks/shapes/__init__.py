"""The shapes world's tasks (entry point `shapes_tasks`): `shapes-fid` and `shapes-geneval`.

Task modules are imported when the hook runs, not when this package is imported, so a broken
optional dependency surfaces as a skipped plugin with its reason rather than a crash.
"""
from __future__ import annotations

from typing import Any

from vapi_bench.hookspecs import hookimpl
from vapi_bench.interfaces import Entry


@hookimpl
def register_tasks(register: Any) -> None:
    from .fid_task import FID_PARAMS, ShapesFIDTask
    from .geneval_task import GENEVAL_PARAMS, ShapesGenEvalTask

    register(Entry(
        "shapes-fid",
        factory=ShapesFIDTask,
        summary="shapes c2i: FID / IS / KID / precision / recall / class accuracy with the shapes feature net, "
                "without and with CFG",
        params=FID_PARAMS,
    ))
    register(Entry(
        "shapes-geneval",
        factory=ShapesGenEvalTask,
        summary="GenEval's prompts and rules over the shapes vocabulary, exact classical detector; "
                "overall = mean of the tags",
        params=GENEVAL_PARAMS,
    ))
