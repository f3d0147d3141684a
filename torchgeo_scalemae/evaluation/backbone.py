# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Build an encoder for evaluation, load its weights and extract image features.

Weights may be given as

* a weight enum member or its ``'Class.MEMBER'`` string (TorchGeo's ``get_weight``);
* the path of an encoder-only state dict (``.pth``/``.pt``, or ``.safetensors``);
* the path of a **Lightning checkpoint** (``.ckpt``) of any task that holds the encoder
  under some prefix: :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`
  (``model.encoder.``), TorchGeo's ``MAE`` (``backbone.vit.``), ``Classification``
  (``model.``), or this package's evaluation tasks;
* the path of a reference Scale-MAE checkpoint (a dict with a ``model`` entry whose
  encoder keys are timm names).

Files are read by :func:`~torchgeo_scalemae.models.load_weights`; the encoder's keys
are found with :func:`~torchgeo_scalemae.models.extract_encoder_state_dict` (the prefix
under which most of the encoder's parameter names occur), so no per-task table is
needed.
"""

from collections.abc import Mapping
from typing import Any, Literal

import timm
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum

from .. import models as _models
from ..models import ScaleMAEEncoder, extract_encoder_state_dict, load_weights

__all__ = (
    'Pool',
    'build_encoder',
    'encoder_features',
    'extract_encoder_state_dict',
    'load_encoder_weights',
)

#: Feature pooling: class token after the final norm, or the mean of the patch tokens.
Pool = Literal['token', 'mean']


def build_encoder(
    model: str, in_channels: int = 3, model_kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """Create a feature encoder (no classifier head) by name.

    A name of a builder in :mod:`torchgeo_scalemae.models` (``scalemae_vit_*``) calls
    the builder directly; ``'scalemae_vit'`` builds a
    :class:`~torchgeo_scalemae.models.ScaleMAEEncoder` of any size from *model_kwargs*
    (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``; MLP ratio 4 and qkv
    bias by default); any other name goes to :func:`timm.create_model` (timm Vision
    Transformers are created with ``dynamic_img_size=True`` so that every evaluation
    scale works; their learned or fixed position table is resampled).

    Args:
        model: Encoder name, e.g. ``'scalemae_vit_base_patch16'``.
        in_channels: Number of input channels.
        model_kwargs: Extra constructor arguments (e.g. ``{'img_size': 144}``).

    Returns:
        The encoder, with ``num_classes=0``.

    Raises:
        TypeError: If *model* is not a string, *in_channels* not an int or
            *model_kwargs* not a mapping.
        ValueError: If *model* is empty or unknown, or *in_channels* is below 1.
    """
    if not isinstance(model, str) or not model:
        raise (TypeError if not isinstance(model, str) else ValueError)(
            f'model must be an encoder name (str), got {model!r}'
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int):
        raise TypeError(f'in_channels must be an int, got {in_channels!r}')
    if in_channels < 1:
        raise ValueError(f'in_channels must be >= 1, got {in_channels}')
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise TypeError(f'model_kwargs must be a mapping or None, got {model_kwargs!r}')
    kwargs: dict[str, Any] = {'num_classes': 0, 'in_chans': in_channels}
    kwargs.update(model_kwargs or {})
    if model == 'scalemae_vit':
        kwargs.setdefault('mlp_ratio', 4.0)
        kwargs.setdefault('qkv_bias', True)
        return ScaleMAEEncoder(**kwargs)
    builder = (
        getattr(_models, model, None) if model.startswith('scalemae_vit') else None
    )
    if callable(builder):
        encoder: nn.Module = builder(**kwargs)
        return encoder
    if ':' not in model and not timm.is_model(model):  # 'hf-hub:...' goes to timm
        raise ValueError(
            f'unknown encoder model {model!r}: not a torchgeo_scalemae builder, '
            "'scalemae_vit', nor a timm model (timm.list_models() lists those)"
        )
    try:
        return timm.create_model(model, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(model, **kwargs)


def load_encoder_weights(
    encoder: nn.Module, weights: WeightsEnum | str | bool | None
) -> nn.Module:
    """Load weights into an encoder (see the module docs for the accepted forms).

    ``None``/``False`` leave the random initialisation; ``True`` is only accepted for
    timm models created with pretrained weights already (it is a no-op here).
    Classifier-head and ``pos_embed`` keys are optional; every other encoder
    parameter must be present.

    Args:
        encoder: The encoder to fill.
        weights: Weight enum, ``'Class.MEMBER'`` string, file path, or None.

    Returns:
        The same encoder.

    Raises:
        TypeError: If *encoder* is not a torch module.
        ValueError: If the weights miss encoder parameters or have wrong shapes.
        FileNotFoundError: If *weights* looks like a path but does not exist.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(
            f'encoder must be a torch.nn.Module, got {type(encoder).__name__}: '
            f'{encoder!r:.80}'
        )
    if weights is None or isinstance(weights, bool):
        return encoder
    state_dict = extract_encoder_state_dict(load_weights(weights), encoder)
    if isinstance(encoder, ScaleMAEEncoder):
        state_dict.pop('pos_embed', None)
    else:
        pos = getattr(encoder, 'pos_embed', None)
        if (
            isinstance(pos, Tensor)
            and 'pos_embed' in state_dict
            and state_dict['pos_embed'].shape != pos.shape
        ):
            from timm.layers.pos_embed import resample_abs_pos_embed

            grid = getattr(getattr(encoder, 'patch_embed', None), 'grid_size', None)
            if grid is None:
                raise ValueError('cannot resample pos_embed: encoder has no grid_size')
            state_dict['pos_embed'] = resample_abs_pos_embed(
                state_dict['pos_embed'],
                list(grid),
                num_prefix_tokens=getattr(encoder, 'num_prefix_tokens', 1),
            )
    try:
        missing, _ = encoder.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        raise ValueError(f'weights do not fit the encoder: {error}') from error
    missing = [k for k in missing if not k.startswith(('head.', 'fc_norm.'))]
    if missing:
        raise ValueError(
            f'weights miss {len(missing)} encoder parameters, e.g. {missing[:5]}'
        )
    return encoder


def encoder_features(
    encoder: nn.Module, images: Tensor, res: Tensor | None = None, pool: Pool = 'token'
) -> Tensor:
    """Image features of an encoder: class token after the final norm, or mean pool.

    :class:`~torchgeo_scalemae.models.ScaleMAEEncoder` receives ``res``; other timm
    Vision Transformers ignore it (their own position table is used). A model whose
    ``forward_features`` returns a feature map (B, C, h, w) is average-pooled.

    Args:
        encoder: The encoder.
        images: (B, C, H, W) images.
        res: Per-sample scale ``gsd / reference_gsd`` (B,), or None.
        pool: ``'token'`` (class token, the Scale-MAE kNN feature) or
            ``'mean'`` (mean of the patch tokens).

    Returns:
        float32 features (B, D).

    Raises:
        TypeError: If *encoder* is not a torch module or *images* not a tensor.
        ValueError: For an unknown *pool*, or images that are not a non-empty
            floating-point (B, C, H, W) tensor.
    """
    if pool not in ('token', 'mean'):
        raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
    if not isinstance(encoder, nn.Module):
        raise TypeError(
            f'encoder must be a torch.nn.Module, got {type(encoder).__name__}: '
            f'{encoder!r:.80}'
        )
    if not isinstance(images, Tensor):
        raise TypeError(f'images must be a (B, C, H, W) tensor, got {images!r:.80}')
    if images.ndim != 4 or images.numel() == 0 or not images.is_floating_point():
        raise ValueError(
            'images must be a non-empty floating-point (B, C, H, W) tensor, got '
            f'{images.dtype} of shape {tuple(images.shape)}'
        )
    if isinstance(encoder, ScaleMAEEncoder):
        tokens = encoder.forward_features(images, res=res)
    else:
        tokens = encoder.forward_features(images)  # type: ignore[operator]
    if tokens.ndim == 4:
        return tokens.float().mean(dim=(2, 3))
    if tokens.ndim == 2:
        return tokens.float()
    prefix = int(getattr(encoder, 'num_prefix_tokens', 1))
    if pool == 'token':
        return tokens[:, 0].float()
    return tokens[:, prefix:].float().mean(dim=1)
