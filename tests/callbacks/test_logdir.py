# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from torchgeo_scalemae.callbacks import RemoveEmptyLogDir
from torchgeo_scalemae.callbacks.logdir import remove_if_empty


def test_remove_if_empty_only_removes_folders_without_files(tmp_path: Path) -> None:
    empty = tmp_path / 'version_0'
    (empty / 'checkpoints' / 'deeper').mkdir(parents=True)
    assert remove_if_empty(empty)
    assert not empty.exists()
    kept = tmp_path / 'version_1'
    (kept / 'images').mkdir(parents=True)
    (kept / 'images' / 'a.png').write_bytes(b'x')
    assert not remove_if_empty(kept)
    assert (kept / 'images' / 'a.png').is_file()
    assert not remove_if_empty(tmp_path / 'missing')


class _Broken(L.LightningDataModule):
    def setup(self, stage: str) -> None:
        raise RuntimeError('bad data path')


class _Tiny(L.LightningModule):
    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.fail = fail

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        assert self.logger is not None
        self.logger.log_metrics({'seen': 1.0}, step=0)  # kept in memory, not on disk
        if self.fail:
            raise RuntimeError('failed in the step')
        return self.layer(batch).sum()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path) -> L.Trainer:
    return L.Trainer(
        accelerator='cpu',
        max_steps=1,
        logger=CSVLogger(str(tmp_path), name='logs'),
        callbacks=[RemoveEmptyLogDir()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_a_run_failing_in_setup_leaves_no_version_folder(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    with pytest.raises(RuntimeError, match='bad data path'):
        trainer.fit(_Tiny(fail=False), datamodule=_Broken())
    assert not (tmp_path / 'logs' / 'version_0').exists()


def test_a_folder_with_logged_metrics_is_kept(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    with pytest.raises(RuntimeError, match='failed in the step'):
        trainer.fit(_Tiny(fail=True), DataLoader(torch.ones(4, 2), batch_size=2))
    # the metric logged before the failure is flushed and kept
    metrics = tmp_path / 'logs' / 'version_0' / 'metrics.csv'
    assert 'seen' in metrics.read_text()


def test_only_global_zero_and_local_folders(tmp_path: Path) -> None:
    (tmp_path / 'v').mkdir()
    logger = SimpleNamespace(log_dir=str(tmp_path / 'v'))
    callback = RemoveEmptyLogDir()
    other_rank = SimpleNamespace(is_global_zero=False, loggers=[logger])
    callback.on_exception(other_rank, None, RuntimeError())  # type: ignore[arg-type]
    assert (tmp_path / 'v').is_dir()
    remote = SimpleNamespace(log_dir='s3://bucket/v')
    no_dir = SimpleNamespace(log_dir=None)
    rank0 = SimpleNamespace(is_global_zero=True, loggers=[remote, no_dir, logger])
    callback.on_exception(rank0, None, RuntimeError())  # type: ignore[arg-type]
    assert not (tmp_path / 'v').exists()
