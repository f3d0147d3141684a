# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Pretrained Scale-MAE weights: TorchGeo weight enums.

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

The builders of :mod:`~.builders` take these as ``weights``; with weights, the
encoder's default ``res`` is ``weights.meta['default_res']`` (1.0).

**The res convention of the released weights** (``meta['res_convention']``): ``res`` is
relative, not metres. In pretraining, ``res = 2.5 x`` (source pixels per model-input
pixel), so the released encoder saw ``res`` between 2.2 and 5.0; the reference
evaluations feed ``res = 1`` (or ``224 / image side``), and TorchGeo-bench found
``res = 1`` best for kNN over 11 datasets. Hence ``meta['default_res'] = 1.0``.
"""

import hashlib
import os
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.transforms.v2 as T
from torch import nn
from torchvision.models._api import Weights, WeightsEnum

from .checkpoint import read_checkpoint
from .reference import convert_reference_state_dict

__all__ = (
    'FMOW_RGB_URL',
    'RELEASE_800EP_URL',
    'RES_CONVENTION',
    'ScaleMAEEncoderLarge16_Weights',
    'ScaleMAEPretrainLarge16_Weights',
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


class ScaleMAEEncoderLarge16_Weights(WeightsEnum):  # type: ignore[misc]
    """Scale-MAE ViT-L/16 encoder weights.

    ``FMOW_RGB``: the released Scale-MAE encoder (800 epochs on fMoW RGB), the very file
    TorchGeo hosts for its ``ScaleMAELarge16_Weights.FMOW_RGB`` (downloaded with
    ``check_hash=True``), for :func:`~.builders.scalemae_vit_large_patch16` (TorchGeo
    and timm name ``scalemae_vit_large_patch16``). Inputs: RGB in 0-255, normalised by
    ``transforms``. ``meta['default_res']`` (1.0) is the encoder's default ``res``.
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

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Download (cached by :mod:`torch.hub`, hash-checked) and read the weights.

        As torchvision's ``WeightsEnum.get_state_dict``, but a failed download says
        the URL, the cache path and how to place the file by hand.

        Args:
            *args: passed to :func:`torch.hub.load_state_dict_from_url`.
            **kwargs: passed to :func:`torch.hub.load_state_dict_from_url`.

        Returns:
            The encoder state dict (timm names).

        Raises:
            RuntimeError: if the download fails.
        """
        try:
            state: dict[str, Any] = super().get_state_dict(*args, **kwargs)
        except OSError as error:
            path = _cache_path(self.url)
            raise RuntimeError(_download_failed(self.url, path, error)) from error
        return state


class ScaleMAEPretrainLarge16_Weights(WeightsEnum):  # type: ignore[misc]
    """The full released Scale-MAE pretraining checkpoint (encoder and decoder).

    ``FMOW_RGB_800EP``: ``scalemae-vitlarge-800.pth`` from the authors' GitHub release
    ``base-800``, in the reference layout ``{'model', 'optimizer', 'epoch', 'scaler',
    'args'}``. :func:`~.builders.scalemae_pretrain_vit_large_patch16` (TorchGeo names
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
        return _load_reference_file(path, self.url)

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
        """
        checkpoint = self.get_checkpoint(progress=bool(kwargs.get('progress', True)))
        return convert_reference_state_dict(checkpoint['model'])


def _cache_path(url: str) -> str:
    """Where :mod:`torch.hub` caches the file of ``url``."""
    filename = os.path.basename(urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), 'checkpoints', filename)


def _download(url: str, progress: bool) -> str:
    """Download ``url`` into ``$TORCH_HOME/hub/checkpoints`` once; return the path."""
    path = _cache_path(url)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        try:
            torch.hub.download_url_to_file(url, path, None, progress=progress)
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
            raise RuntimeError(_download_failed(url, path, error)) from error
    return path


def _download_failed(url: str, path: str, error: BaseException) -> str:
    """The message of a failed download: the URL, the cache path, the manual fix."""
    return (
        f'could not download the weights from {url} to {path} '
        f'({type(error).__name__}: {error}). Without network access, download the '
        f'file elsewhere and place it at {path} (the folder is torch.hub.get_dir()/'
        'checkpoints; set TORCH_HOME to move it).'
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _load_reference_file(path: str, url: str) -> dict[str, Any]:
    """Read a downloaded reference checkpoint weights-only; check its layout."""
    try:
        checkpoint = read_checkpoint(path)
    except ValueError as error:
        raise RuntimeError(
            f'{error}. Delete {path} to download it again from {url}, or place a '
            'good copy there by hand.'
        ) from error
    if 'model' not in checkpoint:
        raise RuntimeError(
            f'{path} is not a Scale-MAE reference checkpoint: expected a dict with a '
            f"'model' entry, got keys {sorted(map(str, checkpoint))[:8]}"
        )
    return checkpoint
