# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale kNN and linear probe on real AID scenes: random vs Scale-MAE vs MAE.

Pretrains the **same small ViT encoder** (``--embed-dim``/``--depth``/``--heads``,
patch 16, or the encoder of ``--recipe``) with the **same budget** in two ways, then
evaluates each encoder, and the random initialisation, at several scales:

* ``random``: no pretraining (the Scale-MAE encoder at its random initialisation);
* ``scalemae``: :class:`torchgeo_scalemae.tasks.ScaleMAEPretraining` (GSD encoding,
  band-pass decoder, input ``S`` and target ``2S``); with ``--recipe`` its
  ``model.init_args`` and the data's ``batch_size``/``mean``/``std`` come from that
  YAML file (e.g. ``configs/pretrain/folder_small_cpu.yaml``), otherwise the
  ``reference`` preset with the tiny decoder;
* ``mae``: TorchGeo's own :class:`torchgeo.tasks.MAE` (lightly's MAE, a plain timm
  ViT with a fixed sine-cosine position table, per-patch normalised targets, its
  default augmentation at ``S``), with its per-epoch LR schedule replaced by the same
  per-step warmup and cosine.

**Budget.** ``--steps N`` gives every method N optimiser steps; ``--minutes M`` gives
every method M minutes of wall-clock training (Lightning's ``max_time``), with the
cosine following the time, so that a method with cheaper steps takes more of them.
Both methods get the same batch size, peak learning rate, AdamW (0.9, 0.95) and
weight decay 0.05.

**Evaluation.** For each scale in ``--scales`` (pixels, rounded to the nearest
multiple of the 16-px patch: 150 -> 144, 75 -> 80) bank and queries are resized
(antialiased bilinear) with their GSD updated; the Scale-MAE encoders get ``res =
gsd / reference_gsd``, the MAE encoder resamples its position table. Features are
the mean of the patch tokens (``mean``) and/or the class token after the final norm
(``token``), ``--pool``. kNN: k = 20, ``exp(sim / 0.07)`` votes (the reference's
``mae/eval/knn.py``). ``--probe``: a linear probe, multinomial logistic regression on
the standardised frozen features of the bank (L-BFGS, L2 penalty ``--probe-l2``),
scored on the queries.

**Learning curve.** ``--curve-every K`` saves a checkpoint every K minutes of
pretraining and evaluates each by mean kNN over the scales; the curve (accuracy
against pretraining minutes, random initialisation at 0) is ``learning_curve.csv``
and ``learning_curve.png``.

Data: ``../shared/data/aid150`` (all 10,000 AID scenes at 150 px, 30 classes; read in
place, never copied) through
:class:`~torchgeo_scalemae.datamodules.ImageFolderGSDDataModule`, split at random
(seed 0) into a training part (pretraining images and the kNN bank) and a test part
(queries, ``--test-pct``). AID has no per-image GSD: 0.5-8 m at 600 px, so 2-32 m at
150 px; ``--gsd`` (default 8 m, the geometric middle) is a nominal value.

Outputs in ``--out``: ``results.csv`` (method, feature, evaluation, scale, size,
GSD, accuracy), ``accuracy_vs_gsd.png``, ``table.txt``, ``config.json`` (the budget,
steps taken and timings) and the checkpoints.

Examples::

    # minimal smoke run (a few steps, a subset)
    python benchmarks/aid_knn.py --steps 3 --per-class 8 --batch-size 8
    # the small CPU recipe against MAE at equal wall-clock, with a curve and a probe
    python benchmarks/aid_knn.py --recipe configs/pretrain/folder_small_cpu.yaml \\
        --minutes 30 --curve-every 10 --probe --pool mean token
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
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import CSVLogger
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR
from torchgeo.tasks import MAE

from torchgeo_scalemae.datamodules import ImageFolderGSDDataModule
from torchgeo_scalemae.evaluation.backbone import build_encoder, load_encoder_weights
from torchgeo_scalemae.evaluation.knn import knn_accuracy
from torchgeo_scalemae.evaluation.report import (
    ScaleResult,
    format_gsd,
    plot_accuracy_vs_gsd,
)
from torchgeo_scalemae.evaluation.scales import resize_to_scale
from torchgeo_scalemae.gsd import gsd_to_res
from torchgeo_scalemae.models import ScaleMAEEncoder
from torchgeo_scalemae.tasks import ScaleMAEPretraining

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data' / 'aid150'
MAE_MODEL = 'aid_bench_vit'


def warmup_cosine(
    step: int, warmup: int, total: int, time_fraction: Any = None
) -> float:
    """LR factor: linear warmup over ``warmup`` steps, then half-cycle cosine to 0.

    With ``time_fraction`` (a callable giving the spent fraction of a time budget),
    the cosine follows the larger of the step and time fractions.
    """
    progress = (step - warmup) / max(1, total - warmup) if total > 0 else 0.0
    if time_fraction is not None:
        progress = max(progress, time_fraction())
    progress = min(1.0, max(0.0, progress))
    factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < warmup:
        factor *= step / max(1, warmup)
    return factor


def timer_fraction(trainer: Trainer) -> Any:
    """Callable: fraction of ``trainer.max_time`` spent (None without one)."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, Timer) and callback.time_remaining('train') is not None:

            def fraction(timer: Timer = callback) -> float:
                elapsed = timer.time_elapsed('train')
                remaining = timer.time_remaining('train') or 0.0
                return elapsed / max(1e-9, elapsed + max(0.0, remaining))

            return fraction
    return None


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
    """TorchGeo's MAE with the benchmark's per-step (or timed) warmup + cosine."""

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
        schedule = partial(
            warmup_cosine,
            warmup=self.warmup,
            total=self.total_steps,
            time_fraction=timer_fraction(self.trainer),
        )
        return {
            'optimizer': optimizer,
            'lr_scheduler': {
                'scheduler': LambdaLR(optimizer, schedule),
                'interval': 'step',
            },
        }


class CurveCheckpoints(Callback):
    """Save a checkpoint every ``minutes`` of training, recording the time."""

    def __init__(self, folder: Path, minutes: float) -> None:
        self.folder = folder
        self.interval = 60.0 * minutes
        self.saved: list[tuple[float, int, Path]] = []
        self._start = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any
    ) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed >= self.interval * (len(self.saved) + 1):
            path = self.folder / f'step{trainer.global_step:06d}.ckpt'
            trainer.save_checkpoint(path)
            self.saved.append((elapsed / 60, trainer.global_step, path))


def register_mae_encoder(args: argparse.Namespace) -> None:
    """A timm name for the plain ViT with the benchmark's size (MAE takes a name)."""

    def aid_bench_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        config = {
            'img_size': args.input_size,
            'patch_size': args.patch_size,
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

    aid_bench_vit.__module__ = __name__
    from timm.models import is_model

    if not is_model(MAE_MODEL):
        register_model(aid_bench_vit)


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
        mean=args.mean,
        std=args.std,
    )


def trainer(args: argparse.Namespace, name: str, callbacks: list[Callback]) -> Trainer:
    budget: dict[str, Any] = (
        {'max_steps': -1, 'max_time': {'seconds': round(60 * args.minutes)}}
        if args.minutes
        else {'max_steps': args.steps}
    )
    return Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_epochs=-1,
        limit_val_batches=0,
        logger=CSVLogger(str(args.out), name=name),
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=50,
        precision=args.precision,
        callbacks=callbacks,
        **budget,
    )


def scalemae_task(args: argparse.Namespace) -> ScaleMAEPretraining:
    if args.recipe_model is not None:
        kwargs = dict(args.recipe_model)
        kwargs['image_log_interval'] = 0
        return ScaleMAEPretraining(**kwargs)
    return ScaleMAEPretraining(
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
            'patch_size': args.patch_size,
            'img_size': args.input_size,
        },
    )


def pretrain(args: argparse.Namespace, method: str) -> tuple[Path, list[Any], int]:
    curve: list[Callback] = []
    if args.curve_every:
        curve.append(CurveCheckpoints(args.out / f'{method}_curve', args.curve_every))
    task: LightningModule
    if method == 'scalemae':
        task = scalemae_task(args)
    else:
        task = BudgetMAE(
            model=MAE_MODEL,
            size=args.input_size,
            lr=args.lr,
            weight_decay=0.05,
            decoder_dim=args.mae_decoder_dim,
            decoder_depth=3,
            decoder_num_heads=4,
            total_steps=-1 if args.minutes else args.steps,
            warmup_steps=args.warmup_steps,
        )
    fit = trainer(args, method, curve)
    fit.fit(task, datamodule=datamodule(args, args.batch_size))
    path = args.out / f'{method}.ckpt'
    fit.save_checkpoint(path)
    saved = curve[0].saved if curve else []  # type: ignore[attr-defined]
    return path, saved, int(fit.global_step)


def encoder_for(
    args: argparse.Namespace, method: str, weights: str | None
) -> nn.Module:
    kwargs = {'embed_dim': args.embed_dim, 'depth': args.depth, 'num_heads': args.heads}
    seed_everything(0)  # 'random' is the Scale-MAE encoder at this initialisation
    if method == 'mae':
        encoder = build_encoder(MAE_MODEL, model_kwargs={'img_size': args.input_size})
    else:
        encoder = build_encoder(
            'scalemae_vit', model_kwargs={**kwargs, 'patch_size': args.patch_size}
        )
    if weights is not None:
        load_encoder_weights(encoder, weights)
    return encoder.eval()


@torch.no_grad()
def features(
    args: argparse.Namespace, encoder: nn.Module, loader: Any, scale: float
) -> tuple[dict[str, Tensor], Tensor, Tensor, int]:
    """Both pooled features of a loader at one scale, the labels, GSDs and size."""
    pools: dict[str, list[Tensor]] = {p: [] for p in ('token', 'mean')}
    labels, gsds, size = [], [], 0
    mean = torch.as_tensor(args.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.as_tensor(args.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    for batch in loader:
        image = (batch['image'].float() - mean) / std
        resized = resize_to_scale({'image': image, 'gsd': batch['gsd']}, scale, 16)
        size = int(resized['image'].shape[-1])
        res = gsd_to_res(resized['gsd'], args.reference_gsd)
        if isinstance(encoder, ScaleMAEEncoder):
            tokens = encoder.forward_features(resized['image'], res=res)
        else:
            tokens = encoder.forward_features(resized['image'])  # type: ignore[operator]
        pools['token'].append(tokens[:, 0].float())
        pools['mean'].append(tokens[:, 1:].float().mean(dim=1))
        labels.append(batch['label'])
        gsds.append(resized['gsd'])
    return (
        {p: torch.cat(v) for p, v in pools.items()},
        torch.cat(labels),
        torch.cat(gsds),
        size,
    )


def linear_probe(
    train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, l2: float
) -> float:
    """Accuracy of a multinomial logistic regression on standardised features."""
    mu, sigma = train.mean(0), train.std(0).clamp_min(1e-6)
    x, xt = (train - mu) / sigma, (test - mu) / sigma
    classes = int(max(train_y.max(), test_y.max())) + 1
    linear = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(
        linear.parameters(), max_iter=200, line_search_fn='strong_wolfe'
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), train_y) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float((linear(xt).argmax(1) == test_y).float().mean())


def evaluate(
    args: argparse.Namespace, method: str, weights: str | None, probe: bool
) -> dict[str, list[ScaleResult]]:
    """Per (feature, evaluation) curve: kNN and optionally the linear probe."""
    encoder = encoder_for(args, method, weights)
    dm = datamodule(args, args.eval_batch_size)
    dm.setup('fit')
    dm.setup('test')
    bank_loader = torch.utils.data.DataLoader(
        dm.train_dataset, batch_size=args.eval_batch_size, num_workers=args.num_workers
    )
    query_loader = torch.utils.data.DataLoader(
        dm.test_dataset, batch_size=args.eval_batch_size, num_workers=args.num_workers
    )
    curves: dict[str, list[ScaleResult]] = {}
    for scale in args.scales:
        bank, bank_y, _, _ = features(args, encoder, bank_loader, scale)
        query, query_y, gsd, size = features(args, encoder, query_loader, scale)
        for pool in args.pool:
            scores = {
                'knn': knn_accuracy(
                    query[pool],
                    query_y,
                    bank[pool],
                    bank_y,
                    30,
                    k=args.k,
                    temperature=0.07,
                )
            }
            if probe:
                scores['probe'] = linear_probe(
                    bank[pool], bank_y, query[pool], query_y, args.probe_l2
                )
            g = float(gsd.median())
            for kind, accuracy in scores.items():
                curves.setdefault(f'{pool}/{kind}', []).append(
                    ScaleResult(
                        scale=scale,
                        height=size,
                        width=size,
                        gsd=g,
                        res=g / args.reference_gsd,
                        accuracy=accuracy,
                        num_queries=len(query_y),
                        num_bank=len(bank_y),
                    )
                )
    return curves


def mean_accuracy(results: list[ScaleResult]) -> float:
    return 100 * sum(r.accuracy for r in results) / len(results)


def load_recipe(args: argparse.Namespace) -> None:
    """Take the Scale-MAE task and data settings of a pretraining YAML file."""
    args.recipe_model = None
    if args.recipe is None:
        return
    config = yaml.safe_load(args.recipe.read_text())
    model = dict(config['model']['init_args'])
    data = dict(config.get('data', {}).get('init_args', {}))
    args.recipe_model = model
    args.batch_size = int(data.get('batch_size', args.batch_size))
    args.mean = data.get('mean', args.mean)
    args.std = data.get('std', args.std)
    args.input_size = int(model.get('input_size', args.input_size))
    args.reference_gsd = float(model.get('reference_gsd', args.reference_gsd))
    kwargs = model.get('model_kwargs') or {}
    args.embed_dim = int(kwargs.get('embed_dim', args.embed_dim))
    args.depth = int(kwargs.get('depth', args.depth))
    args.heads = int(kwargs.get('num_heads', args.heads))
    args.patch_size = int(kwargs.get('patch_size', args.patch_size))
    if model.get('lr') is not None:
        args.lr = float(model['lr'])
    if model.get('warmup_steps') is not None:
        args.warmup_steps = int(model['warmup_steps'])
    if args.minutes is None and args.steps is None:
        max_time = str(config.get('trainer', {}).get('max_time', '') or '')
        if max_time:  # DD:HH:MM:SS
            days, hours, minutes, seconds = (int(v) for v in max_time.split(':'))
            args.minutes = ((days * 24 + hours) * 60 + minutes) + seconds / 60


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--out', type=Path, default=REPO / 'outputs' / 'aid_knn')
    parser.add_argument('--recipe', type=Path, default=None, help='pretraining YAML')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument('--steps', type=int, default=None, help='optimiser steps')
    budget.add_argument(
        '--minutes', type=float, default=None, help='wall-clock training minutes'
    )
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--eval-batch-size', type=int, default=250)
    parser.add_argument('--input-size', type=int, default=64, help='input S, pixels')
    parser.add_argument('--lr', type=float, default=1.5e-3, help='peak learning rate')
    parser.add_argument(
        '--warmup-steps', type=int, default=None, help='default: 5%% of --steps or 100'
    )
    parser.add_argument('--embed-dim', type=int, default=192)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--heads', type=int, default=3)
    parser.add_argument(
        '--patch-size', type=int, default=16, help='patch size of both encoders, pixels'
    )
    parser.add_argument('--mae-decoder-dim', type=int, default=32)
    parser.add_argument(
        '--scales', type=float, nargs='+', default=[150, 112, 75, 48, 32]
    )
    parser.add_argument('--k', type=int, default=20)
    parser.add_argument('--gsd', type=float, default=8.0, help='nominal GSD, m')
    parser.add_argument('--reference-gsd', type=float, default=1.0)
    parser.add_argument('--mean', type=float, nargs='+', default=[0.0])
    parser.add_argument('--std', type=float, nargs='+', default=[255.0])
    parser.add_argument('--per-class', type=int, default=None, help='subset size')
    parser.add_argument('--test-pct', type=float, default=0.2)
    parser.add_argument(
        '--methods',
        nargs='+',
        default=['random', 'scalemae', 'mae'],
        choices=['random', 'scalemae', 'mae'],
    )
    parser.add_argument(
        '--pool', nargs='+', default=['mean'], choices=['token', 'mean']
    )
    parser.add_argument('--probe', action='store_true', help='also a linear probe')
    parser.add_argument('--probe-l2', type=float, default=1e-3)
    parser.add_argument(
        '--curve-every', type=float, default=None, help='minutes between curve points'
    )
    parser.add_argument(
        '--reuse', action='store_true', help='evaluate the checkpoints in --out'
    )
    parser.add_argument('--accelerator', default='cpu')
    parser.add_argument('--precision', default='32-true')
    parser.add_argument('--num-workers', type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f'--data {args.data} is not a folder (the aid150 class folders)')
    load_recipe(args)
    if args.steps is None and args.minutes is None:
        args.steps = 2000
    if args.warmup_steps is None:
        args.warmup_steps = max(1, round(0.05 * args.steps)) if args.steps else 100
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    register_mae_encoder(args)
    timings: dict[str, float] = {}
    steps: dict[str, int] = {}
    curves: dict[str, list[ScaleResult]] = {}
    learning: dict[str, list[tuple[float, int, float]]] = {}
    for method in args.methods:
        seed_everything(0)
        weights = None
        saved: list[Any] = []
        if method != 'random':
            checkpoint = args.out / f'{method}.ckpt'
            if not (args.reuse and checkpoint.exists()):
                start = time.perf_counter()
                checkpoint, saved, steps[method] = pretrain(args, method)
                timings[f'{method}_pretrain_s'] = time.perf_counter() - start
            weights = str(checkpoint)
        start = time.perf_counter()
        for name, results in evaluate(args, method, weights, args.probe).items():
            curves[f'{method}/{name}'] = results
        timings[f'{method}_eval_s'] = time.perf_counter() - start
        if saved:
            points = [(0.0, 0, float('nan'))]
            for minutes, step, path in saved:
                knn = evaluate(args, method, str(path), False)
                points.append(
                    (minutes, step, mean_accuracy(knn[f'{args.pool[0]}/knn']))
                )
            final = timings[f'{method}_pretrain_s'] / 60
            accuracy = mean_accuracy(curves[f'{method}/{args.pool[0]}/knn'])
            points.append((final, steps[method], accuracy))
            learning[method] = points

    first = next(iter(curves.values()))
    width = max(9, *(len(m) for m in curves))
    header = f'{"size":>7} {"GSD (m)":>8} ' + ' '.join(f'{m:>{width}}' for m in curves)
    lines = [header, '-' * len(header)]
    for i, r in enumerate(first):
        accs = ' '.join(
            f'{100 * curves[m][i].accuracy:>{width - 1}.2f}%' for m in curves
        )
        lines.append(f'{r.size:>7} {format_gsd(r.gsd):>8} {accs}')
    means = ' '.join(f'{mean_accuracy(rs):>{width - 1}.2f}%' for rs in curves.values())
    lines.append(f'{"mean":>7} {"":>8} {means}')
    table = '\n'.join(lines)
    budget_text = (
        f'{args.minutes:g} min' if args.minutes else f'{args.steps} steps'
    ) + ' of pretraining per method'
    taken = ', '.join(f'{m} {s} steps' for m, s in steps.items())
    budget = (
        f'AID150 multi-scale evaluation (kNN k={args.k}, T=0.07; linear probe L2 '
        f'{args.probe_l2:g}): encoder ViT {args.embed_dim}-d x {args.depth}, '
        f'{args.heads} heads, patch 16; {budget_text} ({taken}) x batch '
        f'{args.batch_size} at {args.input_size} px, peak lr {args.lr:g}, reference '
        f'GSD {args.reference_gsd:g} m (nominal AID GSD {args.gsd:g} m at 150 px); '
        f'bank {first[0].num_bank}, queries {first[0].num_queries}'
    )
    print(budget)
    print(table)

    with open(args.out / 'results.csv', 'w') as f:
        f.write('method,feature,evaluation,scale,height,width,gsd_m,res,accuracy\n')
        for name, results in curves.items():
            method, pool, kind = name.split('/')
            for r in results:
                f.write(
                    f'{method},{pool},{kind},{r.scale:g},{r.height},{r.width},'
                    f'{r.gsd:.6g},{r.res:.6g},{r.accuracy:.6f}\n'
                )
    plot_accuracy_vs_gsd(
        {k: v for k, v in curves.items() if k.endswith('/knn')},
        args.out / 'accuracy_vs_gsd.png',
        title='AID150 kNN vs GSD',
    )
    if learning:
        random_knn = curves.get(f'random/{args.pool[0]}/knn')
        start_acc = mean_accuracy(random_knn) if random_knn else float('nan')
        with open(args.out / 'learning_curve.csv', 'w') as f:
            f.write('method,minutes,step,mean_knn_accuracy\n')
            for method, points in learning.items():
                for minutes, step, acc in points:
                    acc = start_acc if step == 0 else acc
                    f.write(f'{method},{minutes:.2f},{step},{acc:.3f}\n')
        plot_learning_curve(learning, start_acc, args.out / 'learning_curve.png')
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.update(
        timings=timings,
        steps=steps,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    (args.out / 'config.json').write_text(json.dumps(config, indent=2, default=str))
    (args.out / 'table.txt').write_text(budget + '\n' + table + '\n')
    print(f'wrote {args.out}/results.csv, accuracy_vs_gsd.png, table.txt, config.json')


def plot_learning_curve(
    learning: dict[str, list[tuple[float, int, float]]], start: float, path: Path
) -> None:
    """Mean kNN accuracy against pretraining minutes, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method, points in learning.items():
        xs = [m for m, _, _ in points]
        ys = [start if s == 0 else a for _, s, a in points]
        ax.plot(xs, ys, 'o-', label=method)
    ax.axhline(start, color='grey', linestyle='--', label='random init')
    ax.axhline(100 / 30, color='grey', linestyle=':', label='chance')
    ax.set_ylim(bottom=0)
    ax.set_xlabel('pretraining time (minutes)')
    ax.set_ylabel('mean kNN accuracy over scales (%)')
    ax.set_title('AID150: kNN accuracy while pretraining')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    os.environ.setdefault('MPLBACKEND', 'agg')
    main()
