# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torchgeo.datamodules import UCMercedDataModule
from torchgeo.main import main

from tests.evaluation.fake_datasets import make_ucmerced
from tests.tasks.test_knn import CONFIGS, TINY, cpu_args, data_args, spy_on
from torchgeo_scalemae.evaluation.backbone import build_encoder
from torchgeo_scalemae.tasks import ScaleMAEClassification


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr('sys.argv', ['torchgeo'])


@pytest.mark.parametrize('mode', ['linear_probe', 'finetune'])
@pytest.mark.parametrize('name', ['eurosat', 'folder', 'resisc45', 'ucmerced'])
def test_config_fit_and_test(
    mode: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        '--config',
        str(CONFIGS / f'{mode}_{name}.yaml'),
        '--model.init_args.model',
        TINY,
        *data_args(name, tmp_path / 'data'),
        *cpu_args(tmp_path),
        '--trainer.fast_dev_run',
        'true',
    ]
    if name != 'folder':  # the fake trees have 3 classes
        common += ['--model.init_args.num_classes', '3']
    main(['fit', *common])
    main(['test', *common])
    out = capsys.readouterr().out
    assert 'Multi-scale test' in out
    assert 'test_acc_' in out


def make_task(**kwargs: Any) -> ScaleMAEClassification:
    defaults: dict[str, Any] = {'model': TINY, 'num_classes': 3, 'default_gsd': 0.3048}
    defaults.update(kwargs)
    return ScaleMAEClassification(**defaults)


def test_every_step_passes_gsd(tmp_path: Path) -> None:
    make_ucmerced(tmp_path / 'data', per_split=2)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=4)
    task = make_task(reference_gsd=0.5, eval_scales=[64])
    calls = spy_on(task.model)
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        max_steps=1,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(task, datamodule=datamodule)
    assert calls, 'the encoder was never called'
    for size, res in calls:
        assert size == 256
        torch.testing.assert_close(res, torch.full_like(res, 0.3048 / 0.5))
    calls.clear()
    trainer.test(task, datamodule=datamodule)
    by_size = {size: res for size, res in calls}
    assert set(by_size) == {256, 64}
    torch.testing.assert_close(
        by_size[64], torch.full_like(by_size[64], 0.3048 * 4 / 0.5)
    )
    [result] = task.scale_results
    assert result.height == 64
    assert result.gsd == pytest.approx(0.3048 * 4)


def test_batch_gsd_wins_over_default() -> None:
    task = make_task(default_gsd=99.0)
    calls = spy_on(task.model)
    batch = {
        'image': torch.rand(2, 3, 32, 32),
        'label': torch.tensor([0, 1]),
        'gsd': torch.tensor([0.5, 2.0]),
    }
    task.training_step(batch, 0)
    torch.testing.assert_close(calls[0][1], torch.tensor([0.5, 2.0]))


def test_linear_probe_head_and_freezing() -> None:
    task = make_task(freeze_backbone=True)
    head = task.model.head
    assert isinstance(head, nn.Sequential)
    bn, linear = head
    assert isinstance(bn, nn.BatchNorm1d)
    assert not bn.affine
    assert bn.eps == 1e-6
    assert isinstance(linear, nn.Linear)
    assert linear.out_features == 3
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {'model.head.1.weight', 'model.head.1.bias'}
    # Fine-tuning: plain linear head, everything trains.
    task = make_task()
    assert isinstance(task.model.head, nn.Linear)
    assert all(p.requires_grad for p in task.parameters())


def test_layer_decay_param_groups() -> None:
    task = make_task(layer_decay=0.5, lr=1.0, weight_decay=0.05)
    optimizer = task.configure_optimizers()['optimizer']
    lrs = sorted({group['lr'] for group in optimizer.param_groups})
    # tiny encoder: depth 2 -> layers 0 (embeddings), 1, 2 (blocks), 3 (head/norm)
    assert lrs == pytest.approx([0.125, 0.25, 0.5, 1.0])
    for group in optimizer.param_groups:
        if group['weight_decay'] > 0:
            assert all(p.ndim > 1 for p in group['params'])


def test_loads_pretraining_style_checkpoint(tmp_path: Path) -> None:
    encoder = build_encoder(TINY)
    state = {f'model.encoder.{k}': v for k, v in encoder.state_dict().items()}
    path = tmp_path / 'pretrain.ckpt'
    torch.save({'state_dict': state}, path)
    task = make_task(weights=str(path))
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(task.model.state_dict()[key], value)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match='layer_decay'):
        make_task(layer_decay=0.0)
    with pytest.raises(ValueError, match='eval_scales needs'):
        make_task(task='multilabel', num_labels=3, eval_scales=[1.0])
    with pytest.raises(ValueError, match='res_mode'):
        make_task(res_mode='metres')


def test_training_crop_updates_res() -> None:
    task = make_task(train_size=64, train_scale=(0.5, 1.0))
    calls = spy_on(task.model)
    batch = {'image': torch.rand(8, 3, 256, 256), 'label': torch.randint(0, 3, (8,))}
    task.training_step(batch, 0)
    [(size, res)] = calls
    assert size == 64
    # res = 0.3048 m x crop side / 64 with crop side in [256 sqrt(0.5), 256]
    low, high = 0.3048 * 256 * 0.5**0.5 / 64, 0.3048 * 256 / 64
    assert bool(((res >= low - 1e-3) & (res <= high + 1e-3)).all())
    assert res.unique().numel() > 1  # per-sample crops
    # validation is not cropped
    calls.clear()
    task.validation_step(batch, 0)
    assert calls[0][0] == 256


def test_training_crop_reference_res() -> None:
    task = make_task(train_size=64, res_mode='reference', base_res=2.5)
    calls = spy_on(task.model)
    batch = {'image': torch.rand(4, 3, 128, 128), 'label': torch.randint(0, 3, (4,))}
    task.training_step(batch, 0)
    [(size, res)] = calls
    assert size == 64
    # base_res x crop px / output px, crop px in [128 sqrt(0.5), 128]
    assert bool(((res >= 2.5 * 128 * 0.5**0.5 / 64 - 1e-3) & (res <= 5.0 + 1e-3)).all())


def test_multiscale_report_records_weights_checkpoint_and_chance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import warnings

    from torchgeo_scalemae.evaluation import report

    chances: list[float | None] = []
    real = report.plot_accuracy_vs_gsd

    def spy(*args: Any, chance: float | None = None, **kwargs: Any) -> Any:
        chances.append(chance)
        return real(*args, chance=chance, **kwargs)

    monkeypatch.setattr(report, 'plot_accuracy_vs_gsd', spy)
    make_ucmerced(tmp_path / 'data', per_split=2)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=4)
    task = make_task(eval_scales=[1.0, 64])
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        max_steps=1,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(task, datamodule=datamodule)
    ckpt = tmp_path / 'fine_tuned.ckpt'
    trainer.save_checkpoint(ckpt)
    # weights=None and no checkpoint: the encoder started from random weights
    with pytest.warns(UserWarning, match='randomly initialised encoder'):
        trainer.test(task, datamodule=datamodule)
    csv_path = tmp_path / 'classification_test_results.csv'
    plot_path = tmp_path / 'classification_test_accuracy_vs_gsd.png'
    assert f'Results written to {csv_path} and {plot_path}' in capsys.readouterr().out
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [(r['weights'], r['checkpoint']) for r in rows] == [('random', '')] * 2
    assert chances == [pytest.approx(1 / 3)]
    # a test of a checkpoint of this task evaluates that checkpoint: recorded, and
    # no warning about random weights
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        trainer.test(task, datamodule=datamodule, ckpt_path=str(ckpt))
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert {r['checkpoint'] for r in rows} == {str(ckpt)}
    assert f'checkpoint={ckpt}' in capsys.readouterr().out


def test_public_timm_layer_decay_import() -> None:
    import timm.optim

    from torchgeo_scalemae.tasks import _optim

    assert _optim.param_groups_layer_decay is timm.optim.param_groups_layer_decay
