"""`python -m services.cli ...` is `scalper ...` (the entry point in pyproject.toml)."""
import sys

from services.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
