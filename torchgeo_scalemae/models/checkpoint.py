# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Reading every weight format, safely, in one place.

A weight source is one of

- a weight enum member (:mod:`~torchgeo_scalemae.models.weights`, or any TorchGeo
  ``WeightsEnum``) or its ``'Class.MEMBER'`` name;
- a ``.safetensors`` file (this package's exported encoders);
- a torch file, read with ``torch.load(weights_only=True)`` and only
  :class:`argparse.Namespace` allow-listed (for the reference checkpoints' ``args``):
  a Lightning ``.ckpt`` of any task, a reference Scale-MAE checkpoint
  (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` as written by the reference
  ``mae/util/misc.py`` ``save_model``), or a bare state dict.

:func:`read_checkpoint` reads a file, :func:`model_state_dict` finds the model weights
inside what was read (in this package's key names), :func:`load_weights` does both for
any source, and :func:`extract_encoder_state_dict` /
:func:`load_encoder_state_dict` take an encoder's part. Everything else in the
package (builders, tasks, evaluation, timm's ``pretrained_filter_fn``) goes through
these functions.
"""

import argparse
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum

from .reference import convert_reference_state_dict
from .scale_mae import REFERENCE_CONFIG_KEYS, ScaleMAE

__all__ = (
    'extract_encoder_state_dict',
    'infer_reference_config',
    'load_encoder_state_dict',
    'load_reference_checkpoint',
    'load_weights',
    'model_state_dict',
    'read_checkpoint',
    'reference_args_to_config',
    'resolve_weights',
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


def _check_mapping(value: object, name: str) -> None:
    """Raise a TypeError naming ``value`` unless it is a mapping (a state dict)."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f'{name} must be a mapping (a state dict or checkpoint dict), got '
            f'{type(value).__name__}: {value!r:.80}'
        )


def _check_module(value: object, name: str) -> None:
    """Raise a TypeError naming ``value`` unless it is a torch module."""
    if not isinstance(value, nn.Module):
        raise TypeError(
            f'{name} must be a torch.nn.Module, got {type(value).__name__}: '
            f'{value!r:.80}'
        )


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a weight file without unpickling arbitrary objects.

    ``.safetensors`` files are read with :mod:`safetensors`; anything else with
    ``torch.load(weights_only=True)``, with only :class:`argparse.Namespace`
    allow-listed.

    Args:
        path: the file.

    Returns:
        The file's dict (a state dict, a Lightning checkpoint, a reference
        checkpoint...), on the CPU.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is empty, truncated or not a checkpoint, or does not
            hold a dict.
        RuntimeError: if the file needs globals other than ``argparse.Namespace``
            (the message says how to load a trusted file).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f'path must be a str or os.PathLike, got {type(path).__name__}: {path!r}'
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f'weights file not found: {str(path)!r}')
    if file.stat().st_size == 0:
        raise ValueError(f'{str(path)!r} is not a checkpoint: the file is empty')
    if file.suffix == '.safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(
                f'{str(path)!r} is not a readable safetensors file: {error}'
            ) from error
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(file, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        if 'Unsupported global' not in str(error):
            raise ValueError(
                f'{str(path)!r} is not a checkpoint (not a torch or safetensors '
                f'file, or truncated): {error}'
            ) from error
        raise RuntimeError(
            f'{str(path)!r} cannot be unpickled weights-only ({error}). If you trust '
            'the file, load it with torch.load(path, weights_only=False) and pass '
            'the dict on instead of the path.'
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f'{str(path)!r} is not a checkpoint (not a torch or safetensors file, '
            f'or truncated): {error}'
        ) from error
    if not isinstance(obj, Mapping):
        raise ValueError(  # noqa: TRY004  (a bad file's content, not a bad argument)
            f'{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict'
        )
    return dict(obj)


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def model_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model weights inside a checkpoint, in this package's key names.

    - Lightning checkpoint (a ``state_dict`` entry): the task's model under
      ``model.`` (``ScaleMAEPretraining`` gives :class:`ScaleMAE` keys), else the whole
      state dict;
    - reference checkpoint (a ``model`` entry): converted with
      :func:`~.reference.convert_reference_state_dict` when it holds the decoder,
      else (an encoder in timm names) as it is;
    - otherwise the dict itself (a state dict).

    Args:
        checkpoint: what :func:`read_checkpoint` returned.

    Returns:
        A state dict of tensors.

    Raises:
        TypeError: if *checkpoint* is not a mapping.
        ValueError: if it holds no tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f'checkpoint must be a mapping, got {type(checkpoint).__name__}'
        )
    state: Mapping[str, Any]
    if isinstance(checkpoint.get('state_dict'), Mapping):
        state = checkpoint['state_dict']
        state = _strip_prefix(state, 'model.') or dict(state)
    elif isinstance(checkpoint.get('model'), Mapping):
        state = checkpoint['model']
        if 'mask_token' in state or any(str(k).startswith('decoder') for k in state):
            # a full reference checkpoint; an encoder-only one is in timm names
            state = convert_reference_state_dict(state)
    else:
        state = checkpoint
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(
            f'the checkpoint holds no weights (keys: {sorted(map(str, state))[:8]})'
        )
    return tensors


def resolve_weights(name: str) -> WeightsEnum:
    """Resolve a ``'Class.MEMBER'`` name to a weight enum member.

    This package's enums are looked up first (no TorchGeo import, and names resolve
    before registration too), then TorchGeo's :func:`~torchgeo.models.get_weight`
    for TorchGeo's own weights.

    Args:
        name: for example ``'ScaleMAEEncoderLarge16_Weights.FMOW_RGB'``.

    Returns:
        The member.

    Raises:
        TypeError: if *name* is not a string.
        ValueError: naming *name* if it is no known member.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"weights name must be a 'Class.MEMBER' string, got "
            f'{type(name).__name__}: {name!r}'
        )
    from . import weights as weights_module

    cls_name, _, member_name = name.partition('.')
    enum_cls = getattr(weights_module, cls_name, None)
    if member_name and isinstance(enum_cls, type) and issubclass(enum_cls, WeightsEnum):
        found = getattr(enum_cls, member_name, None)
        if isinstance(found, WeightsEnum):
            return found
    # Not one of this package's enums: TorchGeo's own weights, looked up (and
    # TorchGeo imported) only then.
    from torchgeo.models import get_weight

    try:
        member: WeightsEnum = get_weight(name)
        return member
    except (ValueError, KeyError, AttributeError):
        pass
    raise ValueError(
        f'weights={name!r} is neither an existing file nor a known weight enum '
        "member ('EnumClass.MEMBER', e.g. 'ScaleMAEPretrainLarge16_Weights."
        "FMOW_RGB_800EP')"
    )


def load_weights(source: WeightsEnum | str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the weights of any source (see the module docs) as a state dict.

    Args:
        source: a weight enum member, its ``'Class.MEMBER'`` name, or a file path.

    Returns:
        The model weights in this package's key names (:func:`model_state_dict`).

    Raises:
        TypeError: for a source of another type.
        FileNotFoundError: for a path-like source (a path separator or a weight
            file suffix) that does not exist.
        ValueError: for an unreadable file or an unknown enum name.
    """
    if isinstance(source, WeightsEnum):
        return model_state_dict(source.get_state_dict(progress=True))
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            'weights must be a weight enum member, its name or a file path, got '
            f'{type(source).__name__}: {source!r}'
        )
    path = Path(source).expanduser()
    if path.is_file():
        return model_state_dict(read_checkpoint(path))
    text = os.fspath(source)
    if os.sep in text or path.suffix in ('.ckpt', '.pth', '.pt', '.safetensors'):
        raise FileNotFoundError(f'weights file not found: {text!r}')
    return model_state_dict(resolve_weights(text).get_state_dict(progress=True))


_PATCH_KEY = 'patch_embed.proj.weight'
_HEAD_KEYS = frozenset({'head.weight', 'head.bias'})


def extract_encoder_state_dict(
    checkpoint: Mapping[str, Any], encoder: nn.Module
) -> dict[str, Tensor]:
    """Find an encoder's weights inside a checkpoint or state dict.

    The encoder's keys are found by looking for the prefix under which the largest
    number of the encoder's own parameter names occur (among prefixes that hold a
    patch embedding): ``model.encoder.`` of ``ScaleMAEPretraining``, ``encoder.`` of
    :class:`ScaleMAE`, ``backbone.vit.`` of TorchGeo's ``MAE``, ``model.`` of its
    ``Classification``, or none.

    Args:
        checkpoint: a state dict, a Lightning checkpoint (``state_dict`` entry) or a
            reference checkpoint (``model`` entry).
        encoder: the encoder whose parameter names are looked for.

    Returns:
        The encoder's state dict (only keys the encoder has, plus ``pos_embed``).

    Raises:
        TypeError: if *checkpoint* is not a mapping or *encoder* not a module.
        ValueError: if no prefix in the checkpoint holds a patch embedding.
    """
    _check_mapping(checkpoint, 'checkpoint')
    _check_module(encoder, 'encoder')
    state: Mapping[str, Any] = checkpoint
    for key in ('state_dict', 'model'):
        inner = state.get(key)
        if isinstance(inner, Mapping) and any(
            isinstance(v, Tensor) for v in inner.values()
        ):
            state = inner
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    own = set(encoder.state_dict()) | {'pos_embed'}
    prefixes = [k[: -len(_PATCH_KEY)] for k in tensors if k.endswith(_PATCH_KEY)]
    if not prefixes:
        raise ValueError(
            f"no encoder weights found: no key ends with '{_PATCH_KEY}' among "
            f'{len(tensors)} tensors (first keys: {sorted(tensors)[:5]})'
        )

    def count(prefix: str) -> int:
        return sum(
            1 for k in tensors if k.startswith(prefix) and k[len(prefix) :] in own
        )

    best = max(sorted(prefixes, key=len), key=count)
    return {
        k[len(best) :]: v
        for k, v in tensors.items()
        if k.startswith(best) and k[len(best) :] in own
    }


def encoder_keys_for(
    model: nn.Module, state_dict: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Drop what an encoder does not load: ``pos_embed`` and a head that does not fit.

    Args:
        model: the encoder.
        state_dict: encoder state dict in timm's names.

    Returns:
        The state dict without the fixed ``pos_embed`` table, and without ``head.*``
        when the model has no head or one of another size.

    Raises:
        TypeError: if *model* is not a module or *state_dict* not a mapping.
    """
    _check_module(model, 'model')
    _check_mapping(state_dict, 'state_dict')
    own = model.state_dict()
    return {
        key: value
        for key, value in state_dict.items()
        if key != 'pos_embed'
        and not (
            key in _HEAD_KEYS
            and (key not in own or tuple(own[key].shape) != tuple(value.shape))
        )
    }


def load_encoder_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load encoder weights strictly: every key must match, except the classifier.

    The fixed ``pos_embed`` table is dropped. ``head.*`` in the file is ignored when
    the model has no head (``num_classes=0``) or a head of another size; a model head
    missing from the file stays randomly initialised. Any other missing or
    unexpected key raises.

    Args:
        model: the encoder to load into.
        state_dict: encoder state dict in timm's names.

    Raises:
        TypeError: if *model* is not a module or *state_dict* not a mapping.
        RuntimeError: naming the missing and unexpected keys.
    """
    _check_module(model, 'model')
    _check_mapping(state_dict, 'state_dict')
    missing, unexpected = model.load_state_dict(
        encoder_keys_for(model, state_dict), strict=False
    )
    missing = [key for key in missing if key not in _HEAD_KEYS]
    if missing or unexpected:
        raise RuntimeError(
            f'the weights do not match {type(model).__name__}: '
            f'missing keys {missing}, unexpected keys {list(unexpected)}'
        )


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
        ValueError: if the file is not a checkpoint or does not hold a dict.
        KeyError: for keys outside the reference layout (see the converter).
        RuntimeError: if the file needs other globals (not trusted).
    """
    checkpoint = path if isinstance(path, Mapping) else read_checkpoint(path)
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
        TypeError: if *args* is neither a mapping nor an ``argparse.Namespace``.
        ValueError: for an unknown ``model`` name.
    """
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    _check_mapping(args, 'args')
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


def _block_count(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """Number of transformer blocks under *prefix*; every block must be whole."""
    blocks: dict[int, set[str]] = {}
    for key in state_dict:
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition('.')
            blocks.setdefault(int(index), set()).add(rest)
    if not blocks:
        return 0
    count = 1 + max(blocks)
    absent = [i for i in range(count) if i not in blocks]
    if absent:
        raise ValueError(f'the state dict lacks whole blocks {prefix}{absent}')
    first = blocks[0]
    partial = [i for i, names in blocks.items() if names != first]
    if partial:
        raise ValueError(
            f'blocks {prefix}{sorted(partial)} do not hold the same tensors as '
            f'{prefix}0'
        )
    return count


#: Encoder depth of the released architectures, by width.
_DEPTH_BY_WIDTH = {768: 12, 1024: 24, 1280: 32}


def infer_reference_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Infer the architecture from the shapes of a reference state dict.

    Attention head counts cannot be read from shapes: the encoder's follows the
    width (4 for 64, 12 for 768, 16 otherwise) and the decoder's is 16 (the reference
    always uses 16; 4 below 64 channels).

    Args:
        state_dict: reference-keyed weights.

    Returns:
        Reference-config keyword arguments for the architecture.

    Raises:
        TypeError: if *state_dict* is not a mapping.
        ValueError: if it lacks the keys the architecture is read from.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f'state_dict must be a mapping, got {type(state_dict).__name__}'
        )
    required = ['patch_embed.proj.weight', 'mask_token', 'blocks.0.mlp.fc1.weight']
    independent = 'fcn_high.proj.weight' in state_dict
    head = 'fcn_high.' if independent else 'fcn.'
    required.append(head + 'proj.weight')
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(
            f'not a reference Scale-MAE state dict: missing {missing} (first keys: '
            f'{sorted(map(str, state_dict))[:5]})'
        )
    patch = state_dict['patch_embed.proj.weight']
    dim, in_chans, ph, _ = patch.shape
    ddim = state_dict['mask_token'].shape[-1]
    depth = _block_count(state_dict, 'blocks.')
    ddepth = _block_count(state_dict, 'decoder_blocks.')
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
            ``res``, ``fast_path``...).

    Returns:
        The model with the released weights.

    Raises:
        KeyError, ValueError, RuntimeError: for a checkpoint that does not match.
    """
    checkpoint = (
        path_or_checkpoint
        if isinstance(path_or_checkpoint, Mapping)
        else read_checkpoint(path_or_checkpoint)
    )
    state, args = _split(checkpoint)
    config = infer_reference_config(state)
    expected = _DEPTH_BY_WIDTH.get(config['embed_dim'])
    if (
        args is None
        and 'depth' not in overrides
        and expected is not None
        and config['depth'] != expected
    ):
        raise ValueError(
            f'the state dict has {config["depth"]} encoder blocks, but a '
            f'{config["embed_dim"]}-wide reference model has {expected}: blocks are '
            'missing; pass depth=... if the architecture really is shallower'
        )
    if args is not None:
        config.update(reference_args_to_config(args))
    config = {k: v for k, v in config.items() if k in REFERENCE_CONFIG_KEYS}
    if args is not None and isinstance(args.get('mask_ratio'), float):
        config['mask_ratio'] = args['mask_ratio']
    model = ScaleMAE(**{**REFERENCE_CONFIG_KEYS, **config, **overrides})
    model.load_state_dict(convert_reference_state_dict(state), strict=True)
    return model
