# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Default callbacks that the tasks install from ``configure_callbacks`` (private)."""

from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Callback


def not_configured(trainer: Any, callbacks: Iterable[Callback]) -> list[Callback]:
    """Keep the defaults of a type that ``trainer.callbacks`` does not hold yet.

    Lightning replaces the trainer's callbacks of every type that
    ``configure_callbacks`` returns, so a default must never be returned when the
    user configured one of its type (with their own settings).

    Args:
        trainer: The trainer (or None before it is attached).
        callbacks: The task's default callbacks.

    Returns:
        The defaults to return from ``configure_callbacks``.
    """
    present = list(getattr(trainer, 'callbacks', None) or [])
    return [c for c in callbacks if not any(isinstance(p, type(c)) for p in present)]
