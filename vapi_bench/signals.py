"""SIGTERM handled like Ctrl-C: a cluster scheduler pre-empting a job sends SIGTERM, and Python's
default ends the process at once, silently. While a command runs, SIGTERM raises `Terminated` (a
KeyboardInterrupt) where Ctrl-C would, so every stage keeps what it finished and says so; the exit
code follows the shell's 128 + signal (143)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster pre-empting the job), raised where Ctrl-C's KeyboardInterrupt would be, so
    that every stage keeps what it finished and says so exactly as it does for Ctrl-C."""


@dataclass
class Stop:
    """The signal that stopped the command, if any: exit codes follow the shell's 128 + signal."""

    signum: int | None = None

    def exit_code(self, default: int = 130) -> int:
        return 128 + self.signum if self.signum is not None else default


@contextmanager
def sigterm_as_interrupt() -> Iterator[Stop]:
    """Turn SIGTERM into Terminated while the command runs (Python's default ends the process at once,
    silently, with nothing said about what was kept); the previous handler is restored after.
    Only the main thread may set handlers: a command run from another thread keeps the default."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def terminate(signum: int, frame: Any) -> None:
        stop.signum = signum
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
