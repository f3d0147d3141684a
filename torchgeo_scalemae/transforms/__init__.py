# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GSD-aware, batched, device-agnostic transforms on batch dicts.

All transforms take ``{'image': (B, C, H, W), 'gsd': (B,), ...}`` and return a new
dict whose ``gsd`` (metres per pixel) matches the new pixel grid. They are
:class:`torch.nn.Module` objects, so they can be used as a TorchGeo datamodule's
``train_aug``/``val_aug`` and chained with kornia dict pipelines in a
:class:`torch.nn.Sequential`::

    import kornia.augmentation as K
    from torch import nn

    aug = nn.Sequential(
        K.AugmentationSequential(
            K.RandomHorizontalFlip(), data_keys=None, keepdim=True
        ),  # passes 'gsd' through
        GSDRandomResizedCrop(224),
    )

The band targets that :class:`ScaleMAEPair`'s ``target`` feeds are in
:mod:`torchgeo_scalemae.models.bands`.

.. versionadded:: 0.1
"""

from .geometric import GSDCenterCrop, GSDRandomResizedCrop, GSDResize
from .pair import ScaleMAEPair

__all__ = ('GSDCenterCrop', 'GSDRandomResizedCrop', 'GSDResize', 'ScaleMAEPair')
