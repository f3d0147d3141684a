# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Shared bookkeeping for GSD-aware geometric transforms (private)."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..gsd import BOUNDS_KEY, GSD_KEY, TRANSFORM_KEY, gsd_from_batch


def read_image(batch: Mapping[str, Any], name: str) -> tuple[Tensor, bool]:
    """Return the image as ``(B, C, H, W)`` and whether it was unbatched ``(C, H, W)``."""
    if not isinstance(batch, Mapping):
        raise TypeError(f'{name} expects a batch dict, got {type(batch).__name__}')
    image = batch.get('image')
    if not isinstance(image, Tensor):
        raise TypeError(
            f"{name} needs batch['image'] as a tensor (B, C, H, W), got "
            f'{type(image).__name__} (keys: {sorted(batch)})'
        )
    if image.ndim not in (3, 4):
        raise ValueError(
            f"{name} needs batch['image'] of shape (B, C, H, W) or (C, H, W), got "
            f'{tuple(image.shape)}'
        )
    if not image.is_floating_point():
        raise ValueError(
            f"{name} needs a floating-point batch['image'], got {image.dtype}: "
            'convert it (and scale it) before resampling'
        )
    if image.numel() == 0:
        raise ValueError(
            f"{name} got an empty batch['image'] of shape {tuple(image.shape)}: every "
            'dimension must be at least 1'
        )
    if image.ndim == 3:
        return image.unsqueeze(0), True
    return image, False


def read_mask(
    batch: Mapping[str, Any], image: Tensor, unbatched: bool, name: str
) -> tuple[Tensor, int] | None:
    """Return ``batch['mask']`` as ``(B, C, H, W)`` and its batched ndim, or None.

    The mask must cover the image pixel for pixel: same batch size and ``H, W``.
    """
    mask = batch.get('mask')
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"{name} needs batch['mask'] as a tensor, got {type(mask).__name__}"
        )
    m = mask.unsqueeze(0) if unbatched else mask
    if m.ndim == 3:
        m4, ndim = m.unsqueeze(1), 3
    elif m.ndim == 4:
        m4, ndim = m, 4
    else:
        raise ValueError(
            f"{name} needs batch['mask'] of shape (B, H, W) or (B, C, H, W) (or "
            f'(H, W) / (C, H, W) with an unbatched image), got {tuple(mask.shape)}'
        )
    if m4.shape[0] != image.shape[0] or m4.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"{name}: batch['mask'] of shape {tuple(mask.shape)} does not match "
            f"batch['image'] of shape {tuple(batch['image'].shape)}: the mask must "
            'have the same batch size, height and width as the image'
        )
    return m4, ndim


def check_flag(value: object, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise a TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def interpolate(
    image: Tensor,
    size: tuple[int, int],
    mode: str,
    align_corners: bool | None,
    antialias: bool,
) -> Tensor:
    """:func:`torch.nn.functional.interpolate`, antialiasing float16/bfloat16 too.

    PyTorch has no half-precision antialiasing kernel on the CPU, so those images
    are antialiased in float32 and cast back.
    """
    low = antialias and image.dtype in (torch.float16, torch.bfloat16)
    x = image.float() if low else image
    out = F.interpolate(
        x, size=size, mode=mode, align_corners=align_corners, antialias=antialias
    )
    return out.to(image.dtype) if low else out


def read_gsd(batch: Mapping[str, Any], validate: bool) -> Tensor:
    """Return the batch GSD as ``(B,)`` float32 (from ``gsd`` or ``bounds``)."""
    return gsd_from_batch(batch, None, check_values=validate)


def scale_factor(
    crop: Tensor, out: int, corner_aligned: bool, reference_ratio: bool = False
) -> Tensor:
    """Pixel-size multiplier of resampling ``crop`` pixels (per sample) to ``out``.

    Half-pixel grid (``align_corners=False``): ``crop / out`` exactly.
    Corner-aligned (``align_corners=True``): centres of the first and last pixels
    are kept, so the spacing is ``(crop - 1) / (out - 1)``.
    ``reference_ratio``: the reference Scale-MAE bookkeeping ``(crop - 1) / out``.
    """
    if reference_ratio:
        return (crop - 1) / out
    if corner_aligned and out > 1:
        return (crop - 1).clamp_min(0) / (out - 1)
    return crop / out


def combine(fx: Tensor, fy: Tensor) -> Tensor:
    """One isotropic factor: ``fx`` when equal, else the geometric mean."""
    return torch.where(fx == fy, fx, torch.sqrt(fx * fy))


def update_batch(
    batch: Mapping[str, Any],
    unbatched: bool,
    image: Tensor,
    gsd: Tensor,
    factor_x: Tensor,
    factor_y: Tensor,
    x0: Tensor | None = None,
    y0: Tensor | None = None,
    w: Tensor | None = None,
    h: Tensor | None = None,
    extra: Mapping[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Return a new batch with image, gsd and (if present) bounds/transform updated.

    ``x0, y0, w, h`` (per sample, input pixels) describe the crop box; ``None`` means
    the whole image (footprint unchanged). ``factor_x/y`` multiply the pixel size.
    """
    out = dict(batch)
    factor = combine(factor_x, factor_y)
    new_gsd = gsd * factor.to(gsd)
    if unbatched:
        out['image'] = image[0]
        out[GSD_KEY] = new_gsd[0]
    else:
        out['image'] = image
        out[GSD_KEY] = new_gsd
    if extra:
        for key, value in extra.items():
            out[key] = value[0] if unbatched else value

    bounds = batch.get(BOUNDS_KEY)
    if isinstance(bounds, Tensor) and bounds.shape[-1] == 9:
        b = bounds.reshape(-1, 9).to(torch.float64)
        fx = factor_x.to(b)
        fy = factor_y.to(b)
        xres, yres = b[:, 2], b[:, 5]
        nb = b.clone()
        if x0 is not None and y0 is not None and w is not None and h is not None:
            x0d, y0d, wd, hd = (t.to(b) for t in (x0, y0, w, h))
            nb[:, 0] = b[:, 0] + x0d * xres
            nb[:, 1] = b[:, 0] + (x0d + wd) * xres
            nb[:, 4] = b[:, 4] - y0d * yres
            nb[:, 3] = b[:, 4] - (y0d + hd) * yres
        nb[:, 2] = xres * fx
        nb[:, 5] = yres * fy
        out[BOUNDS_KEY] = nb.to(bounds.dtype).reshape(bounds.shape)
        transform = batch.get(TRANSFORM_KEY)
        if isinstance(transform, Tensor) and transform.shape[-1] == 9:
            t = transform.reshape(-1, 9).to(torch.float64).clone()
            t[:, 0] = nb[:, 2]
            t[:, 4] = -nb[:, 5]
            t[:, 2] = nb[:, 0]
            t[:, 5] = nb[:, 4]
            out[TRANSFORM_KEY] = t.to(transform.dtype).reshape(transform.shape)
    return out
