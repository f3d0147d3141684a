# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Keep freed CPU memory in the process, so that training steps stop page-faulting.

PyTorch's CPU allocator hands every tensor to the C library's ``malloc``. With
glibc's defaults, blocks above an adaptive threshold (at most 32 MiB) are
``mmap``-ed and returned to the operating system when freed, and the top of the
heap is trimmed as soon as 128 KiB are free. A Scale-MAE training step allocates
and frees full-resolution maps of hundreds of megabytes (a 224 x 224 x 256 float32
map is 49 MiB per image), so every step faults in, and has the kernel zero,
gigabytes of fresh pages (the performance guide gives the measured cost;
``benchmarks/cpu_memory.py`` counts the page faults). :func:`retain_freed_cpu_memory`
sets glibc's ``M_MMAP_THRESHOLD`` to its maximum and disables trimming
(``M_TRIM_THRESHOLD = -1``), so freed blocks are reused by the next step, as a
caching allocator (CUDA's, jemalloc, tcmalloc) would do. The process's resident
memory then stays at its peak instead of shrinking between steps.

The change is process-wide and lasts until the process ends, so nothing in this
package makes it unless asked: :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`
calls it only with ``retain_cpu_memory=True`` (off by default; the CPU recipes in
``configs/pretrain`` turn it on).

.. versionadded:: 0.1
"""

import ctypes
import ctypes.util
import threading

__all__ = ('retain_freed_cpu_memory',)

#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: ``mallopt`` takes a C ``int``.
_INT_MAX = 2**31 - 1

_lock = threading.Lock()
_applied: int | None = None


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc, else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None
    if not hasattr(libc, 'gnu_get_libc_version') or not hasattr(libc, 'mallopt'):
        return None
    return libc


def retain_freed_cpu_memory(max_block_bytes: int = _INT_MAX) -> bool:
    """Serve CPU tensors up to ``max_block_bytes`` from a heap that is never trimmed.

    Process-wide and idempotent; it only changes where ``malloc`` takes memory from,
    never values. Blocks larger than ``max_block_bytes`` are still ``mmap``-ed.
    Call it before the first large allocation of a CPU training run;
    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` does so when it fits on
    the CPU with ``retain_cpu_memory=True`` (opt-in).

    Args:
        max_block_bytes: Largest allocation, in bytes, to serve from the heap
            (1 to 2**31 - 1, glibc's limit; the default).

    Returns:
        True when glibc accepted the settings (now or in an earlier call), False
        where the C library is not glibc (macOS, Windows, musl): nothing changes.

    Raises:
        ValueError: If ``max_block_bytes`` is not an int in ``[1, 2**31 - 1]``.
    """
    global _applied
    if (
        isinstance(max_block_bytes, bool)
        or not isinstance(max_block_bytes, int)
        or not 1 <= max_block_bytes <= _INT_MAX
    ):
        raise ValueError(
            f'max_block_bytes must be an int in [1, {_INT_MAX}], got {max_block_bytes!r}'
        )
    with _lock:
        if _applied == max_block_bytes:
            return True
        libc = _glibc()
        if libc is None:
            return False
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, max_block_bytes))
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, -1)) and ok
        if ok:
            _applied = max_block_bytes
        return ok
