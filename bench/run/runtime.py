"""Process-level settings of the suite's own processes (the CLI and the benchmark scripts).

``keep_freed_memory()``: PyTorch allocates CPU tensors with the C library's malloc. glibc serves blocks
above 32 MB with fresh ``mmap`` pages and returns them to the OS on free, so every activation-sized
tensor of a large model (100 MB for VGG's first layer at batch 8) is paid again in page faults — about
40 ms each on a 2-core machine, more than the arithmetic done on it. The GPU's caching allocator reuses
freed blocks by design; this asks glibc to do the same (``mallopt``: no mmap for large blocks, no
trimming of the heap), so the process keeps its peak memory and reuses it. Linux/glibc only; a no-op
elsewhere and when ``BENCH_KEEP_FREED_MEMORY=0``. Numbers do not change, only where memory comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make malloc keep and reuse freed large blocks; True when the setting is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("BENCH_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only: other C libraries ignore or lack these options
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    del gnu
    # mallopt returns 1 on success; trimming threshold at INT_MAX = never give the heap top back
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied


def threads_of_slurm_task() -> int | None:
    """Under Slurm, torch's CPU threads = the CPUs allocated to the job's task (``SLURM_CPUS_PER_TASK``),
    unless ``OMP_NUM_THREADS`` says otherwise; returns the number set, or None. Without CPU binding
    (``TaskPlugin=task/none``) every job sees every core of its node and torch starts one thread per core
    in each: two such jobs on a 2-core node ran ~50× slower than one (tests/test_slurm.py's sweep)."""
    import torch

    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if "OMP_NUM_THREADS" in os.environ or not cpus.isdigit() or int(cpus) < 1:
        return None
    n = min(int(cpus), torch.get_num_threads())
    torch.set_num_threads(n)
    return n
