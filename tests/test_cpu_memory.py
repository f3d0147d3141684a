import resource
import sys

import pytest
import torch

from torchgeo_scalemae import cpu_memory
from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory


@pytest.mark.parametrize('value', [0, -5, 2**31, 1.5, True, '64'])
def test_rejects_bad_block_size(value: object) -> None:
    with pytest.raises(ValueError, match='max_block_bytes'):
        retain_freed_cpu_memory(value)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not sys.platform.startswith('linux') or cpu_memory._glibc() is None,
    reason='glibc only: elsewhere the function changes nothing and returns False',
)
def test_freed_blocks_are_reused_without_page_faults() -> None:
    assert retain_freed_cpu_memory()
    assert retain_freed_cpu_memory()  # idempotent
    size = 64 * 2**20 // 4  # a 64 MiB tensor: mmap-ed and unmapped by default

    def faults_of_one_allocation() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(size)
        t.fill_(1.0)  # touch every page
        del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    # the heap grows when it first serves such a block (and again now and then when
    # other allocations fragment it); most later blocks reuse freed memory.
    # 64 MiB of fresh 4 KiB pages would be 16,384 faults each time, as by default.
    faults = sorted(faults_of_one_allocation() for _ in range(9))
    assert faults[len(faults) // 2] < 1000, faults
