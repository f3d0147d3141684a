# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Atomic checkpoint writes (``torchgeo_scalemae.tasks._checkpoint``)."""

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
