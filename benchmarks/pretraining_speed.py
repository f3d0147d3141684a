# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE pretraining speed, bf16 and memory vs TorchGeo's ``MAE``.

Every figure is a ratio of configurations measured side by side in one run:

``speed``
    One training step (forward + loss + backward + AdamW step) of our
    :class:`~torchgeo_scalemae.models.ScaleMAE` (recipe decoder: 512-d, 3 blocks,
    two Laplacian heads of width 512 with 2 feature-mapping blocks; input ``S``,
    target ``2S``) and of TorchGeo's :class:`torchgeo.tasks.MAE` task (lightly's
    timm MAE, the same encoder size, input ``S``, batch and mask ratio, and the MAE
    paper's 8-block, 512-d, 16-head decoder; TorchGeo's constructor default is a
    1-block decoder, ``--mae-decoder-depth 1 --mae-decoder-heads 8`` selects it).
    Both models live in one process and their steps alternate (A B A B ...); the
    medians are reported. Neither side runs data augmentation (the MAE task's
    kornia transform is replaced by the identity; Scale-MAE gets a ready
    input/target pair). Each model steps the AdamW its task configures
    (``--optimizer task``): torch's fused kernel for Scale-MAE
    (:class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`'s default) and torch's
    default implementation for TorchGeo's ``MAE``; the forward + backward and the
    optimiser step are also timed apart. ``--configs`` adds variants (see
    ``CONFIGS``): ``scalemae_stock`` (the stock PyTorch operators and
    full-resolution loss masks), ``scalemae_recompute`` (``recompute_heads=True``),
    ``scalemae_ckpt`` (``checkpoint_heads=True``), and ``mae_fused`` (the MAE task
    with the same fused AdamW as Scale-MAE: the like-for-like model comparison).
``bf16``
    The same Scale-MAE step under ``torch.autocast(dtype=torch.bfloat16)`` against
    float32, alternating; and the loss of both on one fixed batch (same weights,
    same masking noise) with its relative difference.
``memory``
    Peak memory of one training step per image, each configuration in its own
    spawned child process: the default model, the same model with the memory
    optimisations off (stock operators, full-resolution loss masks),
    ``recompute_heads=True``, ``checkpoint_heads=True``, and the MAE task. CPU: after a warm-up step (which
    allocates the AdamW state) the child drops the gradients, returns free heap to
    the OS (``malloc_trim``), resets its resident-set high-water mark (``5`` to
    ``/proc/self/clear_refs``) and reports ``VmHWM - VmRSS`` after the measured
    step, i.e. activations + gradients + temporaries. CUDA:
    ``max_memory_allocated`` minus the allocation before the step.
``profile``
    ``torch.profiler`` (CPU, or CPU + CUDA) of one step of each model after the
    ``--warmup`` steps: the top operators by self time.

FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` counts one forward (matmul,
convolution, attention, the CPU's fused attention kernel through the counter's own
formula; 2 x MAC) and the step is taken as 3 x forward (the usual
model-FLOP convention; the counter's own backward figure charges depthwise
convolution backward as if it were dense). ``GFLOP/s`` is model FLOPs per step /
median step time. On CUDA the model FLOP utilisation (MFU) is printed against
``--peak-tflops`` (default 989, the dense bf16 peak of an H100/H200 SXM).

Examples::

    python benchmarks/pretraining_speed.py                       # everything, CPU
    python benchmarks/pretraining_speed.py --sections speed --steps 5
    python benchmarks/pretraining_speed.py --sections memory --batch 2
    python benchmarks/pretraining_speed.py --device cuda --dtype bfloat16 \\
        --size large --batch 64 --steps 20 --compile --sections speed memory

Timing assertions never appear in tests; this script only reports.
"""

import argparse
import contextlib
import gc
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from _peak_memory import cpu_peak_end, cpu_peak_start
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Encoder sizes: timm kwargs shared by both models.
SIZES: dict[str, dict[str, int]] = {
    'tiny': {'embed_dim': 64, 'depth': 2, 'num_heads': 4},
    'base': {'embed_dim': 768, 'depth': 12, 'num_heads': 12},
    'large': {'embed_dim': 1024, 'depth': 24, 'num_heads': 16},
}
#: Scale-MAE decoder overrides for the smoke-test size (the fixtures' decoder).
TINY_DECODER = {'decoder_embed_dim': 32, 'decoder_num_heads': 4, 'fcn_dim': 32}
SECTIONS = ('speed', 'bf16', 'memory', 'breakdown', 'profile')
#: Configurations: Scale-MAE's default (speed-optimised), the memory option
#: ``recompute_heads``, head checkpointing, and the stock operators with the
#: full-resolution loss masks (all optimisations off); TorchGeo's MAE task, and the
#: same with fused AdamW (speed only).
CONFIGS = (
    'scalemae',
    'scalemae_recompute',
    'scalemae_ckpt',
    'scalemae_stock',
    'mae',
    'mae_fused',
)
MEMORY_CONFIGS = CONFIGS[:-1]


# --------------------------------------------------------------------------- models
def build_scalemae(args: argparse.Namespace, config: str = 'scalemae') -> nn.Module:
    """Scale-MAE at ``args.size``; ``config`` selects the optimisation switches."""
    from torchgeo_scalemae.models import ScaleMAE

    kwargs: dict[str, Any] = {**SIZES[args.size], 'img_size': args.input_size}
    if args.size == 'tiny':
        kwargs.update(TINY_DECODER)
    kwargs['fast_path'] = True
    if config == 'scalemae_stock':
        kwargs.update(fast_path=False, per_patch_loss=False)
    elif config == 'scalemae_ckpt':
        kwargs.update(checkpoint_heads=True)
    elif config == 'scalemae_recompute':
        kwargs.update(recompute_heads=True)
    torch.manual_seed(0)
    return ScaleMAE(mask_ratio=args.mask_ratio, **kwargs)


def build_mae(args: argparse.Namespace) -> nn.Module:
    """TorchGeo's MAE task with the same encoder size (no augmentation, no logging)."""
    import timm
    from torchgeo.tasks import mae as mae_module

    real_create = timm.create_model
    size = SIZES[args.size]

    def create(name: str, **kw: Any) -> Any:
        return real_create(name, img_size=args.input_size, **size, **kw)

    torch.manual_seed(0)
    mae_module.timm.create_model = create  # type: ignore[attr-defined]
    try:
        task = mae_module.MAE(
            model='vit_base_patch16_224',
            size=args.input_size,
            mask_ratio=args.mask_ratio,
            decoder_dim=args.mae_decoder_dim,
            decoder_depth=args.mae_decoder_depth,
            decoder_num_heads=args.mae_decoder_heads,
        )
    finally:
        mae_module.timm.create_model = real_create  # type: ignore[attr-defined]
    task.transform = nn.Identity()
    task.log = lambda *a, **k: None  # type: ignore[method-assign]
    return task


class Runner:
    """One model with its batch, optimiser and step function."""

    def __init__(
        self, name: str, args: argparse.Namespace, dtype: str | None = None
    ) -> None:
        self.name = name
        self.device = torch.device(args.device)
        self.dtype = dtype or args.dtype
        self.is_mae = name.startswith('mae')
        model = build_mae(args) if self.is_mae else build_scalemae(args, name)
        self.model = model.to(self.device).train()
        self.forward_module: Callable[..., Any] = self.model
        if args.compile:
            if self.is_mae:
                self.model.backbone.compile()
                self.model.decoder.compile()
            else:
                self.forward_module = torch.compile(self.model)
        self.optimizer_kind = self._optimizer_kind(args.optimizer)
        self.optimizer_s: list[float] = []
        kwargs: dict[str, Any] = {}
        if self.optimizer_kind != 'default':
            kwargs[self.optimizer_kind] = True
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), **kwargs
        )
        b, s = args.batch, args.input_size
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(b, 3, s, s, generator=g).to(self.device)
        self.targets = torch.randn(b, 3, 2 * s, 2 * s, generator=g).to(self.device)
        self.res = torch.linspace(1.0, 4.0, b).to(self.device)
        n = (s // 16) ** 2
        self.noise = torch.rand(b, n, generator=g).to(self.device)
        self.batch = b

    def _optimizer_kind(self, choice: str) -> str:
        """'default', 'foreach' or 'fused' for this runner."""
        if self.name == 'mae_fused':
            return 'fused'
        if choice != 'task':
            return choice
        if self.is_mae:  # TorchGeo's MAE.configure_optimizers: AdamW(...) as is
            return 'default'
        # ScaleMAEPretraining(fused_adamw=None): fused where the kernel runs
        from torchgeo_scalemae.tasks._optim import unfused_parameter

        groups = [{'params': list(self.model.parameters())}]
        return 'fused' if unfused_parameter(groups) is None else 'default'

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for this runner's dtype."""
        if self.dtype == 'bfloat16':
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss(self, fixed_noise: bool = False) -> Tensor:
        """Forward + loss (fresh random mask unless ``fixed_noise``)."""
        with self.autocast():
            if self.is_mae:
                out: Tensor = self.model.training_step({'image': self.images}, 0)
                return out
            noise = self.noise if fixed_noise else None
            result = self.forward_module(self.images, self.res, self.targets, noise)
            loss: Tensor = result.loss
            return loss

    def step(self) -> None:
        """One training step: forward, loss, backward, AdamW, zero grads."""
        self.loss().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def sync(self) -> None:
        """Wait for the device."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def timed_step(self) -> float:
        """Seconds of one synchronised step; the AdamW part goes to ``optimizer_s``."""
        self.sync()
        t0 = time.perf_counter()
        self.loss().backward()
        self.sync()
        t1 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        t2 = time.perf_counter()
        self.optimizer_s.append(t2 - t1)
        return t2 - t0

    def forward_flops(self) -> int:
        """FLOPs of one forward + loss (FlopCounterMode: matmul/conv/attention)."""
        from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

        def cpu_attention(
            query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
        ) -> int:
            flops: int = sdpa_flop_count(query, key, value)
            return flops

        # the counter knows the CUDA attention kernels but not the CPU's fused one
        counter = FlopCounterMode(
            display=False,
            custom_mapping={
                torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
                    cpu_attention
                )
            },
        )
        module = self.model
        with counter, torch.no_grad(), self.autocast():
            if self.is_mae:
                module.training_step({'image': self.images}, 0)
            else:
                module(self.images, self.res, self.targets)
        return int(counter.get_total_flops())


def interleave(
    runners: list[Runner], steps: int, warmup: int
) -> dict[str, list[float]]:
    """Alternate the runners' steps (A B A B ...); return each one's step times."""
    for _ in range(warmup):
        for r in runners:
            r.step()
    times: dict[str, list[float]] = {r.name + ':' + r.dtype: [] for r in runners}
    for _ in range(steps):
        for r in runners:
            times[r.name + ':' + r.dtype].append(r.timed_step())
    return times


def median_interval(
    values: list[float], level: float = 0.95, resamples: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (fixed seed)."""
    rng = random.Random(0)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


# --------------------------------------------------------------------------- sections
def section_speed(args: argparse.Namespace, report: dict[str, Any]) -> None:
    names = list(dict.fromkeys(['scalemae', 'mae', *args.configs]))
    runners = [Runner(n, args) for n in names]
    flops = {r.name: 3 * r.forward_flops() for r in runners}
    times = interleave(runners, args.steps, args.warmup)
    rows = {}
    for r in runners:
        t = statistics.median(times[r.name + ':' + r.dtype])
        row = {
            'step_s': t,
            'img_per_s': r.batch / t,
            'gflop_per_step': flops[r.name] / 1e9,
            'gflop_per_s': flops[r.name] / t / 1e9,
            'times_s': times[r.name + ':' + r.dtype],
            'optimizer': r.optimizer_kind,
            'optimizer_s': statistics.median(r.optimizer_s),
        }
        if r.device.type == 'cuda':
            row['mfu'] = flops[r.name] / t / (args.peak_tflops * 1e12)
        rows[r.name] = row
    report['speed'] = rows
    print(f'\n== speed: training step, dtype {args.dtype}, median of {args.steps}')
    print(
        f'{"config":18s} {"step ms":>9s} {"img/s":>6s} {"GFLOP/step":>10s} '
        f'{"GFLOP/s":>8s} {"AdamW":>7s} {"ms":>6s}'
        + (f' {"MFU":>6s}' if 'mfu' in rows['mae'] else '')
    )
    for name, row in rows.items():
        line = (
            f'{name:18s} {row["step_s"] * 1e3:9.1f} {row["img_per_s"]:6.2f} '
            f'{row["gflop_per_step"]:10.1f} {row["gflop_per_s"]:8.1f} '
            f'{row["optimizer"]:>7s} {row["optimizer_s"] * 1e3:6.1f}'
        )
        if 'mfu' in row:
            line += f' {row["mfu"] * 100:5.1f}%'
        print(line)
    s, m = rows['scalemae'], rows['mae']
    # each Scale-MAE step against the MAE step run right after it: robust to load
    # that drifts during the run
    ratios = [a / b for a, b in zip(s['times_s'], m['times_s'], strict=True)]
    paired = statistics.median(ratios)
    low, high = median_interval(ratios)
    below = sum(r <= 2.0 for r in ratios)
    fastest = min(s['times_s']) / min(m['times_s'])
    report['speed_paired_ratio'] = paired
    report['speed_paired_ratio_interval'] = [low, high]
    report['speed_fastest_ratio'] = fastest
    print(
        f'RATIO step time scalemae/mae = {s["step_s"] / m["step_s"]:.2f}x '
        f'(median of paired steps {paired:.2f}x; fastest steps '
        f'{fastest:.2f}x); FLOPs {s["gflop_per_step"] / m["gflop_per_step"]:.2f}x; '
        f'FLOP rate {s["gflop_per_s"] / m["gflop_per_s"]:.2f}x'
    )
    print(
        f'RATIO paired steps: 95 % bootstrap interval of their median '
        f'{low:.2f}-{high:.2f}x; {below} of {len(ratios)} pairs at or below 2.0x'
    )
    optimizer_s = {r.name: r.optimizer_s for r in runners}  # per timed step
    without_optimizer = statistics.median(
        (a - oa) / (b - ob)
        for a, oa, b, ob in zip(
            s['times_s'],
            optimizer_s['scalemae'],
            m['times_s'],
            optimizer_s['mae'],
            strict=True,
        )
    )
    print(
        f'RATIO forward + backward (without the optimiser step) scalemae/mae = '
        f'{without_optimizer:.2f}x (median of paired steps)'
    )
    for name in args.configs:
        if name.startswith('scalemae_'):
            other = rows[name]['step_s'] / s['step_s']
            print(f'RATIO step time {name}/scalemae = {other:.2f}x')
        elif name == 'mae_fused':
            other = s['step_s'] / rows[name]['step_s']
            pair = statistics.median(
                a / b for a, b in zip(s['times_s'], rows[name]['times_s'], strict=True)
            )
            print(
                f'RATIO step time scalemae/mae_fused = {other:.2f}x (the same fused '
                f'AdamW for both; median of paired steps {pair:.2f}x)'
            )


def section_bf16(args: argparse.Namespace, report: dict[str, Any]) -> None:
    fp32 = Runner('scalemae', args, 'float32')
    bf16 = Runner('scalemae', args, 'bfloat16')
    bf16.model.load_state_dict(fp32.model.state_dict())
    with torch.no_grad():
        loss32 = float(fp32.loss(fixed_noise=True))
        loss16 = float(bf16.loss(fixed_noise=True))
    rel = abs(loss16 - loss32) / abs(loss32)
    times = interleave([fp32, bf16], args.steps, args.warmup)
    t32 = statistics.median(times['scalemae:float32'])
    t16 = statistics.median(times['scalemae:bfloat16'])
    report['bf16'] = {
        'loss_fp32': loss32,
        'loss_bf16': loss16,
        'rel_diff': rel,
        'step_s_fp32': t32,
        'step_s_bf16': t16,
    }
    print(f'\n== bf16 autocast vs float32 (Scale-MAE), median of {args.steps}')
    print(f'step float32 {t32 * 1e3:10.1f} ms   bfloat16 {t16 * 1e3:10.1f} ms')
    print(f'fixed-batch loss float32 {loss32:.6f}  bfloat16 {loss16:.6f}')
    print(
        f'RATIO bf16 speed-up = {t32 / t16:.2f}x; loss relative difference '
        f'{rel * 100:.3f} %'
    )


def _memory_child(name: str, args: argparse.Namespace, queue: Any) -> None:
    warnings.filterwarnings('ignore')
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        r = Runner(name, args)
        r.step()  # allocates the AdamW state
        r.sync()
        gc.collect()
        if r.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(r.device)
            base = torch.cuda.memory_allocated(r.device)
            r.step()
            r.sync()
            peak = torch.cuda.max_memory_allocated(r.device) - base
            method = 'cuda max_memory_allocated'
        else:
            method, base = cpu_peak_start()
            r.step()
            peak = cpu_peak_end(method, base)
        queue.put({'name': name, 'peak_bytes': peak, 'method': method})
    except Exception as err:  # noqa: BLE001 (report instead of hanging the parent)
        queue.put({'name': name, 'error': f'{type(err).__name__}: {err}'})


def section_memory(args: argparse.Namespace, report: dict[str, Any]) -> None:
    ctx = mp.get_context('spawn')
    rows: dict[str, Any] = {}
    for name in MEMORY_CONFIGS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_child, args=(name, args, queue))
        proc.start()
        rows[name] = queue.get()
        proc.join()
    report['memory'] = rows
    print(f'\n== memory: peak of one training step, batch {args.batch}')
    for name, row in rows.items():
        if 'error' in row:
            print(f'{name:16s} FAILED {row["error"]}')
            continue
        per = row['peak_bytes'] / 2**20 / args.batch
        print(f'{name:16s} {per:9.1f} MiB per image  ({row["method"]})')
    ok = {k: v['peak_bytes'] for k, v in rows.items() if 'error' not in v}
    if 'scalemae_stock' in ok:
        stock = ok['scalemae_stock']
        for name, note in (
            ('scalemae_recompute', ' (recompute_heads=True)'),
            ('scalemae_ckpt', ' (checkpoint_heads=True)'),
            ('scalemae', ' (default, speed-first)'),
        ):
            if name in ok:
                print(
                    f'RATIO peak memory {name}/stock = {ok[name] / stock:.2f} '
                    f'({(1 - ok[name] / stock) * 100:.0f} % less){note}'
                )
    if 'scalemae' in ok and 'mae' in ok:
        print(f'RATIO peak memory scalemae/mae = {ok["scalemae"] / ok["mae"]:.2f}')


#: aten operators counted as matrix products in the ``breakdown`` section.
MATMUL_OPS = frozenset({'mm', 'addmm', 'bmm', 'baddbmm', 'matmul', 'linear'})


def _category(op: str) -> str:
    if op in MATMUL_OPS:
        return 'matrix products'
    if op.startswith(('_scaled_dot_product', '_flash_attention')):
        return 'attention'
    if 'convolution' in op:
        return 'convolutions'
    return 'elementwise and other'


def section_breakdown(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Seconds per operator category in one step of each model (CPU only)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    if args.device != 'cpu':
        print('\n== breakdown: CPU only (operators run asynchronously on a GPU)')
        return

    class Timer(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: dict[str, float] = {}

        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            t0 = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            key = _category(func.overloadpacket.__name__)
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
            return out

    rows: dict[str, dict[str, float]] = {}
    for name in ('scalemae', 'mae'):
        r = Runner(name, args)
        for _ in range(max(args.warmup, 2)):  # the allocator reaches steady state
            r.step()
        timer = Timer()
        t0 = time.perf_counter()
        with timer:
            loss = r.loss()
            loss.backward()
        t1 = time.perf_counter()
        r.optimizer.step()
        r.optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        row = dict(timer.seconds)
        row['optimizer (AdamW)'] = t2 - t1
        row['step'] = t2 - t0
        rows[name] = row
        del r
        gc.collect()
    report['breakdown'] = rows
    keys = [
        'matrix products',
        'attention',
        'convolutions',
        'elementwise and other',
        'optimizer (AdamW)',
        'step',
    ]
    print(f'\n== breakdown: seconds of one step by operator category ({args.dtype})')
    print(f'{"category":24s} {"scalemae":>9s} {"mae":>9s} {"ratio":>7s}')
    for key in keys:
        a, b = rows['scalemae'].get(key, 0.0), rows['mae'].get(key, 0.0)
        ratio = f'{a / b:6.2f}x' if b else '      -'
        print(f'{key:24s} {a:9.3f} {b:9.3f} {ratio}')
    s, m = rows['scalemae'], rows['mae']
    print(
        f'BOUND Scale-MAE matrix products alone = '
        f'{s["matrix products"] / m["step"]:.2f}x the MAE step; with its AdamW '
        f'{(s["matrix products"] + s["optimizer (AdamW)"]) / m["step"]:.2f}x '
        '(per-operator timing adds a little overhead to both)'
    )


def section_profile(args: argparse.Namespace, report: dict[str, Any]) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if args.device.startswith('cuda'):
        activities.append(ProfilerActivity.CUDA)
    sort = 'self_cuda_time_total' if len(activities) > 1 else 'self_cpu_time_total'
    report['profile'] = {}
    for name in ('scalemae', 'mae'):
        r = Runner(name, args)
        for _ in range(max(args.warmup, 1)):  # the heap grows over the first steps
            r.step()
        r.sync()
        with profile(activities=activities) as prof:
            r.step()
            r.sync()
        table = prof.key_averages().table(
            sort_by=sort, row_limit=args.profile_rows, max_name_column_width=48
        )
        report['profile'][name] = table
        print(f'\n== profile: one {name} step ({args.dtype})\n{table}')
        del r
        gc.collect()


# --------------------------------------------------------------------------- main
def machine() -> str:
    """CPU model, cores, threads and torch version (and the GPU, if used)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    text = (
        f'{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, '
        f'torch {torch.__version__}'
    )
    if torch.cuda.is_available():
        text += f', {torch.cuda.get_device_name()}'
    return text


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings of third-party code (lightning, lightly) during a section."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the selected sections and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', choices=sorted(SIZES), default='base')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--input-size', type=int, default=224, help='S (target 2S)')
    parser.add_argument('--mask-ratio', type=float, default=0.75)
    parser.add_argument('--steps', type=int, default=3, help='timed steps each')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps each')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
    parser.add_argument('--compile', action='store_true', help='torch.compile both')
    parser.add_argument('--threads', type=int, default=0, help='0: torch default')
    parser.add_argument(
        '--optimizer',
        choices=('task', 'default', 'foreach', 'fused'),
        default='task',
        help='AdamW implementation; task: what each task configures (Scale-MAE: '
        "fused; TorchGeo's MAE: torch's default); the others: that one for both",
    )
    parser.add_argument(
        '--cpu-allocator',
        choices=('retain', 'default'),
        default='retain',
        help='CPU only, both models alike: retain (keep freed memory for reuse, as '
        'ScaleMAEPretraining does on the CPU) or glibc defaults; the memory '
        'section always uses the defaults',
    )
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=SECTIONS)
    parser.add_argument(
        '--configs',
        nargs='*',
        choices=CONFIGS,
        default=[],
        help='speed: more configurations besides scalemae and mae',
    )
    parser.add_argument('--mae-decoder-dim', type=int, help='512 (tiny: 32)')
    parser.add_argument('--mae-decoder-depth', type=int, help='8 (tiny: 3)')
    parser.add_argument('--mae-decoder-heads', type=int, help='16 (tiny: 4)')
    parser.add_argument('--peak-tflops', type=float, default=989.0)
    parser.add_argument('--profile-rows', type=int, default=25)
    parser.add_argument('--json', type=Path, help='also write the results here')
    args = parser.parse_args(argv)
    # the MAE paper's decoder; for the smoke-test size, the tiny Scale-MAE's width
    mae_default = (32, 3, 4) if args.size == 'tiny' else (512, 8, 16)
    for key, value in zip(('dim', 'depth', 'heads'), mae_default, strict=True):
        if getattr(args, f'mae_decoder_{key}') is None:
            setattr(args, f'mae_decoder_{key}', value)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.input_size % 16:
        parser.error(f'--input-size must be a multiple of 16, got {args.input_size}')
    allocator = 'default'
    if args.device == 'cpu' and args.cpu_allocator == 'retain':
        from torchgeo_scalemae.cpu_memory import retain_freed_cpu_memory

        allocator = 'retain' if retain_freed_cpu_memory() else 'default (not glibc)'
    report: dict[str, Any] = {'args': {k: str(v) for k, v in vars(args).items()}}
    report['machine'] = machine()
    report['cpu_allocator'] = allocator
    print(
        f'# {report["machine"]}\n# size={args.size} S={args.input_size} '
        f'target={2 * args.input_size} batch={args.batch} mask={args.mask_ratio} '
        f'dtype={args.dtype} compile={args.compile} device={args.device} '
        f'MAE decoder {args.mae_decoder_dim}-d x {args.mae_decoder_depth} blocks '
        f'cpu allocator {allocator}'
    )
    funcs = {
        'speed': section_speed,
        'bf16': section_bf16,
        'memory': section_memory,
        'breakdown': section_breakdown,
        'profile': section_profile,
    }
    for section in args.sections:
        with quiet():
            funcs[section](args, report)
        gc.collect()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == '__main__':
    main()
