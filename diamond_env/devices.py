"""Allocator settings for CPU training and dreaming (glibc only).

A paper-size step allocates and frees tensors of tens of MiB many times (a batch of 32 feature
maps of 64 channels at 64x64 is 32 MiB). glibc serves blocks that large with ``mmap`` and returns
them with ``munmap``, so every step faults the same pages in again, zero-filled by the kernel,
and a large share of a training step's CPU time becomes system time
(docs/studies/benchmarks-log.md, "Side by side with DIAMOND's code"). :func:`tune_allocator` keeps freed blocks in
the process instead (``mallopt``: no ``mmap`` for large blocks, no trimming of the heap's top),
which removes that system time; the memory a step needs stays reserved between steps.

It is process-wide, so the library never applies it behind a caller's back: the ``diamond-env``
command and ``train_wm.py``, which own their process, call :func:`tune_allocator` once at start
(``DIAMOND_ENV_MALLOC=default`` in the environment leaves glibc's defaults alone), and a program
of your own that trains or dreams at paper size on a CPU calls ``diamond_env.tune_allocator()``
itself. Elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

import torch

__all__ = ["cpu_flags", "cpu_has_amx_bf16", "tf32_matmuls", "tune_allocator"]

ENV_VAR = "DIAMOND_ENV_MALLOC"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1
_done: bool | None = None


def tune_allocator() -> bool:
    """Apply the settings above once per process; True if they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get(ENV_VAR, "").lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done


def cpu_flags() -> frozenset[str]:
    """The feature flags of this machine's CPU (``/proc/cpuinfo``; empty where it cannot be
    read, e.g. outside Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX tiles for bf16 (``amx_bf16``), where oneDNN runs bf16 convolutions
    on them: there ``fastpath="auto"`` dreams in bf16 (docs/benchmarks.md)."""
    return "amx_bf16" in cpu_flags()


@contextlib.contextmanager
def tf32_matmuls(device: torch.device) -> Iterator[None]:
    """CUDA matmuls in TF32 while the block runs on a CUDA ``device`` (DIAMOND's trainer turns
    them on for its whole process, ``src/trainer.py``); the caller's setting comes back after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
