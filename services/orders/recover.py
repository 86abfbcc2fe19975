"""`scalper recover orders`: move an unreadable gateway journal aside (python -m services.orders.recover).

The gateway then starts with a new journal and rebuilds its state from the broker."""
from __future__ import annotations

import sys
from pathlib import Path

from common.config import Config
from common.statefile import BadStateFile, recover_main
from services.orders.config import OrdersConfig
from services.orders.journal import Journal


def journal_files(cfg: Config) -> list[Path]:
    sect = cfg.section("orders", OrdersConfig)
    state_dir = Path(sect.state_dir) if sect.state_dir else cfg.path(cfg.logging.dir) / "state"
    return sorted(state_dir.glob("orders_*.sqlite"))


def why_unreadable(path: Path) -> str:
    """'' when the journal opens as the gateway opens it; else why not."""
    try:
        Journal(path).close()
    except BadStateFile as exc:
        return exc.why
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


if __name__ == "__main__":
    sys.exit(recover_main("orders", journal_files, why_unreadable))
