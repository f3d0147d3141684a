# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import csv
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from torchgeo_scalemae.callbacks import MultiScaleKNNMonitor
from torchgeo_scalemae.datamodules import ImageFolderGSDDataModule
from torchgeo_scalemae.tasks import ScaleMAEPretraining

TINY = 'scalemae_pretrain_vit_tiny_patch16'


def _labelled_folder(root: Path, classes: int = 2, per_class: int = 6) -> Path:
    """Two colour classes: class 0 reddish, class 1 bluish, 32-px PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f'class{c}'
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            array[..., 0 if c == 0 else 2] += 170
            Image.fromarray(array).save(folder / f'img{i}.png')
    return root


def _fit(
    tmp_path: Path,
    monitor: MultiScaleKNNMonitor,
    steps: int = 2,
    gsd: float = 2.0,
    batch_size: int = 4,
    quiet: bool = True,
) -> L.Trainer:
    datamodule = ImageFolderGSDDataModule(
        str(tmp_path / 'scenes'),
        gsd=gsd,
        batch_size=batch_size,
        val_split_pct=0.0,
        test_split_pct=0.0,
    )
    task = ScaleMAEPretraining(
        model=TINY, input_size=32, lr=1e-3, warmup_steps=1, image_log_interval=0
    )
    trainer = L.Trainer(
        accelerator='cpu',
        limit_val_batches=0,
        max_steps=steps,
        logger=CSVLogger(str(tmp_path), name='logs'),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[monitor],
    )
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter('ignore')
        trainer.fit(task, datamodule=datamodule)
    return trainer


def test_monitor_logs_every_n_steps_and_at_start(tmp_path: Path) -> None:
    root = _labelled_folder(tmp_path / 'scenes')
    monitor = MultiScaleKNNMonitor(
        str(root), gsd=2.0, scales=[1.0, 0.5], every_n_steps=1, k=3, query_pct=0.25
    )
    trainer = _fit(tmp_path, monitor, steps=2)
    assert [h['step'] for h in monitor.history] == [0, 1, 2]
    first = monitor.history[0]['results']
    assert [r.height for r in first] == [32, 16]
    assert [r.gsd for r in first] == pytest.approx([2.0, 4.0])
    assert all(0.0 <= r.accuracy <= 1.0 for r in first)
    assert first[0].num_queries == 3 and first[0].num_bank == 9
    # the colour classes are separable even for a random encoder
    assert first[0].accuracy > 0.5
    with open(Path(trainer.log_dir) / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get('knn_acc_mean')]
    assert len(logged) == 3
    assert 'knn_acc_32px_gsd2m' in rows[0] and 'knn_acc_16px_gsd4m' in rows[0]


def test_monitor_defaults_to_the_training_folder(tmp_path: Path) -> None:
    _labelled_folder(tmp_path / 'scenes')
    monitor = MultiScaleKNNMonitor(scales=[1.0], every_n_epochs=1, k=3)
    _fit(tmp_path, monitor, steps=1)
    assert monitor.dataset is not None and len(monitor.dataset.classes) == 2
    assert monitor.history and monitor.history[0]['step'] == 0


def test_monitor_disables_itself_on_an_unlabelled_training_folder(
    tmp_path: Path,
) -> None:
    from PIL import Image

    flat = tmp_path / 'scenes'
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(flat / f'{i}.png')
    monitor = MultiScaleKNNMonitor(every_n_steps=1)
    with pytest.warns(UserWarning, match='MultiScaleKNNMonitor is disabled'):
        _fit(tmp_path, monitor, steps=1, gsd=1.0, batch_size=2, quiet=False)
    assert monitor.disabled and monitor.history == []


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'every_n_steps': 0}, 'every_n_steps must be a positive int or None, got 0'),
        ({'every_n_steps': None, 'every_n_epochs': None}, 'set every_n_steps'),
        ({'k': 0}, 'k must be a positive int, got 0'),
        ({'temperature': 0.0}, 'temperature must be positive, got 0.0'),
        ({'pool': 'max'}, "pool must be 'token' or 'mean', got 'max'"),
        ({'query_pct': 1.0}, r'query_pct must be in \(0, 1\), got 1.0'),
        ({'reference_gsd': -1.0}, 'reference_gsd must be a positive number'),
        ({'scales': []}, 'scales'),
        ({'prefix': ''}, 'prefix must be a non-empty string'),
        ({'std': 0.0}, 'std must be positive'),
        ({'max_per_class': 0}, 'max_per_class must be a positive int or None'),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiScaleKNNMonitor(**kwargs)


def test_bad_seed_and_flag() -> None:
    with pytest.raises(ValueError, match="seed must be an int >= 0, got '1'"):
        MultiScaleKNNMonitor(seed='1')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='seed must be an int >= 0, got -1'):
        MultiScaleKNNMonitor(seed=-1)
    with pytest.raises(TypeError, match='evaluate_at_start must be True or False'):
        MultiScaleKNNMonitor(evaluate_at_start='no')  # type: ignore[arg-type]


def test_bad_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='is not a folder'):
        MultiScaleKNNMonitor(str(tmp_path / 'missing'), gsd=1.0)
    one = _labelled_folder(tmp_path / 'one', classes=1)
    with pytest.raises(ValueError, match='at least two class folders'):
        MultiScaleKNNMonitor(str(one), gsd=1.0)


def test_encoder_of_rejects_a_task_without_encoder() -> None:
    with pytest.raises(TypeError, match='has no encoder'):
        MultiScaleKNNMonitor.encoder_of(L.LightningModule())
    task = ScaleMAEPretraining(model=TINY, input_size=32)
    assert MultiScaleKNNMonitor.encoder_of(task) is task.model.encoder
    assert torch.is_tensor(next(task.model.encoder.parameters()))
