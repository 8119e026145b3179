"""Shared test settings: keep torch to one thread (the machine is shared and tiny models slow down)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VAPI_BENCH_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
