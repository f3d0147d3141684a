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
* ``'reference'``: the reference code's kNN ``--eval_gsd`` rule (reference
  ``mae/eval/knn.py``),
  ``res = base_res * reference_size / size`` with ``reference_size`` defaulting to the
  native size, i.e. ``res`` relative to the native rendering of the same image (the
  convention the released weights were trained with; no metres involved).
* ``'constant'``: ``res = base_res`` at every scale (the reference README's
  ``--eval_only`` behaviour, and the "no GSD encoding" ablation).

:class:`MultiScaleEvaluation` puts these together for evaluation tasks: it holds
the settings of the protocol (validated once, when it is built), turns every batch
into one :class:`ScaledBatch` per scale (image and mask resized, ``gsd`` updated per
sample, ``res`` computed) and :class:`ScaleStats` summarises what was evaluated at
each scale into :class:`~torchgeo_scalemae.evaluation.report.ScaleResult` rows whose
metric names carry the GSD (:func:`~torchgeo_scalemae.evaluation.report.metric_name`).
:class:`~torchgeo_scalemae.tasks.MultiScaleKNN` and
:class:`~torchgeo_scalemae.tasks.ScaleMAEClassification` both use it; a segmentation
task would too (masks are resized with nearest-neighbour sampling).

.. versionadded:: 0.1
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..gsd import GSD_KEY, gsd_from_batch, gsd_to_res
from ..transforms import GSDResize
from .report import ScaleResult

__all__ = (
    'Interpolation',
    'MultiScaleEvaluation',
    'ResMode',
    'ScaleStats',
    'ScaledBatch',
    'check_scales',
    'encoder_patch_size',
    'resize_to_scale',
    'scale_res',
    'scale_size',
)

#: Batch key of segmentation masks, resized with nearest-neighbour sampling.
MASK_KEY = 'mask'

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
        A new dict with ``image`` (B, C, S_h, S_w), ``mask`` (B, S_h, S_w) or
        (B, 1, S_h, S_w) resized with nearest-neighbour sampling (dtype kept) when
        the batch has one, and, if the input had one, the updated ``gsd`` (B,). A
        batch without ``gsd`` is resized as is.

    Raises:
        ValueError: If the batch has no 4-D ``image``.
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
            mask = batch.get(MASK_KEY)
            if isinstance(mask, Tensor):
                out[MASK_KEY] = _resize_mask(mask, size)
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
    check_values: bool | None = None,
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
        check_values: Check the GSD values in ``'gsd'`` mode
            (:func:`~torchgeo_scalemae.gsd.gsd_to_res`; None: where that is free).

    Returns:
        float32 (B,) tensor of ``res`` values.

    Raises:
        ValueError: For an unknown mode, or ``'gsd'`` mode without a GSD.
    """
    if res_mode == 'gsd':
        if gsd is None:
            raise ValueError(
                "res_mode='gsd' needs a GSD: the batch has no 'gsd' entry; attach one "
                '(torchgeo_scalemae.datamodules), set default_gsd, or use '
                "res_mode='reference'"
            )
        return gsd_to_res(gsd, reference_gsd, check_values=check_values).to(device)
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


def _resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a (B, H, W) or (B, 1, H, W) mask, dtype kept."""
    squeeze = mask.ndim == 3
    mask4 = mask.unsqueeze(1) if squeeze else mask
    out = torch.nn.functional.interpolate(
        mask4.float(), size=size, mode='nearest-exact'
    ).to(mask.dtype)
    return out[:, 0] if squeeze else out


def encoder_patch_size(encoder: nn.Module) -> int:
    """Patch side in pixels of a ViT-style encoder.

    Args:
        encoder: The encoder; ``patch_embed.patch_size`` or ``patch_size`` is read.

    Returns:
        The patch side, or 1 for an encoder without patches (any size is valid).
    """
    patch: Any = getattr(getattr(encoder, 'patch_embed', None), 'patch_size', None)
    if patch is None:
        patch = getattr(encoder, 'patch_size', None)
    if patch is None:
        return 1
    if isinstance(patch, Sequence):
        patch = patch[0]
    return int(patch)


@dataclass(frozen=True)
class ScaledBatch:
    """One evaluation scale of a batch, as yielded by :class:`MultiScaleEvaluation`.

    Attributes:
        index: Position of the scale in :attr:`MultiScaleEvaluation.scales`.
        scale: The scale (fraction of the native size or a size in pixels).
        batch: The batch at that scale: ``image`` (and ``mask``) resized, ``gsd``
            updated per sample when the batch has one; other entries unchanged.
        res: float32 (B,) ``res`` for the encoder.
    """

    index: int
    scale: float
    batch: dict[str, Any]
    res: Tensor

    @property
    def image(self) -> Tensor:
        """The resized images, (B, C, S_h, S_w)."""
        image: Tensor = self.batch['image']
        return image

    @property
    def gsd(self) -> Tensor | None:
        """The per-sample GSD at this scale in metres per pixel, or None."""
        gsd = self.batch.get(GSD_KEY)
        return gsd if isinstance(gsd, Tensor) else None

    @property
    def size(self) -> tuple[int, int]:
        """The image size ``(S_h, S_w)`` in pixels."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


class MultiScaleEvaluation:
    """The multi-scale evaluation protocol: scales, resampling and the ``res`` rule.

    Every argument is validated here, once; the per-batch methods only check the
    batch's own GSD values (once per batch, not per scale).

    Example (the classification task's test step, in short)::

        multiscale = MultiScaleEvaluation([1.0, 0.5], default_gsd=0.3)
        stats = ScaleStats()
        for item in multiscale.scaled_batches(batch, patch_size=16):
            logits = encoder(item.image, res=item.res)
            accuracy[item.index].update(logits, item.batch['label'])
            stats.update(item)
        results = [stats.result(i, float(a.compute())) for i, a in ...]

    Args:
        scales: Evaluation scales: fractions of the native size (``<= 1``) or sizes
            in pixels (``> 1``); see :func:`check_scales`.
        res_mode: ``'gsd'``, ``'reference'`` or ``'constant'`` (module docs).
        reference_gsd: ``G`` in metres per pixel for ``res = gsd / G``.
        base_res: ``res`` at the reference size (``'reference'``) or at every scale
            (``'constant'``).
        reference_size: Reference side in pixels for ``'reference'`` (None: the
            native size).
        default_gsd: GSD in metres per pixel of batches that carry none.
        interpolation: Image resampling (:func:`resize_to_scale`); masks always use
            nearest-neighbour sampling.
        antialias: Antialias when downsampling (bilinear/bicubic).

    Raises:
        ValueError: If an argument is out of range (the message names it).
        TypeError: If a scale is not a number.
    """

    def __init__(
        self,
        scales: Sequence[float] = (1.0,),
        *,
        res_mode: ResMode = 'gsd',
        reference_gsd: float = 1.0,
        base_res: float = 1.0,
        reference_size: int | None = None,
        default_gsd: float | None = None,
        interpolation: Interpolation = 'bilinear',
        antialias: bool = True,
    ) -> None:
        """Validate and store the settings; see the class docstring."""
        self.scales: tuple[float, ...] = tuple(check_scales(scales))
        if res_mode not in ('gsd', 'reference', 'constant'):
            raise ValueError(
                f"res_mode must be 'gsd', 'reference' or 'constant', got {res_mode!r}"
            )
        for name, value in (('reference_gsd', reference_gsd), ('base_res', base_res)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(f'{name} must be finite and > 0, got {value!r}')
        if default_gsd is not None and (
            isinstance(default_gsd, bool)
            or not isinstance(default_gsd, int | float)
            or not (math.isfinite(default_gsd) and default_gsd > 0)
        ):
            raise ValueError(f'default_gsd must be > 0 metres, got {default_gsd!r}')
        if reference_size is not None and (
            isinstance(reference_size, bool)
            or not isinstance(reference_size, int)
            or reference_size < 1
        ):
            raise ValueError(
                f'reference_size must be a positive int or None, got {reference_size!r}'
            )
        if interpolation not in ('bilinear', 'bicubic', 'area', 'nearest'):
            raise ValueError(
                "interpolation must be 'bilinear', 'bicubic', 'area' or 'nearest', "
                f'got {interpolation!r}'
            )
        self.res_mode: ResMode = res_mode
        self.reference_gsd = float(reference_gsd)
        self.base_res = float(base_res)
        self.reference_size = reference_size
        self.default_gsd = None if default_gsd is None else float(default_gsd)
        self.interpolation: Interpolation = interpolation
        self.antialias = bool(antialias)

    def batch_gsd(self, batch: Mapping[str, Any]) -> Tensor | None:
        """The batch's per-sample GSD (values checked), or None where none is needed.

        Args:
            batch: Dict with ``image`` and ``gsd``, GeoDataset ``bounds``, or
                neither (then ``default_gsd``).

        Returns:
            float32 (B,) GSD in metres per pixel; None when the batch carries no GSD,
            there is no ``default_gsd`` and ``res_mode`` is not ``'gsd'``.

        Raises:
            ValueError: If ``res_mode='gsd'`` and the batch has no GSD, or a GSD
                value is not finite and positive.
        """
        if (
            self.res_mode != 'gsd'
            and self.default_gsd is None
            and batch.get(GSD_KEY) is None
            and batch.get('bounds') is None
        ):
            return None
        try:
            return gsd_from_batch(batch, self.default_gsd)
        except ValueError:
            if self.res_mode == 'gsd' or batch.get(GSD_KEY) is not None:
                raise
            return None  # unusable bounds, and the GSD is only reported

    def res(
        self,
        batch: Mapping[str, Any],
        image: Tensor,
        native: int | None = None,
        gsd: Tensor | None = None,
    ) -> Tensor:
        """``res`` for a batch fed to the encoder as *image* (see ``res_mode``).

        Args:
            batch: The batch (its GSD must match *image*); read in ``'gsd'`` mode
                when *gsd* is not given.
            image: (B, C, H, W) images fed to the encoder.
            native: Native side in pixels for ``'reference'`` mode (default: W).
            gsd: The GSD of *image*, already read from the batch.

        Returns:
            float32 (B,) ``res`` on the image's device.
        """
        if self.res_mode == 'gsd' and gsd is None:
            gsd = gsd_from_batch(batch, self.default_gsd)
        return scale_res(
            self.res_mode,
            gsd=gsd,
            size=int(image.shape[-1]),
            native=int(native or image.shape[-1]),
            batch_size=int(image.shape[0]),
            reference_gsd=self.reference_gsd,
            base_res=self.base_res,
            reference_size=self.reference_size,
            device=image.device,
            check_values=False,
        )

    def scaled_batches(
        self, batch: Mapping[str, Any], patch_size: int
    ) -> Iterator[ScaledBatch]:
        """Yield the batch at every scale, in the order of :attr:`scales`.

        Args:
            batch: Dict with ``image`` (B, C, H, W), optionally ``mask`` and ``gsd``
                (B,) in metres per pixel (or GeoDataset ``bounds``); other entries,
                e.g. ``label``, are passed through.
            patch_size: Encoder patch size; output sides are multiples of it.

        Yields:
            One :class:`ScaledBatch` per scale.

        Raises:
            ValueError: If the batch has no 4-D ``image``, or (``res_mode='gsd'``)
                no GSD.
        """
        image = batch.get('image')
        if not isinstance(image, Tensor) or image.ndim != 4:
            shape = tuple(image.shape) if isinstance(image, Tensor) else None
            raise ValueError(
                f"batch['image'] must have shape (B, C, H, W), got {shape}"
            )
        native = int(image.shape[-1])
        gsd = self.batch_gsd(batch)
        base = dict(batch)
        if gsd is not None:
            base[GSD_KEY] = gsd
        for index, scale in enumerate(self.scales):
            resized = resize_to_scale(
                base,
                scale,
                patch_size,
                interpolation=self.interpolation,
                antialias=self.antialias,
            )
            x: Tensor = resized['image']
            res = self.res(resized, x, native=native, gsd=resized.get(GSD_KEY))
            yield ScaledBatch(index, scale, resized, res)


class ScaleStats:
    """What was evaluated at each scale: image size, GSDs and ``res`` values.

    :meth:`update` with every :class:`ScaledBatch`; :meth:`result` summarises one
    scale with its metric value (medians of the per-sample GSD and ``res``).
    """

    def __init__(self) -> None:
        """Start empty."""
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded."""
        self._gsd: dict[int, list[Tensor]] = {}
        self._res: dict[int, list[Tensor]] = {}
        self._size: dict[int, tuple[int, int]] = {}
        self._scale: dict[int, float] = {}

    def __len__(self) -> int:
        """Number of scales recorded."""
        return len(self._size)

    def update(self, item: ScaledBatch) -> None:
        """Record the samples of one scaled batch.

        Args:
            item: The scaled batch.
        """
        self._res.setdefault(item.index, []).append(item.res.detach())
        if item.gsd is not None:
            self._gsd.setdefault(item.index, []).append(item.gsd.detach().float())
        self._size[item.index] = item.size
        self._scale[item.index] = item.scale

    def result(self, index: int, accuracy: float, num_bank: int = 0) -> ScaleResult:
        """Summarise the scale at *index*.

        Args:
            index: Position of the scale.
            accuracy: The metric value at that scale (e.g. top-1 accuracy).
            num_bank: kNN bank size (0 otherwise).

        Returns:
            The scale's :class:`~torchgeo_scalemae.evaluation.report.ScaleResult`
            (GSD NaN when the data carry none).

        Raises:
            KeyError: If nothing was recorded at that scale.
        """
        res = torch.cat(self._res[index]).float()
        gsd = self._gsd.get(index)
        height, width = self._size[index]
        return ScaleResult(
            scale=self._scale[index],
            height=height,
            width=width,
            gsd=float(torch.cat(gsd).median()) if gsd else math.nan,
            res=float(res.median()),
            accuracy=float(accuracy),
            num_queries=int(res.numel()),
            num_bank=int(num_bank),
        )
