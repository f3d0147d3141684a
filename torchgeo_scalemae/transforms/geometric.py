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

from collections.abc import Mapping
from typing import Any

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from .._sizes import to_size
from ._geometry import (
    check_flag,
    interpolate,
    read_gsd,
    read_image,
    read_mask,
    scale_factor,
    update_batch,
)

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
    if not 0 < lo <= hi < float('inf'):
        raise ValueError(f'{name} must satisfy 0 < min <= max < inf, got {value!r}')
    return lo, hi


class GSDRandomResizedCrop(nn.Module):
    """Random resized crop (per-sample parameters) that updates the GSD.

    Wraps :class:`kornia.augmentation.RandomResizedCrop` (``cropping_mode='slice'``):
    each sample gets its own crop box, drawn with kornia's public
    ``forward_parameters`` and applied with ``crop(image, params=...)``; the same
    boxes update ``gsd``, ``bounds`` and ``transform``.

    **Box convention.** kornia stores inclusive corner pixel coordinates: a crop of
    ``w`` pixels starting at column ``x0`` has corners ``x0`` and ``x0 + w - 1``, so
    ``w = src[:, 1, 0] - src[:, 0, 0] + 1``.

    **GSD bookkeeping.** With ``align_corners=False`` (the default) the crop is
    resized on the half-pixel grid, so a crop of ``s`` pixels resized to ``S`` pixels
    has pixels exactly ``s / S`` times larger: ``gsd_out = gsd_in * s / S``. With
    ``align_corners=True`` the first and last pixel centres are kept and the exact
    spacing is ``(s - 1) / (S - 1)``; that is what is used then. The reference
    Scale-MAE code (reference ``mae/lib/transforms.py``) instead uses ``(s - 1) / S``
    (it reads the box width ``dx = s - 1`` and divides by the output size);
    ``reference_ratio=True`` reproduces that bookkeeping for parity experiments
    with the released weights.
    For non-square crops or outputs the horizontal and vertical factors differ and
    ``gsd`` gets their geometric mean (``bounds``/``transform`` keep both).

    Resampling follows the reference (kornia, bicubic, no antialiasing), which
    matters for parity with the released model. Any floating-point image dtype
    (float16, bfloat16, float32, float64) is resampled in its own dtype.

    **Devices.** The crop boxes are always drawn on the CPU, whatever device the
    images are on: the kornia augmentations are kept out of this module's children,
    so moving the transform (``.to('cuda')``, or a LightningModule that holds it
    being moved) leaves their samplers on the CPU, in float32. kornia's slice
    cropping reads the boxes as Python ints, which for boxes drawn on a GPU would
    cost one host-device synchronisation per call.

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

    Raises:
        ValueError: If ``size``, ``scale``, ``ratio`` or ``resample`` is invalid
            (at construction; the message names the value).
        TypeError: If a flag is not a bool.
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
        self.align_corners = check_flag(align_corners, 'align_corners')
        self.reference_ratio = check_flag(reference_ratio, 'reference_ratio')
        self.validate = check_flag(validate, 'validate')
        # A tuple is not a child module: nn.Module.to()/.cuda()/.half() never reach
        # these, so kornia keeps drawing the boxes on the CPU in float32 (see the
        # class docstring); the transform itself holds no tensors.
        self._kornia = (
            K.RandomResizedCrop(
                self.size,
                scale=self.scale,
                ratio=self.ratio,
                resample=resample,
                align_corners=self.align_corners,
                cropping_mode='slice',
            ),
            K.RandomResizedCrop(
                self.size,
                scale=self.scale,
                ratio=self.ratio,
                resample='nearest',
                cropping_mode='slice',
            ),
        )

    @property
    def crop(self) -> K.RandomResizedCrop:
        """The kornia crop of the image (its boxes are drawn on the CPU)."""
        return self._kornia[0]

    @property
    def mask_crop(self) -> K.RandomResizedCrop:
        """The kornia crop of ``mask`` (nearest), applied with the image's boxes."""
        return self._kornia[1]

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

        Raises:
            ValueError: If the image is not a non-empty floating-point
                ``(B, C, H, W)`` tensor, the GSD is missing or invalid, or the mask
                does not match the image's size.
        """
        name = type(self).__name__
        image, unbatched = read_image(batch, name)
        gsd = read_gsd(batch, self.validate)
        if gsd.shape[0] != image.shape[0]:
            raise ValueError(
                f'gsd has {gsd.shape[0]} values for {image.shape[0]} images'
            )
        mask4 = read_mask(batch, image, unbatched, name)
        params = self.crop.forward_parameters(tuple(image.shape))
        out_image = self.crop(image, params=params)
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
        if mask4 is not None:
            m4, ndim = mask4
            cropped = self.mask_crop(m4.float(), params=params).to(m4.dtype)
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
    ``GSDResize(size, antialias=False, align_corners=True)``. float16 and bfloat16
    images are antialiased in float32 (PyTorch has no half-precision antialiasing
    kernel on the CPU) and returned in their own dtype.

    Args:
        size: Output size ``S`` or ``(S_h, S_w)`` in pixels.
        antialias: Low-pass filter when downsampling (bilinear/bicubic only).
        interpolation: ``'bilinear'`` (default), ``'bicubic'``, ``'nearest'`` or
            ``'area'``.
        align_corners: Interpolation grid for bilinear/bicubic.
        validate: Check the GSD values (one host-device synchronisation on CUDA).

    Shapes:
        ``image`` ``(B, C, H, W)`` -> ``(B, C, S_h, S_w)``; ``gsd`` ``(B,)``;
        ``mask`` ``(B, H, W)`` -> ``(B, S_h, S_w)`` (nearest).

    Raises:
        ValueError: If ``size`` or ``interpolation`` is invalid (at construction).
        TypeError: If a flag is not a bool.
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
        smooth = interpolation in ('bilinear', 'bicubic')
        self.antialias = check_flag(antialias, 'antialias') and smooth
        self.align_corners = check_flag(align_corners, 'align_corners') and smooth
        self.validate = check_flag(validate, 'validate')

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Resize ``image`` (and ``mask``) to ``size``.

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``.

        Returns:
            A new dict with ``image`` ``(B, C, S_h, S_w)`` and updated ``gsd``.

        Raises:
            ValueError: If the image is not a non-empty floating-point
                ``(B, C, H, W)`` tensor, the GSD is missing or invalid, or the mask
                does not match the image's size.
        """
        name = type(self).__name__
        image, unbatched = read_image(batch, name)
        gsd = read_gsd(batch, self.validate)
        mask4 = read_mask(batch, image, unbatched, name)
        height, width = image.shape[-2:]
        if (height, width) == self.size:
            out_image = image
        else:
            out_image = interpolate(
                image,
                self.size,
                self.interpolation,
                self.align_corners
                if self.interpolation in ('bilinear', 'bicubic')
                else None,
                self.antialias,
            )
        ones = torch.ones(image.shape[0], dtype=torch.float64, device=gsd.device)
        fx = scale_factor(ones * width, self.size[1], self.align_corners)
        fy = scale_factor(ones * height, self.size[0], self.align_corners)
        extra: dict[str, Tensor] = {}
        if mask4 is not None:
            m4, ndim = mask4
            resized = interpolate(m4.float(), self.size, 'nearest-exact', None, False)
            resized = resized.to(m4.dtype)
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
        ``image`` ``(B, C, H, W)`` -> ``(B, C, S_h, S_w)``; ``gsd`` ``(B,)``;
        ``mask`` ``(B, H, W)`` -> ``(B, S_h, S_w)``.

    Raises:
        ValueError: If ``size`` is not positive (at construction).
        TypeError: If ``validate`` is not a bool.
    """

    def __init__(self, size: int | tuple[int, int], validate: bool = True) -> None:
        """Initialize a new GSDCenterCrop."""
        super().__init__()
        self.size = to_size(size)
        self.validate = check_flag(validate, 'validate')

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Crop the centre ``size`` of ``image`` (and ``mask``).

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``.

        Returns:
            A new dict with ``image`` ``(B, C, S_h, S_w)``; ``gsd`` unchanged.

        Raises:
            ValueError: If the image is smaller than ``size``, is not a non-empty
                floating-point ``(B, C, H, W)`` tensor, the GSD is missing or
                invalid, or the mask does not match the image's size.
        """
        name = type(self).__name__
        image, unbatched = read_image(batch, name)
        gsd = read_gsd(batch, self.validate)
        mask4 = read_mask(batch, image, unbatched, name)
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
        if mask4 is not None:
            m4, ndim = mask4
            cropped = m4[..., top : top + out_h, left : left + out_w]
            extra['mask'] = cropped[:, 0] if ndim == 3 else cropped
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
