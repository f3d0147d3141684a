# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale kNN accuracy of the encoder during pretraining."""

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Generator, Tensor, nn

from ..evaluation.backbone import Pool, encoder_features
from ..evaluation.knn import knn_accuracy
from ..evaluation.report import ScaleResult, format_gsd
from ..evaluation.scales import check_scales, resize_to_scale
from ..gsd import gsd_to_res
from ._checks import positive_int as _positive_int

__all__ = ('MultiScaleKNNMonitor',)


class MultiScaleKNNMonitor(Callback):
    """Log the encoder's multi-scale kNN accuracy on a labelled folder while training.

    The images of ``root`` (``root/<class>/<image>``, read with
    :class:`~torchgeo_scalemae.datamodules.ImageFolderGSD`; by default the training
    folder of an :class:`~torchgeo_scalemae.datamodules.ImageFolderGSDDataModule`
    with class subfolders, with its GSD settings) are loaded once and split
    at random (``seed``) into a bank and queries (``query_pct``). Every
    ``every_n_steps`` optimiser steps or ``every_n_epochs`` epochs (and at the start
    and the end of the fit), both are resized to each of ``scales`` (GSD updated per
    scale), embedded by the encoder in evaluation mode with ``res = gsd /
    reference_gsd``, and each query is classified by a weighted vote of its ``k``
    nearest bank images (cosine similarity, ``exp(sim / temperature)``, the
    reference's kNN, ``mae/eval/knn.py``). The metrics are written to every logger
    at the current step: ``<prefix>_acc_<size>px_gsd<gsd>m`` per scale and
    ``<prefix>_acc_mean``, and a line is printed. The step-0 evaluation is the random
    initialisation's accuracy, the baseline pretraining must beat.

    The encoder is ``pl_module.model.encoder`` (the Scale-MAE pretraining task's) or
    ``pl_module.model`` / ``pl_module.backbone`` when that is the encoder itself.
    Images are normalised as the training data is: ``(x - mean) / std``, taken from
    the datamodule's ``mean``/``std`` when not given. The evaluation time counts
    towards ``trainer.max_time``. Only the global-zero process evaluates.

    Example (``torchgeo fit`` YAML):

    .. code-block:: yaml

       trainer:
         callbacks:
           - class_path: torchgeo_scalemae.callbacks.MultiScaleKNNMonitor
             init_args:
               root: data/labelled_scenes
               gsd: 2.0
               scales: [1.0, 0.5, 0.25]
               every_n_steps: 500
               max_per_class: 50

    Args:
        root: Labelled image folder (``root/<class>/<image>``); None takes the
            datamodule's ``root``, ``gsd`` and ``gsd_csv`` at the start of the fit
            (and disables the monitor with a warning when that folder has no class
            subfolders).
        gsd: GSD of the images in metres per pixel (or use ``gsd_csv``, or GeoTIFFs).
        gsd_csv: CSV with columns ``path,gsd``.
        scales: Evaluation scales: fractions of the native size (``<= 1``) or sizes
            in pixels (``> 1``), rounded to multiples of the patch size.
        every_n_steps: Evaluate every this many optimiser steps.
        every_n_epochs: Evaluate every this many epochs (used when
            ``every_n_steps`` is None).
        k: Neighbours per vote.
        temperature: Temperature of the weighted vote.
        pool: ``'mean'`` (mean of the patch tokens) or ``'token'`` (class token).
        reference_gsd: ``G`` of ``res = gsd / G`` in metres per pixel; None takes the
            task's ``reference_gsd`` hyperparameter (1 when it has none).
        query_pct: Fraction of the images used as queries, in ``(0, 1)``.
        max_per_class: At most this many images per class (sorted by name).
        image_size: Resize every image to this square size first (pixels), for
            folders of mixed sizes.
        mean: Normalisation mean (per channel or one value); None: the datamodule's.
        std: Normalisation std; None: the datamodule's.
        batch_size: Images per encoder forward pass.
        seed: Seed of the bank/query split.
        prefix: Metric name prefix.
        evaluate_at_start: Also evaluate before the first step (the random or loaded
            initialisation).

    Raises:
        ValueError: For out-of-range arguments, a folder without labelled images, or
            fewer than two classes.
    """

    def __init__(
        self,
        root: str | None = None,
        gsd: float | None = None,
        gsd_csv: str | None = None,
        scales: Sequence[float] = (1.0, 0.5, 0.25),
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        k: int = 20,
        temperature: float = 0.07,
        pool: Pool = 'mean',
        reference_gsd: float | None = None,
        query_pct: float = 0.2,
        max_per_class: int | None = None,
        image_size: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        batch_size: int = 128,
        seed: int = 0,
        prefix: str = 'knn',
        evaluate_at_start: bool = True,
    ) -> None:
        """Initialise the monitor; see the class docstring for the arguments."""
        self.scales = check_scales(scales)
        _positive_int(every_n_steps, 'every_n_steps', allow_none=True)
        _positive_int(every_n_epochs, 'every_n_epochs', allow_none=True)
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError('set every_n_steps or every_n_epochs')
        _positive_int(k, 'k')
        _positive_int(batch_size, 'batch_size')
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f'temperature must be positive, got {temperature!r}')
        if pool not in ('token', 'mean'):
            raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
        if reference_gsd is not None and not (
            math.isfinite(reference_gsd) and reference_gsd > 0
        ):
            raise ValueError(
                f'reference_gsd must be a positive number or None, got {reference_gsd!r}'
            )
        if not 0 < query_pct < 1:
            raise ValueError(f'query_pct must be in (0, 1), got {query_pct!r}')
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f'prefix must be a non-empty string, got {prefix!r}')
        if image_size is not None:
            _positive_int(image_size, 'image_size')
        _positive_int(max_per_class, 'max_per_class', allow_none=True)
        self.image_size = image_size
        self.max_per_class = max_per_class
        self.dataset: Any = None
        self.disabled = False
        if root is not None:
            # validates root, gsd and gsd_csv now, so that a bad path fails before
            # any training
            self.dataset = self._dataset(root, gsd, gsd_csv)
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs if every_n_steps is None else None
        self.k = k
        self.temperature = float(temperature)
        self.pool: Pool = pool
        self.reference_gsd = reference_gsd
        self.query_pct = float(query_pct)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)
        if self.std is not None and bool((self.std <= 0).any()):
            raise ValueError(f'std must be positive, got {std!r}')
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an int >= 0, got {seed!r}')
        if not isinstance(evaluate_at_start, bool):
            raise TypeError(
                f'evaluate_at_start must be True or False, got {evaluate_at_start!r}'
            )
        self.batch_size = batch_size
        self.seed = seed
        self.prefix = prefix
        self.evaluate_at_start = evaluate_at_start
        #: One entry per evaluation: ``step``, ``epoch``, ``seconds`` (wall-clock
        #: since the fit started) and ``results`` (:class:`ScaleResult` per scale).
        self.history: list[dict[str, Any]] = []
        self._data: dict[str, Tensor] | None = None
        self._last_step = -1
        self._fit_start = time.monotonic()

    # ------------------------------------------------------------------ data
    def _dataset(self, root: str, gsd: float | None, gsd_csv: str | None) -> Any:
        from ..datamodules import ImageFolderGSD

        dataset = ImageFolderGSD(
            root,
            gsd=gsd,
            gsd_csv=gsd_csv,
            labelled=True,
            image_size=self.image_size,
            max_per_class=self.max_per_class,
        )
        if len(dataset.classes) < 2:
            raise ValueError(
                f'root {str(root)!r} must hold at least two class folders of images, '
                f'found {dataset.classes}'
            )
        return dataset

    def _dataset_from_datamodule(self, trainer: Trainer) -> None:
        datamodule = getattr(trainer, 'datamodule', None)
        kwargs = getattr(datamodule, 'kwargs', None)
        if not isinstance(kwargs, dict) or kwargs.get('root') is None:
            raise ValueError(
                'MultiScaleKNNMonitor(root=None) needs an ImageFolderGSDDataModule; '
                f'the trainer has {type(datamodule).__name__}: set root'
            )
        try:
            self.dataset = self._dataset(
                kwargs['root'], kwargs.get('gsd'), kwargs.get('gsd_csv')
            )
        except ValueError as err:
            self.disabled = True
            rank_zero_warn(
                f'MultiScaleKNNMonitor is disabled: the training folder cannot serve '
                f'as a labelled kNN set ({err}); give root= a labelled folder'
            )

    def _load(self) -> dict[str, Tensor]:
        if self._data is not None:
            return self._data
        samples = [self.dataset[i] for i in range(len(self.dataset))]
        shapes = {tuple(s['image'].shape) for s in samples}
        if len(shapes) > 1:
            raise ValueError(
                f'the images of {str(self.dataset.root)!r} have different sizes '
                f'({sorted(shapes)[:3]}...); set image_size'
            )
        images = torch.stack([s['image'] for s in samples])
        if (
            bool((images == images.round()).all())
            and 0 <= images.min() <= images.max() <= 255
        ):
            images = images.to(torch.uint8)  # 4x less memory for 8-bit images
        labels = torch.stack([s['label'] for s in samples])
        gsd = torch.stack([s['gsd'] for s in samples]).float()
        n = len(labels)
        n_query = min(n - 1, max(1, round(n * self.query_pct)))
        order = torch.randperm(n, generator=Generator().manual_seed(self.seed))
        query, bank = order[:n_query], order[n_query:]
        self._data = {
            'bank_image': images[bank],
            'bank_label': labels[bank],
            'bank_gsd': gsd[bank],
            'query_image': images[query],
            'query_label': labels[query],
            'query_gsd': gsd[query],
        }
        return self._data

    def _normalisation(self, trainer: Trainer) -> tuple[Tensor, Tensor]:
        datamodule = getattr(trainer, 'datamodule', None)
        mean = self.mean
        std = self.std
        if mean is None:
            mean = torch.as_tensor(
                getattr(datamodule, 'mean', 0.0), dtype=torch.float32
            )
        if std is None:
            std = torch.as_tensor(
                getattr(datamodule, 'std', 255.0), dtype=torch.float32
            )
        return mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)

    def state_dict(self) -> dict[str, Any]:
        """Return the evaluations so far (step and accuracy per scale), for checkpoints.

        Returns:
            ``{'history': [{'step', 'seconds', 'accuracy': {size: value}}, ...]}``.
        """
        return {
            'history': [
                {
                    'step': entry['step'],
                    'seconds': entry['seconds'],
                    'accuracy': {r.size: r.accuracy for r in entry['results']},
                }
                for entry in self.history
            ]
        }

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load the images and evaluate the initial encoder (``evaluate_at_start``)."""
        self._fit_start = time.monotonic()
        if not trainer.is_global_zero:
            return
        if self.dataset is None:
            self._dataset_from_datamodule(trainer)
        if self.disabled:
            return
        self._load()
        if self.evaluate_at_start and trainer.global_step == 0:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Evaluate every ``every_n_steps`` optimiser steps."""
        step = trainer.global_step
        if self.every_n_steps is None or step % self.every_n_steps:
            return
        if step != self._last_step and trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate every ``every_n_epochs`` epochs."""
        if self.every_n_epochs is None:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if trainer.global_step != self._last_step and trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate the final encoder unless this step was just evaluated."""
        if trainer.global_step != self._last_step and trainer.is_global_zero:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def encoder_of(pl_module: LightningModule) -> nn.Module:
        """Return the encoder of a task (see the class docstring).

        Args:
            pl_module: The task.

        Returns:
            The encoder module.

        Raises:
            TypeError: If the task has no recognisable encoder.
        """
        model = getattr(pl_module, 'model', None)
        encoder = getattr(model, 'encoder', None)
        for candidate in (encoder, model, getattr(pl_module, 'backbone', None)):
            if isinstance(candidate, nn.Module) and hasattr(
                candidate, 'forward_features'
            ):
                return candidate
        raise TypeError(
            f'{type(pl_module).__name__} has no encoder with forward_features at '
            '.model.encoder, .model or .backbone'
        )

    def _reference_gsd(self, pl_module: LightningModule) -> float:
        if self.reference_gsd is not None:
            return self.reference_gsd
        value = getattr(pl_module, 'hparams', {}).get('reference_gsd', 1.0)
        return float(value) if value else 1.0

    @torch.no_grad()
    def _features(
        self,
        encoder: nn.Module,
        images: Tensor,
        gsd: Tensor,
        scale: float,
        norm: tuple[Tensor, Tensor],
        reference_gsd: float,
        device: torch.device,
    ) -> tuple[Tensor, float, int]:
        patch = _patch_size(encoder)
        feats = []
        gsd_out: list[Tensor] = []
        size = 0
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(device).float()
            x = (x - norm[0].to(device)) / norm[1].to(device)
            g = gsd[start : start + self.batch_size].to(device)
            batch = resize_to_scale({'image': x, 'gsd': g}, scale, patch)
            size = int(batch['image'].shape[-1])
            res = gsd_to_res(batch['gsd'], reference_gsd)
            with torch.autocast(device.type, enabled=False):
                feats.append(encoder_features(encoder, batch['image'], res, self.pool))
            gsd_out.append(batch['gsd'].float().cpu())
        return torch.cat(feats), float(torch.cat(gsd_out).median()), size

    def evaluate(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> list[ScaleResult]:
        """Run the multi-scale kNN now, log and print it.

        Args:
            trainer: The trainer (its loggers receive the metrics).
            pl_module: The task whose encoder is evaluated.

        Returns:
            One :class:`~torchgeo_scalemae.evaluation.report.ScaleResult` per scale.
        """
        if self.disabled:
            return []
        data = self._load()
        encoder = self.encoder_of(pl_module)
        was_training = encoder.training
        encoder.eval()
        device = pl_module.device
        norm = self._normalisation(trainer)
        reference_gsd = self._reference_gsd(pl_module)
        num_classes = len(self.dataset.classes)
        results: list[ScaleResult] = []
        try:
            for scale in self.scales:
                bank, _, _ = self._features(
                    encoder,
                    data['bank_image'],
                    data['bank_gsd'],
                    scale,
                    norm,
                    reference_gsd,
                    device,
                )
                query, gsd, size = self._features(
                    encoder,
                    data['query_image'],
                    data['query_gsd'],
                    scale,
                    norm,
                    reference_gsd,
                    device,
                )
                accuracy = knn_accuracy(
                    query,
                    data['query_label'],
                    bank,
                    data['bank_label'],
                    num_classes,
                    k=min(self.k, len(bank)),
                    temperature=self.temperature,
                )
                results.append(
                    ScaleResult(
                        scale=scale,
                        height=size,
                        width=size,
                        gsd=gsd,
                        res=gsd / reference_gsd,
                        accuracy=accuracy,
                        num_queries=len(query),
                        num_bank=len(bank),
                    )
                )
        finally:
            encoder.train(was_training)
        step = trainer.global_step
        self._last_step = step
        metrics = {
            f'{self.prefix}_acc_{r.size}_gsd{format_gsd(r.gsd)}m': r.accuracy
            for r in results
        }
        mean = sum(r.accuracy for r in results) / len(results)
        metrics[f'{self.prefix}_acc_mean'] = mean
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        seconds = time.monotonic() - self._fit_start
        self.history.append(
            {
                'step': step,
                'epoch': trainer.current_epoch,
                'seconds': seconds,
                'results': results,
            }
        )
        scores = ', '.join(
            f'{r.size} ({format_gsd(r.gsd)} m) {100 * r.accuracy:.1f}%' for r in results
        )
        rank_zero_info(
            f'kNN monitor at step {step} ({seconds / 60:.1f} min): {scores}; '
            f'mean {100 * mean:.1f}%'
        )
        return results


def _patch_size(encoder: nn.Module) -> int:
    patch: Any = getattr(encoder, 'patch_size', None)
    if patch is None:
        embed = getattr(encoder, 'patch_embed', None)
        patch = getattr(embed, 'patch_size', 16)
    if isinstance(patch, tuple | list):
        patch = patch[0]
    return int(patch)
