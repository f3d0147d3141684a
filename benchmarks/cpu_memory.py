# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Page faults per "training step" with and without retained CPU memory (glibc).

Each run is a fresh process that performs ``--steps`` steps, each allocating,
touching and freeing four large tensors (36 to 48 MiB, above glibc's largest
adaptive mmap threshold, so by default each is mmap-ed and unmapped again: about
42,000 faults of 4 KiB pages per step) with small allocations in between, and
reports each step's minor page faults (``getrusage``). ``retain`` calls
:func:`torchgeo_scalemae.cpu_memory.retain_freed_cpu_memory` first; ``default``
keeps glibc's settings. Two heap layouts are measured: ``grows_in_place`` and
``block_brk``, where a page mapped just above the heap forces glibc to extend the
heap with separate regions instead of growing it in place.

The script prints the median faults per step after the warm-up steps for both
allocators side by side, and their ratio (retain / default); it asserts nothing.
On a non-glibc C library ``retain`` changes nothing, and the script says so.

Example::

    python benchmarks/cpu_memory.py --steps 12 --warmup 4
"""

import argparse
import statistics
import subprocess
import sys

#: One process: ``allocator heap steps`` on the command line, faults on stdout.
STEPS_SCRIPT = """
import ctypes, resource, sys
import torch
from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory

allocator, heap, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if heap == 'block_brk':
    libc = ctypes.CDLL('libc.so.6')
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = (ctypes.c_long,)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_long,
    )
    above = libc.sbrk(0) + (1 << 20)
    # PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    assert libc.mmap(above, 4096, 3, 0x22 | 0x100000, -1, 0) == above
applied = allocator == 'retain' and retain_freed_cpu_memory()
faults = []
for _ in range(steps):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = []
    for mib in (40, 48, 36, 40):
        t = torch.empty(mib * 2**20 // 4)
        t.fill_(1.0)  # touch every page
        held += [t, torch.ones(100)]
    del held, t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(int(applied), *faults)
"""


def step_faults(allocator: str, heap: str, steps: int) -> tuple[bool, list[int]]:
    """Run one fresh process; return whether retention applied and its faults."""
    result = subprocess.run(
        [sys.executable, '-c', STEPS_SCRIPT, allocator, heap, str(steps)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    applied, *faults = (int(v) for v in result.stdout.split())
    return bool(applied), faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=12, help='steps per process')
    parser.add_argument(
        '--warmup', type=int, default=4, help='first steps left out of the median'
    )
    parser.add_argument(
        '--heaps', nargs='+', default=['grows_in_place', 'block_brk'], help='layouts'
    )
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error('need 0 <= --warmup < --steps')
    print(
        f'minor page faults per step (median of steps {args.warmup + 1} to '
        f'{args.steps}; each process allocates and frees 164 MiB per step)'
    )
    print(f'{"heap":>16} {"default":>10} {"retain":>10} {"retain/default":>15}')
    for heap in args.heaps:
        _, default = step_faults('default', heap, args.steps)
        applied, retained = step_faults('retain', heap, args.steps)
        d = statistics.median(default[args.warmup :])
        r = statistics.median(retained[args.warmup :])
        ratio = f'{r / d:.4f}' if d else 'n/a'
        print(f'{heap:>16} {d:>10.0f} {r:>10.0f} {ratio:>15}')
        if not applied:
            print('  (not glibc: retain_freed_cpu_memory() changed nothing)')
        print(f'  all steps, default: {default}')
        print(f'  all steps, retain:  {retained}')


if __name__ == '__main__':
    main()
