# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The encoder out of a pretraining checkpoint, and its export to safetensors.

Command line (also installed as ``torchgeo-scalemae-export``)::

    python -m torchgeo_scalemae.models.export CHECKPOINT.ckpt ENCODER.safetensors

The exported file holds the encoder's state dict (the keys of
:class:`~torchgeo_scalemae.models.ScaleMAEEncoder`, a timm ``VisionTransformer``) and,
in its metadata, the architecture (``encoder_config``, JSON) and the pretraining
settings that matter for evaluation (``reference_gsd``, ``input_size``). It is accepted
as ``weights=`` by the evaluation tasks and by
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay={'file': path},
**encoder_config)``.
"""

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .builders import create_scalemae
from .checkpoint import read_checkpoint
from .encoder import ScaleMAEEncoder
from .scale_mae import ScaleMAE

__all__ = ('encoder_from_checkpoint', 'export_encoder', 'read_pretraining_checkpoint')

_PREFIX = 'model.encoder.'


def read_pretraining_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Lightning checkpoint of ``ScaleMAEPretraining`` (weights only, safely).

    Args:
        path: The ``.ckpt`` file.

    Returns:
        The checkpoint dict (``state_dict``, ``hyper_parameters``, ...).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a checkpoint of the pretraining task.
    """
    try:
        checkpoint = read_checkpoint(path)
    except RuntimeError as err:  # needs untrusted globals
        raise ValueError(str(err)) from err
    if not isinstance(checkpoint.get('state_dict'), Mapping):
        raise ValueError(  # noqa: TRY004  (a bad file's content, not a bad argument)
            f'{str(path)!r} is not a Lightning checkpoint: it has no state_dict'
        )
    hparams = checkpoint.get('hyper_parameters')
    if not isinstance(hparams, Mapping) or 'model' not in hparams:
        raise ValueError(
            f'{str(path)!r} is not a ScaleMAEPretraining checkpoint: its '
            "hyper_parameters have no 'model' entry"
        )
    if not any(k.startswith(_PREFIX) for k in checkpoint['state_dict']):
        raise ValueError(
            f'{str(path)!r} holds no Scale-MAE encoder (no {_PREFIX}* keys)'
        )
    return dict(checkpoint)


def _full_model(hparams: Mapping[str, Any]) -> ScaleMAE:
    kwargs: dict[str, Any] = dict(hparams.get('model_kwargs') or {})
    kwargs.setdefault('in_chans', hparams.get('in_channels', 3))
    kwargs.setdefault('img_size', hparams.get('input_size', 224))
    return create_scalemae(str(hparams['model']), **kwargs)


def _encoder_config(encoder: ScaleMAEEncoder) -> dict[str, Any]:
    """Keyword arguments that rebuild this encoder's architecture."""
    block: Any = encoder.blocks[0]
    hidden = int(block.mlp.fc1.out_features)
    return {
        'img_size': int(encoder.patch_embed.img_size[0]),
        'patch_size': int(encoder.patch_size[0]),
        'in_chans': int(encoder.patch_embed.proj.in_channels),
        'embed_dim': int(encoder.embed_dim),
        'depth': len(encoder.blocks),
        'num_heads': int(block.attn.num_heads),
        'mlp_ratio': hidden / int(encoder.embed_dim),
    }


def _encoder_of(
    checkpoint: Mapping[str, Any], path: str | os.PathLike[str]
) -> ScaleMAEEncoder:
    """The encoder of a checkpoint read by :func:`read_pretraining_checkpoint`."""
    hparams = checkpoint['hyper_parameters']
    try:
        encoder = _full_model(hparams).encoder
    except (TypeError, ValueError) as err:
        raise ValueError(
            f'cannot rebuild the model of {str(path)!r} from its hyperparameters '
            f'(model={hparams.get("model")!r}): {err}'
        ) from err
    state_dict = {
        k[len(_PREFIX) :]: v
        for k, v in checkpoint['state_dict'].items()
        if k.startswith(_PREFIX)
    }
    try:
        encoder.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f'the encoder weights of {str(path)!r} do not fit its architecture: {err}'
        ) from err
    return encoder.eval()


def encoder_from_checkpoint(path: str | os.PathLike[str]) -> ScaleMAEEncoder:
    """Return the :class:`ScaleMAEEncoder` of a ``ScaleMAEPretraining`` checkpoint.

    The architecture is rebuilt from the checkpoint's hyperparameters (``model``,
    ``in_channels``, ``input_size``, ``model_kwargs``) and the encoder's weights are
    loaded strictly. The encoder's default ``res`` stays 1; pass ``res = gsd /
    reference_gsd`` with the checkpoint's ``reference_gsd`` (returned by
    :func:`read_pretraining_checkpoint` under ``hyper_parameters``).

    Example::

        encoder = encoder_from_checkpoint('outputs/run/checkpoints/last.ckpt')
        tokens = encoder.forward_features(images, res=gsd / 1.0)

    Args:
        path: The Lightning ``.ckpt`` file.

    Returns:
        The encoder in evaluation mode, on the CPU, with ``num_classes=0``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a pretraining checkpoint, or its weights do not fit
            the architecture its hyperparameters describe.
    """
    return _encoder_of(read_pretraining_checkpoint(path), path)


def export_encoder(
    checkpoint: str | os.PathLike[str], output: str | os.PathLike[str]
) -> Path:
    """Write the encoder of a pretraining checkpoint to a safetensors file.

    Args:
        checkpoint: The ``ScaleMAEPretraining`` Lightning ``.ckpt`` file.
        output: The ``.safetensors`` file to write (its folder must exist). It is
            written beside its final name and then renamed, so an existing file is
            never left half-written.

    Returns:
        The output path.

    Raises:
        ValueError: If *output* does not end in ``.safetensors``, or the checkpoint
            is not a pretraining checkpoint.
        FileNotFoundError: If the checkpoint or the output's folder does not exist.
    """
    from safetensors.torch import save_file

    out = Path(output)
    if out.suffix != '.safetensors':
        raise ValueError(f'output must end in .safetensors, got {str(output)!r}')
    if not out.parent.is_dir():
        raise FileNotFoundError(f'output folder does not exist: {str(out.parent)!r}')
    content = read_pretraining_checkpoint(checkpoint)
    hparams = content['hyper_parameters']
    encoder = _encoder_of(content, checkpoint)
    tensors: dict[str, Tensor] = {
        k: v.detach().contiguous() for k, v in encoder.state_dict().items()
    }
    reference_gsd = hparams.get('reference_gsd', 1.0)
    metadata = {
        'format': 'pt',
        'encoder_config': json.dumps(_encoder_config(encoder)),
        'model': str(hparams['model']),
        'reference_gsd': repr(float(reference_gsd)),
        'input_size': str(int(hparams.get('input_size', 224))),
        'source': Path(checkpoint).name,
    }
    partial = out.with_name(out.name + '.partial')
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(f'could not write {str(out)!r}: {err}') from err
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: export the encoder of a pretraining checkpoint.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog='torchgeo-scalemae-export',
        description='Export the encoder of a ScaleMAEPretraining checkpoint to '
        'safetensors (usable as weights= by the evaluation tasks and by timm).',
    )
    parser.add_argument('checkpoint', help='Lightning .ckpt of ScaleMAEPretraining')
    parser.add_argument('output', help='the .safetensors file to write')
    args = parser.parse_args(argv)
    try:
        out = export_encoder(args.checkpoint, args.output)
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    from safetensors import safe_open

    with safe_open(str(out), 'pt') as f:
        meta = f.metadata()
    config = json.loads(meta['encoder_config'])
    size = out.stat().st_size / 2**20
    print(f'wrote {out} ({size:.1f} MiB)')
    print(f'  encoder: {config}')
    ref = float(meta['reference_gsd'])
    print(f'  pretrained with reference_gsd={ref:g} m: feed res = gsd / {ref:g}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
