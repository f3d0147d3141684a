# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The no-op :class:`Register` callback (exported lazily as ``torchgeo_scalemae.Register``).

.. versionadded:: 0.1
"""

from lightning.pytorch import Callback

from .registry import register

__all__ = ('Register',)


class Register(Callback):
    """A no-op Lightning callback whose only effect is importing torchgeo-scalemae.

    For ``torchgeo fit --config`` files that use only TorchGeo's own tasks with Scale-MAE
    model or weight names (for example ``Classification`` with
    ``model: scalemae_vit_large_patch16``): listing it under ``trainer.callbacks`` makes
    jsonargparse import this package, which registers the names, before the model is
    built. Not needed when the start-up hook is active or when the config already names
    a ``torchgeo_scalemae`` class.

    .. code-block:: yaml

        trainer:
          callbacks:
            - class_path: torchgeo_scalemae.Register

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        """Register the names (idempotent); the callback then does nothing."""
        super().__init__()
        register()
