import subprocess
import sys

import pytest

from torchgeo_scalemae import cpu_memory
from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory


@pytest.mark.parametrize('value', [0, -5, 2**31, 1.5, True, '64'])
def test_rejects_bad_block_size(value: object) -> None:
    with pytest.raises(ValueError, match='max_block_bytes'):
        retain_freed_cpu_memory(value)  # type: ignore[arg-type]


#: Runs twelve "training steps" in a fresh process, each allocating, touching and
#: freeing four large tensors (36 to 48 MiB, above glibc's largest adaptive mmap
#: threshold, so by default each is mmap-ed and unmapped: 42,000 page faults of 4 KiB
#: pages per step) with small allocations in between, and prints each step's page
#: faults. With ``block_brk`` a page is mapped just above the heap first, so that
#: glibc must extend the heap with separate regions instead of growing it in place.
_STEPS_SCRIPT = """
import ctypes, resource, sys
import torch
from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory

allocator, heap = sys.argv[1:]
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
if allocator == 'retain':
    assert retain_freed_cpu_memory()
    assert retain_freed_cpu_memory()  # idempotent
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = []
    for mib in (40, 48, 36, 40):
        t = torch.empty(mib * 2**20 // 4)
        t.fill_(1.0)  # touch every page
        held += [t, torch.ones(100)]
    del held, t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _step_faults(allocator: str, heap: str) -> list[int]:
    # a fresh process: the test process's heap layout depends on earlier tests
    result = subprocess.run(
        [sys.executable, '-c', _STEPS_SCRIPT, allocator, heap],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    faults = [int(f) for f in result.stdout.split()]
    assert len(faults) == 12, result.stdout
    return faults


@pytest.mark.skipif(
    not sys.platform.startswith('linux') or cpu_memory._glibc() is None,
    reason='glibc only: elsewhere the function changes nothing and returns False',
)
@pytest.mark.parametrize('heap', ['grows_in_place', 'block_brk'])
def test_freed_blocks_are_reused_without_page_faults(heap: str) -> None:
    # glibc's defaults: every step faults its large blocks in afresh
    default = _step_faults('default', heap)
    assert min(default[1:]) > 40_000, default
    # retained: the heap grows over the first steps (and now and then later, when
    # glibc's memalign slack leaves a freed block a little too small), then most
    # steps reuse freed memory
    retained = _step_faults('retain', heap)
    later = sorted(retained[4:])
    assert later[len(later) // 2] < 1000, retained
