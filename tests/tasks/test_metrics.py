# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The pretraining task's reconstruction metrics (``torchgeo_scalemae.tasks._metrics``)."""

import pytest
import torch

from torchgeo_scalemae.models import ScaleMAEOutput
from torchgeo_scalemae.tasks._metrics import (
    band_metrics,
    masked_mse,
    psnr,
    visible_mean,
)


def test_psnr_of_unit_peak() -> None:
    assert float(psnr(torch.tensor(1.0))) == pytest.approx(0.0)
    assert float(psnr(torch.tensor(0.01))) == pytest.approx(20.0)
    assert float(psnr(torch.tensor(0.0))) == pytest.approx(100.0)  # clamped


def test_masked_mse_counts_only_removed_patches() -> None:
    pred = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[..., :2, :2] = 3.0  # error only in the top-left patch
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # that patch removed
    assert float(masked_mse(pred, target, mask)) == pytest.approx(9.0)
    mask = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])  # another patch removed
    assert float(masked_mse(pred, target, mask)) == pytest.approx(0.0)
    assert float(masked_mse(pred, target, torch.zeros(1, 1, 2, 2))) == 0.0


def test_visible_mean_ignores_removed_pixels() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 8.0  # only in the removed patch
    target[..., 2:, 2:] = 4.0
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    mean = visible_mean(target, mask)
    assert mean.shape == target.shape
    # 4 of the 12 visible pixels are 4: mean 4/3, everywhere
    torch.testing.assert_close(mean, torch.full_like(target, 4.0 / 3.0))


def test_band_metrics_of_a_perfect_prediction() -> None:
    torch.manual_seed(0)
    low = torch.rand(2, 3, 32, 32)
    high = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 4)  # 2 x 2 patches of 16 px
    mask[:, 0] = 1.0
    out = ScaleMAEOutput(None, None, None, low, high, mask, low, high)
    metrics, stds = band_metrics(out, patch_size=16)
    assert set(metrics) == {
        'psnr_low',
        'psnr_high',
        'psnr_low_baseline',
        'psnr_high_baseline',
        'pred_std_low',
        'pred_std_high',
        'target_std_low',
        'target_std_high',
    }
    assert float(metrics['psnr_low']) == pytest.approx(100.0)  # exact: clamped
    assert float(metrics['psnr_low']) > float(metrics['psnr_low_baseline'])
    assert float(metrics['psnr_high']) > float(metrics['psnr_high_baseline'])
    torch.testing.assert_close(
        stds, torch.stack([low.std(), low.std(), high.std(), high.std()])
    )
    assert all(value.ndim == 0 for value in metrics.values())


def test_band_metrics_need_targets() -> None:
    out = ScaleMAEOutput(
        None,
        None,
        None,
        torch.zeros(1, 3, 16, 16),
        torch.zeros(1, 3, 32, 32),
        torch.zeros(1, 1),
    )
    with pytest.raises(AssertionError, match='without targets'):
        band_metrics(out, patch_size=16)
