"""Overlap of host work and device work in a run (bench/run/job.py): the device never waits for the host.

Per batch the main thread only *launches* device work (bench/run/evaluate.py ``Evaluator.launch``); around it:

* ``prefetched(iterable)`` — the next batches are read, decoded and collated by a background thread (on top
  of the DataLoader's own workers, if any) while the current one is on the device;
* ``HostQueue`` — the host side of finished batches (copies to the host, tidy frames, block files) runs in
  one background thread, in submission order, at most ``depth`` batches behind the device. Once an item
  has failed, the items queued after it are not run (they would build on its unfinished state).

Neither changes a number: the same work is done in the same order, only on other threads. An error on a
background thread is raised in the main thread at its next call; on any error, the host work already
submitted is finished first (so a finished block is still written) and the error is raised after it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()


def prefetched(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``iterable`` in order, produced up to ``depth`` ahead by a background thread."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            items.put((_END, exc))

    thread = threading.Thread(target=produce, name="bench-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


class HostQueue:
    """Runs submitted host work in one background thread, in order, at most ``depth`` items in flight."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-host")
        self._inflight: deque[Future] = deque()
        self._failed: BaseException | None = None

    def _guarded(self, fn: Callable[..., object], *args) -> object:
        if self._failed is not None:
            return None  # an earlier item failed: its error is the one reported
        try:
            return fn(*args)
        except BaseException as exc:
            self._failed = exc
            raise

    def submit(self, fn: Callable[..., object], *args) -> None:
        """Queue ``fn(*args)``; waits (and raises) for the oldest item first when ``depth`` are in flight,
        and raises at once when an item has failed."""
        if self._failed is not None:
            raise self._failed
        while len(self._inflight) >= self.depth:
            self._inflight.popleft().result()
        self._inflight.append(self._pool.submit(self._guarded, fn, *args))

    def drain(self) -> None:
        """Wait for all submitted work; the first error is raised."""
        while self._inflight:
            self._inflight.popleft().result()
        if self._failed is not None:
            raise self._failed

    def __enter__(self) -> "HostQueue":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self.drain()
                return
            while self._inflight:  # an error in the main thread: finish what was submitted, then re-raise it
                try:
                    self._inflight.popleft().result()
                except Exception as other:  # noqa: BLE001 — the main thread's error is the one reported
                    log.debug("host work after an error also failed: %s", other)
        finally:
            self._pool.shutdown(wait=True)
