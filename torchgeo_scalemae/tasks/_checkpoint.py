# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Atomic local checkpoint writes for Lightning.

Lightning 2.6 saves through ``lightning.fabric.utilities.cloud_io._atomic_save``: it
serialises to memory and writes inside an ``fsspec`` transaction. For local paths
``fsspec``'s ``LocalFileOpener`` writes to ``tempfile.mkstemp()`` (the *system* temp
directory) and ``shutil.move``-s it into place on commit. That is a rename, and thus
atomic, only when the temp directory and the checkpoint directory are on the same
filesystem; otherwise ``shutil.move`` copies into the destination in place, and a
process killed during the copy leaves a truncated ``.ckpt`` (often the
``last.ckpt`` that a resume would pick). :class:`AtomicCheckpointIO` writes to a
temporary file *beside* the destination, ``fsync``-s it and ``os.replace``-s it, which
is atomic on POSIX and Windows for any local path. Remote URLs fall back to
Lightning's own implementation.

A full disk (or an exhausted quota) while writing raises an :class:`OSError` with the
same ``errno`` whose message says so, names the checkpoint path and the free space, and
states that the previous checkpoint at that path is unchanged: the partial temporary
file is removed and the destination is never touched.
"""

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

_DISK_FULL = {errno.ENOSPC: 'no space left on the device'}
if hasattr(errno, 'EDQUOT'):  # pragma: no branch - POSIX
    _DISK_FULL[errno.EDQUOT] = 'disk quota exceeded'


def _disk_full_errno(error: BaseException) -> int | None:
    """The ENOSPC/EDQUOT errno of ``error`` or of an exception it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def _disk_full_error(code: int, dest: Path) -> OSError:
    try:
        free = f'{shutil.disk_usage(dest.parent).free / 2**20:.1f} MiB free'
    except OSError:  # pragma: no cover
        free = 'free space unknown'
    previous = (
        f'the previous checkpoint {dest} is unchanged'
        if dest.exists()
        else 'no checkpoint was written there'
    )
    return OSError(
        code,
        f'{_DISK_FULL[code]} while writing the checkpoint {dest} ({free} in '
        f'{dest.parent}); {previous} and the partial temporary file was removed. Free '
        'disk space or point the checkpoints (trainer.default_root_dir, '
        'ModelCheckpoint dirpath) at a disk with room',
        str(dest),
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Save ``obj`` with :func:`torch.save` so that ``path`` is never half written.

    Args:
        obj: Anything :func:`torch.save` accepts.
        path: Local destination file; its folder is created if missing.

    Raises:
        TypeError: if ``path`` is not a non-empty path.
        IsADirectoryError: if ``path`` is a directory.
        OSError: with ``errno`` ``ENOSPC`` (or ``EDQUOT``) and a message naming
            ``path`` and the free disk space when the disk is full; ``path`` keeps its
            previous content. Other errors of the write propagate unchanged, after the
            temporary file is removed.
    """
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise TypeError(f'path must be a non-empty file path, got {path!r}')
    dest = Path(path)
    if dest.is_dir():
        raise IsADirectoryError(f'checkpoint path {dest} is a directory, not a file')
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        code = _disk_full_errno(error)
        if code is not None:
            raise _disk_full_error(code, dest) from error
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(dest.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that replaces local checkpoints atomically.

    Writes to a temporary file in the destination folder, then ``os.replace``; remote
    (``scheme://``) paths use Lightning's default. Installed automatically by
    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` when the trainer uses the
    default IO (hparam ``atomic_checkpoints``), or explicitly via
    ``trainer.plugins``.
    """

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        """Save a checkpoint dict atomically.

        Args:
            checkpoint: The checkpoint dict built by the trainer.
            path: Destination ``.ckpt`` path.
            storage_options: Unsupported (must be None), as in the parent class.

        Raises:
            TypeError: If ``storage_options`` is given.
            OSError: If the disk is full (see :func:`atomic_torch_save`): the message
                names the path and says that the previous checkpoint is unchanged.
        """
        if storage_options is not None:
            raise TypeError(
                'AtomicCheckpointIO does not support storage_options, got '
                f'{storage_options!r}'
            )
        if '://' in str(path):
            super().save_checkpoint(checkpoint, str(path))
            return
        atomic_torch_save(checkpoint, path)
