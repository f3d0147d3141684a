# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import math
from typing import Any

import pytest
import torch

from torchgeo_scalemae.evaluation.scales import (
    MultiScaleEvaluation,
    ScaleStats,
    check_scales,
    resize_to_scale,
    scale_res,
    scale_size,
)


@pytest.mark.parametrize(
    ('scale', 'native', 'expected'),
    [
        (1.0, 256, 256),
        (0.5, 256, 128),
        (0.125, 256, 32),
        (150, 150, 144),  # nearest multiple of 16
        (112, 150, 112),
        (75, 150, 80),
        (48, 150, 48),
        (32, 150, 32),
        (0.125, 64, 16),  # 8 px -> one patch
        (1.0, 150, 144),
    ],
)
def test_scale_size(scale: float, native: int, expected: int) -> None:
    assert scale_size(scale, native, 16) == expected


def test_resize_updates_gsd() -> None:
    batch = {
        'image': torch.rand(2, 3, 150, 150),
        'gsd': torch.tensor([8.0, 2.0]),
        'label': torch.tensor([0, 1]),
    }
    out = resize_to_scale(batch, 75, 16)
    assert out['image'].shape == (2, 3, 80, 80)
    torch.testing.assert_close(out['gsd'], torch.tensor([8.0, 2.0]) * 150 / 80)
    torch.testing.assert_close(out['label'], batch['label'])
    # the input batch is untouched
    assert batch['image'].shape[-1] == 150


def test_resize_without_gsd() -> None:
    out = resize_to_scale({'image': torch.rand(1, 3, 64, 64)}, 0.5, 16)
    assert out['image'].shape == (1, 3, 32, 32)
    assert 'gsd' not in out


def test_area_resize_is_a_mean() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = resize_to_scale(
        {'image': image, 'gsd': torch.ones(1)}, 2, 2, interpolation='area'
    )
    torch.testing.assert_close(out['image'], torch.nn.functional.avg_pool2d(image, 2))
    torch.testing.assert_close(out['gsd'], torch.tensor([2.0]))


def test_scale_res_modes() -> None:
    gsd = torch.tensor([0.6, 1.2])
    res = scale_res(
        'gsd', gsd=gsd, size=128, native=256, batch_size=2, reference_gsd=0.3
    )
    torch.testing.assert_close(res, torch.tensor([2.0, 4.0]))
    res = scale_res(
        'reference', gsd=None, size=56, native=224, batch_size=2, base_res=1.0
    )
    torch.testing.assert_close(res, torch.full((2,), 4.0))
    res = scale_res(
        'reference', gsd=None, size=112, native=64, batch_size=1, reference_size=224
    )
    torch.testing.assert_close(res, torch.full((1,), 2.0))
    res = scale_res(
        'constant', gsd=gsd, size=32, native=256, batch_size=2, base_res=2.5
    )
    torch.testing.assert_close(res, torch.full((2,), 2.5))
    with pytest.raises(ValueError, match="res_mode='gsd' needs a GSD"):
        scale_res('gsd', gsd=None, size=32, native=64, batch_size=1)
    with pytest.raises(ValueError, match='res_mode must be'):
        scale_res('metres', gsd=gsd, size=32, native=64, batch_size=2)  # type: ignore[arg-type]


def test_check_scales() -> None:
    assert check_scales([1, 0.5, 112]) == [1.0, 0.5, 112.0]
    assert check_scales(0.5) == [0.5]
    with pytest.raises(ValueError, match='empty'):
        check_scales([])
    with pytest.raises(ValueError, match='positive'):
        check_scales([0.0])
    with pytest.raises(ValueError, match='twice'):
        check_scales([1.0, 1])
    with pytest.raises(TypeError, match='numbers'):
        check_scales(['64'])
    with pytest.raises(ValueError, match='scale, native and patch_size'):
        scale_size(0, 64, 16)


def test_resize_masks_with_nearest_sampling() -> None:
    mask = torch.tensor([[[0, 1], [2, 3]]], dtype=torch.long).repeat_interleave(
        4, dim=1
    )
    mask = mask.repeat_interleave(4, dim=2)  # (1, 8, 8) blocks of 4 x 4
    image = torch.rand(1, 3, 8, 8)
    for gsd in (None, torch.ones(1)):
        batch = {'image': image, 'mask': mask, 'gsd': gsd}
        out = resize_to_scale(batch, 0.5, 1)
        assert out['mask'].shape == (1, 4, 4)
        assert out['mask'].dtype == torch.long
        assert set(out['mask'].unique().tolist()) == {0, 1, 2, 3}  # no new labels
        assert out['mask'][0, 0, 0] == 0 and out['mask'][0, 3, 3] == 3
    four_d = resize_to_scale({'image': image, 'mask': mask[:, None]}, 0.5, 1)
    assert four_d['mask'].shape == (1, 1, 4, 4)


def test_encoder_patch_size() -> None:
    from types import SimpleNamespace

    from torchgeo_scalemae.evaluation.scales import encoder_patch_size

    vit = SimpleNamespace(patch_embed=SimpleNamespace(patch_size=(14, 14)))
    assert encoder_patch_size(vit) == 14  # type: ignore[arg-type]
    assert encoder_patch_size(SimpleNamespace(patch_size=8)) == 8  # type: ignore[arg-type]
    assert encoder_patch_size(torch.nn.Conv2d(3, 3, 3)) == 1


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'scales': []}, 'empty'),
        ({'res_mode': 'metres'}, 'res_mode'),
        ({'reference_gsd': 0.0}, 'reference_gsd'),
        ({'base_res': float('nan')}, 'base_res'),
        ({'default_gsd': -1.0}, 'default_gsd'),
        ({'reference_size': 0}, 'reference_size'),
        ({'interpolation': 'lanczos'}, 'interpolation'),
    ],
)
def test_multiscale_validates_once(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiScaleEvaluation(**kwargs)


def test_scaled_batches_update_gsd_res_and_stats() -> None:
    multiscale = MultiScaleEvaluation([1.0, 0.5, 32], reference_gsd=0.5)
    batch = {
        'image': torch.rand(2, 3, 64, 64),
        'mask': torch.zeros(2, 64, 64, dtype=torch.long),
        'gsd': torch.tensor([1.0, 2.0]),
        'label': torch.tensor([0, 1]),
    }
    stats = ScaleStats()
    items = list(multiscale.scaled_batches(batch, patch_size=16))
    assert [i.index for i in items] == [0, 1, 2]
    assert [i.size for i in items] == [(64, 64), (32, 32), (32, 32)]
    for item in items:
        factor = 64 / item.size[1]
        assert item.gsd is not None
        torch.testing.assert_close(item.gsd, torch.tensor([1.0, 2.0]) * factor)
        torch.testing.assert_close(item.res, item.gsd / 0.5)
        assert item.batch['mask'].shape[-2:] == item.size
        assert torch.equal(item.batch['label'], batch['label'])
        stats.update(item)
    stats.update(items[1])  # a second batch at the same scale
    result = stats.result(1, 0.75, num_bank=9)
    assert (result.scale, result.height, result.width) == (0.5, 32, 32)
    assert result.gsd == pytest.approx(2.0)  # median of [2, 4, 2, 4]
    assert result.num_queries == 4
    assert (result.accuracy, result.num_bank) == (0.75, 9)
    assert len(stats) == 3
    stats.reset()
    assert len(stats) == 0


def test_gsd_is_optional_outside_gsd_mode() -> None:
    batch = {'image': torch.rand(1, 3, 32, 32)}
    relative = MultiScaleEvaluation([1.0, 0.5], res_mode='reference', base_res=2.0)
    items = list(relative.scaled_batches(batch, 16))
    assert [i.gsd for i in items] == [None, None]
    assert [float(i.res) for i in items] == [2.0, 4.0]
    stats = ScaleStats()
    stats.update(items[0])
    assert math.isnan(stats.result(0, 1.0).gsd)
    with pytest.raises(ValueError, match='default_gsd'):
        list(MultiScaleEvaluation([1.0]).scaled_batches(batch, 16))
    # with a default GSD the batch needs none
    item = next(MultiScaleEvaluation([1.0], default_gsd=3.0).scaled_batches(batch, 16))
    torch.testing.assert_close(item.res, torch.tensor([3.0]))
    # a bad GSD in the batch is an error in every mode
    with pytest.raises(ValueError, match='gsd'):
        relative.batch_gsd({**batch, 'gsd': torch.tensor([-1.0])})
