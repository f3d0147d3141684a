# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Argument checks shared by the datamodules (private).

Each raises with a message that names the argument and its bad value.
"""

import math
import numbers

import torch


def is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_positive(value: object) -> bool:
    """Whether ``value`` is a finite positive real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and not value <= 0


def positive_number(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive number, else raise."""
    if not is_number(value):
        raise TypeError(
            f'{name} must be a number, got {type(value).__name__}: {value!r}'
        )
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f'{name} must be a finite positive number, got {value!r}')
    return number


def check_int(
    value: object, name: str, minimum: int, *, none: bool = False
) -> int | None:
    """Return ``value`` if it is an int ``>= minimum`` (or None when allowed)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = 'None or an int' if none else 'an int'
        raise TypeError(f'{name} must be {what}, got {type(value).__name__}: {value!r}')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value!r}')
    return int(value)


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def check_norm(value: object, name: str, positive: bool) -> torch.Tensor:
    """Return a normalisation ``mean``/``std`` (one value or one per band)."""
    values = value if isinstance(value, list | tuple) else [value]
    if any(isinstance(v, bool) for v in values):
        raise TypeError(
            f'{name} must be a number or a list of numbers (one per band), got '
            f'{value!r}'
        )
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f'{name} must be a number or a list of numbers (one per band), got '
            f'{value!r}'
        ) from None
    if tensor.ndim > 1 or tensor.numel() == 0:
        raise ValueError(
            f'{name} must be a number or a flat list of numbers, got {value!r}'
        )
    good = torch.isfinite(tensor) & ((tensor > 0) if positive else True)
    if not bool(good.all()):
        kind = 'finite and positive' if positive else 'finite'
        raise ValueError(f'{name} must be {kind}, got {value!r}')
    return tensor


def check_loader(
    mean: object, std: object, batch_size: object, num_workers: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a datamodule's normalisation and loader arguments; return mean, std."""
    norm = (
        check_norm(mean, 'mean', positive=False),
        check_norm(std, 'std', positive=True),
    )
    check_int(batch_size, 'batch_size', 1)
    check_int(num_workers, 'num_workers', 0)
    return norm


def check_resolutions(value: object, name: str = 'resolutions') -> list[float]:
    """Return a non-empty list of finite positive numbers (CRS units per pixel)."""
    if (
        isinstance(value, str)
        or not isinstance(value, list | tuple)
        or not value
        or not all(is_number(r) and math.isfinite(r) and r > 0 for r in value)
    ):
        raise ValueError(
            f'{name} must be a non-empty list of finite positive CRS units per pixel, '
            f'got {value!r}'
        )
    return [float(r) for r in value]


def check_bands(value: object) -> list[int]:
    """Return a non-empty list of 1-based band indexes."""
    if (
        isinstance(value, str)
        or not isinstance(value, list | tuple)
        or not value
        or any(
            isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1
            for b in value
        )
    ):
        raise ValueError(
            f'bands must be a non-empty list of 1-based band indexes, got {value!r}'
        )
    return [int(b) for b in value]


def check_pair(value: object, name: str) -> tuple[float, float]:
    """Return a finite positive number or ``(a, b)`` pair as a pair of floats."""
    pair = (value, value) if is_number(value) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(is_number(v) and math.isfinite(v) and v > 0 for v in pair)
    ):
        raise ValueError(
            f'{name} must be a finite positive number or a pair of them, got {value!r}'
        )
    return float(pair[0]), float(pair[1])


def check_fraction(value: object, name: str) -> float:
    """Return a number in ``[0, 1)``."""
    if not is_number(value):
        raise TypeError(f'{name} must be a number in [0, 1), got {value!r}')
    number = float(value)  # type: ignore[arg-type]
    if not 0 <= number < 1:
        raise ValueError(f'{name} must be in [0, 1), got {value!r}')
    return number
