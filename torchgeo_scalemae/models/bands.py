# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Band-pass targets of the Scale-MAE loss.

As the reference code computes them (``forward_loss`` in ``mae/models_mae.py``), which
differs from the band split the paper describes (Sec. 3, "Input"); ``BAND_PRESETS``
in :mod:`torchgeo_scalemae.models.loss` holds the settings of both.

Blur sizes are absolute pixel sizes, exactly as in the released code: the high band
is the target minus its bilinear upsampling from an area-downsampled
``blur x blur`` copy, whatever the target size (a 7-px blur on a 448-px target keeps
everything but the coarsest 1/64 of the spectrum; on a 128-px target, 1/18).

.. versionadded:: 0.1
"""

import torch.nn.functional as F
from torch import Tensor

from .._sizes import to_size

__all__ = ('high_band_target', 'low_band_target', 'recombine_bands')


def _size(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Normalise a size to (h, w): positive ints (TypeError/ValueError naming it)."""
    return to_size(value, name)


def _check_image(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(
            f'{name} must be a (B, C, H, W) tensor, got {type(x).__name__}: {x!r:.60}'
        )
    if x.ndim != 4:
        raise ValueError(f'{name} must have shape (B, C, H, W), got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor, got {x.dtype}')
    if x.numel() == 0:
        raise ValueError(f'{name} is empty: shape {tuple(x.shape)}')


def low_band_target(
    target: Tensor,
    output_size: int | tuple[int, int],
    blur: int | tuple[int, int] | None = None,
) -> Tensor:
    """Low-frequency target: the target area-resampled to the low prediction's size.

    With ``blur`` the target is first area-resampled to ``blur`` pixels and then to
    ``output_size`` (the released code does this only when ``band_config[1] == 224``;
    otherwise ``band_config[1]`` has no effect and ``blur`` is None).

    Args:
        target: (B, C, H, W) reconstruction target (normalised pixels).
        output_size: size (h, w) of the low-band prediction, pixels.
        blur: optional intermediate size, pixels.

    Returns:
        (B, C, h, w) low-band target.

    Raises:
        TypeError: for a target that is not a tensor.
        ValueError: for a target that is not a non-empty floating-point 4-D tensor,
            or a size that is not a positive int or pair of ints.
    """
    _check_image(target, 'target')
    out = _size(output_size, 'output_size')
    if blur is not None:
        target = F.interpolate(target, size=_size(blur, 'blur'), mode='area')
    return F.interpolate(target, size=out, mode='area')


def high_band_target(target: Tensor, blur: int | tuple[int, int] | None) -> Tensor:
    """High-frequency target: the target minus a low-passed copy of itself.

    ``target - bilinear_up(area_down(target, blur))`` (bilinear with
    ``align_corners=False``); with ``blur=None`` the target itself.

    Args:
        target: (B, C, H, W) reconstruction target.
        blur: size of the low-passed copy, pixels (``band_config[0]``), or None.

    Returns:
        (B, C, H, W) high-band target.

    Raises:
        TypeError: for a target that is not a tensor.
        ValueError: for a target that is not a non-empty floating-point 4-D tensor,
            or a blur that is not a positive int or pair of ints.
    """
    _check_image(target, 'target')
    if blur is None:
        return target
    low = F.interpolate(target, size=_size(blur, 'blur'), mode='area')
    return target - F.interpolate(
        low, size=target.shape[-2:], mode='bilinear', align_corners=False
    )


def recombine_bands(
    pred_low: Tensor, pred_high: Tensor, blur: int | tuple[int, int] | None
) -> Tensor:
    """Full-resolution image from the two band predictions (for visualisation).

    ``bilinear_up(area_down(pred_low, blur)) + pred_high``, as the released code's
    logging does; with ``blur=None`` the low prediction is upsampled directly.

    Args:
        pred_low: (B, C, H, W) low-band prediction.
        pred_high: (B, C, 2H, 2W) high-band prediction.
        blur: ``band_config[0]`` in pixels, or None.

    Returns:
        (B, C, 2H, 2W) recombined image.

    Raises:
        TypeError: for inputs that are not tensors.
        ValueError: for inputs that are not non-empty floating-point 4-D tensors, whose
            batch or channel sizes differ, or a ``blur`` that is not a positive int or
            pair of ints.
    """
    _check_image(pred_low, 'pred_low')
    _check_image(pred_high, 'pred_high')
    if pred_low.shape[:2] != pred_high.shape[:2]:
        raise ValueError(
            f'pred_low {tuple(pred_low.shape)} and pred_high {tuple(pred_high.shape)} '
            'must have the same batch and channel sizes'
        )
    low = pred_low
    if blur is not None:
        low = F.interpolate(low, size=_size(blur, 'blur'), mode='area')
    return pred_high + F.interpolate(
        low, size=pred_high.shape[-2:], mode='bilinear', align_corners=False
    )
