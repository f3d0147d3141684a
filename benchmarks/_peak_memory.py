# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""CPU peak-memory measurement shared by the benchmark scripts.

Linux keeps a process's resident-set high-water mark (``VmHWM``); writing ``5`` to
``/proc/self/clear_refs`` resets it to the current resident set, so the growth of
``VmHWM`` over a measured region is that region's peak. Where that is not available
the fallback is ``ru_maxrss``, which cannot be reset and so misses any peak below the
one already reached (for example while building the model): run each measurement in
a fresh child process.
"""

import ctypes
import gc
import resource

RU_MAXRSS = 'ru_maxrss (misses peaks below the build peak)'


def status_kib(field: str) -> int:
    """Return a ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``...)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise OSError(f'{field} not in /proc/self/status')


def cpu_peak_start() -> tuple[str, int]:
    """Collect garbage, trim the heap, reset the high-water mark.

    Returns:
        The method (``'VmHWM'`` or the ``ru_maxrss`` fallback) and the baseline in
        bytes, to pass to :func:`cpu_peak_end`.
    """
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return 'VmHWM', status_kib('VmRSS') * 1024
    except OSError:
        return RU_MAXRSS, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_peak_end(method: str, base: int) -> int:
    """Return the peak in bytes above ``base`` since :func:`cpu_peak_start`."""
    if method == 'VmHWM':
        return status_kib('VmHWM') * 1024 - base
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
