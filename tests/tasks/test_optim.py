# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The pretraining task's optimiser policy (``torchgeo_scalemae.tasks._optim``)."""

import io
import math
from typing import Any

import pytest
import torch
from torch import nn

from torchgeo_scalemae.tasks import _optim
from torchgeo_scalemae.tasks._optim import (
    StepLambdaLR,
    TimedWarmupCosine,
    TimeFraction,
    WarmupCosine,
    fused_kernel_devices,
    infer_batch_size,
    is_token,
    param_groups,
    scaled_lr,
    time_budget,
    unfused_parameter,
    use_fused_adamw,
)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv2d(4, 4, 3)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def _names(groups: list[dict[str, object]], model: nn.Module) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {
        str(g['group_name']): {by_id[id(p)] for p in g['params']}  # type: ignore[attr-defined]
        for g in groups
    }


# ----------------------------------------------------------------- parameter groups


def test_param_groups_no_decay_on_norms_biases_tokens() -> None:
    model = _Toy()
    groups = param_groups(model.named_parameters(), 0.05)
    names = _names(groups, model)
    assert names['decay'] == {'linear.weight', 'conv.weight'}
    assert names['no_decay'] == {
        'cls_token',
        'mask_token',
        'linear.bias',
        'norm.weight',
        'norm.bias',
        'conv.bias',
    }
    wd = {g['group_name']: g['weight_decay'] for g in groups}
    assert wd == {'decay': 0.05, 'no_decay': 0.0}


def test_param_groups_reference_decays_tokens() -> None:
    model = _Toy()
    names = _names(param_groups(model.named_parameters(), 0.05, True), model)
    assert {'cls_token', 'mask_token'} <= names['decay']
    assert 'frozen' not in names['decay'] | names['no_decay']


def test_param_groups_drops_empty_groups_and_rejects_negative_decay() -> None:
    only_bias = [('bias', nn.Parameter(torch.zeros(3)))]
    groups = param_groups(only_bias, 0.05)
    assert [g['group_name'] for g in groups] == ['no_decay']
    with pytest.raises(ValueError, match='weight_decay'):
        param_groups(_Toy().named_parameters(), -1.0)
    with pytest.raises(ValueError, match='weight_decay'):
        param_groups(_Toy().named_parameters(), math.nan)


def test_is_token() -> None:
    assert is_token('encoder.cls_token')
    assert is_token('decoder.mask_token')
    assert is_token('pos_embed')
    assert not is_token('encoder.blocks.0.attn.qkv.weight')
    assert not is_token('encoder.cls_token_proj.weight')


# ----------------------------------------------------------------- learning rate


def test_scaled_lr_is_linear_in_the_effective_batch() -> None:
    # blr 1.5e-4, batch 32 per GPU x 8 GPUs x accumulate 2 = 512 -> 3e-4
    assert scaled_lr(1.5e-4, 32 * 8 * 2) == pytest.approx(3e-4)
    assert scaled_lr(1.0, 256) == 1.0
    with pytest.raises(ValueError, match='effective_batch_size'):
        scaled_lr(1.5e-4, 0)
    with pytest.raises(ValueError, match='base_lr'):
        scaled_lr(float('nan'), 8)


def test_warmup_cosine_matches_reference_formula() -> None:
    warmup, total, min_ratio = 5, 20, 0.1
    sched = WarmupCosine(warmup, total, min_ratio)
    for t in range(total + 3):
        if t < warmup:
            expected = t / warmup
        else:
            progress = min(1.0, (t - warmup) / (total - warmup))
            expected = min_ratio + (1 - min_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        assert sched(t) == pytest.approx(expected)
    assert sched(warmup) == pytest.approx(1.0)
    assert sched(total) == pytest.approx(min_ratio)


def test_warmup_cosine_validates() -> None:
    with pytest.raises(ValueError, match='total_steps'):
        WarmupCosine(0, 0)
    with pytest.raises(ValueError, match='warmup_steps'):
        WarmupCosine(-1, 10)
    with pytest.raises(ValueError, match='min_lr_ratio'):
        WarmupCosine(0, 10, 2.0)
    # warmup longer than the run is clipped to it
    assert WarmupCosine(50, 10)(9) == pytest.approx(0.9)


def test_timed_warmup_cosine_follows_the_time_budget() -> None:
    spent = [0.0]
    schedule = TimedWarmupCosine(10, lambda: spent[0])
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.5)  # warmup in steps
    assert schedule(50) == pytest.approx(1.0)
    spent[0] = 0.5
    assert schedule(50) == pytest.approx(0.5)
    spent[0] = 1.0
    assert schedule(10_000) == pytest.approx(0.0)
    spent[0] = 7.0  # a timer past its budget is clipped
    assert schedule(10_000) == pytest.approx(0.0)
    # with a step bound too, the further of both ends the cosine
    bounded = TimedWarmupCosine(0, lambda: 0.0, total_steps=100, min_lr_ratio=0.1)
    assert bounded(100) == pytest.approx(0.1)


def test_scheduler_state_dict_holds_no_schedule_object() -> None:
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = StepLambdaLR(optimizer, TimedWarmupCosine(2, lambda: 0.0))
    optimizer.step()
    scheduler.step()
    state = scheduler.state_dict()
    assert state['lr_lambdas'] == [None]
    assert state['last_epoch'] == 1
    torch.save(state, io.BytesIO())  # picklable: no timer inside
    # loading keeps the current schedule object and restores the step counter
    fresh = StepLambdaLR(torch.optim.SGD([param], lr=1.0), WarmupCosine(4, 8))
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 1
    assert isinstance(fresh.lr_lambdas[0], WarmupCosine)


# ----------------------------------------------------------------- time budget


class _Timer:
    def __init__(self, elapsed: float, remaining: float | None) -> None:
        self.elapsed = elapsed
        self.remaining = remaining

    def time_elapsed(self, stage: str) -> float:
        assert stage == 'train'
        return self.elapsed

    def time_remaining(self, stage: str) -> float | None:
        assert stage == 'train'
        return self.remaining


def test_time_fraction_reads_the_timer() -> None:
    assert TimeFraction(_Timer(30.0, 90.0))() == pytest.approx(0.25)
    assert TimeFraction(_Timer(30.0, -5.0))() == pytest.approx(1.0)  # overrun
    assert TimeFraction(_Timer(0.0, 0.0))() == 1.0
    assert TimeFraction(_Timer(10.0, None))() == 0.0  # no budget


def test_time_budget_finds_the_trainer_timer() -> None:
    from lightning.pytorch.callbacks import Timer

    class Trainer:
        def __init__(self, callbacks: list[Any]) -> None:
            self.callbacks = callbacks

    assert time_budget(Trainer([])) is None
    timer = Timer(duration={'seconds': 60})
    fraction = time_budget(Trainer([object(), timer]))
    assert isinstance(fraction, TimeFraction)
    assert fraction.timer is timer
    assert fraction() == pytest.approx(0.0)


# ----------------------------------------------------------------- batch size


class _Holder:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


def test_infer_batch_size_from_datamodule_or_loader() -> None:
    datamodule = _Holder(batch_size=12)
    assert infer_batch_size(_Holder(datamodule=datamodule)) == 12
    loader = _Holder(batch_size=5)
    assert infer_batch_size(_Holder(datamodule=None, train_dataloader=loader)) == 5
    for bad in (None, 0, True):
        trainer = _Holder(datamodule=_Holder(batch_size=bad), train_dataloader=None)
        with pytest.raises(ValueError, match='set the task hparam lr or batch_size'):
            infer_batch_size(trainer)


# ----------------------------------------------------------------- fused AdamW


def test_fused_kernel_devices_include_the_cpu() -> None:
    assert 'cpu' in fused_kernel_devices()


def test_unfused_parameter_finds_the_first_unsupported_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weight = nn.Parameter(torch.zeros(2, 2))
    groups = [{'params': [weight]}]
    assert unfused_parameter(groups) is None
    monkeypatch.setattr(_optim, 'fused_kernel_devices', lambda: ('cuda',))
    assert unfused_parameter(groups) is weight


class _ScalerPlugin:
    scaler = object()


class _PlainPlugin:
    scaler = None


class _FakeTrainer:
    def __init__(self, clip: float | None, scaler: bool = True) -> None:
        self.precision_plugin = _ScalerPlugin() if scaler else _PlainPlugin()
        self.gradient_clip_val = clip


@pytest.mark.parametrize('clip', [None, 0.0, 1.0])
def test_fused_adamw_and_clipping_under_a_gradient_scaler(clip: float | None) -> None:
    groups = [{'params': [nn.Parameter(torch.zeros(2))]}]
    trainer = _FakeTrainer(clip)
    assert use_fused_adamw(None, groups, trainer) is (not clip)
    if clip:
        with pytest.raises(ValueError, match=r'gradient_clip_val=1\.0'):
            use_fused_adamw(True, groups, trainer)
    else:
        assert use_fused_adamw(True, groups, trainer) is True
    assert use_fused_adamw(False, groups, trainer) is False
    # clipping without a scaler (bf16-mixed, 32-true) keeps the fused kernel
    assert use_fused_adamw(None, groups, _FakeTrainer(clip, scaler=False)) is True


def test_fused_adamw_rejects_unsupported_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_optim, 'fused_kernel_devices', lambda: ('cuda',))
    groups = [{'params': [nn.Parameter(torch.zeros(3, 2))]}]
    trainer = _FakeTrainer(None)
    assert use_fused_adamw(None, groups, trainer) is False
    with pytest.raises(ValueError, match=r'shape \(3, 2\) is torch.float32 on cpu'):
        use_fused_adamw(True, groups, trainer)


def test_fused_adamw_step_matches_default_adamw() -> None:
    """The fused kernel computes the same update as torch's default AdamW."""
    torch.manual_seed(0)
    params = [torch.randn(7, 5), torch.randn(5)]
    grads = [torch.randn_like(p) for p in params]
    results = []
    for fused in (True, None):
        copies = [p.clone().requires_grad_() for p in params]
        optimizer = torch.optim.AdamW(
            copies, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05, fused=fused
        )
        for _ in range(3):
            for p, g in zip(copies, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results.append(copies)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
