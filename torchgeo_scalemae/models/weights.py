# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Pretrained Scale-MAE weights (TorchGeo weight enums) and TorchGeo-style builders.

Two enums, named so they cannot be confused with TorchGeo's own
``ScaleMAELarge16_Weights`` (TorchGeo's :func:`~torchgeo.models.get_weight` returns the
first enum member whose ``str`` matches, so a clashing name would be shadowed):

- :class:`ScaleMAEEncoderLarge16_Weights` (``FMOW_RGB``): the ViT-L/16 encoder weights
  that TorchGeo hosts for its ``ScaleMAELarge16_Weights.FMOW_RGB``: the same pinned
  file, downloaded with ``check_hash=True`` and loaded strictly into
  :class:`~torchgeo_scalemae.models.ScaleMAEEncoder`.
- :class:`ScaleMAEPretrainLarge16_Weights` (``FMOW_RGB_800EP``): the full released
  pretraining checkpoint (encoder and bandpass decoder, 800 epochs on fMoW RGB),
  converted on load into :class:`~torchgeo_scalemae.models.ScaleMAE`.

The builders here follow TorchGeo's convention (``weights`` first, ``None`` for random
initialisation) and are what :func:`torchgeo_scalemae.register` puts into TorchGeo's
model table. Every builder takes ``res``: the encoder's default scale used when a forward
call passes none. With weights it defaults to ``weights.meta['default_res']`` (1.0).

**The res convention of the released weights** (``meta['res_convention']``): ``res`` is
relative, not metres. In pretraining, ``res = 2.5 x`` (source pixels per model-input
pixel), so the released encoder saw ``res`` between 2.2 and 5.0; the reference
evaluations feed ``res = 1`` (or ``224 / image side``), and TorchGeo-bench found
``res = 1`` best for kNN over 11 datasets. Hence ``meta['default_res'] = 1.0``.

.. versionadded:: 0.1
"""

import argparse
import hashlib
import os
import pickle
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlparse

import torch
import torchvision.transforms.v2 as T
from torch import Tensor, nn
from torchvision.models._api import Weights, WeightsEnum

from .checkpoint import scalemae_from_reference_checkpoint
from .encoder import ScaleMAEEncoder
from .encoder import scalemae_vit_base_patch16 as _vit_base
from .encoder import scalemae_vit_huge_patch14 as _vit_huge
from .encoder import scalemae_vit_large_patch16 as _vit_large
from .encoder import scalemae_vit_tiny_patch16 as _vit_tiny
from .reference import convert_reference_state_dict
from .scale_mae import ScaleMAE
from .scale_mae import scalemae_pretrain_vit_base_patch16 as _pretrain_base
from .scale_mae import scalemae_pretrain_vit_huge_patch14 as _pretrain_huge
from .scale_mae import scalemae_pretrain_vit_large_patch16 as _pretrain_large
from .scale_mae import scalemae_pretrain_vit_tiny_patch16 as _pretrain_tiny

__all__ = (
    'FMOW_RGB_URL',
    'RELEASE_800EP_URL',
    'RES_CONVENTION',
    'ScaleMAEEncoderLarge16_Weights',
    'ScaleMAEPretrainLarge16_Weights',
    'head_last',
    'load_encoder_state_dict',
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

#: The file TorchGeo 0.10.1 pins for ``ScaleMAELarge16_Weights.FMOW_RGB`` (Hugging Face,
#: pinned commit; ``-386989c9`` is the sha256 prefix that ``check_hash=True`` verifies).
FMOW_RGB_URL = (
    'https://hf.co/isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae/resolve/'
    '75650aaca720ef9c6638d16f5b4375f0022c56c9/'
    'vit_large_patch16_224_fmow_rgb_scalemae-386989c9.pth'
)

#: The full pretraining checkpoint released by the Scale-MAE authors (tag ``base-800``).
RELEASE_800EP_URL = (
    'https://github.com/bair-climate-initiative/scale-mae/releases/download/'
    'base-800/scalemae-vitlarge-800.pth'
)

#: What ``res`` means for the released weights (``meta['res_convention']``).
RES_CONVENTION = (
    'relative: res = 2.5 x (source pixels per model-input pixel); not metres. '
    'Pretraining drew res in [2.2, 5.0]; the reference evaluations and TorchGeo-bench '
    '(best kNN over 11 datasets) use res = 1.0, the default_res.'
)

# ImageNet statistics after scaling 0-255 pixels to 0-1, as TorchGeo's FMOW_RGB.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_transforms = nn.Sequential(
    T.Normalize(mean=[0.0], std=[255.0], inplace=True),
    T.Normalize(mean=list(_MEAN), std=list(_STD), inplace=True),
)

_COMMON_META: dict[str, Any] = {
    'dataset': 'fMoW',
    'bands': ('R', 'G', 'B'),
    'in_chans': 3,
    'img_size': 224,
    'patch_size': 16,
    'embed_dim': 1024,
    'publication': 'https://arxiv.org/abs/2212.14532',
    'repo': 'https://github.com/bair-climate-initiative/scale-mae',
    'license': 'CC-BY-NC-4.0',
    'ssl_method': 'scalemae',
    'res_convention': RES_CONVENTION,
    'default_res': 1.0,
    'pretrain_res_range': (2.2, 5.0),
}

_HEAD_KEYS = frozenset({'head.weight', 'head.bias'})


class ScaleMAEEncoderLarge16_Weights(WeightsEnum):  # type: ignore[misc]
    """Scale-MAE ViT-L/16 encoder weights.

    ``FMOW_RGB``: the released Scale-MAE encoder (800 epochs on fMoW RGB), the very file
    TorchGeo hosts for its ``ScaleMAELarge16_Weights.FMOW_RGB`` (downloaded with
    ``check_hash=True``), for :func:`scalemae_vit_large_patch16` (TorchGeo and timm
    name ``scalemae_vit_large_patch16``). Inputs: RGB in 0-255, normalised by
    ``transforms``. ``meta['default_res']`` (1.0) is the encoder's default ``res``.

    .. versionadded:: 0.1
    """

    FMOW_RGB = Weights(
        url=FMOW_RGB_URL,
        transforms=_transforms,
        meta={
            **_COMMON_META,
            'model': 'scalemae_vit_large_patch16',
            'encoder_only': True,
            'source': 'torchgeo ScaleMAELarge16_Weights.FMOW_RGB (same file)',
        },
    )


class ScaleMAEPretrainLarge16_Weights(WeightsEnum):  # type: ignore[misc]
    """The full released Scale-MAE pretraining checkpoint (encoder and decoder).

    ``FMOW_RGB_800EP``: ``scalemae-vitlarge-800.pth`` from the authors' GitHub release
    ``base-800``, in the reference layout ``{'model', 'optimizer', 'epoch', 'scaler',
    'args'}``. :func:`scalemae_pretrain_vit_large_patch16` (TorchGeo names
    ``scalemae`` and ``scalemae_pretrain_vit_large_patch16``) converts it into
    :class:`~torchgeo_scalemae.models.ScaleMAE`, configuring the decoder and loss from
    the checkpoint's ``args`` (``band_config``, ``use_l1_loss``, ``l1_loss_weight``,
    ``progressive``, ... listed in ``meta['args_applied']``) when they are present:
    what the release used is unknown until the file is read; absent ones take the
    released code's defaults (``band_config=(7, 56)``, L2 on both bands). The
    architecture itself is read from the tensor shapes.

    Integrity: the file name carries no hash, so ``check_hash`` cannot apply. The file is
    unpickled weights-only (tensors, containers and ``argparse.Namespace`` only: no
    code runs), its key set and shapes are checked strictly by the conversion, and
    when ``meta['sha256']`` is set the download's full sha256 is verified (it is None
    until a maintainer records the digest of the released file).

    :meth:`get_state_dict` returns the weights converted to :class:`ScaleMAE` keys;
    :meth:`get_checkpoint` the raw checkpoint (reference keys, ``args``).

    .. versionadded:: 0.1
    """

    FMOW_RGB_800EP = Weights(
        url=RELEASE_800EP_URL,
        transforms=_transforms,
        meta={
            **_COMMON_META,
            'model': 'scalemae_pretrain_vit_large_patch16',
            'encoder_only': False,
            'epochs': 800,
            'decoder': 'bandpass (512-d, 3 blocks, 16 heads, fcn 512 x 2)',
            'checkpoint_layout': ('model', 'optimizer', 'epoch', 'scaler', 'args'),
            # read from checkpoint['args'] when present (reference_args_to_config);
            # absent ones take the code recipe defaults (band (7, 56), L2 + L2)
            'args_applied': (
                'model',
                'input_size',
                'mask_ratio',
                'decoder_depth',
                'fcn_dim',
                'fcn_layers',
                'independent_fcn_head',
                'progressive',
                'band_config',
                'use_l1_loss',
                'l1_loss_weight',
            ),
            'sha256': None,
        },
    )

    def get_checkpoint(self, progress: bool = True) -> dict[str, Any]:
        """Download (cached by :mod:`torch.hub`) and unpickle the checkpoint, weights-only.

        Args:
            progress: show a download progress bar.

        Returns:
            The checkpoint dict (``model``, and ``args`` etc. when present).

        Raises:
            RuntimeError: if the download's sha256 differs from ``meta['sha256']``, or
                the file cannot be unpickled weights-only (the message says how to
                load a trusted file instead).

        .. versionadded:: 0.1
        """
        path = _download(self.url, progress)
        expected = self.meta.get('sha256')
        if expected:
            digest = _sha256(path)
            if digest != expected:
                raise RuntimeError(
                    f'{self}: sha256 of {path} is {digest}, expected {expected}; '
                    'delete the file to download it again'
                )
        return _load_reference_file(path)

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the checkpoint's weights converted to :class:`ScaleMAE` keys.

        The state dict of the model that ``meta['model']`` builds (``encoder.*``,
        ``decoder.*``), as TorchGeo's convention has it, so
        ``model.load_state_dict(weights.get_state_dict(), strict=True)`` works for a
        :class:`ScaleMAE` of the released configuration. For TorchGeo's own tasks
        (``Classification`` and others load into a bare encoder) use
        :class:`ScaleMAEEncoderLarge16_Weights` instead. Accepts (and ignores)
        TorchGeo's ``check_hash``/``weights_only`` arguments: the file is always
        unpickled weights-only and its name carries no hash.

        Args:
            *args: ignored (TorchGeo passes keyword arguments only).
            **kwargs: ``progress`` is honoured; other keywords are ignored.

        Returns:
            The converted state dict.

        .. versionadded:: 0.1
        """
        checkpoint = self.get_checkpoint(progress=bool(kwargs.get('progress', True)))
        return convert_reference_state_dict(checkpoint['model'])


def _download(url: str, progress: bool) -> str:
    """Download ``url`` into ``$TORCH_HOME/hub/checkpoints`` once; return the path."""
    directory = os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(directory, exist_ok=True)
    filename = os.path.basename(urlparse(url).path)
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        torch.hub.download_url_to_file(url, path, None, progress=progress)
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _load_reference_file(path: str) -> dict[str, Any]:
    """``torch.load`` weights-only with ``argparse.Namespace`` allow-listed."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f'{path} cannot be unpickled weights-only ({error}). If you trust the file, '
            'load it with torch.load(path, weights_only=False) and pass the dict to '
            'torchgeo_scalemae.models.scalemae_from_reference_checkpoint.'
        ) from error
    if not isinstance(checkpoint, Mapping) or 'model' not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else None
        raise RuntimeError(
            f'{path} is not a Scale-MAE reference checkpoint: expected a dict with a '
            f"'model' entry, got {type(checkpoint).__name__} with keys {keys}"
        )
    return dict(checkpoint)


def load_encoder_state_dict(
    model: ScaleMAEEncoder, state_dict: Mapping[str, Tensor]
) -> None:
    """Load encoder weights strictly: every key must match, except the classifier.

    The fixed ``pos_embed`` table is dropped by the encoder itself. ``head.*`` in the
    file is ignored when the model has no head (``num_classes=0``) or a head of another
    size; a model head missing from the file stays randomly initialised. Any other
    missing or unexpected key raises.

    Args:
        model: the encoder to load into.
        state_dict: encoder state dict in timm's names.

    Raises:
        RuntimeError: naming the missing and unexpected keys.

    .. versionadded:: 0.1
    """
    own = model.state_dict()
    filtered = {
        key: value
        for key, value in state_dict.items()
        if not (
            key in _HEAD_KEYS
            and (key not in own or tuple(own[key].shape) != tuple(value.shape))
        )
    }
    missing, unexpected = model.load_state_dict(filtered, strict=False)
    missing = [key for key in missing if key not in _HEAD_KEYS]
    if missing or unexpected:
        raise RuntimeError(
            'the weights do not match ScaleMAEEncoder: '
            f'missing keys {missing}, unexpected keys {list(unexpected)}'
        )


def _check_res(res: float | None, weights: WeightsEnum | None) -> float | None:
    if res is None:
        return None if weights is None else float(weights.meta['default_res'])
    if isinstance(res, bool) or not isinstance(res, int | float) or not res > 0:
        raise ValueError(f'res must be a positive float, got {res!r}')
    return float(res)


def _check_in_chans(weights: WeightsEnum, kwargs: dict[str, Any]) -> None:
    expected = weights.meta['in_chans']
    if kwargs.get('in_chans', expected) != expected:
        raise ValueError(
            f'{weights} has {expected} input channels, got in_chans='
            f'{kwargs["in_chans"]!r}; build without weights, or use timm/TorchGeo '
            'tasks (Classification(..., weights=...)), which adapt the first layer'
        )
    kwargs['in_chans'] = expected


def _no_weights(name: str, weights: Any) -> None:
    if weights is not None:
        raise ValueError(
            f'no pretrained weights exist for {name}; got weights={weights!r} '
            '(only the ViT-L/16 builders have weights)'
        )


def head_last(model: ScaleMAEEncoder) -> ScaleMAEEncoder:
    """Make ``head`` the encoder's last child module (in place).

    TorchGeo's ``tasks.utils.load_state_dict`` (used by ``Classification``, ``MoCo``,
    ``SimCLR``, ``BYOL`` and ``MAE`` to load ``weights=...``) treats the last child
    module as the classifier; :class:`ScaleMAEEncoder` registers its ``pos_encoder``
    after timm's ``head``. The timm entrypoints and these builders reorder it.

    Args:
        model: the encoder.

    Returns:
        The same encoder.

    .. versionadded:: 0.1
    """
    modules = model._modules
    if 'head' in modules:
        modules['head'] = modules.pop('head')
    return model


def _encoder(
    name: str, builder: Any, weights: Any, res: float | None, kwargs: dict[str, Any]
) -> ScaleMAEEncoder:
    _no_weights(name, weights)
    res = _check_res(res, None)
    if res is not None:
        kwargs['res'] = res
    return head_last(builder(**kwargs))


def _pretrain(
    name: str, builder: Any, weights: Any, res: float | None, kwargs: dict[str, Any]
) -> ScaleMAE:
    _no_weights(name, weights)
    res = _check_res(res, None)
    if res is not None:
        kwargs['res'] = res
    model: ScaleMAE = builder(**kwargs)
    return model


def scalemae_vit_tiny_patch16(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAEEncoder:
    """TorchGeo builder of the tiny test-sized encoder (64-d, 2 blocks, 4 heads).

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to :func:`torchgeo_scalemae.models.scalemae_vit_tiny_patch16`.

    Returns:
        The encoder.

    .. versionadded:: 0.1
    """
    return _encoder('scalemae_vit_tiny_patch16', _vit_tiny, weights, res, kwargs)


def scalemae_vit_base_patch16(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAEEncoder:
    """TorchGeo builder of the ViT-B/16 encoder.

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to :func:`torchgeo_scalemae.models.scalemae_vit_base_patch16`.

    Returns:
        The encoder.

    .. versionadded:: 0.1
    """
    return _encoder('scalemae_vit_base_patch16', _vit_base, weights, res, kwargs)


def scalemae_vit_large_patch16(
    weights: ScaleMAEEncoderLarge16_Weights | str | None = None,
    *,
    res: float | None = None,
    **kwargs: Any,
) -> ScaleMAEEncoder:
    """TorchGeo builder of the ViT-L/16 encoder, optionally with the released weights.

    Args:
        weights: None, a :class:`ScaleMAEEncoderLarge16_Weights` member or its name
            (``'FMOW_RGB'`` or ``'ScaleMAEEncoderLarge16_Weights.FMOW_RGB'``).
        res: default scale of the encoder; None uses ``weights.meta['default_res']``
            (1.0) with weights, else the encoder's default (1.0).
        **kwargs: forwarded to
            :func:`torchgeo_scalemae.models.scalemae_vit_large_patch16`
            (``num_classes``, ``img_size``, ``global_pool``...). With weights,
            ``in_chans`` must be 3.

    Returns:
        The encoder, with the weights loaded strictly (see
        :func:`load_encoder_state_dict`).

    Raises:
        ValueError: for unknown weights, a bad ``res`` or ``in_chans`` != 3 with weights.
        RuntimeError: if the downloaded weights do not match the encoder.

    .. versionadded:: 0.1
    """
    if weights is None:
        return _encoder('scalemae_vit_large_patch16', _vit_large, None, res, kwargs)
    member = _verify(ScaleMAEEncoderLarge16_Weights, weights)
    _check_in_chans(member, kwargs)
    kwargs['res'] = _check_res(res, member)
    model = head_last(_vit_large(**kwargs))
    state_dict = member.get_state_dict(
        progress=True, check_hash=True, weights_only=True
    )
    load_encoder_state_dict(model, state_dict)
    return model


def scalemae_vit_huge_patch14(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAEEncoder:
    """TorchGeo builder of the ViT-H/14 encoder.

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to :func:`torchgeo_scalemae.models.scalemae_vit_huge_patch14`.

    Returns:
        The encoder.

    .. versionadded:: 0.1
    """
    return _encoder('scalemae_vit_huge_patch14', _vit_huge, weights, res, kwargs)


def scalemae_pretrain_vit_tiny_patch16(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAE:
    """TorchGeo builder of the tiny full Scale-MAE model (fixture sizes).

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to
            :func:`torchgeo_scalemae.models.scalemae_pretrain_vit_tiny_patch16`.

    Returns:
        The model.

    .. versionadded:: 0.1
    """
    return _pretrain(
        'scalemae_pretrain_vit_tiny_patch16', _pretrain_tiny, weights, res, kwargs
    )


def scalemae_pretrain_vit_base_patch16(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAE:
    """TorchGeo builder of the full Scale-MAE model with a ViT-B/16 encoder.

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to
            :func:`torchgeo_scalemae.models.scalemae_pretrain_vit_base_patch16`.

    Returns:
        The model.

    .. versionadded:: 0.1
    """
    return _pretrain(
        'scalemae_pretrain_vit_base_patch16', _pretrain_base, weights, res, kwargs
    )


def scalemae_pretrain_vit_large_patch16(
    weights: ScaleMAEPretrainLarge16_Weights | str | None = None,
    *,
    res: float | None = None,
    **kwargs: Any,
) -> ScaleMAE:
    """TorchGeo builder of the paper's full Scale-MAE (ViT-L/16 and bandpass decoder).

    Without weights this is the recipe configuration. With
    ``ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP`` the released checkpoint is
    downloaded, unpickled weights-only and converted; the decoder and loss follow the
    checkpoint's ``args`` where present (see the enum).

    Args:
        weights: None, a :class:`ScaleMAEPretrainLarge16_Weights` member or its name.
        res: default scale of the encoder; None uses ``weights.meta['default_res']``
            (1.0) with weights, else 1.0.
        **kwargs: without weights, forwarded to
            :func:`torchgeo_scalemae.models.scalemae_pretrain_vit_large_patch16`;
            with weights, overrides passed to
            :func:`torchgeo_scalemae.models.scalemae_from_reference_checkpoint`
            (for example ``mask_ratio``, ``loss_preset``, ``fast_ops``; the
            architecture comes from the checkpoint).

    Returns:
        The model.

    Raises:
        ValueError: for unknown weights or a bad ``res``.
        RuntimeError: if the checkpoint cannot be read or does not match.

    .. versionadded:: 0.1
    """
    if weights is None:
        return _pretrain(
            'scalemae_pretrain_vit_large_patch16', _pretrain_large, None, res, kwargs
        )
    member = _verify(ScaleMAEPretrainLarge16_Weights, weights)
    kwargs['res'] = _check_res(res, member)
    checkpoint = member.get_checkpoint(progress=True)
    return scalemae_from_reference_checkpoint(checkpoint, **kwargs)


def scalemae(
    weights: ScaleMAEPretrainLarge16_Weights | str | None = None,
    *,
    res: float | None = None,
    **kwargs: Any,
) -> ScaleMAE:
    """TorchGeo builder registered as ``scalemae``: the paper's full model.

    The same as :func:`scalemae_pretrain_vit_large_patch16` (ViT-L/16 encoder with the
    recipe bandpass decoder: 512-d, 3 blocks, 16 heads, fcn 512 x 2).

    Args:
        weights: None, a :class:`ScaleMAEPretrainLarge16_Weights` member or its name.
        res: default scale of the encoder (see
            :func:`scalemae_pretrain_vit_large_patch16`).
        **kwargs: as :func:`scalemae_pretrain_vit_large_patch16`.

    Returns:
        The model.

    .. versionadded:: 0.1
    """
    return scalemae_pretrain_vit_large_patch16(weights, res=res, **kwargs)


def scalemae_pretrain_vit_huge_patch14(
    weights: None = None, *, res: float | None = None, **kwargs: Any
) -> ScaleMAE:
    """TorchGeo builder of the full Scale-MAE model with a ViT-H/14 encoder.

    Args:
        weights: must be None (no pretrained weights exist).
        res: default scale of the encoder (default 1.0).
        **kwargs: forwarded to
            :func:`torchgeo_scalemae.models.scalemae_pretrain_vit_huge_patch14`.

    Returns:
        The model.

    .. versionadded:: 0.1
    """
    return _pretrain(
        'scalemae_pretrain_vit_huge_patch14', _pretrain_huge, weights, res, kwargs
    )


def _verify[E: WeightsEnum](enum: type[E], weights: Any) -> E:
    """Resolve a member or its name; raise ValueError naming the bad value."""
    try:
        member = enum.verify(weights)
    except (KeyError, TypeError) as error:
        names = [str(m) for m in enum]
        raise ValueError(
            f'weights must be one of {names} (or a member name), got {weights!r}'
        ) from error
    return cast(E, member)
