# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Optimiser policy of the tasks: parameter groups, fused AdamW, LR schedules.

Private module; the public surface is the tasks of :mod:`torchgeo_scalemae.tasks`
(the pretraining task's fused AdamW and warmup-cosine schedule, the fine-tuning
tasks' layer-wise learning-rate decay and plateau schedule).
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from timm.optim import param_groups_layer_decay  # type: ignore[attr-defined]  # no __all__
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

#: Parameter-name suffixes treated as learned tokens (no weight decay by default).
TOKEN_NAMES: tuple[str, ...] = (
    'cls_token',
    'mask_token',
    'dist_token',
    'reg_token',
    'pos_embed',
)


def is_token(name: str) -> bool:
    """Return whether a parameter name denotes a learned token or embedding table.

    Args:
        name: Dotted parameter name, e.g. ``encoder.cls_token``.

    Returns:
        True if the last component is one of :data:`TOKEN_NAMES`.
    """
    return name.rsplit('.', 1)[-1] in TOKEN_NAMES


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    decay_tokens: bool = False,
) -> list[dict[str, object]]:
    """Split parameters into a decayed and a non-decayed AdamW group.

    Parameters with fewer than two dimensions (biases, norm weights and biases) are
    never decayed. Learned tokens (:func:`is_token`) are decayed only when
    ``decay_tokens`` is true (the released reference code decays them, because it
    keys the split on ``ndim`` only, reference ``main_pretrain.py``; timm's
    ``no_weight_decay`` excludes them). Frozen parameters (``requires_grad=False``)
    are left out.

    Args:
        named_parameters: ``(name, parameter)`` pairs, e.g. ``module.named_parameters()``.
        weight_decay: Decoupled weight decay of the decayed group, ``>= 0``.
        decay_tokens: Decay cls/mask/pos tokens as the reference code does.

    Returns:
        Two parameter-group dicts (``params``, ``weight_decay``, ``group_name``);
        empty groups are dropped.

    Raises:
        ValueError: If ``weight_decay`` is negative or not finite.
    """
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f'weight_decay must be finite and >= 0, got {weight_decay!r}')
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or (is_token(name) and not decay_tokens):
            no_decay.append(param)
        else:
            decay.append(param)
    groups: list[dict[str, object]] = []
    if decay:
        groups.append(
            {'params': decay, 'weight_decay': weight_decay, 'group_name': 'decay'}
        )
    if no_decay:
        groups.append(
            {'params': no_decay, 'weight_decay': 0.0, 'group_name': 'no_decay'}
        )
    return groups


def check_layer_decay(layer_decay: float | None) -> None:
    """Raise unless ``layer_decay`` is None or in ``(0, 1]``.

    Args:
        layer_decay: Layer-wise learning-rate decay factor of a fine-tuning task.

    Raises:
        ValueError: If it is out of range (the message names it).
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f'layer_decay must be in (0, 1], got {layer_decay!r}')


def layer_decay_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    top_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Layer-wise lr-decay parameter groups (timm's), with absolute learning rates.

    :func:`timm.optim.param_groups_layer_decay` gives block ``i`` of ``L`` the
    scale ``layer_decay ** (L + 1 - i)`` (``model.no_weight_decay()`` and
    parameters with fewer than two dimensions not decayed); every group here gets
    ``lr * (scale * top_scale)``. ``top_scale`` below 1 moves the whole encoder one
    step down, for models whose top layer (a decoder) is not part of *model*
    (BEiT and MAE segmentation). Frozen parameters and empty groups are left out.

    Args:
        model: The encoder (a timm Vision Transformer).
        lr: Learning rate at scale 1.
        weight_decay: AdamW weight decay of the decayed groups.
        layer_decay: Decay factor in ``(0, 1]``.
        top_scale: Extra factor of every group's scale.

    Returns:
        AdamW parameter groups (``params``, ``lr``, ``weight_decay``...).
    """
    no_wd: set[str] = getattr(model, 'no_weight_decay', set)()
    groups: list[dict[str, Any]] = param_groups_layer_decay(
        model,
        weight_decay=weight_decay,
        no_weight_decay_list=no_wd,
        layer_decay=layer_decay,
    )
    for group in groups:
        group['params'] = [p for p in group['params'] if p.requires_grad]
        group['lr'] = lr * (group.pop('lr_scale', 1.0) * top_scale)
    return [g for g in groups if g['params']]


def plateau_schedule(
    optimizer: Optimizer, patience: int, monitor: str
) -> dict[str, Any]:
    """Lightning's optimiser configuration with a ReduceLROnPlateau schedule.

    Args:
        optimizer: The optimiser.
        patience: Epochs without improvement of *monitor* before the lr drops.
        monitor: The logged metric watched by the schedule.

    Returns:
        ``{'optimizer': ..., 'lr_scheduler': {'scheduler': ..., 'monitor': ...}}``.
    """
    scheduler = ReduceLROnPlateau(optimizer, patience=patience)
    return {
        'optimizer': optimizer,
        'lr_scheduler': {'scheduler': scheduler, 'monitor': monitor},
    }


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types on which torch's fused optimiser kernels run.

    Returns:
        Device type names, e.g. ``('cuda', 'cpu', ...)``.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - a torch without the helper
        return ('cpu', 'cuda')
    return tuple(_get_fused_kernels_supported_devices())


def unfused_parameter(groups: Iterable[dict[str, Any]]) -> torch.Tensor | None:
    """The first parameter that torch's fused AdamW kernel cannot update, if any.

    Args:
        groups: Parameter groups (dicts with a ``params`` list).

    Returns:
        A parameter that is not a floating-point tensor on a device of
        :func:`fused_kernel_devices`, or None when all of them are.
    """
    devices = fused_kernel_devices()
    for group in groups:
        for param in group['params']:
            if not (torch.is_floating_point(param) and param.device.type in devices):
                return param  # type: ignore[no-any-return]
    return None


def use_fused_adamw(
    requested: bool | None, groups: list[dict[str, Any]], trainer: Any
) -> bool:
    """Decide whether AdamW runs torch's fused kernel (``fused=True``).

    The fused kernel computes the same update as torch's default implementation
    (rounded differently) in one kernel per step. It needs every trainable
    parameter to be a floating-point tensor on a device of
    :func:`fused_kernel_devices`, and Lightning refuses gradient clipping with a
    gradient scaler (``precision='16-mixed'``) for an optimiser that unscales its
    gradients itself.

    Args:
        requested: The task's ``fused_adamw``: None (fused when possible), True
            (fused, or an error) or False (torch's default implementation).
        groups: The parameter groups.
        trainer: The trainer (its precision plugin's ``scaler`` and
            ``gradient_clip_val`` are read).

    Returns:
        Whether to pass ``fused=True``.

    Raises:
        ValueError: If ``requested`` is True where the kernel cannot be used.
    """
    scaled_clipping = getattr(
        trainer.precision_plugin, 'scaler', None
    ) is not None and bool(trainer.gradient_clip_val)
    unfused = unfused_parameter(groups)
    if requested is None:
        return unfused is None and not scaled_clipping
    if requested and unfused is not None:
        raise ValueError(
            'fused_adamw=True needs floating-point parameters on one of the '
            f'devices {list(fused_kernel_devices())}, but a parameter of shape '
            f'{tuple(unfused.shape)} is {unfused.dtype} on {unfused.device}; '
            'set fused_adamw=False or None'
        )
    if requested and scaled_clipping:
        raise ValueError(
            'fused_adamw=True cannot be combined with gradient clipping '
            f'(gradient_clip_val={trainer.gradient_clip_val!r}) under a '
            "gradient scaler (precision='16-mixed'): the fused step unscales the "
            'gradients itself; set fused_adamw=False or None, or use bf16-mixed'
        )
    return bool(requested)


def infer_batch_size(trainer: Any) -> int:
    """The per-process batch size of a run, for the learning-rate scaling.

    Args:
        trainer: The trainer; its datamodule's ``batch_size`` is read, else the
            train dataloader's.

    Returns:
        The batch size.

    Raises:
        ValueError: If neither gives a positive int.
    """
    datamodule = getattr(trainer, 'datamodule', None)
    size = getattr(datamodule, 'batch_size', None)
    if size is None:
        loader = getattr(trainer, 'train_dataloader', None)
        size = getattr(loader, 'batch_size', None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            'cannot infer the batch size for lr = base_lr * effective_batch / 256 '
            f'(found {size!r}); set the task hparam lr or batch_size'
        )
    return size


class TimeFraction:
    """Fraction of a Lightning :class:`~lightning.pytorch.callbacks.Timer` budget spent.

    Reads the training time of the timer (restored on resumption), so a resumed run
    continues its time-based schedule.

    Args:
        timer: The trainer's timer (``trainer.max_time``).
    """

    def __init__(self, timer: Any) -> None:
        """Initialise with a timer; see the class docstring."""
        self.timer = timer

    def __call__(self) -> float:
        """Return the fraction of the training time budget spent, in ``[0, 1]``."""
        elapsed = float(self.timer.time_elapsed('train'))
        remaining = self.timer.time_remaining('train')
        if remaining is None:
            return 0.0
        total = elapsed + max(0.0, float(remaining))
        return elapsed / total if total > 0 else 1.0


def time_budget(trainer: Any) -> TimeFraction | None:
    """The time-budget fraction of ``trainer.max_time``, or None without one.

    Args:
        trainer: The trainer.

    Returns:
        A :class:`TimeFraction` of its :class:`~lightning.pytorch.callbacks.Timer`,
        or None when no timer bounds the run.
    """
    from lightning.pytorch.callbacks import Timer

    for callback in getattr(trainer, 'callbacks', []):
        if isinstance(callback, Timer) and callback.time_remaining('train') is not None:
            return TimeFraction(callback)
    return None


def scaled_lr(base_lr: float, effective_batch_size: int) -> float:
    """Scale a base learning rate linearly with the effective batch size.

    ``lr = base_lr * effective_batch_size / 256`` (MAE and Scale-MAE, reference
    ``main_pretrain.py``).

    Args:
        base_lr: Learning rate per 256 samples, ``> 0``.
        effective_batch_size: Samples per optimiser step over all processes
            (batch size x gradient accumulation x world size), ``>= 1``.

    Returns:
        The absolute learning rate.

    Raises:
        ValueError: If an argument is out of range.
    """
    if not math.isfinite(base_lr) or base_lr <= 0:
        raise ValueError(f'base_lr must be finite and > 0, got {base_lr!r}')
    if effective_batch_size < 1:
        raise ValueError(
            f'effective_batch_size must be >= 1, got {effective_batch_size!r}'
        )
    return base_lr * effective_batch_size / 256


class WarmupCosine:
    """Multiplier of a linear-warmup, half-cycle-cosine schedule, per optimiser step.

    Matches the reference ``mae/util/lr_sched.py`` evaluated at every step:
    ``lr(t) = lr * t / warmup`` for ``t < warmup``, then
    ``min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))``,
    expressed as a factor of ``lr`` for :class:`torch.optim.lr_scheduler.LambdaLR`.
    A picklable object (not a closure), so scheduler state dicts round-trip.

    Args:
        warmup_steps: Linear-warmup length in optimiser steps, ``>= 0``.
        total_steps: Total optimiser steps, ``>= 1``.
        min_lr_ratio: Final LR as a fraction of the peak LR, in ``[0, 1]``.
    """

    def __init__(
        self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
    ) -> None:
        """Initialise the schedule; see the class docstring for the arguments."""
        if total_steps < 1:
            raise ValueError(f'total_steps must be >= 1, got {total_steps!r}')
        if warmup_steps < 0:
            raise ValueError(f'warmup_steps must be >= 0, got {warmup_steps!r}')
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f'min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}')
        self.warmup_steps = min(warmup_steps, total_steps)
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        """Return the LR factor at optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return step / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span > 0 else 1.0
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


class TimedWarmupCosine(WarmupCosine):
    """:class:`WarmupCosine` whose cosine also follows a wall-clock budget.

    For runs that stop at ``trainer.max_time``: the cosine's progress is the larger
    of the step fraction (when ``total_steps`` is known) and the fraction of the time
    budget spent, so the learning rate reaches ``min_lr`` when the budget runs out,
    whatever the machine's speed. The warmup stays in optimiser steps.

    Args:
        warmup_steps: Linear-warmup length in optimiser steps, ``>= 0``.
        time_fraction: Callable returning the fraction of the time budget spent, in
            ``[0, 1]`` (e.g. from Lightning's
            :class:`~lightning.pytorch.callbacks.Timer`).
        total_steps: Total optimiser steps, or None when only the time bounds the run.
        min_lr_ratio: Final LR as a fraction of the peak LR, in ``[0, 1]``.
    """

    def __init__(
        self,
        warmup_steps: int,
        time_fraction: Callable[[], float],
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
    ) -> None:
        """Initialise the schedule; see the class docstring for the arguments."""
        super().__init__(
            warmup_steps,
            total_steps if total_steps is not None else max(1, warmup_steps),
            min_lr_ratio,
        )
        self.bounded_by_steps = total_steps is not None
        self.time_fraction = time_fraction

    def __call__(self, step: int) -> float:
        """Return the LR factor at optimiser step ``step`` (0-based)."""
        progress = min(1.0, max(0.0, float(self.time_fraction())))
        if self.bounded_by_steps and step >= self.warmup_steps:
            span = self.total_steps - self.warmup_steps
            steps = (step - self.warmup_steps) / span if span > 0 else 1.0
            progress = max(progress, min(1.0, steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
        if step < self.warmup_steps:
            factor *= step / self.warmup_steps
        return factor


class StepLambdaLR(LambdaLR):
    """:class:`~torch.optim.lr_scheduler.LambdaLR` whose schedule is not restored.

    A resumed run restores the step counter (``last_epoch``) and the peak LRs but
    keeps the schedule built from the *current* trainer settings, so resuming with
    the same settings continues the schedule exactly, and resuming with a larger
    ``max_steps``/``max_epochs`` stretches the cosine to the new end instead of
    staying at the old run's final LR.
    """

    def state_dict(self) -> dict[str, Any]:
        """Return the scheduler state without the schedule objects.

        The schedule is rebuilt from the trainer settings on resumption (and a timed
        schedule holds a reference to the trainer's timer, which must not be
        pickled into a checkpoint).

        Returns:
            The state of :class:`~torch.optim.lr_scheduler.LambdaLR` with
            ``lr_lambdas`` set to None entries.
        """
        state = super().state_dict()
        state['lr_lambdas'] = [None] * len(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the scheduler state except the schedule object's attributes.

        Args:
            state_dict: As returned by :meth:`state_dict`.
        """
        state = dict(state_dict)
        state['lr_lambdas'] = [None] * len(self.lr_lambdas)
        super().load_state_dict(state)
