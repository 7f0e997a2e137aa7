"""Small value checks shared by the run specification (bench/run/spec.py) and the plug-ins' constructors.

Each returns the value as the type it promises, or raises ``BenchError`` with one line that names the
setting, shows the value given and says what is allowed. Config values arrive from YAML or the command
line, so a bool is never accepted where a number is expected (YAML's ``true`` is not 1).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import BenchError


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An int with ``low ≤ value ≤ high`` (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BenchError(f"{name} must be an integer{_range(low, high)}, got {_show(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise BenchError(f"{name} must be an integer{_range(low, high)}, got {value}")
    return value


def number(name: str, value: Any, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """A finite real number with ``low ≤ value ≤ high`` (``low < value`` when ``low_open``)."""
    bound = f" > {low:g}" if low_open and low is not None else _range(low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{name} must be a finite number{bound}, got {_show(value)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise BenchError(f"{name} must be a number{bound}, got {value:g}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BenchError(f"{name} must be true or false, got {_show(value)}")
    return value


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BenchError(f"{name} must be a non-empty string, got {_show(value)}")
    return value


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = list(options)
    if value not in options:
        raise BenchError(f"{name} must be one of {', '.join(options)}, got {_show(value)}")
    return value


def choices(name: str, values: Any, options: Iterable[str]) -> tuple[str, ...]:
    """A non-empty list of options (a single string counts as a list of one), without repeats."""
    options = list(options)
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, (list, tuple)) or not values:
        raise BenchError(f"{name} must be a list of {', '.join(options)}, e.g. '{name}=[{options[0]}]', "
                         f"got {_show(values)}")
    for v in values:
        if v not in options:
            raise BenchError(f"{name}: unknown value {_show(v)}; choose from {', '.join(options)}")
    return tuple(dict.fromkeys(values))


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" between {low} and {high}"
    if low is not None:
        return f" ≥ {low}"
    if high is not None:
        return f" ≤ {high}"
    return ""


SYSTEM_TREES = ("/proc", "/sys", "/dev")
DATA_TREES = ("/dev/shm",)  # a RAM disk of ordinary files, not a device: data may be staged there


def special_file(path) -> str | None:
    """Why ``path`` (after following links) is not an ordinary file or folder to read — a FIFO, socket or
    device (reading one blocks or never ends), or anything under /proc, /sys, /dev — or None."""
    import os
    import stat

    real = os.path.realpath(path)
    system = any(real == t or real.startswith(t + "/") for t in SYSTEM_TREES)
    if system and not any(real.startswith(t + "/") for t in DATA_TREES):
        return f"{path} lies under {real.split('/')[1] and '/' + real.split('/')[1]} (a system file, not data)"
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{path} is {kind}, not a regular file"


def regular_file(name: str, path, hint: str = "give a regular file"):
    """``path`` unchanged, or one line ``<name>: <why>; <hint>`` when it (the value of setting ``name``) is a
    special file (``special_file``) — checked before the file is opened, wherever the suite reads a file a user
    named."""
    why = special_file(path)
    if why:
        raise BenchError(f"{name}: {why}; {hint}")
    return path


def write_probe(folder) -> None:
    """Create and remove a temporary file in the existing ``folder``: raises the OSError that writing there would."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".bench-writable-")
    os.close(fd)
    os.unlink(tmp)


def writable_dir(name: str, path):
    """``path`` as a Path, made if missing, or one line unless a file can be created (and removed) in it —
    checked before the work whose result would be written there (setting ``name``)."""
    from pathlib import Path

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_probe(path)
    except OSError as exc:
        raise BenchError(f"cannot use {path}: {exc.strerror or exc}; {name} must be a folder that can be written — "
                         f"choose another with {name}=…") from None
    return path
