# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Functional tests of the glibc switch; page-fault counts: benchmarks/cpu_memory.py."""

import sys
from typing import Any

import pytest

from torchgeo_scalemae import cpu_memory
from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory


@pytest.mark.parametrize('value', [0, -5, 2**31, 1.5, True, '64'])
def test_rejects_bad_block_size(value: object) -> None:
    with pytest.raises(ValueError, match='max_block_bytes'):
        retain_freed_cpu_memory(value)  # type: ignore[arg-type]


class _FakeMallopt:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result
        self.argtypes: Any = None
        self.restype: Any = None

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


class _FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.mallopt = _FakeMallopt(result)


@pytest.fixture
def fake_glibc(monkeypatch: pytest.MonkeyPatch) -> _FakeLibc:
    libc = _FakeLibc()
    monkeypatch.setattr(cpu_memory, '_glibc', lambda: libc)
    monkeypatch.setattr(cpu_memory, '_applied', None)
    return libc


def test_switches_mallopt_on_once(fake_glibc: _FakeLibc) -> None:
    assert retain_freed_cpu_memory()
    # M_MMAP_THRESHOLD to the block size, then M_TRIM_THRESHOLD = -1 (never trim)
    assert fake_glibc.mallopt.calls == [(-3, 2**31 - 1), (-1, -1)]
    assert retain_freed_cpu_memory()  # idempotent: nothing is called again
    assert len(fake_glibc.mallopt.calls) == 2
    # another block size is applied
    assert retain_freed_cpu_memory(64 * 2**20)
    assert fake_glibc.mallopt.calls[2:] == [(-3, 64 * 2**20), (-1, -1)]


def test_a_refused_setting_is_reported_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = _FakeLibc(result=0)  # mallopt returns 0 on error
    monkeypatch.setattr(cpu_memory, '_glibc', lambda: libc)
    monkeypatch.setattr(cpu_memory, '_applied', None)
    assert not retain_freed_cpu_memory()
    assert not retain_freed_cpu_memory()
    assert len(libc.mallopt.calls) == 4  # not remembered as applied


def test_elsewhere_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_memory, '_glibc', lambda: None)
    monkeypatch.setattr(cpu_memory, '_applied', None)
    assert retain_freed_cpu_memory() is False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc on Linux')
def test_finds_glibc_on_linux() -> None:
    libc = cpu_memory._glibc()
    if libc is None:
        pytest.skip('this Linux C library is not glibc (e.g. musl)')
    assert hasattr(libc, 'mallopt')


def test_the_pretraining_task_does_not_retain_by_default() -> None:
    import inspect

    from torchgeo_scalemae.tasks import ScaleMAEPretraining

    default = inspect.signature(ScaleMAEPretraining).parameters['retain_cpu_memory']
    assert default.default is False
