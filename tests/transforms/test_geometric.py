# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from typing import Any

import kornia.augmentation as K
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from torchgeo_scalemae.transforms import GSDCenterCrop, GSDRandomResizedCrop, GSDResize


def ramp_batch(gsd: list[float], size: int = 64) -> dict[str, Tensor]:
    """Images whose channel 0 is the x and channel 1 the y coordinate in metres."""
    n = len(gsd)
    g = torch.tensor(gsd, dtype=torch.float64)[:, None, None]
    idx = torch.arange(size, dtype=torch.float64) + 0.5
    x = (idx[None, None, :] * g).expand(n, size, size)
    y = (idx[None, :, None] * g).expand(n, size, size)
    image = torch.stack([x, y], dim=1).float()
    return {'image': image, 'gsd': torch.tensor(gsd), 'label': torch.arange(n)}


def crop_boxes(aug: GSDRandomResizedCrop) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    src = aug.crop._params['src']
    x0, y0 = src[:, 0, 0], src[:, 0, 1]
    return x0, y0, src[:, 1, 0] - x0 + 1, src[:, 2, 1] - y0 + 1


def spacing(image: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample pixel spacing in metres, measured on the ramp (interior pixels)."""
    dx = image[:, 0, 4:-4, 5:-4] - image[:, 0, 4:-4, 4:-5]
    dy = image[:, 1, 5:-4, 4:-4] - image[:, 1, 4:-5, 4:-4]
    return dx.mean(dim=(1, 2)), dy.mean(dim=(1, 2))


@pytest.mark.parametrize('resample', ['bilinear', 'bicubic'])
def test_rrc_gsd_exact(resample: str) -> None:
    gsds = [0.3, 1.0, 2.5, 10.0]
    batch = ramp_batch(gsds)
    aug = GSDRandomResizedCrop(24, scale=(0.2, 1.0), resample=resample)
    out = aug(batch)
    _, _, w, h = crop_boxes(aug)
    assert out['image'].shape == (4, 2, 24, 24)
    assert torch.equal(w, h)  # ratio (1, 1): square crops
    assert len(set(w.tolist())) > 1  # per-sample parameters
    expected = torch.tensor(gsds) * w / 24
    # bookkeeping: a crop of s pixels resized to S multiplies gsd by s / S
    assert torch.allclose(out['gsd'], expected, rtol=1e-6)
    assert out['gsd'].dtype == torch.float32
    # physics: the spacing of the resampled coordinate ramp is the new GSD
    # (PyTorch's bicubic kernel, a = -0.75, reproduces a ramp only approximately)
    rtol = 1e-3 if resample == 'bilinear' else 1e-2
    sx, sy = spacing(out['image'])
    assert torch.allclose(sx, out['gsd'], rtol=rtol)
    assert torch.allclose(sy, out['gsd'], rtol=rtol)
    # other keys untouched, input not modified
    assert torch.equal(out['label'], batch['label'])
    assert torch.equal(batch['gsd'], torch.tensor(gsds))


def test_rrc_align_corners_and_reference_ratio() -> None:
    batch = ramp_batch([1.0, 2.0])
    aug = GSDRandomResizedCrop(24, align_corners=True, resample='bilinear')
    out = aug(batch)
    _, _, w, _ = crop_boxes(aug)
    expected = torch.tensor([1.0, 2.0]) * (w - 1) / 23
    assert torch.allclose(out['gsd'], expected, rtol=1e-6)
    sx, _ = spacing(out['image'])
    assert torch.allclose(sx, out['gsd'], rtol=1e-3)

    ref = GSDRandomResizedCrop(24, reference_ratio=True)
    out = ref(batch)
    _, _, w, _ = crop_boxes(ref)
    assert torch.allclose(out['gsd'], torch.tensor([1.0, 2.0]) * (w - 1) / 24)


def test_rrc_full_image_upsample() -> None:
    batch = ramp_batch([0.5, 4.0], size=16)
    out = GSDRandomResizedCrop(32, scale=(1.0, 1.0))(batch)
    assert torch.allclose(out['gsd'], torch.tensor([0.25, 2.0]))


def test_rrc_mask_bounds_transform() -> None:
    batch = ramp_batch([1.0, 2.0], size=32)
    batch['mask'] = (batch['image'][:, 0] // 4).long()  # x-stripes (B, H, W)
    xmin = torch.tensor([1000.0, 2000.0])
    ymax = torch.tensor([500.0, 600.0])
    res = batch['gsd']
    bounds = torch.zeros(2, 9)
    bounds[:, 0], bounds[:, 1], bounds[:, 2] = xmin, xmin + 32 * res, res
    bounds[:, 3], bounds[:, 4], bounds[:, 5] = ymax - 32 * res, ymax, res
    transform = torch.zeros(2, 9)
    transform[:, 0], transform[:, 2] = res, xmin
    transform[:, 4], transform[:, 5], transform[:, 8] = -res, ymax, 1
    batch['bounds'], batch['transform'] = bounds, transform
    aug = GSDRandomResizedCrop(8, resample='bilinear')
    out = aug(batch)
    x0, y0, _, _ = crop_boxes(aug)
    assert out['mask'].shape == (2, 8, 8)
    assert out['mask'].dtype == torch.long
    b = out['bounds']
    assert torch.allclose(b[:, 0], xmin + x0 * res)
    assert torch.allclose(b[:, 4], ymax - y0 * res)
    assert torch.allclose(b[:, 2], out['gsd'])
    assert torch.allclose(b[:, 5], out['gsd'])
    assert torch.allclose(b[:, 1] - b[:, 0], 8 * out['gsd'], rtol=1e-5)
    assert torch.allclose(b[:, 4] - b[:, 3], 8 * out['gsd'], rtol=1e-5)
    t = out['transform']
    assert torch.allclose(t[:, 0], out['gsd'])
    assert torch.allclose(t[:, 4], -out['gsd'])
    assert torch.allclose(t[:, 2], b[:, 0])
    assert torch.allclose(t[:, 5], b[:, 4])
    # the ramp starts where the new bounds say (pixel centre = xmin + gsd / 2)
    first = out['image'][:, 0, 4, 0] + xmin
    assert torch.allclose(first, b[:, 0] + out['gsd'] / 2, atol=0.05 * 2)
    # bounds alone (no 'gsd') are enough
    batch_no_gsd = {k: v for k, v in batch.items() if k != 'gsd'}
    out = GSDRandomResizedCrop(8)(batch_no_gsd)
    assert torch.allclose(out['gsd'], out['bounds'][:, 2])


@pytest.mark.parametrize(
    ('size', 'antialias', 'align', 'factor'),
    [
        (16, True, False, 4.0),
        (128, True, False, 0.5),
        (16, False, True, 63 / 15),
        ((32, 32), False, False, 2.0),
    ],
)
def test_resize_gsd_exact(
    size: int | tuple[int, int], antialias: bool, align: bool, factor: float
) -> None:
    batch = ramp_batch([0.3048, 10.0])
    out = GSDResize(size, antialias=antialias, align_corners=align)(batch)
    s = size if isinstance(size, int) else size[0]
    assert out['image'].shape == (2, 2, s, s)
    assert torch.allclose(out['gsd'], torch.tensor([0.3048, 10.0]) * factor)
    sx, sy = spacing(out['image'])
    assert torch.allclose(sx, out['gsd'], rtol=1e-3)
    assert torch.allclose(sy, out['gsd'], rtol=1e-3)


def test_resize_antialias_low_passes() -> None:
    batch = {
        'image': (torch.arange(64) % 2).float().expand(1, 1, 64, 64).clone(),
        'gsd': torch.ones(1),
    }
    smooth = GSDResize(16)(batch)['image']
    aliased = GSDResize(16, antialias=False)(batch)['image']
    assert smooth.std() < 0.05 < aliased.std() or aliased.std() == 0


def test_resize_non_square_and_mask() -> None:
    batch = {
        'image': torch.rand(2, 3, 40, 20),
        'gsd': torch.tensor([1.0, 2.0]),
        'mask': torch.zeros(2, 40, 20, dtype=torch.long),
    }
    out = GSDResize((20, 20))(batch)
    assert out['mask'].shape == (2, 20, 20)
    # 2x vertically, 1x horizontally: geometric mean sqrt(2)
    assert torch.allclose(out['gsd'], torch.tensor([1.0, 2.0]) * 2**0.5)


def test_center_crop() -> None:
    batch = ramp_batch([0.5, 3.0], size=20)
    bounds = torch.zeros(2, 9)
    bounds[:, 2] = bounds[:, 5] = batch['gsd']
    bounds[:, 1] = 20 * batch['gsd']
    bounds[:, 4] = 20 * batch['gsd']
    batch['bounds'] = bounds
    out = GSDCenterCrop(12)(batch)
    assert out['image'].shape == (2, 2, 12, 12)
    assert torch.equal(out['gsd'], batch['gsd'])
    assert torch.equal(out['image'], batch['image'][..., 4:16, 4:16])
    assert torch.allclose(out['bounds'][:, 0], 4 * batch['gsd'])
    assert torch.allclose(out['bounds'][:, 1], 16 * batch['gsd'])
    with pytest.raises(ValueError, match='larger than the image'):
        GSDCenterCrop(30)(batch)


def test_collate_then_augment() -> None:
    samples = [
        {
            'image': torch.rand(3, 32, 32),
            'gsd': torch.tensor(g),
            'label': torch.tensor(i),
        }
        for i, g in enumerate([0.3, 0.6, 1.2])
    ]
    batch = default_collate(samples)
    assert batch['gsd'].shape == (3,)
    aug = nn.Sequential(
        K.AugmentationSequential(
            K.RandomHorizontalFlip(),
            K.RandomVerticalFlip(),
            data_keys=None,
            keepdim=True,
        ),
        GSDRandomResizedCrop(16),
        GSDCenterCrop(8),
    )
    out = aug(batch)
    w = aug[1].crop._params['src'][:, 1, 0] - aug[1].crop._params['src'][:, 0, 0] + 1
    assert out['image'].shape == (3, 3, 8, 8)
    assert torch.allclose(out['gsd'], torch.tensor([0.3, 0.6, 1.2]) * w / 16)
    assert torch.equal(out['label'], torch.arange(3))


def test_unbatched_sample() -> None:
    sample = {'image': torch.rand(3, 32, 32), 'gsd': torch.tensor(2.0)}
    out = GSDResize(16)(sample)
    assert out['image'].shape == (3, 16, 16)
    assert out['gsd'].shape == ()
    assert out['gsd'].item() == 4.0
    out = GSDRandomResizedCrop(16, scale=(1.0, 1.0))(sample)
    assert out['image'].shape == (3, 16, 16)
    assert out['gsd'].item() == 4.0


def test_no_grad_and_dtype() -> None:
    batch = {
        'image': torch.rand(2, 3, 32, 32, dtype=torch.float64),
        'gsd': torch.ones(2),
    }
    with torch.no_grad():
        for aug in (GSDRandomResizedCrop(16), GSDResize(16), GSDCenterCrop(16)):
            assert aug(batch)['image'].dtype == torch.float64


@pytest.mark.parametrize(
    ('batch', 'error', 'match'),
    [
        ({'image': torch.rand(2, 3, 8, 8)}, ValueError, "no 'gsd' entry"),
        (
            {'image': torch.rand(2, 3, 8, 8), 'gsd': torch.tensor([1.0, -1.0])},
            ValueError,
            'positive',
        ),
        (
            {'image': torch.rand(2, 3, 8, 8), 'gsd': torch.tensor([1.0, float('nan')])},
            ValueError,
            'positive',
        ),
        (
            {'image': torch.rand(2, 3, 8, 8), 'gsd': torch.ones(3)},
            ValueError,
            '3 values',
        ),
        (
            {'image': torch.rand(2, 3, 8, 8), 'gsd': torch.ones(2, 2)},
            ValueError,
            'shape',
        ),
        (
            {'image': torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 'gsd': torch.ones(2)},
            ValueError,
            'floating-point',
        ),
        (
            {'image': torch.rand(8, 8), 'gsd': torch.ones(1)},
            ValueError,
            r'\(B, C, H, W\)',
        ),
        ({'gsd': torch.ones(1)}, TypeError, "batch\\['image'\\]"),
    ],
)
def test_bad_batches(
    batch: dict[str, Tensor], error: type[Exception], match: str
) -> None:
    for aug in (GSDRandomResizedCrop(4), GSDResize(4), GSDCenterCrop(4)):
        with pytest.raises(error, match=match):
            aug(batch)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match='size must be positive'):
        GSDResize(0)
    with pytest.raises(TypeError, match='size'):
        GSDCenterCrop(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='scale'):
        GSDRandomResizedCrop(8, scale=(0.5, 2.0))
    with pytest.raises(ValueError, match='scale'):
        GSDRandomResizedCrop(8, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match='resample'):
        GSDRandomResizedCrop(8, resample='lanczos')
    with pytest.raises(ValueError, match='interpolation'):
        GSDResize(8, interpolation='lanczos')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda() -> None:
    batch = {k: v.cuda() for k, v in ramp_batch([0.5, 2.0]).items()}
    for aug in (GSDRandomResizedCrop(16), GSDResize(16), GSDCenterCrop(16)):
        out = aug(batch)
        assert out['image'].is_cuda
        assert out['gsd'].is_cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_no_sync_without_validation() -> None:
    batch = {k: v.cuda() for k, v in ramp_batch([0.5, 2.0]).items()}
    augs = (
        GSDRandomResizedCrop(16, validate=False).cuda(),
        GSDResize(16, validate=False).cuda(),
        GSDCenterCrop(16, validate=False).cuda(),
    )
    for aug in augs:
        aug(batch)  # warm-up (kernel loading may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for aug in augs:
            out = aug(batch)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert out['gsd'].is_cuda


def test_moving_the_crop_keeps_box_sampling_on_the_cpu() -> None:
    """kornia would sample the boxes on the module's device and read them back."""
    crop = GSDRandomResizedCrop(16, scale=(0.3, 1.0))
    unmoved = GSDRandomResizedCrop(16, scale=(0.3, 1.0))
    crop.to('meta')  # kornia's own move would fail here, reading its range checks
    crop.to(torch.float64).to(torch.bfloat16)
    for aug in (crop.crop, crop.mask_crop):
        assert aug.device == torch.device('cpu')
        assert aug.dtype == torch.float32
    batch = ramp_batch([0.5, 2.0])
    torch.manual_seed(0)
    moved_out = crop(batch)
    torch.manual_seed(0)
    unmoved_out = unmoved(batch)
    assert torch.equal(moved_out['gsd'], unmoved_out['gsd'])
    assert torch.equal(moved_out['image'], unmoved_out['image'])


@pytest.mark.parametrize(
    'mask',
    [
        torch.zeros(2, 16, 16, dtype=torch.long),
        torch.zeros(3, 32, 32, dtype=torch.long),
    ],
)
def test_mask_must_match_image(mask: Tensor) -> None:
    batch = {'image': torch.rand(2, 3, 32, 32), 'gsd': torch.ones(2), 'mask': mask}
    shape = ', '.join(str(n) for n in mask.shape)
    for aug in (GSDRandomResizedCrop(8), GSDResize(8), GSDCenterCrop(8)):
        with pytest.raises(
            ValueError,
            match=rf"mask'\] of shape \({shape}\) does not match "
            r"batch\['image'\] of shape \(2, 3, 32, 32\)",
        ):
            aug(batch)


def test_unbatched_mask_matches_image() -> None:
    sample = {
        'image': torch.rand(3, 32, 32),
        'gsd': torch.tensor(1.0),
        'mask': torch.ones(32, 32, dtype=torch.long),
    }
    for aug in (GSDRandomResizedCrop(8), GSDResize(8), GSDCenterCrop(8)):
        out = aug(sample)
        assert out['mask'].shape == (8, 8)
        assert out['mask'].dtype == torch.long
    with pytest.raises(ValueError, match=r'\(16, 16\) does not match'):
        GSDResize(8)({**sample, 'mask': torch.ones(16, 16, dtype=torch.long)})


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_every_float_dtype_is_accepted(dtype: torch.dtype) -> None:
    # PyTorch has no CPU half-precision antialiasing kernel: GSDResize upcasts
    batch = {'image': torch.rand(2, 3, 32, 32).to(dtype), 'gsd': torch.ones(2)}
    augs = (
        GSDRandomResizedCrop(16),
        GSDRandomResizedCrop(16, resample='bilinear'),
        GSDResize(16),
        GSDResize(16, interpolation='bicubic'),
        GSDResize(16, antialias=False),
        GSDCenterCrop(16),
    )
    for aug in augs:
        out = aug(batch)
        assert out['image'].dtype == dtype
        assert out['image'].shape == (2, 3, 16, 16)
        assert bool(out['image'].float().isfinite().all())
        assert out['gsd'].dtype == torch.float32
    smooth = GSDResize(16)(batch)['image'].float()
    exact = GSDResize(16)({**batch, 'image': batch['image'].float()})['image']
    assert torch.allclose(smooth, exact, atol=1e-2)


@pytest.mark.parametrize(
    ('batch', 'match'),
    [
        (
            {'image': torch.zeros(3, 8, 8, dtype=torch.uint8), 'gsd': torch.ones(1)},
            r'floating-point .*torch\.uint8',
        ),
        (
            {'image': torch.zeros(0, 3, 8, 8), 'gsd': torch.ones(1)},
            r'empty .*shape \(0, 3, 8, 8\)',
        ),
        (
            {'image': torch.zeros(2, 3, 0, 8), 'gsd': torch.ones(2)},
            r'empty .*shape \(2, 3, 0, 8\)',
        ),
    ],
)
def test_bad_images_name_the_value(batch: dict[str, Tensor], match: str) -> None:
    for aug in (GSDRandomResizedCrop(4), GSDResize(4), GSDCenterCrop(4)):
        with pytest.raises(ValueError, match=match):
            aug(batch)


def test_bad_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError, match=r"resample must be one of .*'XYZ'"):
        GSDRandomResizedCrop(8, resample='XYZ')
    with pytest.raises(ValueError, match=r"interpolation must be one of .*'XYZ'"):
        GSDResize(8, interpolation='XYZ')
    with pytest.raises(ValueError, match=r'ratio must satisfy .*inf'):
        GSDRandomResizedCrop(8, ratio=(1.0, float('inf')))
    with pytest.raises(ValueError, match=r'scale must satisfy .*nan'):
        GSDRandomResizedCrop(8, scale=(float('nan'), 1.0))
    with pytest.raises(ValueError, match=r'size must be positive, got \(8, 0\)'):
        GSDCenterCrop((8, 0))
    with pytest.raises(ValueError, match=r'size must be an int .*8\.5'):
        GSDResize(8.5)  # type: ignore[arg-type]
    for make, flag in (
        (lambda v: GSDResize(8, antialias=v), 'antialias'),
        (lambda v: GSDResize(8, align_corners=v), 'align_corners'),
        (lambda v: GSDRandomResizedCrop(8, reference_ratio=v), 'reference_ratio'),
        (lambda v: GSDRandomResizedCrop(8, validate=v), 'validate'),
        (lambda v: GSDCenterCrop(8, validate=v), 'validate'),
    ):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'no'"):
            make('no')


def test_crop_uses_only_public_module_and_kornia_apis() -> None:
    """No private override of nn.Module._apply; the boxes stay on the CPU anyway."""
    assert GSDRandomResizedCrop._apply is nn.Module._apply
    crop = GSDRandomResizedCrop(16)
    assert list(crop.children()) == []  # kornia's crops are not moved with it
    assert crop.to(torch.float64) is crop
    assert isinstance(crop.crop, K.RandomResizedCrop)
    # the boxes applied are those drawn by the public forward_parameters
    batch = ramp_batch([1.0, 2.0])
    torch.manual_seed(3)
    out = crop(batch)
    torch.manual_seed(3)
    params = GSDRandomResizedCrop(16).crop.forward_parameters((2, 2, 64, 64))
    w = params['src'][:, 1, 0] - params['src'][:, 0, 0] + 1
    assert torch.allclose(out['gsd'], torch.tensor([1.0, 2.0]) * w / 16)


# ------------------------------------------------------- no host-device sync
def _device_batch(device: str, gsd_key: bool = True) -> dict[str, Tensor]:
    """A batch whose tensors all live on ``device`` (bounds and transform too)."""
    bounds = torch.tensor([[0.0, 32.0, 0.5, 0.0, 32.0, 0.5, 0.0, 1.0, 1.0]] * 2)
    transform = torch.tensor([[0.5, 0.0, 0.0, 0.0, -0.5, 32.0, 0.0, 0.0, 1.0]] * 2)
    batch = {
        'image': torch.randn(2, 3, 32, 32, device=device),
        'mask': torch.zeros(2, 32, 32, dtype=torch.long, device=device),
        'bounds': bounds.to(device),
        'transform': transform.to(device),
    }
    if gsd_key:
        batch['gsd'] = torch.full((2,), 0.5, device=device)
    return batch


def _check_on(out: dict[str, Tensor], device: str) -> None:
    assert out['image'].shape == (2, 3, 16, 16) and out['mask'].shape == (2, 16, 16)
    for key in ('image', 'gsd', 'mask', 'bounds', 'transform'):
        assert out[key].device.type == device, key


@pytest.mark.parametrize('gsd_key', [True, False])
@pytest.mark.parametrize(
    'make',
    [
        lambda: GSDResize(16, validate=False),
        lambda: GSDResize(16, antialias=False, align_corners=True, validate=False),
        lambda: GSDResize(16, interpolation='nearest', validate=False),
        lambda: GSDCenterCrop(16, validate=False),
    ],
    ids=['resize', 'resize-reference', 'resize-nearest', 'center-crop'],
)
def test_cuda_resize_and_center_crop_never_synchronise(
    make: Any, gsd_key: bool
) -> None:
    # fake CUDA tensors carry no data: any device-to-host read (.item(), bool(t),
    # .tolist(), nonzero) raises instead of running (tests/models/fake_cuda.py)
    from tests.models.fake_cuda import fake_cuda

    transform = make()
    with fake_cuda(nn.Identity()):
        out = transform(_device_batch('cuda', gsd_key))
        _check_on(out, 'cuda')


@pytest.mark.parametrize('gsd_key', [True, False])
@pytest.mark.parametrize('resample', ['bicubic', 'nearest'])
@pytest.mark.parametrize('align_corners', [False, True])
def test_random_resized_crop_never_reads_device_values(
    resample: str, align_corners: bool, gsd_key: bool
) -> None:
    # kornia draws and slices the boxes on the CPU, which fake tensors cannot run
    # (they have no values), so the device is 'meta' here: like fake CUDA, a meta
    # tensor has no data and every read of its values raises, while the CPU-side
    # box sampling runs for real
    transform = GSDRandomResizedCrop(
        16, resample=resample, align_corners=align_corners, validate=False
    )
    out = transform(_device_batch('meta', gsd_key))
    _check_on(out, 'meta')
    unbatched = {'image': torch.randn(3, 32, 32, device='meta')}
    unbatched['gsd'] = torch.tensor(0.5, device='meta')
    assert transform(unbatched)['image'].shape == (3, 16, 16)


@pytest.mark.parametrize(
    'transform', [GSDRandomResizedCrop(16), GSDResize(16), GSDCenterCrop(16)], ids=type
)
def test_validation_is_the_one_device_read(transform: nn.Module) -> None:
    # the meta device does catch reads: validate=True checks the GSD values
    with pytest.raises((RuntimeError, NotImplementedError), match='meta'):
        transform(_device_batch('meta'))
