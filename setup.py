"""Package discovery for the DESIGN.md layout: plugins/ and tasks/ ship as vapi_bench.plugins / vapi_bench.tasks."""
from setuptools import find_packages, setup


def _mapped(folder: str, prefix: str) -> list[str]:
    return [prefix] + [f"{prefix}.{name}" for name in find_packages(folder)]


setup(
    packages=find_packages(include=["vapi_bench", "vapi_bench.*"])
    + _mapped("plugins", "vapi_bench.plugins")
    + _mapped("tasks", "vapi_bench.tasks"),
)
