# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch import LightningModule, Trainer
from rasterio.transform import from_origin
from torch import Tensor
from torchgeo.datasets import stack_samples

from torchgeo_scalemae.datamodules import (
    CompleteTileSampler,
    GeoTIFFGSDDataModule,
    GSDRasterDataset,
    MultiResolutionPatchSampler,
    default_raster_path,
    metres_per_crs_unit,
)
from torchgeo_scalemae.gsd import gsd_from_batch
from torchgeo_scalemae.transforms import GSDRandomResizedCrop, ScaleMAEPair


def write_raster(
    path: Path,
    crs: str,
    res: float,
    size: int = 64,
    x0: float = 500000.0,
    y0: float = 4000000.0,
) -> Path:
    profile = {
        'driver': 'GTiff',
        'width': size,
        'height': size,
        'count': 3,
        'dtype': 'uint8',
        'crs': crs,
        'transform': from_origin(x0, y0, res, res),
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
    return path


def test_default_raster() -> None:
    path = default_raster_path()
    assert path.is_file()
    assert path.stat().st_size < 2_000_000
    with rasterio.open(path) as src:
        assert src.count == 3
        assert src.crs.to_epsg() == 32617
        assert src.res == pytest.approx((0.1, 0.1))
        assert min(src.width, src.height) >= 256
    ds = GSDRasterDataset(path)
    xs, ys, _ = ds.bounds
    sample = ds[xs.start : xs.start + 3.2, ys.start : ys.start + 3.2]
    assert sample['image'].shape == (3, 32, 32)
    assert sample['gsd'].item() == pytest.approx(0.1)  # the file's resolution


@pytest.mark.parametrize(
    ('crs', 'res', 'gsd'),
    [('EPSG:32633', 0.5, 0.5), ('EPSG:3857', 2.0, 2.0), ('EPSG:2263', 1.0, 0.3048006)],
)
def test_raster_gsd_equals_resolution(
    tmp_path: Path, crs: str, res: float, gsd: float
) -> None:
    # Web Mercator at the equator, where its metres are ground metres
    y0 = 128.0 if crs == 'EPSG:3857' else 200000.0
    path = write_raster(tmp_path / 'a.tif', crs, res, x0=1000.0, y0=y0)
    ds = GSDRasterDataset(tmp_path)
    assert ds.res == (res, res)
    xs, ys, _ = ds.bounds
    sample = ds[xs.start : xs.start + 16 * res, ys.start : ys.start + 16 * res]
    assert sample['image'].shape == (3, 16, 16)
    assert sample['gsd'].item() == pytest.approx(gsd, rel=1e-6)
    with rasterio.open(path) as src:
        assert src.res[0] * metres_per_crs_unit(src.crs) == pytest.approx(gsd)  # type: ignore[operator]
    # read at another resolution (GeoSlice step): gsd follows the step
    sample = ds[
        xs.start : xs.start + 8 * 2 * res : 2 * res,
        ys.start : ys.start + 8 * 2 * res : 2 * res,
    ]
    assert sample['image'].shape == (3, 8, 8)
    assert sample['gsd'].item() == pytest.approx(2 * gsd, rel=1e-6)


def test_geographic_crs_refused(tmp_path: Path) -> None:
    write_raster(tmp_path / 'wgs84.tif', 'EPSG:4326', 1e-5, x0=10.0, y0=45.0)
    with pytest.raises(
        ValueError, match=r'not projected in a linear unit.*degree.*gsd='
    ):
        GSDRasterDataset(tmp_path)
    with pytest.raises(ValueError, match='not projected'):
        GeoTIFFGSDDataModule(str(tmp_path), patch_size=8).setup('fit')
    # with an explicit GSD it is accepted, and scaled with the read resolution
    ds = GSDRasterDataset(tmp_path, gsd=1.1)
    xs, ys, _ = ds.bounds
    assert ds[xs.start : xs.start + 8e-5, ys.start : ys.start + 8e-5][
        'gsd'
    ].item() == pytest.approx(1.1)
    step = 2e-5
    sample = ds[
        xs.start : xs.start + 8 * step : step, ys.start : ys.start + 8 * step : step
    ]
    assert sample['gsd'].item() == pytest.approx(2.2)
    # or reproject to a metric CRS
    ds = GSDRasterDataset(tmp_path, crs='EPSG:32632')
    assert 0.5 < ds.res[0] < 2.0
    xs, ys, _ = ds.bounds
    sample = ds[
        xs.start : xs.start + 4 * ds.res[0], ys.start : ys.start + 4 * ds.res[1]
    ]
    assert sample['gsd'].item() == pytest.approx(ds.res[0], rel=1e-6)


def test_metres_per_crs_unit() -> None:
    assert metres_per_crs_unit('EPSG:32617') == 1.0
    assert metres_per_crs_unit('EPSG:2263') == pytest.approx(0.3048006)
    assert metres_per_crs_unit('EPSG:4326', raise_error=False) is None
    with pytest.raises(ValueError, match='cannot read the CRS'):
        metres_per_crs_unit('not a crs')
    with pytest.raises(ValueError, match='positive'):
        GSDRasterDataset(default_raster_path(), gsd=-1.0)


def test_multi_resolution_sampler() -> None:
    ds = GSDRasterDataset(default_raster_path())
    sampler = MultiResolutionPatchSampler(
        ds, size=16, resolutions=[0.1, 0.2, 0.4], length=5, generator=0
    )
    slices = list(sampler)
    assert len(slices) == len(sampler) == 15
    samples = [ds[s] for s in slices]
    batch = stack_samples(samples)
    assert batch['image'].shape == (15, 3, 16, 16)
    assert torch.allclose(batch['gsd'], torch.tensor([0.1, 0.2, 0.4] * 5))
    # the same places at several resolutions: groups of 3 share a centre
    b = batch['bounds'].double()
    centre_x = (b[:, 0] + b[:, 1]) / 2
    assert torch.allclose(
        centre_x.view(5, 3), centre_x.view(5, 3)[:, :1].expand(5, 3), atol=1e-1
    )
    assert not torch.allclose(centre_x[0], centre_x[3])
    # footprints scale with the resolution
    width = (b[:, 1] - b[:, 0]).view(5, 3)
    assert torch.allclose(
        width, torch.tensor([1.6, 3.2, 6.4], dtype=torch.float64).expand(5, 3), atol=0.1
    )
    random = MultiResolutionPatchSampler(
        ds, size=16, resolutions=[0.1, 0.2], length=20, mode='random', generator=0
    )
    assert len(random) == 20
    assert {s[0].step for s in random} == {0.1, 0.2}


def test_multi_resolution_sampler_errors() -> None:
    ds = GSDRasterDataset(default_raster_path())
    with pytest.raises(ValueError, match='resolutions'):
        MultiResolutionPatchSampler(ds, size=16, resolutions=[])
    with pytest.raises(ValueError, match='resolutions'):
        MultiResolutionPatchSampler(ds, size=16, resolutions=[0.1, -1.0])
    with pytest.raises(ValueError, match='mode'):
        MultiResolutionPatchSampler(ds, size=16, resolutions=[0.1], mode='some')
    with pytest.raises(ValueError, match='too small'):
        MultiResolutionPatchSampler(ds, size=256, resolutions=[1.0])


def test_datamodule_default_raster() -> None:
    dm = GeoTIFFGSDDataModule(
        patch_size=32, batch_size=6, resolutions=[0.1, 0.2, 0.4], length=4
    )
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    assert batch['image'].shape == (6, 3, 32, 32)
    assert torch.allclose(batch['gsd'], torch.tensor([0.1, 0.2, 0.4, 0.1, 0.2, 0.4]))
    assert torch.allclose(
        gsd_from_batch({'image': batch['image'], 'bounds': batch['bounds']}),
        batch['gsd'],
    )
    batch = dm.aug(batch)
    assert batch['image'].max() <= 1
    # per-sample GSDs survive augmentation, and bounds follow
    pair = ScaleMAEPair(8)(batch)
    assert pair['target'].shape == (6, 3, 16, 16)
    assert torch.allclose(pair['gsd'], 2 * pair['target_gsd'])
    assert torch.allclose(pair['bounds'][:, 2], pair['gsd'], rtol=1e-5)
    out = GSDRandomResizedCrop(16, scale=(1.0, 1.0))(batch)
    assert torch.allclose(out['gsd'], batch['gsd'] * 2)
    val = next(iter(dm.val_dataloader()))
    assert torch.allclose(val['gsd'], torch.full((6,), 0.1))
    dm.setup('test')
    dm.setup('predict')
    # 400 px in 32-px tiles: prediction covers everything with TorchGeo's centred
    # 13 x 13 grid (edge tiles padded); testing lays the 12 x 12 complete tiles
    assert len(dm.predict_sampler) == 169  # type: ignore[arg-type]
    assert len(dm.test_sampler) == 144  # type: ignore[arg-type]


def test_validation_tiles_are_never_padded(tmp_path: Path) -> None:
    # a raster with no zero pixel: any zero in a validation batch is padding
    profile = {
        'driver': 'GTiff',
        'width': 50,
        'height': 50,
        'count': 3,
        'dtype': 'uint8',
        'crs': 'EPSG:32633',
        'transform': from_origin(500000.0, 4000000.0, 0.5, 0.5),
    }
    with rasterio.open(tmp_path / 'r.tif', 'w', **profile) as dst:
        dst.write(np.full((3, 50, 50), 200, dtype=np.uint8))
    dm = GeoTIFFGSDDataModule(str(tmp_path), patch_size=16, batch_size=64, length=2)
    dm.setup('validate')
    batch = next(iter(dm.val_dataloader()))
    assert batch['image'].shape[0] == 9  # 3 x 3 complete 16-px tiles in 50 px
    assert bool((batch['image'] == 200).all())
    padded = GeoTIFFGSDDataModule(
        str(tmp_path), patch_size=16, batch_size=64, complete_tiles=False
    )
    padded.setup('validate')
    batch = next(iter(padded.val_dataloader()))
    assert batch['image'].shape[0] == 16  # TorchGeo's grid: 4 x 4, edges padded
    assert bool((batch['image'] == 0).any())
    too_big = GeoTIFFGSDDataModule(str(tmp_path), patch_size=64, batch_size=4)
    with pytest.raises(
        ValueError,
        match=r'validation raster is 50 x 50 pixels, smaller than one complete '
        r'64-pixel validation tile \(patch_size=64\)',
    ):
        too_big.setup('validate')


def test_datamodule_plain_sampler_and_errors(tmp_path: Path) -> None:
    write_raster(tmp_path / 'a.tif', 'EPSG:32633', 0.3)
    dm = GeoTIFFGSDDataModule(str(tmp_path), patch_size=16, batch_size=4, length=4)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    assert torch.allclose(batch['gsd'], torch.full((4,), 0.3))
    with pytest.raises(ValueError, match='resolution_mode'):
        GeoTIFFGSDDataModule(str(tmp_path), resolution_mode='x')
    with pytest.raises(ValueError, match='std'):
        GeoTIFFGSDDataModule(str(tmp_path), std=0.0)


def test_web_mercator_latitude(tmp_path: Path) -> None:
    # northing of latitude 60 degrees in Web Mercator: cos(60) = 0.5
    import math

    y60 = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(60) / 2))
    write_raster(tmp_path / 'a.tif', 'EPSG:3857', 2.0, x0=0.0, y0=y60 + 32.0)
    ds = GSDRasterDataset(tmp_path)
    xs, _, _ = ds.bounds
    sample = ds[xs.start : xs.start + 32.0, y60 - 16.0 : y60 + 16.0]
    assert sample['gsd'].item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    ('size', 'patch', 'complete_tiles'),
    [(64, 48, True), (64, 64, True), (16, 16, False), (16, 12, False)],
)
def test_raster_too_small_for_training_patches(
    tmp_path: Path, size: int, patch: int, complete_tiles: bool
) -> None:
    """TorchGeo's sampler would report batches and yield none: `fit` would hang."""
    write_raster(tmp_path / 'a.tif', 'EPSG:32633', 0.5, size=size)
    dm = GeoTIFFGSDDataModule(
        str(tmp_path), patch_size=patch, complete_tiles=complete_tiles
    )
    with pytest.raises(
        ValueError,
        match=rf'training raster is {size} x {size} pixels, too small for random '
        rf'{patch}-pixel training patches \(patch_size={patch}\).*patch_size <= '
        rf'{int(np.ceil(size / np.sqrt(2))) - 1}',
    ):
        dm.setup('fit')


def test_largest_patch_that_fits_gives_batches(tmp_path: Path) -> None:
    write_raster(tmp_path / 'a.tif', 'EPSG:32633', 0.5, size=64)
    dm = GeoTIFFGSDDataModule(str(tmp_path), patch_size=45, batch_size=2)
    dm.setup('fit')  # the largest square patch the error message suggests
    assert next(iter(dm.train_dataloader()))['image'].shape == (2, 3, 45, 45)


def test_default_raster_with_448_pixel_tiles() -> None:
    dm = GeoTIFFGSDDataModule(patch_size=448)
    with pytest.raises(ValueError) as error:
        dm.setup('validate')
    message = str(error.value)
    assert message.startswith(
        'the validation raster is 400 x 400 pixels, smaller than one complete '
        '448-pixel validation tile (patch_size=448)'
    )
    assert 'slice(' not in message and 'Timestamp' not in message
    with pytest.raises(ValueError, match=r'training raster is 400 x 400 pixels, .*448'):
        dm.setup('fit')
    with pytest.raises(ValueError, match=r'test raster is 400 x 400 pixels'):
        dm.setup('test')
    dm = GeoTIFFGSDDataModule(patch_size=(448, 32))
    with pytest.raises(ValueError, match=r'complete 448 x 32-pixel validation tile'):
        dm.setup('validate')


def test_several_small_rasters_name_the_largest(tmp_path: Path) -> None:
    small = write_raster(tmp_path / 'a.tif', 'EPSG:32633', 0.5, size=16)
    other = write_raster(tmp_path / 'b.tif', 'EPSG:32633', 0.5, size=20, x0=600000.0)
    dm = GeoTIFFGSDDataModule(val_paths=[str(small), str(other)], patch_size=24)
    with pytest.raises(
        ValueError,
        match=r'the largest of the 2 validation rasters is 20 x 20 pixels, smaller '
        r'than one complete 24-pixel validation tile',
    ):
        dm.setup('validate')


class _TinyTask(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.steps = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self.steps += 1
        loss: Tensor = (self.weight * batch['image'].mean()) ** 2
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _TinyTaskWithValidation(_TinyTask):
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pass


def _trainer(**kwargs: Any) -> Trainer:
    return Trainer(
        accelerator='cpu',
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.filterwarnings('ignore')
def test_val_rasters_checked_only_when_validating(tmp_path: Path) -> None:
    train = write_raster(tmp_path / 'train.tif', 'EPSG:32633', 0.5, size=64)
    small = write_raster(tmp_path / 'small.tif', 'EPSG:32633', 0.5, size=16)

    def datamodule() -> GeoTIFFGSDDataModule:
        return GeoTIFFGSDDataModule(
            str(train), val_paths=str(small), patch_size=32, batch_size=2, length=2
        )

    # validation off: the too-small validation raster is never complained about
    for trainer, model in (
        (_trainer(limit_val_batches=0), _TinyTaskWithValidation()),
        (_trainer(), _TinyTask()),  # no validation_step: no validation loop
    ):
        trainer.fit(model, datamodule=datamodule())
        assert model.steps == 1
    # validation on: an error at setup, before any training step
    model = _TinyTaskWithValidation()
    with pytest.raises(
        ValueError, match=r'validation raster is 16 x 16 pixels, .*32-pixel'
    ):
        _trainer(num_sanity_val_steps=0).fit(model, datamodule=datamodule())
    assert model.steps == 0
    # without a trainer: at setup('validate') or when the loader is built
    dm = datamodule()
    dm.setup('fit')
    with pytest.raises(ValueError, match=r'validation raster is 16 x 16 pixels'):
        dm.val_dataloader()
    with pytest.raises(ValueError, match=r'validation raster is 16 x 16 pixels'):
        datamodule().setup('validate')


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'patch_size': 0}, ValueError, 'patch_size must be positive, got 0'),
        ({'patch_size': (32, -1)}, ValueError, r'got \(32, -1\)'),
        ({'patch_size': 32.5}, ValueError, 'patch_size must be an int .*32.5'),
        ({'length': 0}, ValueError, 'length must be >= 1, got 0'),
        ({'length': -3}, ValueError, 'length must be >= 1, got -3'),
        ({'length': 2.5}, TypeError, 'length must be None or an int.*2.5'),
        ({'batch_size': 0}, ValueError, 'batch_size must be >= 1, got 0'),
        ({'num_workers': -1}, ValueError, 'num_workers must be >= 0, got -1'),
        ({'seed': 'a'}, TypeError, "seed must be None or an int.*'a'"),
        ({'resolutions': []}, ValueError, r'resolutions .*got \[\]'),
        ({'resolutions': [0.1, 0.0]}, ValueError, r'resolutions .*got \[0.1, 0.0\]'),
        ({'resolutions': 0.1}, ValueError, r'resolutions .*got 0.1'),
        ({'std': float('nan')}, ValueError, 'std must be finite and positive, got nan'),
        ({'std': [1.0, 0.0]}, ValueError, r'std must be .*got \[1.0, 0.0\]'),
        ({'mean': float('inf')}, ValueError, 'mean must be finite, got inf'),
        ({'mean': True}, TypeError, 'mean must be a number .*got True'),
        (
            {'std': [1.0, False]},
            TypeError,
            r'std must be a number .*got \[1.0, False\]',
        ),
        ({'complete_tiles': 'no'}, TypeError, "complete_tiles must be True or.*'no'"),
        ({'resolution_mode': 'XYZ'}, ValueError, "resolution_mode .*'XYZ'"),
    ],
)
def test_datamodule_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        GeoTIFFGSDDataModule(**kwargs)


def test_sampler_bad_arguments() -> None:
    ds = GSDRasterDataset(default_raster_path())
    with pytest.raises(ValueError, match='length must be >= 1, got 0'):
        MultiResolutionPatchSampler(ds, size=16, resolutions=[0.1], length=0)
    with pytest.raises(ValueError, match='size must be positive, got 0'):
        MultiResolutionPatchSampler(ds, size=0, resolutions=[0.1])
    with pytest.raises(ValueError, match=r"resolutions .*got \['a'\]"):
        MultiResolutionPatchSampler(ds, size=16, resolutions=['a'])  # type: ignore[list-item]
    with pytest.raises(
        ValueError, match=r'region is 400 x 400 pixels .*256 x 256-pixel patches'
    ):
        MultiResolutionPatchSampler(ds, size=256, resolutions=[0.4])
    with pytest.raises(ValueError, match=r'size must be .*got 0'):
        CompleteTileSampler(ds, size=0)
    with pytest.raises(ValueError, match=r'stride must be .*got \(8, nan\)'):
        CompleteTileSampler(ds, size=8, stride=(8, float('nan')))


def test_raster_dataset_bad_arguments() -> None:
    path = default_raster_path()
    with pytest.raises(TypeError, match="gsd must be a number, got str: '1'"):
        GSDRasterDataset(path, gsd='1')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'res .*got 0'):
        GSDRasterDataset(path, res=0)
    with pytest.raises(ValueError, match=r'bands .*got \[0\]'):
        GSDRasterDataset(path, bands=[0])
    with pytest.raises(ValueError, match=r"bands .*got '1'"):
        GSDRasterDataset(path, bands='1')  # type: ignore[arg-type]
    ds = GSDRasterDataset(path)
    for step in (0.0, -0.1, float('nan')):
        with pytest.raises(ValueError, match=f'step .*got {step!r}'):
            ds.gsd_for_step(step)
    with pytest.raises(TypeError, match="raise_error must be True or False, got 'no'"):
        metres_per_crs_unit('EPSG:32617', raise_error='no')  # type: ignore[arg-type]


@pytest.mark.parametrize('with_good_raster', [True, False])
def test_non_raster_tif_is_named(tmp_path: Path, with_good_raster: bool) -> None:
    """TorchGeo skips unreadable files silently (or says only 'not found')."""
    if with_good_raster:
        write_raster(tmp_path / 'a.tif', 'EPSG:32633', 0.5)
    (tmp_path / 'notes.tif').write_text('not a raster')
    with pytest.raises(
        ValueError,
        match=r"notes\.tif' matches filename_glob '\*\.tif' but is not a raster",
    ):
        GSDRasterDataset(tmp_path)
    with pytest.raises(ValueError, match=r'notes\.tif'):
        GeoTIFFGSDDataModule(str(tmp_path), patch_size=8).setup('fit')
    # a narrower glob leaves the file out
    if with_good_raster:
        assert len(GSDRasterDataset(tmp_path, filename_glob='a.tif')) == 1
