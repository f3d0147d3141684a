# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Ablations of the Scale-MAE pretraining recipe at equal wall-clock, on real AID scenes.

Each run changes one setting of a fixed baseline, pretrains a small Scale-MAE (encoder
192-d x 4 blocks, 3 heads, patch 16; decoder 32-d x 3, Laplacian heads 32-d; input 64
px, target 128 px; batch 32; AdamW (0.9, 0.95), weight decay 0.05, peak LR 1.5e-3, 20
warmup steps then a cosine over the time budget) for ``--seconds`` of wall-clock on
the CPU, in memory (no Lightning: the package's model, scale-pair transform and loss,
as :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` runs them), then reports:

* multi-scale kNN accuracy (k = 20, ``exp(sim / 0.07)`` votes; class token and mean
  of the patch tokens) at 144, 112, 80, 48 and 32 px, bank and queries resized
  (antialiased bilinear) with ``res = gsd / reference_gsd``;
* both bands' masked PSNR on 128 held-out scale pairs, beside the trivial predictors
  (each image's mean colour for the low band, zero for the high band), in the units
  of the un-normalised band targets.

Data: ``--per-class`` images of each of AID's 30 classes from ``../shared/data/aid150``
(read in place), split 80/20 at random (seed 0) into pretraining images and kNN bank,
and queries. One JSON line per run is appended to ``--results``.

Examples::

    python benchmarks/pretraining_ablations.py --tag random --random
    python benchmarks/pretraining_ablations.py --tag base --seconds 150
    python benchmarks/pretraining_ablations.py --tag normalized --seconds 150 \
        --preset normalized
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from torchgeo_scalemae.evaluation.knn import knn_accuracy
from torchgeo_scalemae.models import (
    ScaleMAE,
    ScaleMAEOutput,
    create_scalemae,
    patch_statistics,
)
from torchgeo_scalemae.transforms import ScaleMAEPair

ROOT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'aid150'
IMAGENET = (
    torch.tensor([0.485, 0.456, 0.406]) * 255,
    torch.tensor([0.229, 0.224, 0.225]) * 255,
)


def load(root: Path, per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` images of each class as uint8, shuffled (seed 0)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    imgs, labels = [], []
    for i, c in enumerate(classes):
        files = sorted((root / c).glob('*.jpg'))[:per_class]
        for f in files:
            a = np.asarray(Image.open(f).convert('RGB'))
            imgs.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
            labels.append(i)
    x = torch.stack(imgs)
    y = torch.tensor(labels)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    x, y = x[perm], y[perm]
    return x, y


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--tag', default='run')
    p.add_argument('--seconds', type=float, default=120)
    p.add_argument(
        '--steps',
        type=int,
        default=None,
        help='train for this many steps instead of --seconds (cosine over the steps)',
    )
    p.add_argument('--per-class', type=int, default=100)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--lr', type=float, default=1.5e-3)
    p.add_argument('--wd', type=float, default=0.05)
    p.add_argument('--warmup', type=int, default=20)
    p.add_argument('--norm', default='unit', choices=['unit', 'imagenet'])
    p.add_argument('--preset', default='reference')
    p.add_argument(
        '--normalize-targets', action='store_true', help='per-patch normalised targets'
    )
    p.add_argument('--high-weight', type=float, default=1.0)
    p.add_argument('--ref-gsd', type=float, default=1.0)
    p.add_argument('--gsd', type=float, default=8.0)
    p.add_argument('--mask', type=float, default=0.75)
    p.add_argument('--crop-lo', type=float, default=0.2)
    p.add_argument('--embed', type=int, default=192)
    p.add_argument('--depth', type=int, default=4)
    p.add_argument('--heads', type=int, default=3)
    p.add_argument('--patch', type=int, default=16, help='patch size, pixels')
    p.add_argument('--dec-dim', type=int, default=32)
    p.add_argument('--dec-depth', type=int, default=3)
    p.add_argument('--dec-heads', type=int, default=4)
    p.add_argument('--fcn-dim', type=int, default=32)
    p.add_argument('--fcn-layers', type=int, default=2)
    p.add_argument('--antialias', action='store_true')
    p.add_argument('--scales', type=int, nargs='+', default=[144, 112, 80, 48, 32])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--random', action='store_true', help='evaluate random init only')
    p.add_argument('--data', type=Path, default=ROOT)
    p.add_argument('--results', type=Path, default=Path('outputs/ablations.jsonl'))
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    x, y = load(args.data, args.per_class)
    n_test = round(0.2 * len(x))
    xtr, ytr, xte, yte = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    if args.norm == 'unit':
        mean, std = torch.zeros(3), torch.full((3,), 255.0)
    else:
        mean, std = IMAGENET
    mean, std = mean[None, :, None, None], std[None, :, None, None]

    def prep(u8: Tensor) -> Tensor:
        return (u8.float() - mean) / std

    model = create_scalemae(
        'scalemae_pretrain_vit_tiny_patch16',
        embed_dim=args.embed,
        depth=args.depth,
        num_heads=args.heads,
        patch_size=args.patch,
        img_size=args.size,
        decoder_embed_dim=args.dec_dim,
        decoder_depth=args.dec_depth,
        decoder_num_heads=args.dec_heads,
        fcn_dim=args.fcn_dim,
        fcn_layers=args.fcn_layers,
        loss_preset=args.preset,
        mask_ratio=args.mask,
        normalize_targets=True if args.normalize_targets else None,
    )
    pair = ScaleMAEPair(
        args.size,
        scale=(args.crop_lo, 1.0),
        antialias=args.antialias,
        align_corners=not args.antialias,
    )
    decay = [
        p
        for n, p in model.named_parameters()
        if p.ndim > 1 and not n.endswith('_token')
    ]
    other = [
        p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith('_token')
    ]
    opt = torch.optim.AdamW(
        [
            {'params': decay, 'weight_decay': args.wd},
            {'params': other, 'weight_decay': 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    steps = 0
    log = []
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    if not args.random:
        model.train()
        while True:
            elapsed = time.perf_counter() - t_start
            if args.steps is not None:
                if steps >= args.steps:
                    break
                frac = steps / args.steps
            elif elapsed >= args.seconds:
                break
            else:
                frac = elapsed / args.seconds
            if steps < args.warmup:
                f = (steps + 1) / args.warmup
            else:
                f = 0.5 * (1 + math.cos(math.pi * frac))
            for grp in opt.param_groups:
                grp['lr'] = args.lr * f
            idx = torch.randint(len(xtr), (args.batch,), generator=g)
            img = prep(xtr[idx])
            flip = torch.rand(args.batch) < 0.5
            img = torch.where(flip[:, None, None, None], img.flip(-1), img)
            gsd = torch.full((args.batch,), args.gsd)
            with torch.no_grad():
                pr = pair({'image': img, 'gsd': gsd})
            res = pr['gsd'] / args.ref_gsd
            out = model(pr['image'], res=res, targets=pr['target'])
            loss = out.loss_low + args.high_weight * out.loss_high
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps % 25 == 0:
                with torch.no_grad():
                    log.append(
                        {
                            'step': steps,
                            't': round(elapsed, 1),
                            'loss': float(loss),
                            'lo': float(out.loss_low),
                            'hi': float(out.loss_high),
                            'std_lo': float(out.pred_low.std()),
                            'std_hi': float(out.pred_high.std()),
                            'tstd_hi': float(out.target_high.std()),
                        }
                    )
                print(log[-1], flush=True)
    train_s = time.perf_counter() - t_start
    model.eval()
    enc = model.encoder
    result = dict(vars(args), steps=steps, train_s=round(train_s, 1))
    # PSNR on held-out
    with torch.no_grad():
        torch.manual_seed(123)
        img = prep(xte[:128])
        gsd = torch.full((128,), args.gsd)
        pr = pair({'image': img, 'gsd': gsd})
        out = model(pr['image'], res=pr['gsd'] / args.ref_gsd, targets=pr['target'])
        result.update(band_psnr(model, out, pr['target']))
    # kNN
    accs = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in args.scales:
            feats = {'token': [], 'mean': []}
            for part in (xtr, xte):
                ft, fm = [], []
                for i in range(0, len(part), 256):
                    b = prep(part[i : i + 256])
                    b = F.interpolate(
                        b,
                        size=(s, s),
                        mode='bilinear',
                        antialias=True,
                        align_corners=False,
                    )
                    gsd = torch.full((len(b),), args.gsd * 150 / s)
                    tokens = enc.forward_features(b, res=gsd / args.ref_gsd)
                    ft.append(tokens[:, 0])
                    fm.append(tokens[:, 1:].mean(1))
                feats['token'].append(torch.cat(ft))
                feats['mean'].append(torch.cat(fm))
            for pool in ('token', 'mean'):
                bank, query = feats[pool]
                a = knn_accuracy(query, yte, bank, ytr, 30, k=20, temperature=0.07)
                accs[f'{pool}_{s}'] = round(100 * a, 2)
    for pool in ('token', 'mean'):
        accs[f'{pool}_avg'] = round(
            sum(accs[f'{pool}_{s}'] for s in args.scales) / len(args.scales), 2
        )
    result.update(accs)
    result['eval_s'] = round(time.perf_counter() - t0, 1)
    result['log'] = log[-3:]
    print(json.dumps({k: v for k, v in result.items() if k != 'log'}, default=str))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, 'a') as f:
        f.write(json.dumps(result, default=str) + '\n')


def band_psnr(model: ScaleMAE, out: ScaleMAEOutput, target: Tensor) -> dict[str, float]:
    """Masked PSNR of both bands and of their trivial predictors, un-normalised."""
    hh = out.pred_low.shape[-1]
    tl, th = model.loss.targets(target, (hh, hh))
    p = model.patch_size
    grid = hh // p
    removed = out.mask.float().reshape(-1, 1, grid, grid)

    def mse(a: Tensor, b: Tensor) -> float:
        mm = F.interpolate(removed, size=a.shape[-2:], mode='nearest')
        return float(((a - b) ** 2 * mm).sum() / (mm.sum() * a.shape[1]))

    pred_low, pred_high = out.pred_low, out.pred_high
    if model.loss.normalize_targets:  # rescaled by the target's patch statistics
        mean, std = patch_statistics(tl, p)
        pred_low = pred_low * std + mean
        mean, std = patch_statistics(th, 2 * p)
        pred_high = pred_high * std + mean

    def psnr(v: float) -> float:
        return round(-10 * math.log10(max(v, 1e-10)), 2)

    meancol = tl.mean(dim=(2, 3), keepdim=True).expand_as(tl)
    return {
        'psnr_low': psnr(mse(pred_low, tl)),
        'psnr_low_trivial': psnr(mse(meancol, tl)),
        'psnr_high': psnr(mse(pred_high, th)),
        'psnr_high_trivial': psnr(mse(torch.zeros_like(th), th)),
    }


if __name__ == '__main__':
    main()
