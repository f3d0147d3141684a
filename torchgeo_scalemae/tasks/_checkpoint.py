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
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Save ``obj`` with :func:`torch.save` so that ``path`` is never half written.

    Args:
        obj: Anything :func:`torch.save` accepts.
        path: Local destination file; its folder is created if missing.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
