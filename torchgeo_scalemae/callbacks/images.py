# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Reconstruction image grids of the pretraining task, sent to every logger."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from ..gsd import gsd_to_res
from ..models import ScaleMAE, ScaleMAEOutput
from ._checks import positive_int

__all__ = ('GRID_COLUMNS', 'ReconstructionImages', 'reconstruction_grid')

#: Column titles of :func:`reconstruction_grid`.
GRID_COLUMNS: tuple[str, ...] = (
    'input',
    'masked input',
    'low band',
    'high band',
    'both bands',
    'with visible',
    'target',
)


class ReconstructionImages(Callback):
    """Log a grid of reconstructions of the same samples every N optimiser steps.

    At the first logged step the first ``max_samples`` images of the training batch
    are turned into scale pairs (``pl_module.scale_pair``) and a mask is drawn once;
    at every logged step (every ``every_n_steps`` optimiser steps, and the run's
    last step) the model reconstructs them in evaluation mode, before that step's
    update, and :func:`reconstruction_grid` is sent to every logger: TensorBoard
    ``add_image``, a PNG ``<log_dir>/images/<tag>_step<step>.png`` for the CSV
    logger, ``log_image`` for loggers that have it (e.g. Weights & Biases). The
    grids of a run are therefore comparable. Drawing the samples leaves the random
    number generators as they were, so logging images does not change training.
    Only the global-zero process draws and logs.

    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` installs one by default
    (hparam ``image_log_interval``); one in ``trainer.callbacks`` replaces it. The
    task must have ``model`` (a :class:`~torchgeo_scalemae.models.ScaleMAE`),
    ``scale_pair(batch, train)`` and the hparam ``reference_gsd``.

    Args:
        every_n_steps: Optimiser steps between grids, ``>= 1``.
        max_samples: Rows (samples) of the grid, ``>= 1``.
        tag: Image name in the loggers.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        max_samples: int = 4,
        tag: str = 'reconstruction',
    ) -> None:
        """Initialise the callback; see the class docstring for the arguments."""
        positive_int(every_n_steps, 'every_n_steps')
        positive_int(max_samples, 'max_samples')
        if not isinstance(tag, str) or not tag:
            raise ValueError(f'tag must be a non-empty string, got {tag!r}')
        self.every_n_steps = every_n_steps
        self.max_samples = max_samples
        self.tag = tag
        self._last_step = -1
        self._samples: dict[str, Tensor] | None = None
        self._noise: Tensor | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Forget the samples of an earlier fit."""
        self._last_step = -1
        self._samples = None
        self._noise = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Log a grid at every ``every_n_steps``-th optimiser step and the last one."""
        step = trainer.global_step
        if not trainer.loggers or step == self._last_step:
            return
        if step % self.every_n_steps and not _is_last_step(trainer):
            return
        self._last_step = step  # once per optimiser step, not per accumulated batch
        if not trainer.is_global_zero:
            return
        model = _model_of(pl_module)
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            pair, out = self._reconstruct(pl_module, model, batch)
            grid = reconstruction_grid(model, pair, out, self.max_samples)
        for logger in trainer.loggers:
            log_image(logger, self.tag, grid, step)

    def _reconstruct(
        self, pl_module: LightningModule, model: ScaleMAE, batch: Mapping[str, Any]
    ) -> tuple[dict[str, Tensor], ScaleMAEOutput]:
        """Reconstruct the fixed samples, with the fixed mask, in evaluation mode."""
        if self._samples is None:
            scale_pair: Any = getattr(pl_module, 'scale_pair')  # noqa: B009
            image = batch['image']
            devices = [image.device] if image.device.type == 'cuda' else []
            with torch.random.fork_rng(devices=devices):
                pair = scale_pair(batch, train=False)
            n = min(self.max_samples, int(pair['image'].shape[0]))
            self._samples = {
                key: pair[key][:n].detach().clone()
                for key in ('image', 'target', 'gsd')
            }
            patch = int(model.patch_size)
            h, w = (int(v) // patch for v in pair['image'].shape[-2:])
            generator = torch.Generator().manual_seed(0)
            noise = torch.rand(n, h * w, generator=generator)
            self._noise = noise.to(pair['image'].device)
        samples = self._samples
        was_training = model.training
        model.eval()
        try:
            res = gsd_to_res(
                samples['gsd'], pl_module.hparams['reference_gsd'], check_values=False
            )
            out: ScaleMAEOutput = model(
                samples['image'], res=res, targets=samples['target'], noise=self._noise
            )
        finally:
            model.train(was_training)
        return samples, out


def _model_of(pl_module: LightningModule) -> ScaleMAE:
    model = getattr(pl_module, 'model', None)
    if not isinstance(model, ScaleMAE):
        raise TypeError(
            'ReconstructionImages needs a task whose .model is a ScaleMAE (e.g. '
            f'ScaleMAEPretraining), got {type(pl_module).__name__} with '
            f'.model {type(model).__name__}'
        )
    return model


def _is_last_step(trainer: Trainer) -> bool:
    """Whether this optimiser step is the run's last (``max_steps`` or ``max_epochs``)."""
    step = trainer.global_step
    max_steps = trainer.max_steps
    if max_steps is not None and 0 < max_steps <= step + 1:
        return True
    max_epochs = trainer.max_epochs
    return bool(
        max_epochs is not None
        and max_epochs > 0
        and trainer.current_epoch == max_epochs - 1
        and trainer.is_last_batch
    )


def reconstruction_grid(
    model: ScaleMAE,
    pair: Mapping[str, Tensor],
    out: ScaleMAEOutput,
    max_samples: int = 4,
) -> Tensor:
    """Build a reconstruction image grid, one row per sample, titled columns.

    Columns (:data:`GRID_COLUMNS`): input, masked input, low-band prediction,
    high-band prediction, recombination of both bands, the recombination with the
    visible patches of the target pasted back, and the target. All are shown at the
    target size ``2S``; the first three bands (or band 0 as grey) are shown, each row
    stretched to the target's range; the signed high band is shown with 0 as
    mid-grey and plus or minus the largest absolute high-band target value as white
    or black. With ``normalize_targets`` the predictions are per-patch normalised,
    and are shown rescaled with the target's patch mean and std (as MAE's
    visualisations do).

    Args:
        model: The :class:`~torchgeo_scalemae.models.ScaleMAE` that produced *out*.
        pair: The scale pair (``image`` ``(B, C, S, S)``, ``target``
            ``(B, C, 2S, 2S)``).
        out: The model's :class:`~torchgeo_scalemae.models.ScaleMAEOutput`.
        max_samples: Number of rows.

    Returns:
        A float ``(3, H, W)`` image in ``[0, 1]`` on the CPU, with a title row.
    """
    from torchvision.utils import make_grid

    from ..models.bands import recombine_bands
    from ..models.loss import patch_statistics

    n = min(max_samples, int(pair['image'].shape[0]))
    image = pair['image'][:n].float()
    target = pair['target'][:n].float()
    pred_low = out.pred_low[:n].float()
    pred_high = out.pred_high[:n].float()
    size = target.shape[-2:]
    patch = int(model.patch_size)
    grid = image.shape[-1] // patch
    loss = model.loss
    low_t, high_t = loss.targets(
        target, (int(pred_low.shape[-2]), int(pred_low.shape[-1]))
    )
    if getattr(loss, 'normalize_targets', False):
        mean, std = patch_statistics(low_t, patch)
        pred_low = pred_low * std + mean
        mean, std = patch_statistics(high_t, 2 * patch)
        pred_high = pred_high * std + mean
    removed = out.mask[:n].float().reshape(n, 1, grid, grid)
    keep = 1.0 - F.interpolate(removed, size=image.shape[-2:], mode='nearest')
    keep_target = 1.0 - F.interpolate(removed, size=size, mode='nearest')
    recombined = recombine_bands(pred_low, pred_high, loss.high_blur)
    pasted = keep_target * target + (1.0 - keep_target) * recombined

    def up(x: Tensor) -> Tensor:
        return F.interpolate(x, size=size, mode='nearest')

    lo = target.amin(dim=(1, 2, 3), keepdim=True)
    hi = target.amax(dim=(1, 2, 3), keepdim=True)

    def stretch(x: Tensor, lo: Tensor = lo, hi: Tensor = hi) -> Tensor:
        return ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)

    # the high band is signed: show 0 as mid-grey, scaled by the target's band
    h_hi = high_t.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    h_lo = -h_hi
    columns = [
        stretch(up(image)),
        stretch(up(image)) * up(keep),
        stretch(up(pred_low)),
        stretch(pred_high, h_lo, h_hi),
        stretch(recombined),
        stretch(pasted),
        stretch(target),
    ]
    tiles = torch.stack([_to_rgb(c) for c in columns], dim=1)  # (n, 7, 3, H, W)
    tiles = tiles.reshape(-1, *tiles.shape[2:])
    image_grid: Tensor = make_grid(
        tiles.cpu(), nrow=len(columns), padding=2, pad_value=1.0
    )
    return _with_titles(image_grid, GRID_COLUMNS, int(size[-1]) + 2)


def _with_titles(grid: Tensor, titles: Sequence[str], column_width: int) -> Tensor:
    """Prepend a white row with one centred title per grid column."""
    from PIL import Image, ImageDraw

    height = 14
    canvas = Image.new('RGB', (int(grid.shape[-1]), height), 'white')
    draw = ImageDraw.Draw(canvas)
    for index, title in enumerate(titles):
        left, _, right, _ = draw.textbbox((0, 0), title)
        x = 2 + index * column_width + max(0, (column_width - (right - left)) // 2)
        draw.text((x, 1), title, fill='black')
    header = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
    return torch.cat([header.permute(2, 0, 1), grid], dim=1)


def _to_rgb(x: Tensor) -> Tensor:
    if x.shape[1] >= 3:
        return x[:, :3]
    return x[:, :1].expand(-1, 3, -1, -1)


def log_image(logger: Any, tag: str, grid: Tensor, step: int) -> None:
    """Send an image ``(3, H, W)`` in ``[0, 1]`` to a Lightning logger.

    Args:
        logger: A Lightning logger: TensorBoard (``add_image``), CSV (a PNG under
            ``<log_dir>/images``) or one with ``log_image``; others are skipped.
        tag: Image name.
        grid: The image.
        step: The optimiser step.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(tag, grid, global_step=step)
    elif isinstance(logger, CSVLogger):
        from torchvision.utils import save_image

        folder = Path(logger.log_dir) / 'images'
        folder.mkdir(parents=True, exist_ok=True)
        save_image(grid, folder / f'{tag}_step{step:07d}.png')
    elif hasattr(logger, 'log_image'):  # e.g. WandbLogger
        logger.log_image(key=tag, images=[grid], step=step)
