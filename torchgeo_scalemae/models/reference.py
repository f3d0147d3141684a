# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Key mapping between the released Scale-MAE state dict and :class:`ScaleMAE`.

.. versionadded:: 0.1
"""

from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = (
    'ENCODER_PREFIXES',
    'UNUSED_REFERENCE_KEYS',
    'convert_reference_state_dict',
    'reference_key_to_ours',
)

#: Tensors of the reference model that its forward pass never uses; dropped.
UNUSED_REFERENCE_KEYS: tuple[str, ...] = (
    'pos_embed',
    'decoder_pos_embed',
    'mask_token_decoder',
)

#: Top-level reference names that belong to the (timm) encoder.
ENCODER_PREFIXES: tuple[str, ...] = ('cls_token', 'patch_embed.', 'blocks.', 'norm.')

# reference prefix -> our prefix (decoder part); first match wins
_DECODER_PREFIXES: tuple[tuple[str, str], ...] = (
    ('mask_token', 'decoder.mask_token'),
    ('decoder_embed.', 'decoder.embed.'),
    ('decoder_blocks.', 'decoder.blocks.'),
    ('decoder_norm.', 'decoder.norm.'),
    ('fpn.fpn2.', 'decoder.up_low.'),
    ('fpn.fpn1.', 'decoder.up_high.'),
    ('fcn_high.', 'decoder.head_high.'),
    ('fcn_low.', 'decoder.head_low.'),
    ('fcn.', 'decoder.head.'),
)


def reference_key_to_ours(key: str) -> str | None:
    """Map one reference state-dict key to ours.

    Args:
        key: a key of the reference ``MaskedAutoencoderViT.state_dict()``.

    Returns:
        The corresponding :class:`~.scale_mae.ScaleMAE` key, or None for one of the
        :data:`UNUSED_REFERENCE_KEYS`.

    Raises:
        TypeError: for a key that is not a string.
        KeyError: for a key the reference layout does not have.
    """
    if not isinstance(key, str):
        raise TypeError(
            f'key must be a state-dict key (str), got {type(key).__name__}: {key!r}'
        )
    if key in UNUSED_REFERENCE_KEYS:
        return None
    if key == 'cls_token' or key.startswith(ENCODER_PREFIXES[1:]):
        return 'encoder.' + key
    for ref, ours in _DECODER_PREFIXES:
        if key == ref or (ref.endswith('.') and key.startswith(ref)):
            return ours + key[len(ref) :]
    raise KeyError(key)


def convert_reference_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Convert a released Scale-MAE state dict to :class:`~.scale_mae.ScaleMAE` keys.

    Encoder keys get the ``encoder.`` prefix (timm names are kept); decoder keys are
    renamed (``decoder_embed`` -> ``decoder.embed``, ``decoder_blocks`` ->
    ``decoder.blocks``, ``decoder_norm`` -> ``decoder.norm``, ``mask_token`` ->
    ``decoder.mask_token``, ``fpn.fpn2`` -> ``decoder.up_low``, ``fpn.fpn1`` ->
    ``decoder.up_high``, ``fcn_high``/``fcn_low``/``fcn`` ->
    ``decoder.head_high``/``head_low``/``head``; inner names unchanged). Exactly the
    three unused tensors ``pos_embed``, ``decoder_pos_embed`` and
    ``mask_token_decoder`` are dropped. A ``module.`` prefix (DDP) is stripped.
    Shapes are unchanged, so ``load_state_dict(..., strict=True)`` of the result
    succeeds on a model with the same configuration.

    Args:
        state_dict: ``checkpoint['model']`` of a reference checkpoint.

    Returns:
        A new dict with our keys (same tensor objects).

    Raises:
        TypeError: if *state_dict* is not a mapping or holds values that are not
            tensors.
        KeyError: naming every key that is not part of the reference layout.
        ValueError: if a key of the reference layout is missing (the encoder's
            ``cls_token``/``patch_embed``/``norm``, the decoder's ``mask_token``,
            ``decoder_embed``, ``decoder_norm`` or the upsampling/head weights).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            'state_dict must be a mapping of reference keys to tensors (for example '
            f"checkpoint['model']), got {type(state_dict).__name__}"
        )
    not_tensors = sorted(
        str(k) for k, v in state_dict.items() if not isinstance(v, Tensor)
    )
    if not_tensors:
        raise TypeError(
            f'state_dict values must be tensors; these are not: {not_tensors[:8]}'
        )
    keys = list(state_dict)
    if keys and all(k.startswith('module.') for k in keys):
        state_dict = {k[len('module.') :]: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        try:
            new = reference_key_to_ours(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is not None:
            out[new] = value
    if unknown:
        raise KeyError(f'keys not in the reference Scale-MAE layout: {sorted(unknown)}')
    required = (
        'encoder.cls_token',
        'encoder.patch_embed.proj.weight',
        'encoder.norm.weight',
        'decoder.mask_token',
        'decoder.embed.weight',
        'decoder.norm.weight',
        'decoder.up_low.0.weight',
    )
    missing = [k for k in required if k not in out]
    has_head = any(k.startswith(('decoder.head_high.', 'decoder.head.')) for k in out)
    if not has_head:
        missing.append('fcn_high.* / fcn_low.* (or fcn.*)')
    if missing:
        raise ValueError(f'reference state dict lacks keys (ours): {missing}')
    return out
