"""A per-job-folder lock that works on cluster file systems (NFS, Lustre, GPFS), so that two processes
never compute into the same job folder.

Mechanism (no flock/fcntl, which many cluster file systems do not honour):

* The record (host, pid, since, process start time, random token) is written and fsynced to a private
  ``.lock.tmp-<token>`` (``O_CREAT | O_EXCL``), then ``os.link``-ed to ``<folder>/.lock``. The link is
  atomic and fails if ``.lock`` exists, so a reader never sees a half-written lock of ours; an unreadable
  ``.lock`` is someone else's doing and is only judged stale once older than ``partial_grace_s``.
* While held, a daemon thread touches the lock's mtime every ``heartbeat_s`` (and notices if it was lost).
* An existing lock is stale when its holder on this host is dead (or its pid was reused: other start
  time), or when a lock from another host has had no heartbeat for ``stale_after_s``. A stale lock is
  removed only under the takeover mutex ``.lock.takeover`` (O_EXCL, held for milliseconds), after checking
  it is still the very file judged stale; then the create is tried once more, and exactly one racer wins.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BenchError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True


def _parse(raw: bytes) -> dict | None:
    """The lock record, or None if the bytes are not a complete one."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    ok = (isinstance(rec, dict) and isinstance(rec.get("host"), str) and isinstance(rec.get("token"), str)
          and type(rec.get("pid")) is int and rec["pid"] > 0)
    return rec if ok else None


def _when(since) -> str:
    try:
        return datetime.fromisoformat(since).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return str(since)


def _is(path: Path, st: os.stat_result, raw: bytes) -> bool:
    """Whether ``path`` is still the file (inode and content) that was judged."""
    try:
        return (os.stat(path).st_ino, path.read_bytes()) == (st.st_ino, raw)
    except OSError:
        return False


class LockHeld(BenchError):
    """The job folder is locked by another live process; the one-line message names the holder."""

    def __init__(self, folder: Path, holder: dict | None, lock_path: Path):
        self.folder, self.holder, self.lock_path = folder, holder, lock_path
        who = (f"pid {holder['pid']} on host {holder['host']} since {_when(holder.get('since'))}" if holder
               else "another process (its lock file is being written or is unreadable)")
        super().__init__(f"{folder} is in use by {who} (lock file {lock_path}); wait for it to finish, "
                         "or remove the lock file if that process is gone")


class JobLock:
    """Exclusive lock on a job folder; ``with JobLock(folder): ...``. ``acquire`` never blocks."""

    partial_grace_s = 10.0  # an unreadable lock file younger than this is taken as being written

    def __init__(self, folder: Path, heartbeat_s: float = 30.0, stale_after_s: float = 300.0):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._token: str | None = None
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        """True once the lock file we held vanished or was replaced by someone else's."""
        return self._lost

    def holder(self) -> dict | None:
        """The current lock record (host, pid, since, start, token), or None if unlocked or unreadable."""
        try:
            return _parse(self.path.read_bytes())
        except OSError:
            return None

    def live_holder(self) -> dict | None:
        """The lock record if a live process holds it; None when unlocked or stale (its process is gone, its
        pid reused, or no heartbeat from another host for ``stale_after_s``)."""
        try:
            st, raw = os.stat(self.path), self.path.read_bytes()
        except OSError:
            return None
        return _parse(raw) if self._stale_reason(raw, st) is None else None

    def acquire(self) -> "JobLock":
        """Take the lock (taking over a stale one), or raise ``LockHeld`` at once."""
        if self._token is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        if not self._create(token):
            self._take_over_if_stale()
            if not self._create(token):  # lost a takeover race: name the winner
                raise LockHeld(self.folder, self.holder(), self.path)
        self._token, self._lost, self._stop = token, False, threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(token, self._stop), daemon=True,
                                        name=f"joblock-heartbeat {self.folder}")
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it still holds our token. Idempotent."""
        token, self._token = self._token, None
        if token is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._still_ours(token):  # a live lock is never taken over, so nobody can swap it in between
            with suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            self._lost = True

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # --- internals ---------------------------------------------------------------------------------

    def _create(self, token: str) -> bool:
        """Write our record to a private temp file, fsync it, and link it to the lock path."""
        rec = {"host": socket.gethostname(), "pid": os.getpid(),
               "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "start": _start_time(os.getpid()), "token": token}
        tmp = self.folder / f"{LOCK_NAME}.tmp-{token}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(rec).encode())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except OSError as exc:  # NFS: a retransmitted LINK may report failure although it succeeded
                if os.stat(tmp).st_nlink == 2:
                    return True
                if isinstance(exc, FileExistsError):
                    return False
                raise
        finally:
            with suppress(OSError):
                os.unlink(tmp)

    def _stale_reason(self, raw: bytes, st: os.stat_result) -> str | None:
        rec, age = _parse(raw), time.time() - st.st_mtime
        if rec is None:
            return f"unreadable lock file, {age:.0f} s old" if age > self.partial_grace_s else None
        if rec["host"] == socket.gethostname():
            if not _pid_alive(rec["pid"]):
                return "that process is gone"
            start = _start_time(rec["pid"])
            if rec.get("start") is not None and start is not None and start != rec["start"]:
                return "that pid now belongs to another process"
            return None
        return f"no heartbeat for {age:.0f} s" if age > self.stale_after_s else None

    def _take_over_if_stale(self) -> None:
        """Remove the existing lock if stale (logging one line), else raise ``LockHeld``. Only the holder
        of the short-lived ``.lock.takeover`` mutex may remove a lock, after checking that it is still the
        very file judged stale: racers that judged it stale too find a new lock there, and leave it."""
        try:
            st, raw = os.stat(self.path), self.path.read_bytes()
        except FileNotFoundError:
            return  # released meanwhile: the retry decides
        reason, rec = self._stale_reason(raw, st), _parse(raw)
        if reason is None:
            raise LockHeld(self.folder, rec, self.path)
        mutex = self.folder / f"{LOCK_NAME}.takeover"
        if not self._claim(mutex):  # another process is taking it over: give it a moment to finish
            deadline = time.monotonic() + 1.0
            while mutex.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        try:
            if not _is(self.path, st, raw):
                return
            aside = self.folder / f"{LOCK_NAME}.stale-{secrets.token_hex(8)}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return
            moved = _is(aside, st, raw)
            if not moved:  # belt and braces: its owner replaced it just now, so put it back
                with suppress(OSError):
                    os.link(aside, self.path)
            with suppress(OSError):
                os.unlink(aside)
            if not moved:
                return
        finally:
            with suppress(OSError):
                os.unlink(mutex)
        who = f"pid {rec['pid']} on host {rec['host']} since {_when(rec.get('since'))}" if rec else "unknown"
        log.warning("taking over stale lock %s held by %s (%s)", self.path, who, reason)

    def _claim(self, mutex: Path) -> bool:
        """Create the takeover mutex (O_EXCL); one left behind by a crash is removed after the grace."""
        for _ in range(2):
            try:
                os.close(os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return True
            except FileExistsError:
                try:
                    if time.time() - os.stat(mutex).st_mtime <= self.partial_grace_s:
                        return False
                    os.unlink(mutex)
                except FileNotFoundError:
                    pass
        return False

    def _still_ours(self, token: str) -> bool:
        rec = self.holder()
        return rec is not None and rec["token"] == token

    def _beat(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            # a takeover that put the file back leaves a brief gap: look twice before declaring it lost
            if not self._still_ours(token) and not (stop.wait(min(0.2, self.heartbeat_s))
                                                    or self._still_ours(token)):
                if not stop.is_set():
                    self._lost = True
                    log.warning("lock %s was removed or taken over by another process", self.path)
                return
            with suppress(OSError):
                os.utime(self.path)
