# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE models: GSD positional encoding, encoder, decoder, loss and builders.

.. versionadded:: 0.1
"""

from typing import TYPE_CHECKING, Any

from .bands import high_band_target, low_band_target, recombine_bands
from .builders import (
    create_scalemae,
    list_scalemae_models,
    scalemae,
    scalemae_pretrain_vit_base_patch16,
    scalemae_pretrain_vit_huge_patch14,
    scalemae_pretrain_vit_large_patch16,
    scalemae_pretrain_vit_tiny_patch16,
    scalemae_vit_base_patch16,
    scalemae_vit_huge_patch14,
    scalemae_vit_large_patch16,
    scalemae_vit_tiny_patch16,
)
from .checkpoint import (
    extract_encoder_state_dict,
    infer_reference_config,
    load_encoder_state_dict,
    load_reference_checkpoint,
    load_weights,
    model_state_dict,
    read_checkpoint,
    reference_args_to_config,
    resolve_weights,
    scalemae_from_reference_checkpoint,
)
from .decoder import (
    BandpassDecoder,
    ChannelLayerNorm,
    FeatureMappingBlock,
    LaplacianHead,
    head_upsampling_factors,
    set_fast_path,
)
from .encoder import EncoderOutput, ScaleMAEEncoder
from .export import encoder_from_checkpoint, export_encoder
from .loss import BAND_PRESETS, BandLosses, BandpassLoss, patch_statistics
from .pos_embed import GSDPositionalEmbedding, check_res
from .reference import (
    UNUSED_REFERENCE_KEYS,
    convert_reference_state_dict,
    reference_key_to_ours,
)
from .scale_mae import REFERENCE_CONFIG_KEYS, ScaleMAE, ScaleMAEOutput
from .weights import ScaleMAEEncoderLarge16_Weights, ScaleMAEPretrainLarge16_Weights

if TYPE_CHECKING:
    from .segmentation import (
        PYRAMID_SCALES,
        ScaleMAEUPerNet,
        ViTPyramidNeck,
        default_pyramid_indices,
    )

#: Names served by :mod:`.segmentation`, imported on first use: it imports
#: segmentation_models_pytorch, which the encoders (and ``import timm``, through the
#: start-up hook) do not need.
_SEGMENTATION_NAMES = frozenset(
    {'PYRAMID_SCALES', 'ScaleMAEUPerNet', 'ViTPyramidNeck', 'default_pyramid_indices'}
)


def __getattr__(name: str) -> Any:
    if name in _SEGMENTATION_NAMES:
        from . import segmentation

        return getattr(segmentation, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = (
    'BAND_PRESETS',
    'PYRAMID_SCALES',
    'REFERENCE_CONFIG_KEYS',
    'UNUSED_REFERENCE_KEYS',
    'BandLosses',
    'BandpassDecoder',
    'BandpassLoss',
    'ChannelLayerNorm',
    'EncoderOutput',
    'FeatureMappingBlock',
    'GSDPositionalEmbedding',
    'LaplacianHead',
    'ScaleMAE',
    'ScaleMAEEncoder',
    'ScaleMAEEncoderLarge16_Weights',
    'ScaleMAEOutput',
    'ScaleMAEPretrainLarge16_Weights',
    'ScaleMAEUPerNet',
    'ViTPyramidNeck',
    'check_res',
    'convert_reference_state_dict',
    'create_scalemae',
    'default_pyramid_indices',
    'encoder_from_checkpoint',
    'export_encoder',
    'extract_encoder_state_dict',
    'head_upsampling_factors',
    'high_band_target',
    'infer_reference_config',
    'list_scalemae_models',
    'load_encoder_state_dict',
    'load_reference_checkpoint',
    'load_weights',
    'low_band_target',
    'model_state_dict',
    'patch_statistics',
    'read_checkpoint',
    'recombine_bands',
    'reference_args_to_config',
    'reference_key_to_ours',
    'resolve_weights',
    'scalemae',
    'scalemae_from_reference_checkpoint',
    'scalemae_pretrain_vit_base_patch16',
    'scalemae_pretrain_vit_huge_patch14',
    'scalemae_pretrain_vit_large_patch16',
    'scalemae_pretrain_vit_tiny_patch16',
    'scalemae_vit_base_patch16',
    'scalemae_vit_huge_patch14',
    'scalemae_vit_large_patch16',
    'scalemae_vit_tiny_patch16',
    'set_fast_path',
)
