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


def recover(service: str, files: list[Path], why_unreadable, force: bool = False) -> int:
    """`scalper recover SERVICE`: move each of `files` that `why_unreadable(path)` finds unreadable
    (it returns '' for a good file) aside, printing one line per file and the next step. With
    `force`, readable files are moved too. Each service passes its own files and reader
    (services/orders/recover.py, services/positions/recover.py)."""
    if not files:
        print(f"{service}: no state file to recover; start it and it builds its state from the broker")
        return 0
    moved = 0
    for path in files:
        why = why_unreadable(path)
        if not why and not force:
            print(f"{path} reads fine; left in place (--force moves it anyway)")
            continue
        print(f"{path}: {why or 'moved on request (--force)'}")
        for dest in move_aside(path):
            print(f"  moved aside to {dest}")
        moved += 1
    if moved:
        print(f"next: start {service} (supervisorctl -c supervisord.conf start {service}); "
              "it rebuilds its state from the broker and logs the rebuild")
    return 0


def recover_main(service: str, files_for, why_unreadable, argv: list[str] | None = None) -> int:
    """The `python -m services.<service>.recover --config C [--force]` program."""
    from common.service import tool_config
    cfg, args = tool_config(f"python -m services.{service}.recover", f"move an unreadable {service} state file aside",
                            argv, lambda ap: ap.add_argument("--force", action="store_true",
                                                             help="move the files aside even if they read fine"))
    return recover(service, files_for(cfg), why_unreadable, args.force)
