"""`scalper model ...` and `scalper backtest ...` (also `python -m services.modelctl ...`)."""
import sys

from services.modelctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
