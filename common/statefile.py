"""A journal or state file that cannot be read: one line, a distinct exit code, a way out.

A service that finds its state file corrupt or truncated must not guess (it could send an
order twice or forget a day's losses) and must not loop in tracebacks either. It stops with
exit code EXIT_BAD_STATE and one line that names the file and the next step;
supervisord.conf lists that code in `exitcodes` so it is not restarted. `scalper recover
SERVICE` moves the file aside (nothing is deleted), and on its next start the service
rebuilds its state from the broker, which is the truth.
"""
from __future__ import annotations

import time
from pathlib import Path

from loguru import logger

EXIT_BAD_STATE = 3


class BadStateFile(Exception):
    """`path`, the state file of `service`, cannot be read back."""

    def __init__(self, service: str, path: str | Path, why: str):
        self.service = service
        self.path = Path(path)
        self.why = " ".join(str(why).split())[:200]
        super().__init__(self.line())

    def line(self) -> str:
        return (f"STATE: {self.path} is unreadable ({self.why}); {self.service} stopped without trading. "
                f"Run `scalper recover {self.service}` to move it aside, then start {self.service}: "
                "it rebuilds its state from the broker")

    def stop(self) -> int:
        """Log the one line and return the exit code for main()."""
        logger.error(self.line())
        return EXIT_BAD_STATE


def move_aside(path: str | Path) -> list[Path]:
    """Rename `path` (and SQLite's -wal/-shm companions) to `<name>.corrupt-<time>`; keeps them."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            dest = p.with_name(f"{path.name}.corrupt-{stamp}{p.name[len(path.name):]}")
            p.rename(dest)
            moved.append(dest)
    return moved
