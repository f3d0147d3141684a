# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Loading released Scale-MAE training checkpoints safely (spec section 8).

.. versionadded:: 0.1
"""

import argparse
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .reference import convert_reference_state_dict
from .scale_mae import REFERENCE_CONFIG_KEYS, ScaleMAE

__all__ = (
    'infer_reference_config',
    'load_reference_checkpoint',
    'reference_args_to_config',
    'scalemae_from_reference_checkpoint',
)

# reference --model names -> (patch, embed_dim, depth, num_heads)
_REFERENCE_MODELS: dict[str, tuple[int, int, int, int]] = {
    'mae_vit_base_patch16': (16, 768, 12, 12),
    'mae_vit_large_patch16': (16, 1024, 24, 16),
    'mae_vit_huge_patch14': (14, 1280, 32, 16),
}
# encoder width -> heads, for checkpoints without args
_HEADS_BY_WIDTH = {64: 4, 768: 12, 1024: 16, 1280: 16}


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """torch.load weights-only, with argparse.Namespace allow-listed."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(obj, Mapping):
        raise TypeError(
            f'{os.fspath(path)!r} holds a {type(obj).__name__}, not a checkpoint dict'
        )
    return dict(obj)


def _split(
    checkpoint: Mapping[str, Any],
) -> tuple[Mapping[str, Any], dict[str, Any] | None]:
    """Return (reference state dict, args as a dict or None)."""
    if 'model' in checkpoint and isinstance(checkpoint['model'], Mapping):
        state = checkpoint['model']
        args = checkpoint.get('args')
    else:
        state, args = checkpoint, None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    elif args is not None and not isinstance(args, Mapping):
        raise ValueError(
            f"checkpoint 'args' must be an argparse.Namespace or a dict, "
            f'got {type(args).__name__}'
        )
    return state, (dict(args) if args is not None else None)


def load_reference_checkpoint(
    path: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Load a released Scale-MAE checkpoint without unpickling arbitrary objects.

    The file (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` as written by the
    reference ``save_model``, or a bare state dict) is read with
    ``torch.load(weights_only=True)``; only :class:`argparse.Namespace` is
    allow-listed, for ``args``. The model weights are converted with
    :func:`~.reference.convert_reference_state_dict`.

    Args:
        path: a checkpoint file, or an already loaded checkpoint dict.

    Returns:
        ``(state_dict, args)``: the state dict with :class:`ScaleMAE` keys, and the
        training arguments as a dict (None when the checkpoint has none).

    Raises:
        TypeError: if the file does not hold a dict.
        KeyError: for keys outside the reference layout (see the converter).
        _pickle.UnpicklingError: if the file needs other globals (not trusted).

    .. versionadded:: 0.1
    """
    checkpoint = path if isinstance(path, Mapping) else _read(path)
    state, args = _split(checkpoint)
    return convert_reference_state_dict(state), args


def reference_args_to_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """Map reference training ``args`` to :meth:`ScaleMAE.from_reference_config` keys.

    Reads ``model`` (architecture name), ``input_size``, ``decoder_depth``,
    ``fcn_dim``, ``fcn_layers``, ``independent_fcn_head``, ``progressive``,
    ``band_config``, ``use_l1_loss`` and ``l1_loss_weight`` when present.

    Args:
        args: ``vars(checkpoint['args'])``.

    Returns:
        Reference-config keyword arguments.

    Raises:
        ValueError: for an unknown ``model`` name.

    .. versionadded:: 0.1
    """
    config: dict[str, Any] = {}
    model = args.get('model')
    if model is not None:
        if model not in _REFERENCE_MODELS:
            raise ValueError(
                f'unknown reference model {model!r}; known: {sorted(_REFERENCE_MODELS)}'
            )
        patch, dim, depth, heads = _REFERENCE_MODELS[model]
        config.update(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
    if isinstance(args.get('input_size'), int):
        config['img_size'] = args['input_size']
    for key in (
        'decoder_depth',
        'fcn_dim',
        'fcn_layers',
        'independent_fcn_head',
        'progressive',
        'use_l1_loss',
        'l1_loss_weight',
    ):
        if key in args and args[key] is not None:
            config[key] = args[key]
    if args.get('band_config') is not None:
        config['band_config'] = tuple(int(v) for v in args['band_config'])
    return config


def infer_reference_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Infer the architecture from the shapes of a reference state dict.

    Attention head counts cannot be read from shapes: the encoder's follows the
    width (4 for 64, 12 for 768, 16 otherwise) and the decoder's is 16 (the reference
    always uses 16; 4 below 64 channels).

    Args:
        state_dict: reference-keyed weights.

    Returns:
        Reference-config keyword arguments for the architecture.

    .. versionadded:: 0.1
    """
    patch = state_dict['patch_embed.proj.weight']
    dim, in_chans, ph, _ = patch.shape
    ddim = state_dict['mask_token'].shape[-1]
    depth = 1 + max(int(k.split('.')[1]) for k in state_dict if k.startswith('blocks.'))
    ddepth = 1 + max(
        (int(k.split('.')[1]) for k in state_dict if k.startswith('decoder_blocks.')),
        default=-1,
    )
    independent = 'fcn_high.proj.weight' in state_dict
    head = 'fcn_high.' if independent else 'fcn.'
    fcn_dim = state_dict[head + 'proj.weight'].shape[0]
    fcn_layers = len(
        {k.split('.')[2] for k in state_dict if k.startswith(head + 'conv_blocks.')}
    )
    progressive = 'fpn.fpn1.3.weight' not in state_dict
    mlp = state_dict['blocks.0.mlp.fc1.weight'].shape[0] / dim
    return {
        'patch_size': int(ph),
        'in_chans': int(in_chans),
        'embed_dim': int(dim),
        'depth': depth,
        'num_heads': _HEADS_BY_WIDTH.get(int(dim), 16),
        'decoder_embed_dim': int(ddim),
        'decoder_depth': ddepth,
        'decoder_num_heads': 16 if ddim >= 64 else 4,
        'mlp_ratio': float(mlp),
        'fcn_dim': int(fcn_dim),
        'fcn_layers': fcn_layers,
        'independent_fcn_head': independent,
        'progressive': progressive,
    }


def scalemae_from_reference_checkpoint(
    path_or_checkpoint: str | os.PathLike[str] | Mapping[str, Any], **overrides: Any
) -> ScaleMAE:
    """Build a :class:`ScaleMAE` from a released checkpoint and load its weights.

    The architecture is inferred from the tensor shapes
    (:func:`infer_reference_config`); the checkpoint's ``args`` (when present) then
    set the model name (head counts), input size, mask ratio and loss settings
    (:func:`reference_args_to_config`); keyword ``overrides`` win over both. The
    weights load with ``strict=True``.

    Args:
        path_or_checkpoint: a checkpoint file or a loaded checkpoint dict
            (``{'model': ..., 'args': ...}`` or a bare reference state dict).
        **overrides: :class:`ScaleMAE` keywords (reference names, ``mask_ratio``,
            ``res``, ``fast_ops``...).

    Returns:
        The model with the released weights.

    Raises:
        KeyError, ValueError, RuntimeError: for a checkpoint that does not match.

    .. versionadded:: 0.1
    """
    checkpoint = (
        path_or_checkpoint
        if isinstance(path_or_checkpoint, Mapping)
        else _read(path_or_checkpoint)
    )
    state, args = _split(checkpoint)
    config = infer_reference_config(state)
    if args is not None:
        config.update(reference_args_to_config(args))
    config = {k: v for k, v in config.items() if k in REFERENCE_CONFIG_KEYS}
    if args is not None and isinstance(args.get('mask_ratio'), float):
        config['mask_ratio'] = args['mask_ratio']
    model = ScaleMAE(**{**REFERENCE_CONFIG_KEYS, **config, **overrides})
    model.load_state_dict(convert_reference_state_dict(state), strict=True)
    return model
