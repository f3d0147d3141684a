# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Validation of pixel sizes given as an int or a (height, width) pair (private)."""


def to_size(
    size: int | tuple[int, int] | list[int], name: str = 'size'
) -> tuple[int, int]:
    """Return ``(height, width)`` from an int or a pair, validating both are >= 1."""
    if isinstance(size, bool):
        raise TypeError(f'{name} must be an int or (height, width), got {size!r}')
    if isinstance(size, int):
        out = (size, size)
    elif (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
    ):
        out = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f'{name} must be an int or (height, width), got {size!r}')
    if min(out) < 1:
        raise ValueError(f'{name} must be positive, got {size!r}')
    return out
