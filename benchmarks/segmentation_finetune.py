# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""UPerNet segmentation at an equal budget: random vs Scale-MAE vs MAE encoders.

Fine-tunes :class:`torchgeo_scalemae.tasks.ScaleMAESegmentation` (the pyramid neck
and smp's UPerNet decoder on a Scale-MAE encoder) with the **same budget** (optimiser
steps, batch size, crop size, learning rate, layer decay) from each of

* ``random``: the encoder at its random initialisation (the architecture of
  ``--embed-dim``/``--depth``/``--heads``, or of the first checkpoint given);
* ``scalemae``: the encoder of a :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`
  checkpoint (``--scalemae-ckpt``, e.g. from
  ``torchgeo fit --config configs/pretrain/folder_small_cpu.yaml``), fed
  ``res = gsd / reference_gsd`` with the checkpoint's ``reference_gsd``;
* ``mae``: the encoder of a TorchGeo ``MAE`` checkpoint (``--mae-ckpt``, a timm ViT
  under ``backbone.vit.``) loaded into the same architecture. MAE was pretrained
  with the fixed sine-cosine position table, which is the GSD encoding at
  ``res = 1``, so it is fine-tuned and tested with ``res_mode='constant'``
  (``res = 1`` at every scale);

each with a **frozen** encoder (neck, decoder and head train) and a **fine-tuned**
one (``--modes``). Methods whose checkpoint is not given are left out.

Evaluation: ``torchgeo test``'s multi-scale protocol
(:class:`~torchgeo_scalemae.evaluation.scales.MultiScaleEvaluation`): images resized
to each of ``--scales`` (fractions of the evaluation size, default 100, 75 and 50 %,
the paper's Fig. 6), masks with nearest-neighbour sampling, GSD updated.

* **Dubai** (``--dubai``, 72 images, 6 classes, 0 = unlabelled and ignored): a
  held-back test split (``--dubai-test-pct`` of the images, seed 0) never trained
  on; evaluation on the central ``--eval-size`` square of each image at its native
  GSD. The source documents no GSD: ``--dubai-gsd`` is nominal. Reported: mIoU over
  the 5 labelled classes at each scale.
* **Xiamen** (``--xiamen``, 256-px tiles at about 0.54 m, binary building masks):
  trained on ``training.txt``, tested on ``evaluation.txt``. Reported: the IoU of
  the building class at each scale. Left out when the folder is absent.

Outputs in ``--out``: ``results.csv`` (dataset, method, mode, scale, size, GSD,
metric, value, steps, seconds), ``table.txt`` and ``config.json`` (the command
line, the machine and the software versions).

Example (a smoke run of a few steps)::

    python benchmarks/segmentation_finetune.py --steps 5 --batch-size 4 \\
        --patch-size 64 --eval-size 128 --modes finetune
"""

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning
import torch
import torchgeo
from lightning.pytorch import Trainer, seed_everything

import torchgeo_scalemae
from torchgeo_scalemae.datamodules import SegmentationFolderGSDDataModule
from torchgeo_scalemae.models import encoder_from_checkpoint, read_checkpoint
from torchgeo_scalemae.tasks import ScaleMAESegmentation

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'data'
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dubai', type=Path, default=SHARED / 'dubai_landcover')
    parser.add_argument('--xiamen', type=Path, default=SHARED / 'xiamen_buildings')
    parser.add_argument('--dubai-gsd', type=float, default=1.0, help='nominal, m')
    parser.add_argument('--xiamen-gsd', type=float, default=0.54)
    parser.add_argument('--dubai-test-pct', type=float, default=0.2)
    parser.add_argument('--scalemae-ckpt', type=Path, default=None)
    parser.add_argument('--mae-ckpt', type=Path, default=None)
    parser.add_argument('--mae-heads', type=int, default=None)
    parser.add_argument('--embed-dim', type=int, default=192)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--heads', type=int, default=3)
    parser.add_argument('--steps', type=int, default=500)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--patch-size', type=int, default=128, help='train crop px')
    parser.add_argument('--eval-size', type=int, default=256)
    parser.add_argument('--scales', type=float, nargs='+', default=[1.0, 0.75, 0.5])
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--layer-decay', type=float, default=0.75)
    parser.add_argument('--decoder-channels', type=int, default=64)
    parser.add_argument('--modes', nargs='+', default=['frozen', 'finetune'])
    parser.add_argument('--datasets', nargs='+', default=['dubai', 'xiamen'])
    parser.add_argument('--limit-test-batches', type=int, default=None)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--accelerator', default='auto')
    parser.add_argument('--out', type=Path, default=Path('outputs/seg_benchmark'))
    return parser.parse_args()


def architecture(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder architecture (the Scale-MAE checkpoint's when one is given)."""
    if args.scalemae_ckpt is not None:
        encoder = encoder_from_checkpoint(args.scalemae_ckpt)
        return {
            'patch_size': int(encoder.patch_size[0]),
            'embed_dim': int(encoder.embed_dim),
            'depth': len(encoder.blocks),
            'num_heads': int(encoder.blocks[0].attn.num_heads),
        }
    if args.mae_ckpt is not None:
        state = read_checkpoint(args.mae_ckpt)
        state = state.get('state_dict', state)
        key = next(k for k in state if k.endswith('patch_embed.proj.weight'))
        prefix = key[: -len('patch_embed.proj.weight')]
        weight = state[key]
        depth = 1 + max(
            int(k[len(prefix) :].split('.')[1])
            for k in state
            if k.startswith(prefix + 'blocks.')
        )
        dim = int(weight.shape[0])
        return {
            'patch_size': int(weight.shape[-1]),
            'embed_dim': dim,
            'depth': depth,
            'num_heads': args.mae_heads or max(1, dim // 64),
        }
    return {
        'patch_size': 16,
        'embed_dim': args.embed_dim,
        'depth': args.depth,
        'num_heads': args.heads,
    }


def methods(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Task keywords of every method whose weights are available."""
    out: dict[str, dict[str, Any]] = {'random': {'weights': None}}
    if args.scalemae_ckpt is not None:
        hparams = read_checkpoint(args.scalemae_ckpt).get('hyper_parameters', {})
        out['scalemae'] = {
            'weights': str(args.scalemae_ckpt),
            'reference_gsd': float(hparams.get('reference_gsd', 1.0)),
        }
    if args.mae_ckpt is not None:
        out['mae'] = {
            'weights': str(args.mae_ckpt),
            'res_mode': 'constant',
            'base_res': 1.0,
        }
    return out


def datamodule(args: argparse.Namespace, name: str) -> SegmentationFolderGSDDataModule:
    common: dict[str, Any] = {
        'patch_size': args.patch_size,
        'image_size': args.eval_size,
        'center_crop': True,
        'batch_size': args.batch_size,
        'num_workers': 0,
        'mean': IMAGENET_MEAN,
        'std': IMAGENET_STD,
    }
    if name == 'dubai':
        return SegmentationFolderGSDDataModule(
            str(args.dubai),
            gsd=args.dubai_gsd,
            num_classes=6,
            ignore_index=0,
            val_split_pct=0.1,
            test_split_pct=args.dubai_test_pct,
            seed=0,
            **common,
        )
    root = args.xiamen
    return SegmentationFolderGSDDataModule(
        str(root),
        gsd=args.xiamen_gsd,
        num_classes=2,
        train_split=str(root / 'training.txt'),
        val_split=str(root / 'validation.txt'),
        test_split=str(root / 'evaluation.txt'),
        **common,
    )


def run(
    args: argparse.Namespace,
    dataset: str,
    method: str,
    mode: str,
    arch: dict[str, Any],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    seed_everything(0)
    classes = 6 if dataset == 'dubai' else 2
    labels = (
        ['unlabelled', 'building', 'land', 'road', 'vegetation', 'water']
        if dataset == 'dubai'
        else ['background', 'building']
    )
    task = ScaleMAESegmentation(
        backbone='scalemae_vit',
        model_kwargs=dict(arch),
        num_classes=classes,
        labels=labels,
        ignore_index=0 if dataset == 'dubai' else None,
        freeze_backbone=mode == 'frozen',
        decoder_channels=args.decoder_channels,
        layer_decay=None if mode == 'frozen' else args.layer_decay,
        lr=args.lr,
        test_scales=args.scales,
        **extra,
    )
    folder = args.out / f'{dataset}_{method}_{mode}'
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=2,
        limit_test_batches=args.limit_test_batches,
        num_sanity_val_steps=0,
        default_root_dir=str(folder),
    )
    dm = datamodule(args, dataset)
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    trainer.test(task, datamodule=dm, verbose=False)
    rows = []
    for result in task.scale_results:
        r = result.scale
        if dataset == 'dubai':
            metric, value = 'mIoU', result.miou
        else:
            metric, value = 'building IoU', dict(result.class_iou)['building']
        rows.append(
            {
                'dataset': dataset,
                'method': method,
                'mode': mode,
                'scale': r.scale,
                'size': r.size,
                'gsd': r.gsd,
                'metric': metric,
                'value': value,
                'steps': trainer.global_step,
                'seconds': round(seconds, 1),
            }
        )
    return rows


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    arch = architecture(args)
    datasets = []
    for name in args.datasets:
        root = args.dubai if name == 'dubai' else args.xiamen
        if (root / 'images').is_dir():
            datasets.append(name)
        else:
            print(f'{name}: {root} is absent, left out', flush=True)
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        for method, extra in methods(args).items():
            for mode in args.modes:
                rows += run(args, dataset, method, mode, arch, extra)
    with open(args.out / 'results.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['dataset'])
        writer.writeheader()
        writer.writerows(rows)
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
    machine = (
        f'machine: {platform.platform()}, {os.cpu_count()} CPUs, '
        f'torch threads {torch.get_num_threads()}, cuda {cuda}'
    )
    header = (
        f'{"dataset":<8} {"method":<9} {"mode":<9} {"size":>8} {"GSD (m)":>8} '
        f'{"metric":<13} {"value":>7} {"steps":>6} {"s":>7}'
    )
    lines = ['command: ' + ' '.join(sys.argv), machine, f'encoder: {arch}', header]
    for r in rows:
        lines.append(
            f'{r["dataset"]:<8} {r["method"]:<9} {r["mode"]:<9} {r["size"]:>8} '
            f'{r["gsd"]:>8.3g} {r["metric"]:<13} {100 * r["value"]:>6.2f}% '
            f'{r["steps"]:>6} {r["seconds"]:>7}'
        )
    table = '\n'.join(lines)
    print(table, flush=True)
    (args.out / 'table.txt').write_text(table + '\n')
    config = {
        'argv': sys.argv,
        'args': {k: str(v) for k, v in vars(args).items()},
        'encoder': arch,
        'versions': {
            'python': platform.python_version(),
            'torch': torch.__version__,
            'lightning': lightning.__version__,
            'torchgeo': torchgeo.__version__,
            'torchgeo_scalemae': getattr(torchgeo_scalemae, '__version__', '?'),
        },
    }
    (args.out / 'config.json').write_text(json.dumps(config, indent=2))
    print(f'Results written to {args.out}', flush=True)


if __name__ == '__main__':
    main()
