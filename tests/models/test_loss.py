from typing import Any

import numpy as np
import pytest
import torch

from torchgeo_scalemae.models import BAND_PRESETS, BandpassLoss

from .test_bands import bilinear_up, block_mean


def numpy_loss(
    pred_low: np.ndarray,
    pred_high: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    blur: int,
    l1: bool,
    weight: float,
) -> tuple[float, float]:
    """Spec 4.5 from scratch: masked pixels only, channel sums / pixel counts."""
    b, _, h, w = pred_low.shape
    g = int(np.sqrt(mask.shape[1]))
    m = mask.reshape(b, g, g)
    m_low = m.repeat(h // g, axis=1).repeat(w // g, axis=2)[:, None]
    m_high = m.repeat(2 * h // g, axis=1).repeat(2 * w // g, axis=2)[:, None]
    t_low = block_mean(target, 2)
    t_high = target - bilinear_up(block_mean(target, target.shape[-1] // blur), 2 * h)
    low = (m_low * (t_low - pred_low) ** 2).sum() / (m_low.sum() + 1e-9)
    e = t_high - pred_high
    rho = weight * np.abs(e) if l1 else e**2
    high = (m_high * rho).sum() / (m_high.sum() + 1e-9)
    return float(low), float(high)


@pytest.mark.parametrize('per_patch', [True, False])
@pytest.mark.parametrize(('l1', 'weight'), [(False, 1.0), (True, 1.0), (True, 0.3)])
def test_loss_matches_numpy(per_patch: bool, l1: bool, weight: float) -> None:
    g = torch.Generator().manual_seed(1)
    pred_low = torch.randn(2, 3, 32, 32, generator=g)
    pred_high = torch.randn(2, 3, 64, 64, generator=g)
    target = torch.randn(2, 3, 64, 64, generator=g)
    mask = (torch.rand(2, 4, generator=g) > 0.4).float()
    loss_fn = BandpassLoss(
        band_config=(8, 56), use_l1_loss=l1, l1_loss_weight=weight, per_patch=per_patch
    )
    out = loss_fn(pred_low, pred_high, target, mask, (2, 2))
    low, high = numpy_loss(
        *(t.double().numpy() for t in (pred_low, pred_high, target, mask)),
        8,
        l1,
        weight,
    )
    assert out.loss_low.item() == pytest.approx(low, rel=1e-5)
    assert out.loss_high.item() == pytest.approx(high, rel=1e-5)
    assert out.loss.item() == pytest.approx(low + high, rel=1e-5)
    assert out.loss.ndim == 0 and out.loss.dtype == torch.float32


def test_per_patch_equals_full_resolution(fixture: dict[str, Any]) -> None:
    torch.manual_seed(0)
    meta = fixture['meta']
    kwargs = {'band_config': tuple(meta['band']), 'use_l1_loss': meta['l1']}
    args = (
        torch.randn(2, 3, 64, 64),
        torch.randn(2, 3, 128, 128),
        fixture['target'],
        fixture['mask'],
        (4, 4),
    )
    a = BandpassLoss(**kwargs, per_patch=True)(*args)
    b = BandpassLoss(**kwargs, per_patch=False)(*args)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-6)


def test_presets() -> None:
    ref, paper = BandpassLoss('reference'), BandpassLoss('paper')
    assert ref.band_config == (7, 56) and not ref.use_l1_loss
    assert paper.band_config == (14, 56) and paper.use_l1_loss
    assert set(BAND_PRESETS) == {'reference', 'paper', 'normalized'}
    assert ref.low_blur is None and BandpassLoss(band_config=(14, 224)).low_blur == 224
    override = BandpassLoss('paper', use_l1_loss=False, band_config=[3, 9])
    assert override.band_config == (3, 9) and not override.use_l1_loss
    assert 'l1' in repr(paper)


def test_gradient_only_through_masked_patches() -> None:
    pred_low = torch.zeros(1, 3, 32, 32, requires_grad=True)
    pred_high = torch.zeros(1, 3, 64, 64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    BandpassLoss()(
        pred_low, pred_high, torch.randn(1, 3, 64, 64), mask, (2, 2)
    ).loss.backward()
    assert pred_low.grad is not None and pred_high.grad is not None
    assert pred_low.grad[..., :16, :16].abs().sum() > 0
    assert pred_low.grad[..., 16:, :].abs().sum() == 0
    assert pred_high.grad[..., :32, 32:].abs().sum() == 0


def test_bf16_predictions_computed_in_float32() -> None:
    out = BandpassLoss()(
        torch.randn(1, 3, 32, 32).bfloat16(),
        torch.randn(1, 3, 64, 64).bfloat16(),
        torch.randn(1, 3, 64, 64),
        torch.ones(1, 4),
        (2, 2),
    )
    assert out.loss.dtype == torch.float32


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'preset': 'code'}, "unknown preset 'code'"),
        ({'band_config': (7,)}, 'two positive pixel sizes'),
        ({'band_config': (0, 56)}, 'two positive pixel sizes'),
        ({'l1_loss_weight': 0.0}, 'l1_loss_weight must be positive'),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BandpassLoss(**kwargs)


def test_bad_shapes() -> None:
    loss = BandpassLoss()
    low, high, mask = (
        torch.randn(1, 3, 32, 32),
        torch.randn(1, 3, 64, 64),
        torch.ones(1, 4),
    )
    with pytest.raises(ValueError, match='twice the input size'):
        loss(low, high, torch.randn(1, 3, 32, 32), mask, (2, 2))
    with pytest.raises(ValueError, match='pred_high must have shape'):
        loss(low, torch.randn(1, 3, 60, 64), torch.randn(1, 3, 64, 64), mask, (2, 2))
    with pytest.raises(ValueError, match='do not fit'):
        loss(low, high, torch.randn(1, 3, 64, 64), torch.ones(1, 5), (2, 2))


def test_patch_statistics_normalise_each_patch() -> None:
    from torchgeo_scalemae.models import patch_statistics

    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 12) * 5 + 2
    mean, std = patch_statistics(x, 4)
    normed = ((x - mean) / std).reshape(2, 3, 2, 4, 3, 4)
    torch.testing.assert_close(
        normed.mean(dim=(1, 3, 5)), torch.zeros(2, 2, 3), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        normed.var(dim=(1, 3, 5)), torch.ones(2, 2, 3), atol=1e-3, rtol=0
    )
    with pytest.raises(ValueError, match='not tiled by 5x5 patches'):
        patch_statistics(x, 5)
    with pytest.raises(ValueError, match='patch positive'):
        patch_statistics(x, 0)


def test_normalized_preset_loss_ignores_patch_mean_and_scale() -> None:
    """Per-patch normalised targets: a patch's offset and contrast do not matter."""
    torch.manual_seed(0)
    loss = BandpassLoss('normalized')
    assert loss.normalize_targets and not loss.use_l1_loss
    assert 'normalize_targets=True' in repr(loss)
    assert not BandpassLoss('reference').normalize_targets
    target = torch.rand(2, 3, 64, 64)
    pred_low, pred_high = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    mask = torch.ones(2, 4)
    base = loss(pred_low, pred_high, target, mask, (2, 2))
    brighter = loss(pred_low, pred_high, 3 * target + 0.5, mask, (2, 2))
    torch.testing.assert_close(base.loss, brighter.loss, rtol=1e-3, atol=1e-4)
    # the returned targets are the normalised ones the loss used
    assert abs(float(base.target_low.mean())) < 1e-4
    # a perfect prediction of the normalised targets gives zero loss
    perfect = loss(base.target_low, base.target_high, target, mask, (2, 2))
    assert float(perfect.loss) < 1e-8
    forced = BandpassLoss('reference', normalize_targets=True)
    assert forced.normalize_targets
