# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Feature-extraction throughput and peak memory: our encoder vs TorchGeo's ScaleMAE.

Both models are built at the same size, get identical weights (ours loads TorchGeo's
state dict strictly, which also checks the layout) and run ``forward_features`` on the
same batch under ``torch.inference_mode``, side by side in one run. The script prints
images per second, peak memory and the ratios ours / TorchGeo, plus the largest
difference between the two models' class tokens.

Peak memory:
- CUDA: ``torch.cuda.max_memory_allocated`` during the timed forwards, minus the
  memory allocated before them (weights and input), i.e. the activation peak.
- CPU: each model runs in its own spawned child process; after building the model and
  the input the child returns free heap memory to the OS (``malloc_trim``), resets its
  resident-set high-water mark (writing 5 to ``/proc/self/clear_refs``, Linux) and
  reports the growth of ``VmHWM`` over ``VmRSS`` during the forwards. Where the reset
  is not possible it falls back to the growth of ``ru_maxrss``, which misses peaks
  below the model-building peak. Page granularity: coarse below ~1 MB.

Usage::

    python benchmarks/encoder_throughput.py --model base --batch 4 --iters 5
    python benchmarks/encoder_throughput.py --device cuda --model large --batch 64 --dtype bfloat16
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from typing import Any

import torch
from _peak_memory import cpu_peak_end, cpu_peak_start

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KINDS = ('torchgeo', 'ours')
SIZES = {
    'tiny': {'embed_dim': 64, 'depth': 2, 'num_heads': 4},
    'base': {'embed_dim': 768, 'depth': 12, 'num_heads': 12},
    'large': {'embed_dim': 1024, 'depth': 24, 'num_heads': 16},
}


def build(kind: str, size: str, img: int) -> torch.nn.Module:
    kwargs: dict[str, Any] = {
        **SIZES[size],
        'img_size': img,
        'patch_size': 16,
        'num_classes': 0,
        'mlp_ratio': 4.0,
        'qkv_bias': True,
    }
    torch.manual_seed(0)
    from torchgeo.models.scale_mae import ScaleMAE as TorchGeoScaleMAE

    reference = TorchGeoScaleMAE(res=1.0, **kwargs)
    if kind == 'torchgeo':
        return reference.eval()
    from torchgeo_scalemae.models import ScaleMAEEncoder

    ours = ScaleMAEEncoder(res=1.0, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours.eval()


def measure(
    kind: str, args: argparse.Namespace, queue: 'mp.Queue[Any] | None' = None
) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(kind, args.model, args.img).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.img, args.img, generator=g).to(device)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16'
    )

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            out: torch.Tensor = model.forward_features(x)
        return out

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        feats = run()
    sync()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        method, base = cpu_peak_start()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        feats = run()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = cpu_peak_end(method, base)
    result = {
        'kind': kind,
        'img_per_s': args.batch / statistics.median(times),
        'median_s': statistics.median(times),
        'peak_bytes': peak,
        'cls': feats[:, 0].float().cpu(),
    }
    if queue is not None:
        # plain numbers only: a tensor would be shared through a file descriptor
        # that dies with this process
        queue.put({k: v for k, v in result.items() if k != 'cls'})
    return result


def measure_cpu_peak(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one model in a fresh process so ru_maxrss starts from that model alone."""
    ctx = mp.get_context('spawn')
    queue: mp.Queue[Any] = ctx.Queue()
    # no warm-up in the child: its first forward is measured too
    child_args = argparse.Namespace(**{**vars(args), 'warmup': 0})
    proc = ctx.Process(target=measure, args=(kind, child_args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def time_interleaved(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Time both models in one process, alternating batches (fair on a busy machine)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = {kind: build(kind, args.model, args.img).to(device) for kind in KINDS}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.img, args.img, generator=g).to(device)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16'
    )
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    feats: dict[str, torch.Tensor] = {}
    for step in range(args.warmup + args.iters):
        for kind, model in models.items():
            start = time.perf_counter()
            with torch.inference_mode(), autocast:
                feats[kind] = model.forward_features(x)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            if step >= args.warmup:
                times[kind].append(time.perf_counter() - start)
    return {
        kind: {
            'img_per_s': args.batch / statistics.median(times[kind]),
            'median_s': statistics.median(times[kind]),
            'cls': feats[kind][:, 0].float().cpu(),
        }
        for kind in KINDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(SIZES), default='base')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--img', type=int, default=224)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    print(
        f'encoder feature extraction: ViT-{args.model}/16, batch {args.batch}, '
        f'{args.img} px, {args.dtype}, device {args.device}, torch {torch.__version__}, '
        f'{args.threads} threads, median of {args.iters} interleaved batches'
    )
    results = time_interleaved(args)
    for kind in KINDS:
        if args.device == 'cpu':
            # a fresh process per model: ru_maxrss is a process-wide peak
            results[kind]['peak_bytes'] = measure_cpu_peak(kind, args)['peak_bytes']
        else:
            torch.cuda.empty_cache()
            results[kind]['peak_bytes'] = measure(kind, args)['peak_bytes']
    memory = 'CUDA max_memory_allocated' if args.device != 'cpu' else 'child VmHWM'
    for kind in KINDS:
        r = results[kind]
        print(
            f'{kind:>9}: {r["img_per_s"]:8.2f} img/s ({r["median_s"] * 1e3:8.1f} ms/batch), '
            f'peak activation memory {r["peak_bytes"] / 2**20:8.1f} MiB ({memory})'
        )
    ours, theirs = results['ours'], results['torchgeo']
    diff = (ours['cls'] - theirs['cls']).abs().max().item()
    mem_ratio = (
        ours['peak_bytes'] / theirs['peak_bytes']
        if theirs['peak_bytes']
        else float('nan')
    )
    print(
        f'ratio ours/torchgeo: throughput {ours["img_per_s"] / theirs["img_per_s"]:.3f}x, '
        f'peak memory {mem_ratio:.3f}x; max |cls difference| {diff:.2e}'
    )


if __name__ == '__main__':
    main()
