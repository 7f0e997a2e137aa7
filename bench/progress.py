"""A small progress bar for long steps (evaluation, sweeps, reports), quiet unless stderr is a terminal.

    from bench.progress import progress, Progress

    for batch in progress(loader, total=len(loader), desc="evaluating", unit="batch"):
        ...

    with Progress(total=n_images, desc="evaluating", unit="img") as bar:
        ...
        bar.update(len(batch))

It draws one line on standard error, redrawn in place (``\\r``) at most every ``min_interval`` seconds, and
ends it with a newline when closed::

    evaluating   37% |███████·············| 74/200 img  12.3s<21.0s

It is silent (draws nothing, costs nothing but a counter) when standard error is not a terminal — logs,
pipes, CI, pytest — unless ``enabled=True`` is passed. The environment variable ``BENCH_PROGRESS`` overrides
the automatic choice: ``0`` always off, ``1`` always on. No dependency (tqdm is not needed for this).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")

BAR_WIDTH = 20


def _format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def should_draw(file: IO | None = None, enabled: bool | None = None) -> bool:
    """``enabled`` if given; else ``BENCH_PROGRESS`` (0/1) if set; else whether ``file`` is a terminal."""
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("BENCH_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    file = sys.stderr if file is None else file
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """A counter that draws itself on a terminal. ``total`` may be None (unknown): then no bar or ETA."""

    def __init__(self, total: int | None = None, desc: str = "", *, unit: str = "it", file: IO | None = None,
                 enabled: bool | None = None, min_interval: float = 0.1) -> None:
        self.total = None if total is None else int(total)
        self.desc, self.unit = desc, unit
        self.file = sys.stderr if file is None else file
        self.enabled = should_draw(self.file, enabled)
        self.min_interval = float(min_interval)
        self.n = 0
        self.start = time.monotonic()
        self._last_draw = float("-inf")
        self._last_len = 0
        self.closed = False
        if self.enabled:
            self._draw()

    def line(self) -> str:
        """The text of the bar for the current count."""
        elapsed = time.monotonic() - self.start
        head = f"{self.desc}  " if self.desc else ""
        if self.total:
            frac = min(max(self.n / self.total, 0.0), 1.0)
            filled = int(frac * BAR_WIDTH)
            bar = "█" * filled + "·" * (BAR_WIDTH - filled)
            eta = elapsed / self.n * (self.total - self.n) if self.n else None
            times = _format_seconds(elapsed) + ("<" + _format_seconds(eta) if eta is not None else "<?")
            return f"{head}{frac * 100:3.0f}% |{bar}| {self.n}/{self.total} {self.unit}  {times}"
        rate = f"  {self.n / elapsed:.1f} {self.unit}/s" if elapsed > 0 and self.n else ""
        return f"{head}{self.n} {self.unit}  {_format_seconds(elapsed)}{rate}"

    def _draw(self) -> None:
        text = self.line()
        pad = max(0, self._last_len - len(text))
        self.file.write("\r" + text + " " * pad)
        self.file.flush()
        self._last_len = len(text)
        self._last_draw = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and not self.closed and time.monotonic() - self._last_draw >= self.min_interval:
            self._draw()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self.enabled and not self.closed:
            self._draw()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            self._draw()
            self.file.write("\n")
            self.file.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", **kwargs) -> Iterator[T]:
    """Yield the items of ``iterable`` while counting them on a :class:`Progress` bar.

    ``total`` defaults to ``len(iterable)`` when it has one. Keyword arguments go to :class:`Progress`.
    The bar is closed when the loop ends, breaks or raises.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = Progress(total=total, desc=desc, **kwargs)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()
