# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from jsonargparse import ArgumentParser
from torch.utils.data import Dataset
from torchgeo.datamodules import (
    BaseDataModule,
    EuroSATDataModule,
    NonGeoDataModule,
    UCMercedDataModule,
)

from torchgeo_scalemae.datamodules import AttachGSD, GSDDataModule, with_gsd
from torchgeo_scalemae.transforms import GSDResize


class RandomImages(Dataset[dict[str, Any]]):
    def __init__(self, split: str = 'train', size: int = 32, length: int = 6) -> None:
        self.size = size
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            'image': torch.full((3, self.size, self.size), float(index)),
            'label': torch.tensor(index),
        }


class FakeDataModule(NonGeoDataModule):
    def __init__(self, batch_size: int = 2, **kwargs: Any) -> None:
        super().__init__(RandomImages, batch_size, 0, **kwargs)  # type: ignore[arg-type]


def trainer(split: str = 'train') -> Any:
    return SimpleNamespace(
        training=split == 'train',
        validating=split == 'val',
        sanity_checking=False,
        testing=split == 'test',
        predicting=split == 'predict',
    )


def test_attach_sample_and_batch() -> None:
    attach = AttachGSD(0.5)
    sample = attach({'image': torch.zeros(3, 8, 8)})
    assert sample['gsd'].shape == ()
    assert sample['gsd'].dtype == torch.float32
    batch = attach({'image': torch.zeros(4, 3, 8, 8)})
    assert torch.equal(batch['gsd'], torch.full((4,), 0.5))
    # existing per-sample values win unless overwrite
    kept = attach({'image': torch.zeros(2, 3, 8, 8), 'gsd': torch.tensor([1.0, 2.0])})
    assert kept['gsd'].tolist() == [1.0, 2.0]
    over = AttachGSD(3.0, overwrite=True)(kept)
    assert over['gsd'].tolist() == [3.0, 3.0]
    masks = attach({'mask': torch.zeros(5, 8, 8)})
    assert masks['gsd'].shape == (5,)


def test_attach_errors() -> None:
    for bad in (0.0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='positive'):
            AttachGSD(bad)
    with pytest.raises(TypeError, match='image or mask'):
        AttachGSD(1.0)({'label': torch.zeros(2)})


def test_with_gsd_follows_resize() -> None:
    # UCMercedDataModule's aug normalises and resizes to 256: gsd must follow
    cls = with_gsd(UCMercedDataModule)
    assert cls.__name__ == 'UCMercedDataModuleWithGSD'
    assert issubclass(cls, UCMercedDataModule)
    dm = cls(batch_size=2)
    dm.trainer = trainer()  # type: ignore[assignment]
    batch = {'image': torch.rand(2, 3, 128, 128) * 255, 'label': torch.zeros(2)}
    out = dm.on_after_batch_transfer(batch, 0)
    assert out['image'].shape == (2, 3, 256, 256)
    assert torch.allclose(out['gsd'], torch.full((2,), 0.3048 * 128 / 256))
    assert out['image'].max() <= 1.0
    # without follow_resize the native GSD stays
    dm = with_gsd(UCMercedDataModule, follow_resize=False)(batch_size=2)
    dm.trainer = trainer()  # type: ignore[assignment]
    assert torch.allclose(
        dm.on_after_batch_transfer(batch, 0)['gsd'], torch.full((2,), 0.3048)
    )


def test_with_gsd_explicit_and_errors() -> None:
    cls = with_gsd(EuroSATDataModule, gsd=20.0)
    assert cls.gsd == 20.0  # type: ignore[attr-defined]
    assert with_gsd(EuroSATDataModule).gsd == 10.0  # type: ignore[attr-defined]
    with pytest.raises(KeyError, match='no known GSD'):
        with_gsd(FakeDataModule)
    with pytest.raises(TypeError, match='LightningDataModule class'):
        with_gsd(dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match='positive'):
        with_gsd(EuroSATDataModule, gsd=-1.0)


def test_wrapper_end_to_end() -> None:
    dm = GSDDataModule(FakeDataModule, gsd=0.7, batch_size=3, train_aug=GSDResize(16))
    assert isinstance(dm, BaseDataModule)
    dm.trainer = trainer()  # type: ignore[assignment]
    dm.setup('fit')
    assert dm.train_dataset is dm.datamodule.train_dataset
    batch = next(iter(dm.train_dataloader()))
    assert 'gsd' not in batch
    out = dm.on_after_batch_transfer(batch, 0)
    assert out['image'].shape == (3, 3, 16, 16)
    # native 0.7 m at 32 px, resized to 16 px by train_aug
    assert torch.allclose(out['gsd'], torch.full((3,), 1.4))
    # validation: no train_aug
    dm.trainer = trainer('val')  # type: ignore[assignment]
    out = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert torch.allclose(out['gsd'], torch.full((3,), 0.7))


def test_wrapper_names_and_errors() -> None:
    dm = GSDDataModule('EuroSATDataModule', batch_size=4, root='nowhere')
    assert isinstance(dm.datamodule, EuroSATDataModule)
    assert dm.gsd == 10.0
    dm = GSDDataModule('torchgeo.datamodules.UCMercedDataModule')
    assert dm.gsd == 0.3048
    dm = GSDDataModule(EuroSATDataModule(), gsd=5.0)
    assert dm.gsd == 5.0
    with pytest.raises(ValueError, match='only allowed with a datamodule name'):
        GSDDataModule(EuroSATDataModule(), batch_size=2)
    with pytest.raises(TypeError, match='not a LightningDataModule'):
        GSDDataModule('NoSuchDataModule')
    with pytest.raises(KeyError, match='no known GSD'):
        GSDDataModule(FakeDataModule)


def test_wrapper_from_cli_config(tmp_path: Path) -> None:
    config = tmp_path / 'config.yaml'
    config.write_text(
        'data:\n'
        '  class_path: torchgeo_scalemae.datamodules.GSDDataModule\n'
        '  init_args:\n'
        '    datamodule: EuroSATDataModule\n'
        '  dict_kwargs:\n'
        '    root: nowhere\n'
        '    batch_size: 4\n'
    )
    parser = ArgumentParser()
    parser.add_subclass_arguments(BaseDataModule, 'data')
    parser.add_argument('--config', action='config')
    cfg = parser.parse_args(['--config', str(config)])
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, GSDDataModule)
    assert isinstance(dm.datamodule, EuroSATDataModule)
    assert dm.datamodule.batch_size == 4
    assert dm.gsd == 10.0


def test_wrapper_torchgeo_fit(tmp_path: Path) -> None:
    """`torchgeo fit` with the wrapper around a datamodule that knows no GSD."""
    from torchgeo.main import main

    config = tmp_path / 'fit.yaml'
    config.write_text(
        f"""
trainer:
  accelerator: cpu
  max_steps: 1
  limit_val_batches: 0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: {tmp_path}
      name: logs
model:
  class_path: torchgeo_scalemae.tasks.ScaleMAEPretraining
  init_args:
    model: scalemae_pretrain_vit_tiny_patch16
    input_size: 32
    hflip: false
data:
  class_path: torchgeo_scalemae.datamodules.GSDDataModule
  init_args:
    datamodule: tests.datamodules.test_attach.FakeDataModule
    gsd: 0.7
  dict_kwargs:
    batch_size: 4
    size: 64
"""
    )
    main(['fit', '--config', str(config)])
    metrics = (tmp_path / 'logs' / 'version_0' / 'metrics.csv').read_text()
    header, *rows = [line.split(',') for line in metrics.strip().splitlines()]
    row = next(r for r in rows if r[header.index('train_gsd_min_step')])
    low = float(row[header.index('train_gsd_min_step')])
    high = float(row[header.index('train_gsd_max_step')])
    # input gsd = 0.7 m x (crop side / 64 px) x 2, crop side in [sqrt(0.2) * 64, 64]
    assert 0.7 * 2 * 0.2**0.5 - 1e-4 <= low <= high <= 0.7 * 2 + 1e-4


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="key must be a non-empty string, got ''"):
        AttachGSD(1.0, key='')
    with pytest.raises(TypeError, match='key must be a non-empty string, got 3'):
        AttachGSD(1.0, key=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overwrite must be True or False, got 'no'"):
        AttachGSD(1.0, overwrite='no')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"gsd must be a number or a tensor.*'1'"):
        AttachGSD('1')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"follow_resize must be True or.*'no'"):
        GSDDataModule(FakeDataModule, gsd=1.0, follow_resize='no')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='train_aug must be callable or None, got 3'):
        GSDDataModule(FakeDataModule, gsd=1.0, train_aug=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='follow_resize must be True or False, got 0'):
        with_gsd(EuroSATDataModule, follow_resize=0)  # type: ignore[arg-type]


def test_attach_needs_a_dict() -> None:
    with pytest.raises(TypeError, match='expects a sample or batch dict, got Tensor'):
        AttachGSD(1.0)(torch.zeros(2, 3, 8, 8))  # type: ignore[arg-type]
