# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Training-step throughput and peak memory: Scale-MAE vs TorchGeo's ``MAE`` task.

Times full training steps (the task's ``training_step`` incl. its on-device
augmentation, forward, loss, backward and an AdamW step) of

* ``scalemae``: :class:`torchgeo_scalemae.tasks.ScaleMAEPretraining` with the
  recipe decoder (512-d, depth 3, FPN, two Laplacian heads with fcn 512 x 2);
* ``mae``: TorchGeo's own :class:`torchgeo.tasks.MAE` (lightly blocks) with the same
  encoder size (timm ``vit_<size>_patch16``), the same input size ``S``, batch and
  mask ratio, and the MAE paper's decoder (512-d, depth 8, 16 heads);
* ``scalemae_minimal``: Scale-MAE with a *minimal* bandpass decoder: same
  transformer decoder and upsampling, but Laplacian heads without feature-mapping
  blocks (``fcn_layers=0``) and 64 channels instead of 512 (``fcn_dim=64``; 8
  instead of 32 for ``tiny``), i.e.
  the least decoder that still predicts both bands at ``S`` and ``2S``. The ratio
  scalemae / scalemae_minimal is the cost of the recipe's heads.

All variants get the same raw batch ``(B, 3, 2S, 2S)`` with a per-sample ``gsd``;
Scale-MAE crops it to a ``2S`` target and an ``S`` input, MAE crops it to ``S``.
Each variant runs in a fresh subprocess so peak memory is its own: the peak during
the training steps above what the weights and the (pre-allocated) AdamW state hold,
i.e. activations, gradients and temporaries. On CUDA from ``max_memory_allocated``;
on CPU (Linux) from the growth of ``VmHWM`` over ``VmRSS`` after freeing the heap
(``malloc_trim``) and resetting the high-water mark (``/proc/self/clear_refs``),
elsewhere from the growth of ``ru_maxrss``; coarser than CUDA's (page granularity). FLOPs are counted once per
variant with :class:`torch.utils.flop_counter.FlopCounterMode` (matmul/conv only,
2 x MAC) on the forward pass and tripled for forward + backward (the usual
model-FLOP convention), so ``GFLOP/s`` is the achieved model FLOP rate.

Example::

    python benchmarks/pretrain_throughput.py --size base --batch 4 --steps 5
    python benchmarks/pretrain_throughput.py --size large --device cuda --bf16 \\
        --batch 64 --steps 20 --compile
"""

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from _peak_memory import cpu_peak_end, cpu_peak_start

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Encoder sizes: (Scale-MAE builder suffix, timm encoder for the MAE task, timm kwargs).
SIZES: dict[str, tuple[str, str, dict[str, Any]]] = {
    'tiny': (
        'vit_tiny_patch16',
        'vit_tiny_patch16_224',
        {'embed_dim': 64, 'depth': 2, 'num_heads': 4},
    ),
    'base': ('vit_base_patch16', 'vit_base_patch16_224', {}),
    'large': ('vit_large_patch16', 'vit_large_patch16_224', {}),
}

#: Decoder of TorchGeo's MAE per size: (width, depth, heads). base/large: the MAE
#: paper's 512-d x 8 blocks; tiny (a smoke-test size): scaled like the tiny
#: Scale-MAE decoder (32-d x 3 blocks).
MAE_DECODER: dict[str, tuple[int, int, int]] = {
    'tiny': (32, 3, 4),
    'base': (512, 8, 16),
    'large': (512, 8, 16),
}

#: Decoder kwargs of the minimal Scale-MAE decoder (see the module docstring); the
#: tiny size's heads are 32 wide, so its minimal heads are 8 wide.
MINIMAL_DECODER: dict[str, dict[str, Any]] = {
    'tiny': {'fcn_layers': 0, 'fcn_dim': 8},
    'base': {'fcn_layers': 0, 'fcn_dim': 64},
    'large': {'fcn_layers': 0, 'fcn_dim': 64},
}

VARIANTS = ('scalemae', 'mae', 'scalemae_minimal')


def _nolog(*args: Any, **kwargs: Any) -> None:
    """Replace ``LightningModule.log`` (no trainer in the benchmark)."""


def _build(variant: str, args: argparse.Namespace) -> tuple[Any, Callable[..., Any]]:
    """Return (task, step function taking a batch and returning the loss)."""
    suffix, timm_name, timm_kwargs = SIZES[args.size]
    size = args.input_size
    if variant.startswith('scalemae'):
        from torchgeo_scalemae.tasks import ScaleMAEPretraining

        model_kwargs: dict[str, Any] = {}
        if variant == 'scalemae_minimal':
            model_kwargs.update(MINIMAL_DECODER[args.size])
        task = ScaleMAEPretraining(
            model=f'scalemae_pretrain_{suffix}',
            input_size=size,
            mask_ratio=args.mask_ratio,
            lr=1.5e-4,
            image_log_interval=0,
            nan_check_interval=0,
            atomic_checkpoints=False,
            compile=args.compile,
            model_kwargs=model_kwargs,
        )
    else:
        import timm
        from torchgeo.tasks import mae as mae_module

        real_create = timm.create_model

        def create(name: str, **kw: Any) -> Any:
            return real_create(name, img_size=size, **timm_kwargs, **kw)

        mae_module.timm.create_model = create  # type: ignore[attr-defined]
        width, depth, heads = MAE_DECODER[args.size]
        if args.mae_decoder_depth:
            depth = args.mae_decoder_depth
        try:
            task = mae_module.MAE(
                model=timm_name,
                size=size,
                mask_ratio=args.mask_ratio,
                decoder_dim=width,
                decoder_depth=depth,
                decoder_num_heads=heads,
            )
        finally:
            mae_module.timm.create_model = real_create  # type: ignore[attr-defined]
        if args.compile:
            task.backbone.compile()
            task.decoder.compile()
    task.log = _nolog  # type: ignore[method-assign]
    task.train()

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss: torch.Tensor = task.training_step(batch, 0)
        return loss

    return task, step


def _run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    task, step = _build(variant, args)
    task.to(device)
    from torchgeo_scalemae.tasks._optim import param_groups

    optimizer = torch.optim.AdamW(
        param_groups(task.named_parameters(), 0.05),
        lr=1e-4,
        betas=(0.9, 0.95),
        fused=device.type == 'cuda',
    )
    n = args.batch
    big = 2 * args.input_size
    batch = {
        'image': torch.rand(n, 3, big, big, device=device),
        'gsd': torch.linspace(0.3, 10.0, n, device=device),
    }
    autocast: Callable[[], AbstractContextManager[Any]]
    if args.bf16:

        def autocast() -> AbstractContextManager[Any]:
            return torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = nullcontext

    def train_step() -> None:
        with autocast():
            loss = step(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize()

    # allocate the AdamW state now, so that the memory measured below is the step's
    # own (activations, gradients, temporaries), not the weights' or optimiser's
    for p in task.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
        method = 'cuda'
    else:
        method, base_mem = cpu_peak_start()

    for _ in range(args.warmup):
        train_step()
    sync()
    # model FLOPs of one step = 3 x forward (the usual MFU convention: the backward
    # costs twice the forward); the forward is counted, not the backward, because
    # torch's counter charges depthwise-convolution backward as if it were dense
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, autocast(), torch.no_grad():
        step(batch)
    flops = 3 * counter.get_total_flops()
    sync()

    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        train_step()
        sync()
        times.append(time.perf_counter() - t0)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base_mem
    else:
        peak = cpu_peak_end(method, base_mem)
    step_s = statistics.median(times)
    params = sum(p.numel() for p in task.parameters())
    return {
        'variant': variant,
        'params_M': params / 1e6,
        'step_s': step_s,
        'img_per_s': n / step_s,
        'gflop_per_step': flops / 1e9,
        'tflop_per_s': flops / step_s / 1e12,
        'peak_mem_MB': peak / 2**20,
        'peak_mem_MB_per_img': peak / 2**20 / n,
    }


def _worker(variant: str, args: argparse.Namespace, queue: Any) -> None:
    warnings.filterwarnings('ignore')
    try:
        queue.put(_run_variant(variant, args))
    except Exception as err:  # noqa: BLE001 (report instead of hanging the parent)
        queue.put({'variant': variant, 'error': f'{type(err).__name__}: {err}'})


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', choices=sorted(SIZES), default='base')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu'
    )
    parser.add_argument('--bf16', action='store_true', help='bf16 autocast')
    parser.add_argument('--compile', action='store_true', help='torch.compile')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--input-size', type=int, default=224, help='S (target 2S)')
    parser.add_argument('--mask-ratio', type=float, default=0.75)
    parser.add_argument(
        '--mae-decoder-depth', type=int, default=0, help='0: 8 (tiny: 3)'
    )
    parser.add_argument('--steps', type=int, default=5, help='timed steps')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps')
    parser.add_argument(
        '--threads', type=int, default=0, help='torch threads (0: default)'
    )
    parser.add_argument(
        '--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS)
    )
    parser.add_argument('--json', type=Path, help='also write the results here')
    args = parser.parse_args(argv)

    ctx = mp.get_context('spawn')
    results = []
    for variant in args.variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(variant, args, queue))
        proc.start()
        result = queue.get()
        proc.join()
        results.append(result)
        if 'error' in result:
            print(f'{variant}: FAILED {result["error"]}', flush=True)
        else:
            print(
                f'{variant:17s} step {result["step_s"] * 1e3:9.1f} ms  '
                f'{result["img_per_s"]:8.2f} img/s  '
                f'{result["gflop_per_step"]:9.1f} GFLOP/step  '
                f'{result["tflop_per_s"] * 1e3:9.1f} GFLOP/s  '
                f'peak {result["peak_mem_MB"]:8.0f} MB '
                f'({result["peak_mem_MB_per_img"]:.0f} MB/img)  '
                f'params {result["params_M"]:.1f}M',
                flush=True,
            )
    ok = {r['variant']: r for r in results if 'error' not in r}
    device = args.device
    if device.startswith('cuda') and torch.cuda.is_available():
        device += f' ({torch.cuda.get_device_name()})'
    else:
        device += f' ({platform.processor() or platform.machine()}, '
        device += f'{args.threads or torch.get_num_threads()} threads)'
    print(
        f'# size={args.size} S={args.input_size} target={2 * args.input_size} '
        f'batch={args.batch} mask={args.mask_ratio} bf16={args.bf16} '
        f'compile={args.compile} device={device} torch={torch.__version__}'
    )
    for num, den in (('scalemae', 'mae'), ('scalemae', 'scalemae_minimal')):
        if num in ok and den in ok:
            a, b = ok[num], ok[den]
            print(
                f'ratio {num}/{den}: step time {a["step_s"] / b["step_s"]:.2f}x, '
                f'FLOPs {a["gflop_per_step"] / b["gflop_per_step"]:.2f}x, '
                f'peak memory {a["peak_mem_MB"] / max(b["peak_mem_MB"], 1e-9):.2f}x'
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {'args': vars(args) | {'json': None}, 'results': results},
                indent=1,
                default=str,
            )
        )
    return results


if __name__ == '__main__':
    main()
