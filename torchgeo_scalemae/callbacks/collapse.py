# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Warn when a reconstruction band collapses to a constant prediction."""

import math
import warnings
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from ._checks import positive_int

__all__ = ('BandCollapseWarning',)

_BANDS = ('low', 'high')


class BandCollapseWarning(Callback):
    """Warn once per band when its prediction's spread collapses.

    A band has collapsed when the standard deviation of its prediction stays below
    ``ratio`` times that of its target for ``patience`` consecutive checks: the
    decoder then outputs (almost) the same value everywhere, the blind average that
    minimises the loss when it cannot predict the band, and the encoder receives no
    useful signal from that band. The check reads the task's ``band_std`` attribute
    (a detached ``(4,)`` tensor: prediction and target std of the low band, then of
    the high band, set by :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` at
    every training step); one host-device synchronisation per check.

    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` installs one by default
    (``collapse_patience``); add it to ``trainer.callbacks`` to configure it:

    .. code-block:: yaml

       trainer:
         callbacks:
           - class_path: torchgeo_scalemae.callbacks.BandCollapseWarning
             init_args:
               ratio: 0.1
               patience: 5

    Args:
        ratio: Collapse threshold on ``std(prediction) / std(target)``, in ``(0, 1)``.
        patience: Consecutive checks below the threshold before warning, ``>= 1``.
        check_every_n_steps: Optimiser steps between checks; None uses the trainer's
            ``log_every_n_steps``.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        ratio: float = 0.1,
        patience: int = 5,
        check_every_n_steps: int | None = None,
    ) -> None:
        """Initialise the callback; see the class docstring for the arguments."""
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise TypeError(f'ratio must be a number, got {ratio!r}')
        if not (math.isfinite(ratio) and 0 < ratio < 1):
            raise ValueError(f'ratio must be in (0, 1), got {ratio!r}')
        positive_int(patience, 'patience')
        positive_int(check_every_n_steps, 'check_every_n_steps', allow_none=True)
        self.ratio = float(ratio)
        self.patience = patience
        self.check_every_n_steps = check_every_n_steps
        self.below = dict.fromkeys(_BANDS, 0)
        self.warned: set[str] = set()
        self._last_step = -1

    def state_dict(self) -> dict[str, Any]:
        """Return the counters, so that a resumed run keeps them."""
        return {'below': dict(self.below), 'warned': sorted(self.warned)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self.below = {band: int(state_dict['below'].get(band, 0)) for band in _BANDS}
        self.warned = set(state_dict.get('warned', ()))

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Check the band spreads every ``check_every_n_steps`` optimiser steps."""
        step = trainer.global_step
        every = self.check_every_n_steps or max(
            1, int(getattr(trainer, 'log_every_n_steps', 50))
        )
        if step == self._last_step or step % every:
            return
        self._last_step = step
        stds = getattr(pl_module, 'band_std', None)
        if not isinstance(stds, Tensor) or stds.numel() != 4:
            return
        values = [float(v) for v in stds.detach().float().cpu().tolist()]
        self.update(values, step)

    def update(self, values: list[float], step: int) -> list[str]:
        """Count a check and warn for bands that have collapsed.

        Args:
            values: ``[pred_low_std, target_low_std, pred_high_std, target_high_std]``.
            step: The optimiser step, for the message.

        Returns:
            The bands warned about at this check.
        """
        warned_now: list[str] = []
        for index, band in enumerate(_BANDS):
            pred, target = values[2 * index], values[2 * index + 1]
            if not (math.isfinite(pred) and math.isfinite(target)) or target <= 0:
                continue
            if pred < self.ratio * target:
                self.below[band] += 1
            else:
                self.below[band] = 0
            if self.below[band] >= self.patience and band not in self.warned:
                self.warned.add(band)
                warned_now.append(band)
                warnings.warn(
                    f'the {band}-band prediction has collapsed: at step {step} its '
                    f'std is {pred:.3g} against {target:.3g} for its target (below '
                    f'{self.ratio:g}x for {self.below[band]} checks), so the decoder '
                    'predicts the blind average of that band and the encoder learns '
                    "little from it. With loss='reference' or 'paper', try "
                    "loss='normalized' (per-patch normalised targets, which a "
                    'constant cannot fit) and inputs standardised per channel '
                    '(the datamodule mean/std); a lower learning rate or a longer '
                    'warmup slows the collapse. With normalised targets, a collapsed '
                    'high band means its detail is not predictable at this budget '
                    'and the low band carries the learning signal',
                    RuntimeWarning,
                    stacklevel=2,
                )
        return warned_now
