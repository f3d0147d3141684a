# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE models: GSD positional encoding, encoder, decoder, loss and builders.

.. versionadded:: 0.1
"""

from .encoder import (
    EncoderOutput,
    ScaleMAEEncoder,
    scalemae_vit_base_patch16,
    scalemae_vit_huge_patch14,
    scalemae_vit_large_patch16,
    scalemae_vit_tiny_patch16,
)
from .pos_embed import GSDPositionalEmbedding, check_res

__all__ = (
    'EncoderOutput',
    'GSDPositionalEmbedding',
    'ScaleMAEEncoder',
    'check_res',
    'scalemae_vit_base_patch16',
    'scalemae_vit_huge_patch14',
    'scalemae_vit_large_patch16',
    'scalemae_vit_tiny_patch16',
)
