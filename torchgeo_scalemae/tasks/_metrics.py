# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Reconstruction metrics of the pretraining task (private).

All are computed on the device from the model's output, without a host-device
synchronisation, on the masked pixels and in the units the loss sees.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import ScaleMAEOutput


def band_metrics(
    out: ScaleMAEOutput, patch_size: int
) -> tuple[dict[str, Tensor], Tensor]:
    """PSNR of both bands against their trivial predictors, and the bands' spread.

    Args:
        out: The model output of a step run with targets (it carries the band
            targets the loss was computed against).
        patch_size: The model's patch size in pixels.

    Returns:
        ``(metrics, stds)``: 0-d tensors ``psnr_low``, ``psnr_high``,
        ``psnr_low_baseline`` (each image's mean colour over its visible pixels),
        ``psnr_high_baseline`` (zero), ``pred_std_low``, ``pred_std_high``,
        ``target_std_low``, ``target_std_high``; and the ``(4,)`` stds of the low
        prediction, low target, high prediction and high target.
    """
    pred_low = out.pred_low.float()
    pred_high = out.pred_high.float()
    low_t, high_t = out.target_low, out.target_high
    assert low_t is not None and high_t is not None, 'step ran without targets'
    grid = pred_low.shape[-1] // patch_size
    mask = out.mask.float().reshape(-1, 1, grid, grid)
    mse_low = masked_mse(pred_low, low_t, mask)
    mse_high = masked_mse(pred_high, high_t, mask)
    mse_low_baseline = masked_mse(visible_mean(low_t, mask), low_t, mask)
    mse_high_baseline = masked_mse(torch.zeros_like(high_t), high_t, mask)
    stds = torch.stack([pred_low.std(), low_t.std(), pred_high.std(), high_t.std()])
    metrics = {
        'psnr_low': psnr(mse_low),
        'psnr_high': psnr(mse_high),
        'psnr_low_baseline': psnr(mse_low_baseline),
        'psnr_high_baseline': psnr(mse_high_baseline),
        'pred_std_low': stds[0],
        'pred_std_high': stds[2],
        'target_std_low': stds[1],
        'target_std_high': stds[3],
    }
    return metrics, stds


def psnr(mse: Tensor) -> Tensor:
    """PSNR in dB of a mean squared error, for targets of unit peak."""
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def visible_mean(target: Tensor, patch_mask: Tensor) -> Tensor:
    """Each image's per-channel mean over its visible pixels, broadcast to its size.

    Args:
        target: ``(B, C, H, W)``.
        patch_mask: ``(B, 1, h, w)`` with 1 on removed patches.

    Returns:
        ``(B, C, H, W)``: the prediction of a decoder that only copies the mean colour
        of what it sees.
    """
    keep = 1.0 - F.interpolate(patch_mask, size=target.shape[-2:], mode='nearest')
    total = keep.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    mean = (target * keep).sum(dim=(2, 3), keepdim=True) / total
    return mean.expand_as(target)


def masked_mse(pred: Tensor, target: Tensor, patch_mask: Tensor) -> Tensor:
    """Mean squared error per band value over masked pixels.

    Args:
        pred: ``(B, C, H, W)``.
        target: ``(B, C, H, W)``.
        patch_mask: ``(B, 1, h, w)`` with 1 on removed patches.

    Returns:
        0-d tensor.
    """
    mask = F.interpolate(patch_mask, size=pred.shape[-2:], mode='nearest')
    err = ((pred - target) ** 2 * mask).sum()
    return err / (mask.sum() * pred.shape[1]).clamp_min(1.0)
