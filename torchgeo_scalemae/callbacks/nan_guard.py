# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Stop training on a NaN or infinite loss before it reaches the weights."""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

__all__ = ('NonFiniteLossError', 'NonFiniteLossGuard')


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite.

    Raised before the optimiser step (and before any checkpoint is written) so that
    no checkpoint with non-finite weights exists; resume from the last checkpoint
    with a lower learning rate, another precision or cleaned data.
    """


class NonFiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` before a non-finite loss changes the weights.

    Every loss that reaches the backward pass is tested on its device
    (``~torch.isfinite``) and the result is kept there, so recording costs no
    host-device synchronisation. The record is read (one synchronisation) every
    ``check_every_n_steps`` optimiser steps, just before the optimiser steps, and
    always before a checkpoint is written: a checkpoint with non-finite weights is
    never saved. Under DDP the record is summed over the processes, so all of them
    stop together.

    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` installs one by default
    (hparam ``nan_check_interval``); one in ``trainer.callbacks`` replaces it.

    Args:
        check_every_n_steps: Optimiser steps between checks, ``>= 0``; 0 checks only
            before checkpoints.

    Raises:
        ValueError: If ``check_every_n_steps`` is not an int >= 0.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        """Initialise the guard; see the class docstring for the arguments."""
        if (
            isinstance(check_every_n_steps, bool)
            or not isinstance(check_every_n_steps, int)
            or check_every_n_steps < 0
        ):
            raise ValueError(
                'check_every_n_steps must be an int >= 0 (0: before checkpoints '
                f'only), got {check_every_n_steps!r}'
            )
        self.check_every_n_steps = check_every_n_steps
        self._nonfinite: Tensor | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the record of an earlier fit."""
        self._nonfinite = None

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: Tensor
    ) -> None:
        """Record, on the device, whether this loss is finite."""
        flag = ~torch.isfinite(loss.detach())
        self._nonfinite = flag if self._nonfinite is None else self._nonfinite | flag

    def on_before_optimizer_step(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Check every ``check_every_n_steps`` optimiser steps."""
        every = self.check_every_n_steps
        if every > 0 and trainer.global_step % every == 0:
            self.check(trainer, 'before the optimiser step')

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse to write a checkpoint after a non-finite loss."""
        self.check(trainer, 'before writing a checkpoint')

    def check(self, trainer: Trainer, when: str) -> None:
        """Raise if a non-finite loss was recorded (one host-device synchronisation).

        Args:
            trainer: The trainer (its strategy reduces the record over processes).
            when: Where the check happens, for the message.

        Raises:
            NonFiniteLossError: If a recorded loss was NaN or infinite.
        """
        flag = self._nonfinite
        if flag is None:
            return
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag.float(), reduce_op='sum')
        if bool(flag):
            raise NonFiniteLossError(
                'the training loss became NaN or infinite (detected at global step '
                f'{trainer.global_step}, {when}); training stops here so that no '
                'checkpoint with non-finite weights is written. Check the data for '
                'NaN/inf pixels or invalid gsd values, lower lr/base_lr, or resume '
                'from the last checkpoint with precision 32'
            )
