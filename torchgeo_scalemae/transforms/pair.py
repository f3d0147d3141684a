# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The Scale-MAE pretraining pair: a target at ``2S`` and its input at ``S``.

.. versionadded:: 0.1
"""

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .._sizes import to_size
from ..gsd import BOUNDS_KEY, GSD_KEY, TRANSFORM_KEY
from ._geometry import check_flag, interpolate
from .geometric import GSDRandomResizedCrop

__all__ = ('ScaleMAEPair',)


class ScaleMAEPair(nn.Module):
    """Make the Scale-MAE (input, target) pair with their GSDs.

    This is the reference's batch transform (``CustomCompose`` in
    ``mae/lib/transforms.py``, called by ``TransformCollateFn`` in
    ``mae/dataloaders/utils.py``), with GSDs in metres per pixel.

    1. A :class:`~torchgeo_scalemae.transforms.GSDRandomResizedCrop` to ``2S``
       (per-sample boxes, ``scale``, ``ratio``, bicubic) gives the **target**
       ``(B, C, 2S, 2S)``; its GSD is ``target_gsd = gsd * s / (2S)`` for a crop of
       ``s`` pixels (exact, half-pixel grid).
    2. The target resized to ``S`` is the **input** ``(B, C, S, S)`` with
       ``gsd = 2 * target_gsd``.

    **Resize.** The default follows the reference (kornia ``Resize``: bilinear,
    ``align_corners=True``, **no antialiasing**), for parity with the released
    model; the input is then an aliased 2x downsample of the target.
    ``antialias=True`` (and usually ``align_corners=False``) gives a
    low-passed input instead, which changes the input distribution relative to the
    released weights. The GSD relation ``input = 2 x target`` is the reference's
    and the decoder's: exact for ``align_corners=False``; with
    ``align_corners=True`` the input pixel centres are in fact
    ``(2S - 1) / (S - 1)`` target pixels apart (2.009 for ``S = 112``, 2.004 for
    ``S = 224``) over the same footprint, and ``gsd`` keeps the nominal 2.

    The output dict is the input batch with ``image`` (input), ``gsd`` (input GSD),
    ``target`` and ``target_gsd`` (names configurable) set; ``mask`` is cropped with
    the target, and ``bounds``/``transform`` describe the input (same footprint as
    the target, twice its pixel size).

    Args:
        input_size: Input side ``S`` in pixels (the target is ``2S``).
        scale: Crop area range as a fraction of the image area (reference
            ``(0.2, 1.0)``); ``(1.0, 1.0)`` with square images keeps the whole image.
        ratio: Crop aspect ratio range (reference ``(1, 1)``).
        resample: Interpolation of the random resized crop (reference
            ``'bicubic'``).
        antialias: Antialias the ``2S -> S`` resize (reference: ``False``).
        align_corners: Grid of the ``2S -> S`` resize (reference: ``True``).
        reference_ratio: GSD factor of the crop as the reference computes it,
            ``(s - 1) / (2S)`` (see :class:`GSDRandomResizedCrop`).
        target_key: Key of the target image.
        target_gsd_key: Key of the target GSD.
        validate: Check the GSD values (one host-device synchronisation on CUDA).

    Shapes:
        ``image`` ``(B, C, H, W)`` -> ``image`` ``(B, C, S, S)``, ``target``
        ``(B, C, 2S, 2S)``; ``gsd`` and ``target_gsd`` ``(B,)`` metres per pixel.

    Raises:
        TypeError: If ``input_size`` is not an int or a flag is not a bool.
        ValueError: If ``input_size`` is not positive, a key name is taken, or a
            crop argument is invalid (see :class:`GSDRandomResizedCrop`).
    """

    def __init__(
        self,
        input_size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (1.0, 1.0),
        resample: str = 'bicubic',
        antialias: bool = False,
        align_corners: bool = True,
        reference_ratio: bool = False,
        target_key: str = 'target',
        target_gsd_key: str = 'target_gsd',
        validate: bool = True,
    ) -> None:
        """Initialize a new ScaleMAEPair."""
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int):
            raise TypeError(f'input_size must be an int, got {input_size!r}')
        self.input_size = to_size(input_size, 'input_size')[0]
        self.target_size = 2 * self.input_size
        for name, key in (
            ('target_key', target_key),
            ('target_gsd_key', target_gsd_key),
        ):
            if not isinstance(key, str) or not key or key in ('image', GSD_KEY, 'mask'):
                raise ValueError(f'{name} must be a new key name, got {key!r}')
        if target_key == target_gsd_key:
            raise ValueError(
                f'target_key and target_gsd_key must differ, both are {target_key!r}'
            )
        self.target_key = target_key
        self.target_gsd_key = target_gsd_key
        self.antialias = check_flag(antialias, 'antialias')
        self.align_corners = check_flag(align_corners, 'align_corners')
        self.crop = GSDRandomResizedCrop(
            self.target_size,
            scale=scale,
            ratio=ratio,
            resample=resample,
            reference_ratio=reference_ratio,
            validate=validate,
        )

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Return the batch with the input pair and both GSDs.

        Args:
            batch: Dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``.

        Returns:
            A new dict with ``image`` ``(B, C, S, S)``, ``gsd`` ``(B,)``,
            ``target`` ``(B, C, 2S, 2S)`` and ``target_gsd`` ``(B,)``.
        """
        out: dict[str, Any] = self.crop(batch)
        target = out['image']
        target_gsd = out[GSD_KEY]
        unbatched = target.ndim == 3
        t4 = target.unsqueeze(0) if unbatched else target
        size = (self.input_size, self.input_size)
        image = interpolate(t4, size, 'bilinear', self.align_corners, self.antialias)
        out['image'] = image[0] if unbatched else image
        out[GSD_KEY] = target_gsd * 2
        out[self.target_key] = target
        out[self.target_gsd_key] = target_gsd
        bounds = out.get(BOUNDS_KEY)
        if isinstance(bounds, Tensor) and bounds.shape[-1] == 9:
            bounds = bounds.clone()
            bounds[..., 2] *= 2
            bounds[..., 5] *= 2
            out[BOUNDS_KEY] = bounds
            transform = out.get(TRANSFORM_KEY)
            if isinstance(transform, Tensor) and transform.shape[-1] == 9:
                transform = transform.clone()
                transform[..., 0] *= 2
                transform[..., 4] *= 2
                out[TRANSFORM_KEY] = transform
        return out

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        return (
            f'input_size={self.input_size}, target_size={self.target_size}, '
            f'antialias={self.antialias}, align_corners={self.align_corners}'
        )
