"""Progress bars for long steps (evaluation, reports): tqdm on standard error, quiet unless it is a terminal.

    with Progress(total=n_images, desc="evaluating", unit="img") as bar:
        bar.update(len(batch))          # once per batch of images

    for run in progress(folders, desc="report: reading runs", unit="run"):
        ...

The bar is drawn only when standard error is a terminal (not in logs, pipes, CI or pytest); the
environment variable ``BENCH_PROGRESS`` overrides that: ``0`` never, ``1`` always. It is closed once, with
one final line, whether the step ends or fails.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def should_draw(file: IO | None = None, enabled: bool | None = None) -> bool:
    """``enabled`` if given; else ``BENCH_PROGRESS`` (0/1) if set; else whether ``file`` is a terminal."""
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("BENCH_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    file = sys.stderr if file is None else file
    return bool(getattr(file, "isatty", lambda: False)())


class Progress:
    """A counted bar (``update(n)``); a context manager that closes it exactly once."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", file: IO | None = None,
                 enabled: bool | None = None, min_interval: float = 0.1) -> None:
        self.enabled = should_draw(file, enabled)
        self.n = 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=file if file is not None else sys.stderr,
                         mininterval=min_interval, dynamic_ncols=True, leave=True, disable=not self.enabled)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()  # tqdm closes once; later calls do nothing

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             file: IO | None = None, enabled: bool | None = None, min_interval: float = 0.1) -> Iterator[T]:
    """Iterate over ``items`` with a bar (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, file, enabled, min_interval) as bar:
        for item in items:
            yield item
            bar.update(1)
