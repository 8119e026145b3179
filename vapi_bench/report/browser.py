"""Headless Chromium: render a report page to a screenshot, or dump its DOM after the page's JS ran.

Used by the browser test and by scripts/report_screenshot.py (README's screenshot), so both show
what a reader's browser shows. Chromium is Debian's `chromium` package (or Google's build).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import VapiError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: flags that let Chromium run headless as root in a container, without a GPU or a user profile
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--virtual-time-budget=5000"]


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise VapiError("Chromium is not installed (Debian: apt-get install -y chromium).")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                                text=True, timeout=timeout)
    if result.returncode != 0:
        raise VapiError(f"Chromium failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return result


def dump_dom(page: Path, fragment: str = "", timeout: float = 120, width: int = 1400, height: int = 900) -> str:
    """The page's DOM after its load handlers ran in a width × height viewport (`fragment` e.g.
    'sort=fid' is appended as #...)."""
    url = Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    return _run([f"--window-size={width},{height}", "--dump-dom", url], timeout).stdout


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400, timeout: float = 120) -> Path:
    """A PNG of the page's first `height` pixels at `width` wide."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}", Path(page).resolve().as_uri()], timeout)
    if not png.exists():
        raise VapiError(f"Chromium wrote no screenshot to {png}.")
    return png
