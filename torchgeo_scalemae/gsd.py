# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The ground sample distance (GSD) convention, in one place.

Scale-MAE's encoder is told the scale of every image. In this package that scale
travels with the data as a batch entry:

* ``batch['gsd']`` (key :data:`GSD_KEY`) is a ``float32`` tensor of shape ``(B,)``: the
  ground sample distance in **metres per pixel** of ``batch['image']`` *as it is at that
  point* of the pipeline. A single sample (before collation) carries a 0-d tensor.
* Every transform that changes the pixel grid updates it: a crop of ``s`` pixels
  resized to ``S`` pixels multiplies it by ``s / S``
  (see :mod:`torchgeo_scalemae.transforms`). Cropping without resizing leaves it alone.
* The model's ``res`` is ``gsd / reference_gsd`` (:func:`gsd_to_res`), where
  ``reference_gsd`` is a model/task parameter, by default 1 m (the paper's ``G``).
* TorchGeo :class:`~torchgeo.datasets.GeoDataset` samples carry a ``bounds`` tensor
  ``[xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tstep]`` whose ``xres`` (index 2)
  is the pixel size in CRS units; :func:`gsd_from_batch` derives ``gsd`` from it when
  no ``gsd`` entry is present (valid only for projected CRSs in metres, which the
  datamodules of this package check).

Host-device synchronisation: :func:`check_gsd` looks at the *values* (positive,
finite) of the tensor it is given, which for a CUDA tensor costs one device-to-host
synchronisation (a single fused reduction). Pass ``check_values=False`` on hot paths
(the transforms expose the same switch as ``validate``) to keep only the free shape
and dtype checks. :func:`gsd_to_res` checks values only where that is free (numbers
and CPU tensors) unless told otherwise; nothing else in this module synchronises.

.. versionadded:: 0.1
"""

import math
import numbers
from collections.abc import Mapping
from typing import Any, overload

import torch
from torch import Tensor

__all__ = (
    'BOUNDS_KEY',
    'GSD_KEY',
    'TRANSFORM_KEY',
    'check_gsd',
    'gsd_from_batch',
    'gsd_to_res',
)

#: Batch key of the per-sample GSD, metres per pixel, ``float32`` ``(B,)``.
#:
#: kornia's dict mode passes keys that are not ``image``/``mask``/... through
#: untouched, so the name must stay a plain ``gsd`` (not ``image_gsd``).
GSD_KEY = 'gsd'

#: Batch key of TorchGeo GeoDataset bounds ``(B, 9)``:
#: ``[xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tstep]``.
BOUNDS_KEY = 'bounds'

#: Batch key of TorchGeo GeoDataset affine transforms ``(B, 9)``:
#: ``[a, b, c, d, e, f, 0, 0, 1]`` with ``a = xres``, ``c = xmin``, ``e = -yres``,
#: ``f = ymax``.
TRANSFORM_KEY = 'transform'


def _is_real(value: object) -> bool:
    """Whether ``value`` is a real Python/NumPy number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_gsd(
    gsd: Tensor | float | None,
    batch_size: int | None = None,
    *,
    device: torch.device | str | None = None,
    check_values: bool = True,
) -> Tensor:
    """Validate a GSD and return it as a ``float32`` tensor of shape ``(B,)``.

    Args:
        gsd: Ground sample distance in metres per pixel: a Python number, a 0-d
            tensor (broadcast to ``batch_size``) or a ``(B,)`` tensor. A ``(B, 1)``
            tensor is accepted and flattened.
        batch_size: Expected number of samples ``B``. Required to broadcast a scalar;
            when given, a ``(B,)`` tensor must have exactly this length.
        device: Device of the returned tensor (defaults to the device of ``gsd``, or
            the CPU for a Python number).
        check_values: Check that every value is finite and positive. For a CUDA
            tensor this costs one host-device synchronisation; pass ``False`` on hot
            paths where the values are known to be valid.

    Returns:
        The GSD as a ``float32`` tensor of shape ``(B,)`` (``(1,)`` for a scalar
        without ``batch_size``).

    Raises:
        ValueError: If ``gsd`` is missing (``None``), has the wrong shape or
            length, or (with ``check_values``) is not finite or not positive. The
            message names the bad value.
        TypeError: If ``gsd`` is neither a number nor a real tensor.
    """
    if gsd is None:
        raise ValueError(
            'gsd is missing (None): give the ground sample distance in metres per '
            'pixel, as a number or a (B,) tensor'
        )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
    if not _is_real(gsd) and not isinstance(gsd, Tensor):
        raise TypeError(
            f'gsd must be a number or a tensor, got {type(gsd).__name__}: {gsd!r}'
        )
    if not isinstance(gsd, Tensor):
        value = float(gsd)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f'gsd must be a finite positive number of metres per pixel, got {gsd!r}'
            )
        return torch.full((batch_size or 1,), value, dtype=torch.float32, device=device)

    if gsd.is_complex() or gsd.dtype == torch.bool:
        raise TypeError(f'gsd must be a real tensor, got dtype {gsd.dtype}')
    out = gsd
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim == 0:
        out = out.expand(batch_size or 1)
    elif out.ndim != 1:
        raise ValueError(
            f'gsd must have shape (B,) (one value per sample), got shape '
            f'{tuple(gsd.shape)}'
        )
    elif batch_size is not None and out.shape[0] != batch_size:
        raise ValueError(
            f'gsd has {out.shape[0]} values but the batch has {batch_size} samples '
            f'(gsd shape {tuple(gsd.shape)})'
        )
    if out.shape[0] == 0:
        raise ValueError('gsd is empty (shape (0,)): one value per sample is needed')
    out = out.to(
        device=device if device is not None else out.device, dtype=torch.float32
    )
    if check_values:
        bad = ~(torch.isfinite(out) & (out > 0))
        if bool(bad.any()):  # the one host-device synchronisation
            values = out[bad][:5].tolist()
            index = torch.nonzero(bad)[:5, 0].tolist()
            raise ValueError(
                'gsd must be finite and positive (metres per pixel); bad values '
                f'{values} at batch index {index}'
            )
    return out.contiguous()


@overload
def gsd_to_res(
    gsd: Tensor, reference_gsd: float = 1.0, *, check_values: bool | None = None
) -> Tensor: ...


@overload
def gsd_to_res(
    gsd: float, reference_gsd: float = 1.0, *, check_values: bool | None = None
) -> float: ...


def gsd_to_res(
    gsd: Tensor | float, reference_gsd: float = 1.0, *, check_values: bool | None = None
) -> Tensor | float:
    """Convert a GSD in metres per pixel to the model's relative ``res``.

    ``res = gsd / reference_gsd``; with the default ``reference_gsd = 1`` m (the
    paper's ``G``) ``res`` is the GSD in metres. A Python number gives a Python
    ``float`` (``gsd_to_res(0.5) == 0.5``), a tensor a ``float32`` tensor.

    Args:
        gsd: GSD in metres per pixel: a tensor of shape ``(B,)`` (or any shape) or
            a Python number.
        reference_gsd: Reference GSD ``G`` in metres per pixel, ``> 0``.
        check_values: Check that every GSD value is finite and positive. ``None``
            (the default) checks wherever that is free: Python numbers and CPU
            tensors; a tensor on another device is then not checked, because
            reading its values back costs one host-device synchronisation (pass
            ``True`` to check it anyway, see :func:`check_gsd`).

    Returns:
        ``res``: a ``float32`` tensor with the shape of ``gsd``, or a ``float``.

    Raises:
        ValueError: If ``reference_gsd`` is not a finite positive number, or (when
            checked) a GSD value is not finite and positive; the message names the
            bad value.
        TypeError: If ``gsd`` is neither a real tensor nor a number.
    """
    if (
        not _is_real(reference_gsd)
        or not math.isfinite(reference_gsd)
        or reference_gsd <= 0
    ):
        raise ValueError(
            'reference_gsd must be a finite positive number of metres per pixel, '
            f'got {reference_gsd!r}'
        )
    flag: object = check_values
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f'check_values must be a bool or None, got {check_values!r}')
    if not _is_real(gsd) and not isinstance(gsd, Tensor):
        raise TypeError(
            f'gsd must be a number or a tensor, got {type(gsd).__name__}: {gsd!r}'
        )
    if not isinstance(gsd, Tensor):
        value = float(gsd)
        if check_values is not False and (not math.isfinite(value) or value <= 0):
            raise ValueError(
                f'gsd must be a finite positive number of metres per pixel, got {gsd!r}'
            )
        return value / float(reference_gsd)
    if gsd.is_complex() or gsd.dtype == torch.bool:
        raise TypeError(f'gsd must be a real tensor, got dtype {gsd.dtype}')
    res = gsd.to(torch.float32) / float(reference_gsd)
    if check_values or (check_values is None and gsd.device.type == 'cpu'):
        bad = ~(torch.isfinite(res) & (res > 0))
        if bool(bad.any()):
            values = gsd.reshape(-1)[bad.reshape(-1)][:5].tolist()
            raise ValueError(
                'gsd must be finite and positive (metres per pixel) to give a valid '
                f'res; bad values {values}'
            )
    return res


def _batch_size(batch: Mapping[str, Any]) -> int | None:
    for key in ('image', 'mask'):
        value = batch.get(key)
        if isinstance(value, Tensor) and value.ndim >= 3:
            return int(value.shape[0]) if value.ndim >= 4 else 1
    return None


def _batch_device(batch: Mapping[str, Any]) -> torch.device | None:
    for key in ('image', 'mask', GSD_KEY, BOUNDS_KEY):
        value = batch.get(key)
        if isinstance(value, Tensor):
            return value.device
    return None


def gsd_from_batch(
    batch: Mapping[str, Any],
    default_gsd: float | None = None,
    *,
    check_values: bool = True,
) -> Tensor:
    """Return the per-sample GSD of a batch, in metres per pixel.

    Looks, in order, for:

    1. ``batch['gsd']`` (a ``(B,)`` tensor or a number);
    2. the pixel size in TorchGeo GeoDataset ``bounds[:, 2]`` (``xres``, in CRS
       units: metres for the projected CRSs the datamodules of this package accept);
    3. ``default_gsd``, broadcast to the batch size of ``batch['image']``.

    Args:
        batch: Batch dict with ``image`` ``(B, C, H, W)`` and optionally ``gsd``
            ``(B,)`` or ``bounds`` ``(B, 9)``.
        default_gsd: Fallback GSD in metres per pixel when the batch has none.
        check_values: Check the values are finite and positive (one host-device
            synchronisation on CUDA, see :func:`check_gsd`).

    Returns:
        ``float32`` tensor of shape ``(B,)`` on the device of the batch.

    Raises:
        ValueError: If the batch carries no GSD and ``default_gsd`` is None, the
            GSD found is invalid (see :func:`check_gsd`), or ``default_gsd`` is not
            None or a finite positive number.
        TypeError: If ``batch`` is not a dict.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f'batch must be a dict, got {type(batch).__name__}')
    if default_gsd is not None and (
        not _is_real(default_gsd) or not 0 < float(default_gsd) < math.inf
    ):
        # checked even when the batch has its own GSD: a bad fallback is a bug
        raise ValueError(
            'default_gsd must be None or a finite positive number (metres per '
            f'pixel), got {default_gsd!r}'
        )
    batch_size = _batch_size(batch)
    device = _batch_device(batch)
    if batch.get(GSD_KEY) is not None:
        return check_gsd(
            batch[GSD_KEY], batch_size, device=device, check_values=check_values
        )
    bounds = batch.get(BOUNDS_KEY)
    if isinstance(bounds, Tensor) and bounds.shape[-1] == 9:
        xres = bounds[..., 2].reshape(-1) if bounds.ndim <= 2 else None
        if xres is not None:
            return check_gsd(xres, batch_size, device=device, check_values=check_values)
    if default_gsd is not None:
        return check_gsd(
            default_gsd, batch_size, device=device, check_values=check_values
        )
    raise ValueError(
        f"batch has no '{GSD_KEY}' entry and no GeoDataset '{BOUNDS_KEY}' (keys: "
        f'{sorted(batch)}) and no default_gsd was given: attach a GSD with '
        'torchgeo_scalemae.datamodules.AttachGSD or pass default_gsd (metres per pixel)'
    )
