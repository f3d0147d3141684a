# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from torchgeo_scalemae.transforms import ScaleMAEPair


def batch_of(gsd: list[float], size: int = 64) -> dict[str, Tensor]:
    n = len(gsd)
    return {
        'image': torch.rand(n, 3, size, size),
        'gsd': torch.tensor(gsd),
        'label': torch.arange(n),
    }


def test_pair_shapes_and_gsd() -> None:
    batch = batch_of([0.3, 1.0, 2.5, 10.0])
    pair = ScaleMAEPair(16)
    out = pair(batch)
    src = pair.crop.crop._params['src']
    w = src[:, 1, 0] - src[:, 0, 0] + 1
    assert out['image'].shape == (4, 3, 16, 16)
    assert out['target'].shape == (4, 3, 32, 32)
    assert out['target'].shape[-1] == 2 * out['image'].shape[-1]
    # target: a crop of w pixels resized to 2S
    assert torch.allclose(out['target_gsd'], batch['gsd'] * w / 32, rtol=1e-6)
    # input GSD = 2 x target GSD, per sample
    assert torch.equal(out['gsd'], 2 * out['target_gsd'])
    assert out['gsd'].shape == out['target_gsd'].shape == (4,)
    assert torch.equal(out['label'], batch['label'])
    # the reference input: bilinear, align_corners=True, no antialias
    ref = F.interpolate(
        out['target'], size=(16, 16), mode='bilinear', align_corners=True
    )
    assert torch.equal(out['image'], ref)


def test_pair_antialias_option() -> None:
    batch = batch_of([1.0, 1.0])
    out = ScaleMAEPair(16, antialias=True, align_corners=False)(batch)
    ref = F.interpolate(out['target'], size=(16, 16), mode='bilinear', antialias=True)
    assert torch.equal(out['image'], ref)
    assert torch.equal(out['gsd'], 2 * out['target_gsd'])


def test_pair_full_image_and_keys() -> None:
    batch = batch_of([0.5], size=32)
    bounds = torch.tensor([[0.0, 16.0, 0.5, 0.0, 16.0, 0.5, 0.0, 0.0, 0.0]])
    batch['bounds'] = bounds
    out = ScaleMAEPair(8, scale=(1.0, 1.0), target_key='hr', target_gsd_key='hr_gsd')(
        batch
    )
    assert out['hr'].shape == (1, 3, 16, 16)
    assert torch.allclose(out['hr_gsd'], torch.tensor([1.0]))
    assert torch.allclose(out['gsd'], torch.tensor([2.0]))
    assert torch.allclose(out['bounds'][:, 2], out['gsd'])
    assert torch.allclose(out['bounds'][:, [0, 1, 3, 4]], bounds[:, [0, 1, 3, 4]])


def test_pair_reference_ratio() -> None:
    batch = batch_of([2.5, 2.5])
    pair = ScaleMAEPair(16, reference_ratio=True)
    out = pair(batch)
    src = pair.crop.crop._params['src']
    dx = src[:, 1, 0] - src[:, 0, 0]
    # the reference's res_input = base * dx / T * (T / S_in)
    # (reference `mae/dataloaders/utils.py`, TransformCollateFn)
    assert torch.allclose(out['gsd'], 2.5 * dx / 32 * 2)


def test_pair_errors() -> None:
    with pytest.raises(TypeError, match='input_size'):
        ScaleMAEPair((16, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='target_key'):
        ScaleMAEPair(16, target_key='image')
    with pytest.raises(ValueError, match='must differ'):
        ScaleMAEPair(16, target_key='t', target_gsd_key='t')
    with pytest.raises(ValueError, match="no 'gsd'"):
        ScaleMAEPair(16)({'image': torch.rand(1, 3, 64, 64)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_pair_cuda() -> None:
    batch = {k: v.cuda() for k, v in batch_of([0.5, 2.0]).items()}
    out = ScaleMAEPair(16)(batch)
    assert out['image'].is_cuda and out['target'].is_cuda
    assert out['gsd'].is_cuda and out['target_gsd'].is_cuda


def test_band_targets_take_the_pair_target() -> None:
    from torchgeo_scalemae import transforms
    from torchgeo_scalemae.models import (
        high_band_target,
        low_band_target,
        recombine_bands,
    )

    # transforms/ never imports models/ (docs/architecture.rst): no re-export
    assert not hasattr(transforms, 'low_band_target')
    target = ScaleMAEPair(8, scale=(1.0, 1.0))(batch_of([1.0]))['target']
    low = low_band_target(target, 8)
    high = high_band_target(target, 4)
    assert low.shape == (1, 3, 8, 8)
    assert high.shape == target.shape
    assert recombine_bands(low, high, 4).shape == target.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_pair_cuda_no_sync_without_validation() -> None:
    batch = {k: v.cuda() for k, v in batch_of([0.5, 2.0]).items()}
    # moved as a LightningModule holding it would be
    pair = ScaleMAEPair(16, validate=False).cuda()
    pair(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = pair(batch)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(out['gsd'], 2 * out['target_gsd'])


def test_pair_bad_arguments_name_the_value() -> None:
    with pytest.raises(TypeError, match="antialias must be True or False, got 'no'"):
        ScaleMAEPair(16, antialias='no')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='align_corners must be True or False, got 1'):
        ScaleMAEPair(16, align_corners=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_key must be a new key name, got ''"):
        ScaleMAEPair(16, target_key='')
    with pytest.raises(ValueError, match=r"resample must be one of .*'XYZ'"):
        ScaleMAEPair(16, resample='XYZ')
    with pytest.raises(ValueError, match=r'input_size must be positive, got 0'):
        ScaleMAEPair(0)
    with pytest.raises(ValueError, match=r"mask'\] of shape \(1, 8, 8\) does not"):
        ScaleMAEPair(16)({**batch_of([1.0]), 'mask': torch.zeros(1, 8, 8)})


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_pair_half_precision(dtype: torch.dtype) -> None:
    batch = {'image': torch.rand(2, 3, 64, 64).to(dtype), 'gsd': torch.ones(2)}
    for antialias in (False, True):
        out = ScaleMAEPair(16, antialias=antialias)(batch)
        assert out['image'].dtype == out['target'].dtype == dtype
        assert out['image'].shape == (2, 3, 16, 16)
        assert torch.equal(out['gsd'], 2 * out['target_gsd'])
