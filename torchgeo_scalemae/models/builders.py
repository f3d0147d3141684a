# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""One builder per model name, TorchGeo style: ``builder(weights=None, **kwargs)``.

Encoders (:class:`~.encoder.ScaleMAEEncoder`) are ``scalemae_vit_*``; full models
(:class:`~.scale_mae.ScaleMAE`: encoder, bandpass decoder and loss) are
``scalemae_pretrain_vit_*`` and ``scalemae`` (the paper's ViT-L/16). TorchGeo's
:func:`~torchgeo.models.get_model` and timm's :func:`~timm.create_model` call these
same functions (:mod:`torchgeo_scalemae.registry`).

``weights`` is None (random initialisation), a weight enum member or its name; only
the ViT-L/16 builders have weights. With weights, ``res`` (the encoder's default
scale when a forward call passes none) defaults to ``weights.meta['default_res']``
(1.0; see :mod:`~.weights` for what ``res`` means for the released weights).
"""

from collections.abc import Callable
from typing import Any, cast

from torchvision.models._api import WeightsEnum

from .checkpoint import load_encoder_state_dict, scalemae_from_reference_checkpoint
from .encoder import ScaleMAEEncoder
from .scale_mae import ScaleMAE
from .weights import ScaleMAEEncoderLarge16_Weights, ScaleMAEPretrainLarge16_Weights

__all__ = (
    'ENCODER_CONFIGS',
    'PRETRAIN_CONFIGS',
    'create_scalemae',
    'list_scalemae_models',
    'scalemae',
    'scalemae_pretrain_vit_base_patch16',
    'scalemae_pretrain_vit_huge_patch14',
    'scalemae_pretrain_vit_large_patch16',
    'scalemae_pretrain_vit_tiny_patch16',
    'scalemae_vit_base_patch16',
    'scalemae_vit_huge_patch14',
    'scalemae_vit_large_patch16',
    'scalemae_vit_tiny_patch16',
)

#: Encoder architectures by name (MLP ratio 4 and qkv bias for all).
ENCODER_CONFIGS: dict[str, dict[str, int]] = {
    'scalemae_vit_tiny_patch16': {
        'patch_size': 16,
        'embed_dim': 64,
        'depth': 2,
        'num_heads': 4,
    },
    'scalemae_vit_base_patch16': {
        'patch_size': 16,
        'embed_dim': 768,
        'depth': 12,
        'num_heads': 12,
    },
    'scalemae_vit_large_patch16': {
        'patch_size': 16,
        'embed_dim': 1024,
        'depth': 24,
        'num_heads': 16,
    },
    'scalemae_vit_huge_patch14': {
        'patch_size': 14,
        'embed_dim': 1280,
        'depth': 32,
        'num_heads': 16,
    },
}

#: Full-model architectures by name: the encoder's, plus the decoder where it is
#: not the recipe's (512-d, 3 blocks, 16 heads, heads 512 wide with 2 blocks).
PRETRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    'scalemae_pretrain_vit_tiny_patch16': {
        **ENCODER_CONFIGS['scalemae_vit_tiny_patch16'],
        'img_size': 64,
        'decoder_embed_dim': 32,
        'decoder_depth': 3,
        'decoder_num_heads': 4,
        'fcn_dim': 32,
        'fcn_layers': 2,
    },
    'scalemae_pretrain_vit_base_patch16': dict(
        ENCODER_CONFIGS['scalemae_vit_base_patch16']
    ),
    'scalemae_pretrain_vit_large_patch16': dict(
        ENCODER_CONFIGS['scalemae_vit_large_patch16']
    ),
    'scalemae_pretrain_vit_huge_patch14': dict(
        ENCODER_CONFIGS['scalemae_vit_huge_patch14']
    ),
}


def _member[E: WeightsEnum](name: str, enum: type[E] | None, weights: Any) -> E | None:
    """Resolve *weights* to a member of *enum*; raise ValueError naming it."""
    if weights is None:
        return None
    if enum is None:
        raise ValueError(
            f'no pretrained weights exist for {name}; got weights={weights!r} '
            '(only the ViT-L/16 builders have weights)'
        )
    try:
        member = enum.verify(weights)
    except (KeyError, TypeError, ValueError) as error:
        names = [str(m) for m in enum]
        raise ValueError(
            f'weights must be one of {names} (or a member name), got {weights!r}'
        ) from error
    return cast(E, member)


def _resolve(
    name: str, enum: type[WeightsEnum] | None, weights: Any, kwargs: dict[str, Any]
) -> WeightsEnum | None:
    """Resolve *weights* and adjust *kwargs* in place.

    ``res=None`` is dropped; with weights, ``res`` defaults to theirs and
    ``in_chans`` must be their channel count.
    """
    if kwargs.get('res') is None:
        kwargs.pop('res', None)
    member = _member(name, enum, weights)
    if member is None:
        return None
    expected = member.meta['in_chans']
    if kwargs.get('in_chans', expected) != expected:
        raise ValueError(
            f'{member} has {expected} input channels, got in_chans='
            f'{kwargs["in_chans"]!r}; build without weights, or use timm/TorchGeo '
            'tasks (Classification(..., weights=...)), which adapt the first layer'
        )
    kwargs['in_chans'] = expected
    kwargs.setdefault('res', float(member.meta['default_res']))
    return member


def _encoder(
    name: str,
    weights: Any,
    kwargs: dict[str, Any],
    enum: type[WeightsEnum] | None = None,
) -> ScaleMAEEncoder:
    member = _resolve(name, enum, weights, kwargs)
    config: dict[str, Any] = {
        **ENCODER_CONFIGS[name],
        'mlp_ratio': 4.0,
        'qkv_bias': True,
    }
    model = ScaleMAEEncoder(**{**config, **kwargs})
    if member is not None:
        state_dict = member.get_state_dict(
            progress=True, check_hash=True, weights_only=True
        )
        load_encoder_state_dict(model, state_dict)
    return model


def _pretrain(
    name: str,
    weights: Any,
    kwargs: dict[str, Any],
    enum: type[WeightsEnum] | None = None,
) -> ScaleMAE:
    member = _resolve(name, enum, weights, kwargs)
    if member is None:
        return ScaleMAE(**{**PRETRAIN_CONFIGS[name], **kwargs})
    # the architecture, decoder and loss settings come from the checkpoint
    checkpoint = cast(ScaleMAEPretrainLarge16_Weights, member).get_checkpoint(
        progress=True
    )
    return scalemae_from_reference_checkpoint(checkpoint, **kwargs)


def scalemae_vit_tiny_patch16(weights: None = None, **kwargs: Any) -> ScaleMAEEncoder:
    """Tiny test-sized encoder: 64-d, 2 blocks, 4 heads, patch 16 (fixture size).

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.encoder.ScaleMAEEncoder` arguments (``res``,
            ``in_chans``, ``num_classes``, ``img_size``, ``global_pool``...).

    Returns:
        The encoder.
    """
    return _encoder('scalemae_vit_tiny_patch16', weights, kwargs)


def scalemae_vit_base_patch16(weights: None = None, **kwargs: Any) -> ScaleMAEEncoder:
    """ViT-B/16 encoder: 768-d, 12 blocks, 12 heads.

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.encoder.ScaleMAEEncoder` arguments.

    Returns:
        The encoder.
    """
    return _encoder('scalemae_vit_base_patch16', weights, kwargs)


def scalemae_vit_large_patch16(
    weights: ScaleMAEEncoderLarge16_Weights | str | None = None, **kwargs: Any
) -> ScaleMAEEncoder:
    """ViT-L/16 encoder: 1024-d, 24 blocks, 16 heads (the released model).

    Args:
        weights: None, a :class:`~.weights.ScaleMAEEncoderLarge16_Weights` member or
            its name (``'FMOW_RGB'``); loaded strictly
            (:func:`~.checkpoint.load_encoder_state_dict`).
        **kwargs: :class:`~.encoder.ScaleMAEEncoder` arguments (``res`` defaults to
            ``weights.meta['default_res']`` with weights; ``in_chans`` must then
            be 3).

    Returns:
        The encoder.

    Raises:
        ValueError: for unknown weights, a bad ``res`` or ``in_chans`` != 3 with
            weights.
        RuntimeError: if the downloaded weights do not match the encoder.
    """
    return _encoder(
        'scalemae_vit_large_patch16', weights, kwargs, ScaleMAEEncoderLarge16_Weights
    )


def scalemae_vit_huge_patch14(weights: None = None, **kwargs: Any) -> ScaleMAEEncoder:
    """ViT-H/14 encoder: 1280-d, 32 blocks, 16 heads, patch 14.

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.encoder.ScaleMAEEncoder` arguments.

    Returns:
        The encoder.
    """
    return _encoder('scalemae_vit_huge_patch14', weights, kwargs)


def scalemae_pretrain_vit_tiny_patch16(weights: None = None, **kwargs: Any) -> ScaleMAE:
    """Test-sized Scale-MAE: encoder 64-d, 2 blocks, 4 heads; decoder 32-d, 3 blocks.

    The size of the reference parity fixtures (4 decoder heads, fcn 32 x 2).

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.scale_mae.ScaleMAE` arguments.

    Returns:
        The model.
    """
    return _pretrain('scalemae_pretrain_vit_tiny_patch16', weights, kwargs)


def scalemae_pretrain_vit_base_patch16(weights: None = None, **kwargs: Any) -> ScaleMAE:
    """Scale-MAE ViT-B/16 with the recipe decoder (512-d, 3 blocks, 16 heads, fcn 512 x 2).

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.scale_mae.ScaleMAE` arguments.

    Returns:
        The model.
    """
    return _pretrain('scalemae_pretrain_vit_base_patch16', weights, kwargs)


def scalemae_pretrain_vit_large_patch16(
    weights: ScaleMAEPretrainLarge16_Weights | str | None = None, **kwargs: Any
) -> ScaleMAE:
    """The paper's full Scale-MAE: ViT-L/16 with the recipe bandpass decoder.

    With ``ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP`` the released checkpoint
    is downloaded, unpickled weights-only and converted; the architecture is read
    from its tensor shapes and the decoder and loss follow its ``args`` where present
    (see the enum).

    Args:
        weights: None, a :class:`~.weights.ScaleMAEPretrainLarge16_Weights` member
            or its name.
        **kwargs: :class:`~.scale_mae.ScaleMAE` arguments; with weights, overrides
            of the checkpoint's settings (``mask_ratio``, ``loss_preset``,
            ``fast_path``, ``res``...).

    Returns:
        The model.

    Raises:
        ValueError: for unknown weights or a bad ``res``.
        RuntimeError: if the checkpoint cannot be read or does not match.
    """
    return _pretrain(
        'scalemae_pretrain_vit_large_patch16',
        weights,
        kwargs,
        ScaleMAEPretrainLarge16_Weights,
    )


def scalemae(
    weights: ScaleMAEPretrainLarge16_Weights | str | None = None, **kwargs: Any
) -> ScaleMAE:
    """The paper's full model, registered in TorchGeo as ``scalemae``.

    The same as :func:`scalemae_pretrain_vit_large_patch16`.

    Args:
        weights: None, a :class:`~.weights.ScaleMAEPretrainLarge16_Weights` member
            or its name.
        **kwargs: as :func:`scalemae_pretrain_vit_large_patch16`.

    Returns:
        The model.
    """
    return scalemae_pretrain_vit_large_patch16(weights, **kwargs)


def scalemae_pretrain_vit_huge_patch14(weights: None = None, **kwargs: Any) -> ScaleMAE:
    """Scale-MAE ViT-H/14 with the recipe decoder.

    The Laplacian heads upsample by 7 x 1 instead of 4 x 2 so that the predictions
    come out at the input size and twice the input size (see
    :func:`~.decoder.head_upsampling_factors`).

    Args:
        weights: must be None (no pretrained weights exist).
        **kwargs: :class:`~.scale_mae.ScaleMAE` arguments.

    Returns:
        The model.
    """
    return _pretrain('scalemae_pretrain_vit_huge_patch14', weights, kwargs)


#: Encoder builders by name.
ENCODERS: dict[str, Callable[..., ScaleMAEEncoder]] = {
    'scalemae_vit_tiny_patch16': scalemae_vit_tiny_patch16,
    'scalemae_vit_base_patch16': scalemae_vit_base_patch16,
    'scalemae_vit_large_patch16': scalemae_vit_large_patch16,
    'scalemae_vit_huge_patch14': scalemae_vit_huge_patch14,
}

#: Full-model builders by name.
PRETRAIN_MODELS: dict[str, Callable[..., ScaleMAE]] = {
    'scalemae': scalemae,
    'scalemae_pretrain_vit_tiny_patch16': scalemae_pretrain_vit_tiny_patch16,
    'scalemae_pretrain_vit_base_patch16': scalemae_pretrain_vit_base_patch16,
    'scalemae_pretrain_vit_large_patch16': scalemae_pretrain_vit_large_patch16,
    'scalemae_pretrain_vit_huge_patch14': scalemae_pretrain_vit_huge_patch14,
}


def list_scalemae_models() -> list[str]:
    """Names accepted by :func:`create_scalemae`.

    Returns:
        Sorted full-model builder names (``scalemae`` is ViT-L/16).
    """
    return sorted(PRETRAIN_MODELS)


def create_scalemae(name: str, weights: Any = None, **kwargs: Any) -> ScaleMAE:
    """Build a full Scale-MAE by builder name.

    Args:
        name: one of :func:`list_scalemae_models` (for example
            ``'scalemae_pretrain_vit_base_patch16'``).
        weights: as the builder's ``weights``.
        **kwargs: :class:`~.scale_mae.ScaleMAE` arguments.

    Returns:
        The model.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PRETRAIN_MODELS:
        raise ValueError(
            f'unknown Scale-MAE model {name!r}; choose one of {list_scalemae_models()}'
        )
    return PRETRAIN_MODELS[name](weights, **kwargs)
