# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale kNN on real AID scenes: random init vs Scale-MAE vs TorchGeo's MAE.

Pretrains the **same small ViT encoder** (``--embed-dim``/``--depth``/``--heads``,
patch 16) with the **same budget** (optimiser steps, batch size, input size, peak
learning rate, AdamW (0.9, 0.95), weight decay 0.05, linear warmup then cosine, per
step) in three ways, then evaluates each encoder by multi-scale kNN
(:class:`torchgeo_scalemae.tasks.MultiScaleKNN`: k = 20, ``exp(sim / 0.07)`` votes,
class token after the final norm):

* ``random``: no pretraining (the Scale-MAE encoder at its random initialisation);
* ``scalemae``: :class:`torchgeo_scalemae.tasks.ScaleMAEPretraining` (GSD encoding,
  band-pass decoder, input ``S`` and target ``2S``, ``loss='reference'``);
* ``mae``: TorchGeo's own :class:`torchgeo.tasks.MAE` (lightly's MAE, a plain timm
  ViT with a fixed sine-cosine position table, its default augmentation at ``S``),
  whose per-epoch LR schedule is replaced by the same per-step schedule.

Data: ``../shared/data/aid150`` (all 10,000 AID scenes at 150 px, 30 classes; read in
place, never copied) through
:class:`~torchgeo_scalemae.datamodules.ImageFolderGSDDataModule`, split at random
(seed 0) into a training part (pretraining images and the kNN bank) and a test part
(kNN queries, ``--test-pct``). AID has no per-image GSD: 0.5-8 m at 600 px, so
2-32 m at 150 px; ``--gsd`` (default 8 m, the geometric middle) is a nominal value.

Scales: ``--scales`` in pixels (default 150 112 75 48 32); each is rounded to the
nearest multiple of the 16-px patch (150 -> 144, 75 -> 80), images are resized
(antialiased bilinear) for both bank and queries, ``gsd`` follows the resize and the
Scale-MAE encoders get ``res = gsd / reference_gsd``. The MAE encoder has no GSD
input; timm resamples its position table to the grid.

Outputs in ``--out``: ``results.csv`` (method, scale, size, GSD, accuracy),
``accuracy_vs_gsd.png``, ``config.json`` (the budget and timings) and the
pretraining checkpoints.

Examples::

    # minimal smoke run (a few steps, a subset)
    python benchmarks/aid_knn.py --steps 3 --per-class 8 --batch-size 8
    # the real budget (the lead's run)
    python benchmarks/aid_knn.py --steps 5000 --batch-size 128 --num-workers 8
"""

import argparse
import json
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR
from torchgeo.tasks import MAE

from torchgeo_scalemae.datamodules import ImageFolderGSDDataModule
from torchgeo_scalemae.evaluation.report import (
    ScaleResult,
    format_gsd,
    plot_accuracy_vs_gsd,
)
from torchgeo_scalemae.tasks import MultiScaleKNN, ScaleMAEPretraining

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data' / 'aid150'
MAE_MODEL = 'aid_bench_vit_patch16'


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warmup over ``warmup`` steps, then half-cycle cosine to 0."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only (no biases, norms, tokens, position tables)."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(('cls_token', 'mask_token', 'pos_embed')):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {'params': decay, 'weight_decay': weight_decay},
        {'params': no_decay, 'weight_decay': 0.0},
    ]


class BudgetMAE(MAE):
    """TorchGeo's MAE with the benchmark's per-step warmup + cosine AdamW schedule."""

    def __init__(
        self, *args: Any, total_steps: int = 1, warmup_steps: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.total_steps = total_steps
        self.warmup = warmup_steps

    def configure_optimizers(self) -> Any:
        optimizer = AdamW(
            adamw_groups(self, self.hparams['weight_decay']),
            lr=self.hparams['lr'],
            betas=(0.9, 0.95),
        )
        schedule = partial(warmup_cosine, warmup=self.warmup, total=self.total_steps)
        return {
            'optimizer': optimizer,
            'lr_scheduler': {
                'scheduler': LambdaLR(optimizer, schedule),
                'interval': 'step',
            },
        }


def register_mae_encoder(args: argparse.Namespace) -> None:
    """A timm name for the plain ViT with the benchmark's size (MAE takes a name)."""

    def aid_bench_vit_patch16(
        pretrained: bool = False, **kwargs: Any
    ) -> VisionTransformer:
        config = {
            'img_size': args.input_size,
            'patch_size': 16,
            'embed_dim': args.embed_dim,
            'depth': args.depth,
            'num_heads': args.heads,
            'mlp_ratio': 4.0,
            'qkv_bias': True,
            'norm_layer': partial(torch.nn.LayerNorm, eps=1e-6),
        }
        for key in ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir'):
            kwargs.pop(key, None)  # timm's factory bookkeeping
        return VisionTransformer(**{**config, **kwargs})

    aid_bench_vit_patch16.__module__ = __name__
    from timm.models import is_model

    if not is_model(MAE_MODEL):
        register_model(aid_bench_vit_patch16)


def datamodule(args: argparse.Namespace, batch_size: int) -> ImageFolderGSDDataModule:
    return ImageFolderGSDDataModule(
        root=str(args.data),
        gsd=args.gsd,
        batch_size=batch_size,
        num_workers=args.num_workers,
        val_split_pct=0.0,
        test_split_pct=args.test_pct,
        seed=0,
        max_per_class=args.per_class,
    )


def trainer(args: argparse.Namespace, name: str) -> Trainer:
    return Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.steps,
        max_epochs=-1,
        limit_val_batches=0,
        logger=CSVLogger(str(args.out), name=name),
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=max(1, min(50, args.steps)),
        precision=args.precision,
    )


def pretrain_scalemae(args: argparse.Namespace) -> Path:
    task = ScaleMAEPretraining(
        model='scalemae_pretrain_vit_tiny_patch16',
        input_size=args.input_size,
        reference_gsd=args.reference_gsd,
        lr=args.lr,
        weight_decay=0.05,
        warmup_steps=args.warmup_steps,
        image_log_interval=0,
        model_kwargs={
            'embed_dim': args.embed_dim,
            'depth': args.depth,
            'num_heads': args.heads,
            'img_size': args.input_size,
        },
    )
    fit = trainer(args, 'scalemae')
    fit.fit(task, datamodule=datamodule(args, args.batch_size))
    path = args.out / 'scalemae.ckpt'
    fit.save_checkpoint(path)
    return path


def pretrain_mae(args: argparse.Namespace) -> Path:
    task = BudgetMAE(
        model=MAE_MODEL,
        size=args.input_size,
        lr=args.lr,
        weight_decay=0.05,
        decoder_dim=args.mae_decoder_dim,
        decoder_depth=3,
        decoder_num_heads=4,
        total_steps=args.steps,
        warmup_steps=args.warmup_steps,
    )
    fit = trainer(args, 'mae')
    fit.fit(task, datamodule=datamodule(args, args.batch_size))
    path = args.out / 'mae.ckpt'
    fit.save_checkpoint(path)
    return path


def evaluate(
    args: argparse.Namespace, method: str, weights: str | None, pool: str
) -> list[ScaleResult]:
    kwargs = {'embed_dim': args.embed_dim, 'depth': args.depth, 'num_heads': args.heads}
    if method == 'mae':
        model, kwargs = MAE_MODEL, {**kwargs, 'img_size': args.input_size}
    else:  # a ScaleMAEEncoder of the benchmark's size
        model, kwargs = 'scalemae_vit', {**kwargs, 'patch_size': 16}
    seed_everything(0)
    task = MultiScaleKNN(
        model=model,
        weights=weights,
        model_kwargs=kwargs,
        scales=args.scales,
        k=args.k,
        temperature=0.07,
        reference_gsd=args.reference_gsd,
        pool=pool,
        save_plot=False,
    )
    test = Trainer(
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(args.out),
    )
    test.test(task, datamodule=datamodule(args, args.eval_batch_size))
    return task.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--out', type=Path, default=REPO / 'outputs' / 'aid_knn')
    parser.add_argument(
        '--steps',
        type=int,
        default=2000,
        help='optimiser steps per method (the budget)',
    )
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--eval-batch-size', type=int, default=128)
    parser.add_argument(
        '--input-size',
        type=int,
        default=64,
        help='pretraining input S (target 2S for Scale-MAE)',
    )
    parser.add_argument(
        '--lr', type=float, default=1.5e-3, help='peak learning rate (all methods)'
    )
    parser.add_argument(
        '--warmup-steps', type=int, default=None, help='default: 5%% of --steps'
    )
    parser.add_argument('--embed-dim', type=int, default=192)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--heads', type=int, default=3)
    parser.add_argument(
        '--mae-decoder-dim',
        type=int,
        default=32,
        help="MAE decoder width (Scale-MAE tiny's is 32)",
    )
    parser.add_argument(
        '--scales', type=float, nargs='+', default=[150, 112, 75, 48, 32]
    )
    parser.add_argument('--k', type=int, default=20)
    parser.add_argument(
        '--gsd', type=float, default=8.0, help='nominal GSD of the 150-px scenes, m'
    )
    parser.add_argument('--reference-gsd', type=float, default=1.0)
    parser.add_argument(
        '--per-class',
        type=int,
        default=None,
        help='images per class (subset); default all',
    )
    parser.add_argument('--test-pct', type=float, default=0.2)
    parser.add_argument(
        '--methods',
        nargs='+',
        default=['random', 'scalemae', 'mae'],
        choices=['random', 'scalemae', 'mae'],
    )
    parser.add_argument(
        '--pool',
        nargs='+',
        default=['token'],
        choices=['token', 'mean'],
        help='kNN feature: class token after the final norm and/or mean of the '
        'patch tokens (each is a column)',
    )
    parser.add_argument(
        '--reuse',
        action='store_true',
        help='evaluate the checkpoints already in --out instead of pretraining again',
    )
    parser.add_argument('--accelerator', default='auto')
    parser.add_argument('--precision', default='32-true')
    parser.add_argument('--num-workers', type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(
            f'--data {args.data} is not a folder (expected the aid150 class folders)'
        )
    if args.warmup_steps is None:
        args.warmup_steps = max(1, round(0.05 * args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    register_mae_encoder(args)

    timings: dict[str, float] = {}
    curves: dict[str, list[ScaleResult]] = {}
    for method in args.methods:
        seed_everything(0)
        start = time.perf_counter()
        weights = None
        if method != 'random':
            checkpoint = args.out / f'{method}.ckpt'
            if not (args.reuse and checkpoint.exists()):
                pretrain = pretrain_scalemae if method == 'scalemae' else pretrain_mae
                checkpoint = pretrain(args)
                timings[f'{method}_pretrain_s'] = time.perf_counter() - start
            weights = str(checkpoint)
        for pool in args.pool:
            start = time.perf_counter()
            name = method if len(args.pool) == 1 else f'{method}/{pool}'
            curves[name] = evaluate(args, method, weights, pool)
            timings[f'{name}_knn_s'] = time.perf_counter() - start

    first = next(iter(curves.values()))
    width = max(9, *(len(m) for m in curves))
    header = f'{"size":>7} {"GSD (m)":>8} ' + ' '.join(f'{m:>{width}}' for m in curves)
    lines = [header, '-' * len(header)]
    for i, r in enumerate(first):
        accs = ' '.join(
            f'{100 * curves[m][i].accuracy:>{width - 1}.2f}%' for m in curves
        )
        lines.append(f'{r.size:>7} {format_gsd(r.gsd):>8} {accs}')
    means = ' '.join(
        f'{100 * sum(r.accuracy for r in rs) / len(rs):>{width - 1}.2f}%'
        for rs in curves.values()
    )
    lines.append(f'{"mean":>7} {"":>8} {means}')
    table = '\n'.join(lines)
    budget = (
        f'AID150 multi-scale kNN (k={args.k}, T=0.07): encoder ViT {args.embed_dim}-d x '
        f'{args.depth}, {args.heads} heads, patch 16; {args.steps} steps x batch '
        f'{args.batch_size} at {args.input_size} px, peak lr {args.lr}, '
        f'reference GSD {args.reference_gsd} m (nominal AID GSD {args.gsd} m at 150 '
        f'px); bank {first[0].num_bank}, queries {first[0].num_queries}'
    )
    print(budget)
    print(table)

    with open(args.out / 'results.csv', 'w') as f:
        f.write('method,scale,height,width,gsd_m,res,accuracy,num_queries,num_bank\n')
        for method, results in curves.items():
            for r in results:
                f.write(
                    f'{method},{r.scale:g},{r.height},{r.width},{r.gsd:.6g},{r.res:.6g},'
                    f'{r.accuracy:.6f},{r.num_queries},{r.num_bank}\n'
                )
    plot_accuracy_vs_gsd(
        curves, args.out / 'accuracy_vs_gsd.png', title='AID150 kNN vs GSD'
    )
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.update(
        timings=timings, torch=torch.__version__, device=str(args.accelerator)
    )
    (args.out / 'config.json').write_text(json.dumps(config, indent=2))
    (args.out / 'table.txt').write_text(budget + '\n' + table + '\n')
    print(f'wrote {args.out}/results.csv, accuracy_vs_gsd.png, table.txt, config.json')


if __name__ == '__main__':
    os.environ.setdefault('MPLBACKEND', 'agg')
    main()
