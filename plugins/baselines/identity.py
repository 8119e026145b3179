"""`none`: the base model. The runner skips the fine-tune stage for identity methods."""
from __future__ import annotations

from typing import Any

from vapi_bench.interfaces import Generator, Method, StageContext


class Identity(Method):
    is_identity = True

    def finetune(self, generator: Generator, dataset: Any, ctx: StageContext) -> dict[str, Any]:
        return {"steps": 0}
