"""``python -m bench [overrides]`` — the same as the ``bench`` command (bench/run/cli.py)."""

from .run.cli import main

if __name__ == "__main__":
    main()
