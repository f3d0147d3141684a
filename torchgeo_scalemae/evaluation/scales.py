# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Evaluation scales: image sizes, per-scale GSD and the encoder's ``res``.

An evaluation *scale* is one number:

* ``0 < scale <= 1``: a fraction of the native image size (1.0 = native, 0.5 = half
  the pixels along each side, so twice the GSD);
* ``scale > 1``: an output size in pixels (both sides).

The size is rounded to the **nearest multiple of the patch size** (at least one
patch), because the encoder tokenises whole patches; e.g. with 16-px patches a 150-px
request becomes 144 px, 75 px becomes 80 px and 112 px stays 112 px. The image is
resized with :class:`~torchgeo_scalemae.transforms.GSDResize`, which updates ``gsd``
(metres per pixel) to the new pixel grid: ``gsd_new = gsd * native / size``.

Three ways to turn a scale into the encoder's ``res`` (``res_mode``):

* ``'gsd'`` (default, the paper's form): ``res = gsd_new / reference_gsd``, per sample.
* ``'reference'``: the reference code's kNN ``--eval_gsd`` rule (spec 1.6),
  ``res = base_res * reference_size / size`` with ``reference_size`` defaulting to the
  native size, i.e. ``res`` relative to the native rendering of the same image (the
  convention the released weights were trained with; no metres involved).
* ``'constant'``: ``res = base_res`` at every scale (the reference README's
  ``--eval_only`` behaviour, and the "no GSD encoding" ablation).

.. versionadded:: 0.1
"""

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from ..gsd import GSD_KEY, gsd_to_res
from ..transforms import GSDResize

__all__ = ('ResMode', 'check_scales', 'resize_to_scale', 'scale_res', 'scale_size')

#: How the encoder's ``res`` is derived at an evaluation scale (see module docs).
ResMode = Literal['gsd', 'reference', 'constant']

#: Interpolation modes accepted by :func:`resize_to_scale`.
Interpolation = Literal['bilinear', 'bicubic', 'area', 'nearest']


def check_scales(scales: Any) -> list[float]:
    """Validate a list of evaluation scales.

    Args:
        scales: Non-empty sequence of positive numbers (fractions ``<= 1`` or pixel
            sizes ``> 1``).

    Returns:
        The scales as a list of floats, in the given order.

    Raises:
        TypeError: If an entry is not a number.
        ValueError: If *scales* is empty, or contains a non-positive or non-finite
            value, or a duplicate.

    .. versionadded:: 0.1
    """
    if isinstance(scales, int | float):
        scales = [scales]
    out: list[float] = []
    for value in scales:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f'scales must be numbers, got {value!r}')
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f'scales must be positive and finite, got {value!r}')
        if float(value) in out:
            raise ValueError(f'scales contains {value!r} twice')
        out.append(float(value))
    if not out:
        raise ValueError('scales is empty: give at least one evaluation scale')
    return out


def scale_size(scale: float, native: int, patch_size: int) -> int:
    """Pixel size of one image side at an evaluation scale.

    Args:
        scale: Fraction of the native size (``<= 1``) or a size in pixels (``> 1``).
        native: Native size of that side in pixels.
        patch_size: Encoder patch size in pixels.

    Returns:
        ``max(patch_size, round(target / patch_size) * patch_size)`` where ``target``
        is ``scale * native`` or ``scale``.

    Raises:
        ValueError: If any argument is not positive.

    .. versionadded:: 0.1
    """
    if not scale > 0 or native < 1 or patch_size < 1:
        raise ValueError(
            'scale, native and patch_size must be positive, got '
            f'scale={scale!r}, native={native!r}, patch_size={patch_size!r}'
        )
    target = scale * native if scale <= 1 else scale
    return max(patch_size, round(target / patch_size) * patch_size)


def resize_to_scale(
    batch: Mapping[str, Any],
    scale: float,
    patch_size: int,
    *,
    interpolation: Interpolation = 'bilinear',
    antialias: bool = True,
) -> dict[str, Any]:
    """Resize a batch to an evaluation scale, updating ``gsd`` when present.

    Args:
        batch: Dict with ``image`` (B, C, H, W) and optionally ``gsd`` (B,) in metres
            per pixel.
        scale: Fraction of the native size (``<= 1``) or pixel size (``> 1``).
        patch_size: Encoder patch size; output sides are multiples of it.
        interpolation: ``'bilinear'`` (default), ``'bicubic'``, ``'area'`` (the
            reference kNN's downsampling) or ``'nearest'``.
        antialias: Low-pass filter when downsampling (bilinear/bicubic).

    Returns:
        A new dict with ``image`` (B, C, S_h, S_w) and, if the input had one, the
        updated ``gsd`` (B,). A batch without ``gsd`` is resized as is.

    Raises:
        ValueError: If the batch has no 4-D ``image``.

    .. versionadded:: 0.1
    """
    image = batch.get('image')
    if not isinstance(image, Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, Tensor) else None
        raise ValueError(f"batch['image'] must have shape (B, C, H, W), got {shape}")
    height, width = image.shape[-2:]
    size = (scale_size(scale, height, patch_size), scale_size(scale, width, patch_size))
    if batch.get(GSD_KEY) is None:
        out = dict(batch)
        if (height, width) != size:
            out['image'] = torch.nn.functional.interpolate(
                image.float(),
                size=size,
                mode=interpolation,
                antialias=antialias and interpolation in ('bilinear', 'bicubic'),
                align_corners=False
                if interpolation in ('bilinear', 'bicubic')
                else None,
            )
        return out
    resize = GSDResize(
        size, antialias=antialias, interpolation=interpolation, validate=False
    )
    resized: dict[str, Any] = resize({**batch, 'image': image.float()})
    return resized


def scale_res(
    res_mode: ResMode,
    *,
    gsd: Tensor | None,
    size: int,
    native: int,
    batch_size: int,
    reference_gsd: float = 1.0,
    base_res: float = 1.0,
    reference_size: int | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """The encoder's ``res`` at an evaluation scale, per sample.

    Args:
        res_mode: ``'gsd'``, ``'reference'`` or ``'constant'`` (module docs).
        gsd: GSD of the resized images, metres per pixel, (B,); needed for ``'gsd'``.
        size: Side of the resized images in pixels.
        native: Side of the native images in pixels.
        batch_size: B.
        reference_gsd: ``G`` of ``'gsd'`` mode, metres per pixel.
        base_res: ``res`` at the reference size (``'reference'``) or everywhere
            (``'constant'``).
        reference_size: Reference side in pixels for ``'reference'`` (None: native).
        device: Device of the result.

    Returns:
        float32 (B,) tensor of ``res`` values.

    Raises:
        ValueError: For an unknown mode, or ``'gsd'`` mode without a GSD.

    .. versionadded:: 0.1
    """
    if res_mode == 'gsd':
        if gsd is None:
            raise ValueError(
                "res_mode='gsd' needs a GSD: the batch has no 'gsd' entry; attach one "
                '(torchgeo_scalemae.datamodules), set default_gsd, or use '
                "res_mode='reference'"
            )
        return gsd_to_res(gsd, reference_gsd).to(device)
    if res_mode == 'reference':
        ref = native if reference_size is None else reference_size
        value = base_res * ref / size
    elif res_mode == 'constant':
        value = base_res
    else:
        raise ValueError(
            f"res_mode must be 'gsd', 'reference' or 'constant', got {res_mode!r}"
        )
    return torch.full((batch_size,), float(value), dtype=torch.float32, device=device)
