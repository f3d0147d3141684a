# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from torchgeo_scalemae.callbacks import NonFiniteLossError, NonFiniteLossGuard


def _trainer(step: int = 0) -> Any:
    return SimpleNamespace(global_step=step, world_size=1)


@pytest.mark.parametrize('value', [-1, 1.5, True, None])
def test_rejects_bad_interval(value: Any) -> None:
    with pytest.raises(ValueError, match='check_every_n_steps'):
        NonFiniteLossGuard(value)


def test_records_on_the_device_and_checks_at_the_interval() -> None:
    guard = NonFiniteLossGuard(check_every_n_steps=2)
    guard.check(_trainer(), 'now')  # nothing recorded yet
    guard.on_before_backward(_trainer(), None, torch.tensor(1.0))  # type: ignore[arg-type]
    guard.on_before_backward(_trainer(), None, torch.tensor(float('nan')))  # type: ignore[arg-type]
    guard.on_before_backward(_trainer(), None, torch.tensor(2.0))  # type: ignore[arg-type]
    # step 1 is not a check step: the record waits
    guard.on_before_optimizer_step(_trainer(1), None, None)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError, match='global step 2, before the optim'):
        guard.on_before_optimizer_step(_trainer(2), None, None)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError, match='before writing a checkpoint'):
        guard.on_save_checkpoint(_trainer(2), None, {})  # type: ignore[arg-type]
    # a new fit forgets the record
    guard.on_fit_start(_trainer(), None)  # type: ignore[arg-type]
    guard.on_save_checkpoint(_trainer(), None, {})  # type: ignore[arg-type]


def test_zero_interval_checks_only_before_checkpoints() -> None:
    guard = NonFiniteLossGuard(check_every_n_steps=0)
    guard.on_before_backward(_trainer(), None, torch.tensor(float('inf')))  # type: ignore[arg-type]
    guard.on_before_optimizer_step(_trainer(0), None, None)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError):
        guard.on_save_checkpoint(_trainer(0), None, {})  # type: ignore[arg-type]


def test_record_is_summed_over_processes() -> None:
    reduced: list[torch.Tensor] = []

    def reduce(value: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == 'sum'
        reduced.append(value)
        return value + 1  # another process saw a NaN

    trainer = SimpleNamespace(
        global_step=0, world_size=2, strategy=SimpleNamespace(reduce=reduce)
    )
    guard = NonFiniteLossGuard()
    guard.on_before_backward(trainer, None, torch.tensor(1.0))  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError):
        guard.check(trainer, 'now')  # type: ignore[arg-type]
    assert len(reduced) == 1
