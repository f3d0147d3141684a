# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Atomic checkpoint writes (``torchgeo_scalemae.tasks._checkpoint``)."""

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from torchgeo_scalemae.tasks import AtomicCheckpointIO
from torchgeo_scalemae.tasks._checkpoint import atomic_torch_save


def test_atomic_save_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / 'new' / 'folder' / 'last.ckpt'
    atomic_torch_save({'step': 1, 'w': torch.arange(3)}, path)  # creates the folder
    state = torch.load(path, weights_only=True)
    assert state['step'] == 1
    assert torch.equal(state['w'], torch.arange(3))
    atomic_torch_save({'step': 2}, path)
    assert torch.load(path, weights_only=True) == {'step': 2}
    # no temporary file is left beside the checkpoint
    assert sorted(p.name for p in path.parent.iterdir()) == ['last.ckpt']


def test_atomic_save_keeps_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / 'last.ckpt'
    atomic_torch_save({'step': 1}, path)
    real_save = torch.save

    def broken_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f)  # some bytes are written ...
        raise KeyboardInterrupt  # ... then the process is interrupted

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({'step': 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {'step': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.ckpt']
    AtomicCheckpointIO().save_checkpoint({'step': 3}, path)
    assert torch.load(path, weights_only=True) == {'step': 3}


def test_atomic_io_writes_beside_the_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    folders: list[Path] = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        folders.append(Path(kwargs['dir']))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, 'mkstemp', spy)
    AtomicCheckpointIO().save_checkpoint({'a': 1}, tmp_path / 'x.ckpt')
    # same folder, hence same filesystem: os.replace is a rename
    assert folders == [tmp_path]


def test_atomic_io_rejects_storage_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='storage_options'):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / 'x.ckpt', {'a': 1})
    assert not (tmp_path / 'x.ckpt').exists()


def test_remote_paths_use_lightning_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def parent_save(self: Any, checkpoint: Any, path: Any, *args: Any) -> None:
        calls.append(str(path))

    monkeypatch.setattr(TorchCheckpointIO, 'save_checkpoint', parent_save)
    AtomicCheckpointIO().save_checkpoint({'a': 1}, 'memory://bucket/last.ckpt')
    assert calls == ['memory://bucket/last.ckpt']


def test_checkpoint_io_loads_what_it_saved(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({'state_dict': {'w': torch.ones(2)}}, tmp_path / 'c.ckpt')
    loaded = io.load_checkpoint(tmp_path / 'c.ckpt')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


@pytest.mark.parametrize('where', ['write', 'fsync'])
def test_full_disk_says_so_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = tmp_path / 'checkpoints' / 'last.ckpt'
    io = AtomicCheckpointIO()
    io.save_checkpoint({'state_dict': {'w': torch.ones(3)}, 'step': 1}, path)
    real_save = torch.save

    def full_save(obj: object, f: Any, *args: object, **kwargs: object) -> None:
        f.write(b'PK partial bytes')  # the disk fills up part-way through
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == 'write':
        monkeypatch.setattr(torch, 'save', full_save)
    else:
        monkeypatch.setattr(torch, 'save', real_save)
        monkeypatch.setattr(os, 'fsync', full_fsync)
    with pytest.raises(OSError, match='no space left on the device') as info:
        io.save_checkpoint({'state_dict': {'w': torch.zeros(3)}, 'step': 2}, path)
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in message and 'MiB free' in message
    assert 'previous checkpoint' in message and 'is unchanged' in message
    assert isinstance(info.value.__cause__, OSError)
    # the previous last.ckpt is intact and loads; no temporary file is left
    state = io.load_checkpoint(path)
    assert state['step'] == 1 and torch.equal(state['state_dict']['w'], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ['last.ckpt']


def test_full_disk_on_first_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_save)
    with pytest.raises(OSError, match='no checkpoint was written there'):
        atomic_torch_save({'step': 1}, tmp_path / 'last.ckpt')
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_propagate_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = OSError(errno.EIO, 'Input/output error')

    def broken_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError) as info:
        atomic_torch_save({'step': 1}, tmp_path / 'last.ckpt')
    assert info.value is error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('path', ['', None, 3])
def test_atomic_save_rejects_bad_paths(path: Any) -> None:
    with pytest.raises(TypeError, match='path must be a non-empty file path, got'):
        atomic_torch_save({'step': 1}, path)


def test_atomic_save_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=f'{tmp_path} is a directory'):
        atomic_torch_save({'step': 1}, tmp_path)
    assert list(tmp_path.iterdir()) == []
