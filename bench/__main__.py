"""``python -m bench [overrides]`` — the same as the ``bench`` command (bench/hydra_app.py)."""

from .hydra_app import main

if __name__ == "__main__":
    main()
