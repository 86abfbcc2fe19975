"""`scalper recover positions`: move an unreadable keeper state file aside
(python -m services.positions.recover). The keeper then adopts the broker's state."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.config import Config
from common.statefile import recover_main
from services.positions.journal import state_path


def state_files(cfg: Config) -> list[Path]:
    return [p for p in [state_path(cfg.path(cfg.logging.dir))] if p.exists()]


def why_unreadable(path: Path) -> str:
    """'' when the file reads back as the keeper reads it; else why not."""
    try:
        if not isinstance(json.loads(path.read_text()), dict):
            return "not a JSON object"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


if __name__ == "__main__":
    sys.exit(recover_main("positions", state_files, why_unreadable))
