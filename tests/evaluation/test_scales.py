# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import pytest
import torch

from torchgeo_scalemae.evaluation.scales import (
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
