# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from torchgeo_scalemae.tasks._checkpoint import AtomicCheckpointIO, atomic_torch_save
from torchgeo_scalemae.tasks._optim import (
    WarmupCosine,
    is_token,
    param_groups,
    scaled_lr,
)

# ----------------------------------------------------------------- optimiser helpers


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


def test_param_groups_rejects_negative_decay() -> None:
    with pytest.raises(ValueError, match='weight_decay'):
        param_groups(_Toy().named_parameters(), -1.0)


def test_is_token() -> None:
    assert is_token('encoder.cls_token')
    assert is_token('decoder.mask_token')
    assert not is_token('encoder.blocks.0.attn.qkv.weight')


def test_scaled_lr_spec6() -> None:
    # blr 1.5e-4, batch 32 per GPU x 8 GPUs x accumulate 2 = 512 -> 3e-4
    assert scaled_lr(1.5e-4, 32 * 8 * 2) == pytest.approx(3e-4)
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
    with pytest.raises(ValueError, match='min_lr_ratio'):
        WarmupCosine(0, 10, 2.0)
    # warmup longer than the run is clipped to it
    assert WarmupCosine(50, 10)(9) == pytest.approx(0.9)


# ----------------------------------------------------------------- atomic checkpoints


def test_atomic_save_keeps_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / 'last.ckpt'
    atomic_torch_save({'step': 1}, path)
    real_save = torch.save

    def broken_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f)  # some bytes are written ...
        raise KeyboardInterrupt  # ... then the process is interrupted

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({'step': 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {'step': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.ckpt']
    AtomicCheckpointIO().save_checkpoint({'step': 3}, path)
    assert torch.load(path, weights_only=True) == {'step': 3}


def test_atomic_io_rejects_storage_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='storage_options'):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / 'x.ckpt', {'a': 1})
