# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Remove the empty run folder that a failed run would leave behind."""

import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ('RemoveEmptyLogDir',)


class RemoveEmptyLogDir(Callback):
    """When a run fails, remove its logger folder (``version_N``) if it holds no file.

    Lightning asks every logger for its experiment before the datamodule and the
    task are set up, and the CSV logger creates its ``version_N`` folder then: a
    run that fails during setup (a wrong data path, a bad hparam) would leave an
    empty ``version_N`` behind, and the next run would count past it. On an
    exception this callback flushes the CSV logger's pending metrics, then removes
    each logger folder that contains no file at all (empty subfolders included).
    A folder with any file (metrics, ``config.yaml``, events, checkpoints) is kept.
    Only the global-zero process removes; remote (``scheme://``) folders are left
    alone.

    The evaluation and pretraining tasks of this package install one by default.
    """

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Remove the empty logger folders of the failed run."""
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            folder = _local_log_dir(logger)
            if folder is None:
                continue
            _flush_csv(logger)
            remove_if_empty(folder)


def _local_log_dir(logger: Any) -> Path | None:
    try:
        log_dir = logger.log_dir
    except Exception:  # noqa: BLE001 - a logger without a usable log_dir
        return None
    if not isinstance(log_dir, str | os.PathLike) or '://' in str(log_dir):
        return None
    return Path(log_dir)


def _flush_csv(logger: Any) -> None:
    from lightning.pytorch.loggers import CSVLogger

    if isinstance(logger, CSVLogger) and getattr(logger, '_experiment', None):
        logger.save()  # metrics still in memory make the folder non-empty


def remove_if_empty(folder: str | os.PathLike[str]) -> bool:
    """Remove *folder* and its subfolders when none of them holds a file.

    Args:
        folder: A local folder; a missing one is ignored.

    Returns:
        True when the folder was removed.
    """
    path = Path(folder)
    if not path.is_dir():
        return False
    entries = list(path.rglob('*'))
    if any(not entry.is_dir() or entry.is_symlink() for entry in entries):
        return False
    for entry in sorted(entries, key=lambda p: len(p.parts), reverse=True):
        entry.rmdir()
    path.rmdir()
    return True
