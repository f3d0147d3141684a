# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE for TorchGeo: GSD-aware encoder, bandpass decoder, pretraining, evaluation.

Importing the package registers its models and weights in TorchGeo and timm
(:func:`register`, idempotent). Only :mod:`torchgeo_scalemae.registry` (and what it
needs) is imported here: subpackages such as ``torchgeo_scalemae.tasks`` load on first
use, which keeps this import cheap and free of import cycles with ``torchgeo.tasks``.

.. versionadded:: 0.1
"""

from typing import TYPE_CHECKING, Any

from .registry import RegistryError, is_registered, register

if TYPE_CHECKING:
    from ._register_callback import Register

__version__ = '0.1.0.dev0'

__all__ = ('Register', 'RegistryError', '__version__', 'is_registered', 'register')


def __getattr__(name: str) -> Any:
    # Register subclasses a Lightning Callback: import lightning only when asked for.
    if name == 'Register':
        from ._register_callback import Register

        return Register
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


register()
