# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Argument checks shared by the callbacks (private)."""

from typing import Any


def positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    """Raise a :class:`ValueError` naming *value* unless it is an int >= 1 (or None).

    Args:
        value: The argument.
        name: Its name, for the message.
        allow_none: Also accept None.

    Raises:
        ValueError: If *value* is a bool, not an int, or below 1.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        rule = 'a positive int or None' if allow_none else 'a positive int'
        raise ValueError(f'{name} must be {rule}, got {value!r}')
