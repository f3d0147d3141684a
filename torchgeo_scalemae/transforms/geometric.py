# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GSD-updating geometric transforms on batch dicts.

Every transform here takes a batch dict ``{'image': (B, C, H, W), 'gsd': (B,), ...}``
(or a single sample with ``image`` ``(C, H, W)`` and a 0-d ``gsd``) and returns a
*new* dict in which ``image`` is resampled and ``gsd`` (metres per pixel) describes the
new pixel grid. ``mask`` (``(B, H, W)`` or ``(B, 1, H, W)``) follows the same geometry
with nearest-neighbour sampling. TorchGeo GeoDataset ``bounds`` and ``transform``
entries, when present, are updated to the new footprint and pixel size. All other keys
pass through untouched. They work on any device, under ``torch.no_grad``, and keep the
image dtype.

If the batch has no ``gsd`` entry but has GeoDataset ``bounds``, the GSD is read from
``bounds[:, 2]`` (see :func:`torchgeo_scalemae.gsd.gsd_from_batch`); otherwise a
:class:`ValueError` says that the GSD is missing.

.. versionadded:: 0.1
"""

from collections.abc import Callable, Mapping
from typing import Any, Self

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._sizes import to_size
from ._geometry import read_gsd, read_image, scale_factor, update_batch

__all__ = ('GSDCenterCrop', 'GSDRandomResizedCrop', 'GSDResize')

_RESAMPLE = ('nearest', 'bilinear', 'bicubic')


def _check_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
    ):
        raise ValueError(f'{name} must be a pair (min, max), got {value!r}')
    lo, hi = float(value[0]), float(value[1])
    if not 0 < lo <= hi:
        raise ValueError(f'{name} must satisfy 0 < min <= max, got {value!r}')
    return lo, hi


def _mask_to_4d(mask: Tensor) -> tuple[Tensor, int]:
    if mask.ndim == 3:
        return mask.unsqueeze(1), 3
    if mask.ndim == 4:
        return mask, 4
    raise ValueError(
        f"batch['mask'] must be (B, H, W) or (B, C, H, W), got {tuple(mask.shape)}"
    )


class GSDRandomResizedCrop(nn.Module):
    """Random resized crop (per-sample parameters) that updates the GSD.

    Wraps :class:`kornia.augmentation.RandomResizedCrop` (``cropping_mode='slice'``):
    each sample gets its own crop box, which is read back from kornia's sampled
    parameters and used to update ``gsd``, ``bounds`` and ``transform``.

    **Box convention.** kornia stores inclusive corner pixel coordinates: a crop of
    ``w`` pixels starting at column ``x0`` has corners ``x0`` and ``x0 + w - 1``, so
    ``w = src[:, 1, 0] - src[:, 0, 0] + 1``.

    **GSD bookkeeping.** With ``align_corners=False`` (the default) the crop is
    resized on the half-pixel grid, so a crop of ``s`` pixels resized to ``S`` pixels
    has pixels exactly ``s / S`` times larger: ``gsd_out = gsd_in * s / S``. With
    ``align_corners=True`` the first and last pixel centres are kept and the exact
    spacing is ``(s - 1) / (S - 1)``; that is what is used then. The reference
    Scale-MAE code (spec 1.2) instead uses ``(s - 1) / S`` (it reads the box width
    ``dx = s - 1`` and divides by the output size); ``reference_ratio=True``
    reproduces that bookkeeping for parity experiments with the released weights.
    For non-square crops or outputs the horizontal and vertical factors differ and
    ``gsd`` gets their geometric mean (``bounds``/``transform`` keep both).

    Resampling follows the reference (kornia, bicubic, no antialiasing), which
    matters for parity with the released model.

    Args:
        size: Output size ``S`` or ``(S_h, S_w)`` in pixels.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height); ``(1, 1)`` gives
            square crops as in the Scale-MAE recipe.
        resample: ``'bicubic'`` (default, the reference), ``'bilinear'`` or
            ``'nearest'``.
        align_corners: Interpolation grid (see above).
        reference_ratio: Use the reference's ``(s - 1) / S`` GSD factor instead of
            the exact one.
        validate: Check the GSD values (one host-device synchronisation on CUDA,
            see :func:`torchgeo_scalemae.gsd.check_gsd`); shape checks always run.

    Shapes:
        ``image`` ``(B, C, H, W)`` -> ``(B, C, S_h, S_w)``; ``gsd`` ``(B,)`` ->
        ``(B,)``; ``mask`` ``(B, H, W)`` -> ``(B, S_h, S_w)``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (1.0, 1.0),
        resample: str = 'bicubic',
        align_corners: bool = False,
        reference_ratio: bool = False,
        validate: bool = True,
    ) -> None:
        """Initialize a new GSDRandomResizedCrop."""
        super().__init__()
        self.size = to_size(size)
        self.scale = _check_range(scale, 'scale')
        if self.scale[1] > 1:
            raise ValueError(f'scale must be within (0, 1], got {scale!r}')
        self.ratio = _check_range(ratio, 'ratio')
        if resample not in _RESAMPLE:
            raise ValueError(f'resample must be one of {_RESAMPLE}, got {resample!r}')
        self.resample = resample
        self.align_corners = bool(align_corners)
        self.reference_ratio = bool(reference_ratio)
        self.validate = bool(validate)
        self.crop = K.RandomResizedCrop(
            self.size,
            scale=self.scale,
            ratio=self.ratio,
            resample=resample,
            align_corners=self.align_corners,
            cropping_mode='slice',
        )
        self.mask_crop = K.RandomResizedCrop(
            self.size,
            scale=self.scale,
            ratio=self.ratio,
            resample='nearest',
            cropping_mode='slice',
        )

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        """Keep kornia's box sampling on the CPU when the transform is moved.

        The transform holds no tensors. kornia's augmentations move their random
        samplers with the module (``.to('cuda')``, or a LightningModule that holds
        the transform being moved to its device), and kornia's slice cropping then
        reads the boxes back as Python ints: one host-device synchronisation per
        call. Sampled on the CPU, the boxes are already on the host, and they stay
        float32 under ``.to(torch.bfloat16)`` or ``.half()``.
        """
        return self

    def _corner_aligned(self) -> bool:
        # kornia's slice mode resizes on the half-pixel grid for nearest sampling
        return self.align_corners and self.resample != 'nearest'

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Crop each sample at a random box and resize it to ``size``.

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)`` (or
                ``bounds``), optionally ``mask``, ``bounds``, ``transform``.

        Returns:
            A new dict with ``image`` ``(B, C, S_h, S_w)`` and updated ``gsd``
            (metres per pixel), ``mask``, ``bounds``, ``transform``.
        """
        image, unbatched = read_image(batch, type(self).__name__)
        gsd = read_gsd(batch, self.validate)
        if gsd.shape[0] != image.shape[0]:
            raise ValueError(
                f'gsd has {gsd.shape[0]} values for {image.shape[0]} images'
            )
        out_image = self.crop(image)
        params = self.crop._params
        # kornia samples the boxes on the CPU; a non-blocking host-to-device copy of
        # pageable memory is staged at once and does not wait for the GPU
        src = params['src'].to(torch.float64).to(gsd.device, non_blocking=True)
        x0 = src[:, 0, 0]
        y0 = src[:, 0, 1]
        w = src[:, 1, 0] - src[:, 0, 0] + 1
        h = src[:, 2, 1] - src[:, 1, 1] + 1
        corner = self._corner_aligned()
        fx = scale_factor(w, self.size[1], corner, self.reference_ratio)
        fy = scale_factor(h, self.size[0], corner, self.reference_ratio)
        extra: dict[str, Tensor] = {}
        mask = batch.get('mask')
        if isinstance(mask, Tensor):
            m = mask.unsqueeze(0) if unbatched else mask
            m4, ndim = _mask_to_4d(m)
            cropped = self.mask_crop(m4.float(), params=params).to(mask.dtype)
            extra['mask'] = cropped[:, 0] if ndim == 3 else cropped
        return update_batch(
            batch, unbatched, out_image, gsd, fx, fy, x0, y0, w, h, extra
        )

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        return (
            f'size={self.size}, scale={self.scale}, ratio={self.ratio}, '
            f'resample={self.resample!r}, align_corners={self.align_corners}, '
            f'reference_ratio={self.reference_ratio}'
        )


class GSDResize(nn.Module):
    """Resize every image to a fixed size and update the GSD.

    Resizing ``H x W`` pixels to ``S_h x S_w`` multiplies the pixel size by
    ``W / S_w`` horizontally and ``H / S_h`` vertically (exact on the half-pixel
    grid, ``align_corners=False``; with ``align_corners=True`` the exact spacing
    ``(W - 1) / (S_w - 1)`` is used). ``gsd`` gets the geometric mean of the two
    factors when they differ. The footprint is unchanged.

    By default the resize is **antialiased** (:func:`torch.nn.functional.interpolate`
    with ``antialias=True``), which is right whenever parity with the released
    weights does not matter. The reference's input resize (kornia ``Resize``:
    bilinear, ``align_corners=True``, no antialiasing) is
    ``GSDResize(size, antialias=False, align_corners=True)``.

    Args:
        size: Output size ``S`` or ``(S_h, S_w)`` in pixels.
        antialias: Low-pass filter when downsampling (bilinear/bicubic only).
        interpolation: ``'bilinear'`` (default), ``'bicubic'``, ``'nearest'`` or
            ``'area'``.
        align_corners: Interpolation grid for bilinear/bicubic.
        validate: Check the GSD values (one host-device synchronisation on CUDA).

    Shapes:
        ``image`` ``(B, C, H, W)`` -> ``(B, C, S_h, S_w)``; ``gsd`` ``(B,)``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        antialias: bool = True,
        interpolation: str = 'bilinear',
        align_corners: bool = False,
        validate: bool = True,
    ) -> None:
        """Initialize a new GSDResize."""
        super().__init__()
        self.size = to_size(size)
        modes = (*_RESAMPLE, 'area')
        if interpolation not in modes:
            raise ValueError(
                f'interpolation must be one of {modes}, got {interpolation!r}'
            )
        self.interpolation = interpolation
        self.antialias = bool(antialias) and interpolation in ('bilinear', 'bicubic')
        self.align_corners = bool(align_corners) and interpolation in (
            'bilinear',
            'bicubic',
        )
        self.validate = bool(validate)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Resize ``image`` (and ``mask``) to ``size``.

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``.

        Returns:
            A new dict with ``image`` ``(B, C, S_h, S_w)`` and updated ``gsd``.
        """
        image, unbatched = read_image(batch, type(self).__name__)
        gsd = read_gsd(batch, self.validate)
        height, width = image.shape[-2:]
        if (height, width) == self.size:
            out_image = image
        else:
            out_image = F.interpolate(
                image,
                size=self.size,
                mode=self.interpolation,
                align_corners=self.align_corners
                if self.interpolation in ('bilinear', 'bicubic')
                else None,
                antialias=self.antialias,
            )
        ones = torch.ones(image.shape[0], dtype=torch.float64, device=gsd.device)
        fx = scale_factor(ones * width, self.size[1], self.align_corners)
        fy = scale_factor(ones * height, self.size[0], self.align_corners)
        extra: dict[str, Tensor] = {}
        mask = batch.get('mask')
        if isinstance(mask, Tensor):
            m = mask.unsqueeze(0) if unbatched else mask
            m4, ndim = _mask_to_4d(m)
            resized = F.interpolate(m4.float(), size=self.size, mode='nearest-exact')
            resized = resized.to(mask.dtype)
            extra['mask'] = resized[:, 0] if ndim == 3 else resized
        return update_batch(batch, unbatched, out_image, gsd, fx, fy, extra=extra)

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        return (
            f'size={self.size}, antialias={self.antialias}, '
            f'interpolation={self.interpolation!r}, align_corners={self.align_corners}'
        )


class GSDCenterCrop(nn.Module):
    """Crop the centre of every image; the GSD is unchanged, the footprint shrinks.

    No resampling happens, so ``gsd`` is copied as is; ``bounds`` and ``transform``
    (when present) are moved to the cropped footprint. The crop starts at row
    ``(H - S_h) // 2`` and column ``(W - S_w) // 2``.

    Args:
        size: Output size ``S`` or ``(S_h, S_w)`` in pixels, at most the image size.
        validate: Check the GSD values (one host-device synchronisation on CUDA).

    Shapes:
        ``image`` ``(B, C, H, W)`` -> ``(B, C, S_h, S_w)``; ``gsd`` ``(B,)``.

    .. versionadded:: 0.1
    """

    def __init__(self, size: int | tuple[int, int], validate: bool = True) -> None:
        """Initialize a new GSDCenterCrop."""
        super().__init__()
        self.size = to_size(size)
        self.validate = bool(validate)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Crop the centre ``size`` of ``image`` (and ``mask``).

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``.

        Returns:
            A new dict with ``image`` ``(B, C, S_h, S_w)``; ``gsd`` unchanged.

        Raises:
            ValueError: If the image is smaller than ``size``.
        """
        image, unbatched = read_image(batch, type(self).__name__)
        gsd = read_gsd(batch, self.validate)
        height, width = image.shape[-2:]
        out_h, out_w = self.size
        if out_h > height or out_w > width:
            raise ValueError(
                f'GSDCenterCrop size {self.size} is larger than the image '
                f'({height}, {width})'
            )
        top = (height - out_h) // 2
        left = (width - out_w) // 2
        out_image = image[..., top : top + out_h, left : left + out_w]
        n = image.shape[0]
        ones = torch.ones(n, dtype=torch.float64, device=gsd.device)
        extra: dict[str, Tensor] = {}
        mask = batch.get('mask')
        if isinstance(mask, Tensor):
            extra['mask'] = (mask.unsqueeze(0) if unbatched else mask)[
                ..., top : top + out_h, left : left + out_w
            ]
        return update_batch(
            batch,
            unbatched,
            out_image,
            gsd,
            ones,
            ones,
            ones * left,
            ones * top,
            ones * out_w,
            ones * out_h,
            extra,
        )

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        return f'size={self.size}'
