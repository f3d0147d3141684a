# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""A closing summary of the reconstruction quality against the trivial predictors."""

import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

__all__ = ('ReconstructionSummary',)

_ROWS = (('low', 'mean colour of the visible pixels'), ('high', 'zero'))


class ReconstructionSummary(Callback):
    """Print and save how far each band's PSNR is above its trivial predictor.

    At the end of a fit, reads the last training epoch's means of ``train_psnr_low``,
    ``train_psnr_high`` and their baselines ``train_psnr_low_baseline`` (each image's
    mean colour over its visible pixels) and ``train_psnr_high_baseline`` (predicting
    zero), as logged by :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` on the
    masked pixels, in the units the loss sees. A band whose PSNR is not above its
    baseline (by at least ``margin`` dB) has learned nothing a constant could not do. The text is printed and
    written to ``<log_dir>/reconstruction_summary.txt`` when the trainer has a
    logger; :attr:`rows` keeps the numbers.

    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` installs one by default.

    Args:
        margin: PSNR gain in dB over the baseline below which a band is reported as
            not above it, ``>= 0``.

    Raises:
        ValueError: If *margin* is negative or not a number.
    """

    def __init__(self, margin: float = 0.05) -> None:
        """Initialise the callback; see the class docstring for the arguments."""
        if (
            isinstance(margin, bool)
            or not isinstance(margin, int | float)
            or not math.isfinite(margin)
            or margin < 0
        ):
            raise ValueError(f'margin must be a finite number >= 0, got {margin!r}')
        self.margin = float(margin)
        #: ``(band, model PSNR, baseline PSNR)`` in dB, filled at the end of a fit.
        self.rows: list[tuple[str, float, float]] = []
        self.text = ''

    @staticmethod
    def _metric(metrics: dict[str, Any], name: str) -> float:
        for key in (f'{name}_epoch', name, f'{name}_step'):
            if key in metrics:
                return float(metrics[key])
        return math.nan

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build, print and save the summary."""
        metrics = dict(trainer.callback_metrics)
        self.rows = []
        lines = [f'Reconstruction after {trainer.global_step} steps (masked pixels):']
        for band, baseline_name in _ROWS:
            model = self._metric(metrics, f'train_psnr_{band}')
            baseline = self._metric(metrics, f'train_psnr_{band}_baseline')
            if math.isnan(model) or math.isnan(baseline):
                continue
            self.rows.append((band, model, baseline))
            gain = model - baseline
            verdict = 'above' if gain >= self.margin else 'NOT above'
            lines.append(
                f'  {band:<4} band PSNR {model:6.2f} dB, {verdict} predicting '
                f'{baseline_name} ({baseline:.2f} dB) by {gain:+.2f} dB'
            )
        if not self.rows:
            return
        self.text = '\n'.join(lines)
        rank_zero_info(self.text)
        # without a logger there is no run folder: print only
        log_dir = trainer.log_dir if getattr(trainer, 'loggers', None) else None
        if log_dir is not None and trainer.is_global_zero:
            path = Path(log_dir) / 'reconstruction_summary.txt'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.text + '\n')
