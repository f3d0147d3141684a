# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale kNN evaluation, runnable with ``torchgeo test`` and ``torchgeo validate``.

.. versionadded:: 0.1
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader
from torchgeo.datasets import GeoDataset
from torchgeo.tasks import BaseTask
from torchvision.models._api import WeightsEnum

from ..callbacks import RemoveEmptyLogDir
from ..callbacks._defaults import not_configured
from ..evaluation.backbone import (
    Pool,
    build_encoder,
    encoder_features,
    load_encoder_weights,
)
from ..evaluation.knn import KNNVote, knn_predict
from ..evaluation.report import (
    ScaleResult,
    metric_name,
    report_scale_results,
    weights_label,
)
from ..evaluation.scales import (
    Interpolation,
    MultiScaleEvaluation,
    ResMode,
    ScaleStats,
    encoder_patch_size,
)

__all__ = ('MultiScaleKNN',)


class _Features:
    """Features and labels of one split at every scale, and what was evaluated."""

    def __init__(self) -> None:
        self.features: dict[int, list[Tensor]] = {}
        self.labels: dict[int, list[Tensor]] = {}
        self.stats = ScaleStats()

    def __bool__(self) -> bool:
        return bool(self.features)

    def cat(self, index: int) -> tuple[Tensor, Tensor]:
        """Return the features (N, D) and labels (N,) at scale *index*."""
        return torch.cat(self.features[index]), torch.cat(self.labels[index])


class MultiScaleKNN(BaseTask):
    """kNN classification accuracy of a frozen encoder at several image scales.

    The Scale-MAE kNN protocol (reference ``mae/eval/knn.py``; paper section
    4.1): for every evaluation scale, **both** the
    bank (the datamodule's training split) and the queries (the split being
    evaluated) are resized to that scale, encoded with the scale's ``res``, and each
    query is classified by its ``k`` nearest bank features (cosine similarity,
    ``exp(sim / temperature)``-weighted or majority vote,
    :mod:`torchgeo_scalemae.evaluation.knn`).

    Run it with ``torchgeo test --config knn.yaml`` (queries from the test split) or
    ``torchgeo validate`` (queries from the validation split). Nothing is trained.

    **Bank.** At the start of the evaluation epoch the task builds the bank itself by
    calling ``datamodule.setup('fit')`` (when no training dataset exists yet) and
    iterating the training dataset **in order, without shuffling, without dropping the
    last partial batch** (TorchGeo's own ``train_dataloader`` drops it), with the
    datamodule's batch size, workers and collate function. Each bank batch goes
    through the datamodule's ``on_after_batch_transfer`` of the running stage, so bank
    and queries get the same (evaluation) augmentation, e.g. normalisation. For a
    GeoDataset (which needs a sampler) ``datamodule.train_dataloader()`` is used.
    ``max_bank_batches`` caps the bank for quick runs.

    **Scales and res.** See :mod:`torchgeo_scalemae.evaluation.scales`
    (:class:`~torchgeo_scalemae.evaluation.scales.MultiScaleEvaluation`): each scale
    is a fraction of the native size or a pixel size, rounded to a multiple of the
    patch size; ``gsd`` is updated per sample and ``res = gsd / reference_gsd``
    (``res_mode='gsd'``), or the reference's relative rule ``res = base_res *
    reference_size / size`` (``'reference'``), or a constant (``'constant'``). A
    batch without ``gsd`` uses ``default_gsd`` (or the GeoDataset ``bounds``).

    **Weights.** Pass a pretraining checkpoint as ``weights``
    (``--model.init_args.weights PATH``), **not** as ``--ckpt_path``: LightningCLI
    would rebuild the pretraining task from the checkpoint, which then refuses to
    test. Lightning checkpoints of
    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`, TorchGeo's ``MAE`` and
    ``Classification``, encoder-only state dicts and weight enums all work
    (:func:`~torchgeo_scalemae.evaluation.backbone.load_encoder_weights`). Without
    weights the encoder is randomly initialised, and the report warns so.

    **Results.** For each scale the accuracy is logged as
    ``<stage>_knn_acc_<size>px_gsd<gsd>m`` (e.g. ``test_knn_acc_112px_gsd0.61m``;
    the GSD is the median over the queries; no GSD part when unknown) and their mean
    as ``<stage>_knn_acc``; a table is printed, and ``knn_<stage>_results.csv``
    (with ``model`` and ``weights`` columns) plus ``knn_<stage>_accuracy_vs_gsd.png``
    (with the chance line ``1 / num_classes``) are written to the trainer's log
    directory, whose paths are printed. :attr:`results` holds the last
    :class:`~torchgeo_scalemae.evaluation.report.ScaleResult` list.

    Runs on one device (the bank is not gathered across processes).
    """

    ignore = ('weights',)
    monitor = 'val_knn_acc'
    mode = 'max'

    def __init__(
        self,
        model: str = 'scalemae_vit_base_patch16',
        weights: WeightsEnum | str | bool | None = None,
        in_channels: int = 3,
        num_classes: int | None = None,
        scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
        k: int = 20,
        temperature: float = 0.07,
        vote: KNNVote = 'weighted',
        pool: Pool = 'token',
        res_mode: ResMode = 'gsd',
        reference_gsd: float = 1.0,
        base_res: float = 1.0,
        reference_size: int | None = None,
        default_gsd: float | None = None,
        interpolation: Interpolation = 'bilinear',
        antialias: bool = True,
        max_bank_batches: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        save_plot: bool = True,
        query_chunk_size: int = 512,
        bank_chunk_size: int = 16384,
    ) -> None:
        """Initialize a new MultiScaleKNN task.

        Args:
            model: Encoder name: a ``scalemae_vit_*`` builder or any timm model.
            weights: Encoder weights: a weight enum or its ``'Class.MEMBER'`` string,
                the path of an encoder state dict or of a Lightning checkpoint (e.g.
                from ``ScaleMAEPretraining``), or None for random initialisation.
            in_channels: Number of input channels.
            num_classes: Number of classes; None infers ``max label + 1``.
            scales: Evaluation scales: fractions of the native size (``<= 1``) or
                pixel sizes (``> 1``).
            k: Number of neighbours (the reference's: 20).
            temperature: Temperature of the weighted vote (the reference's: 0.07).
            vote: ``'weighted'`` (``exp(sim / T)``) or ``'majority'``.
            pool: ``'token'`` (class token after the final norm) or ``'mean'``.
            res_mode: ``'gsd'``, ``'reference'`` or ``'constant'`` (see class docs).
            reference_gsd: ``G`` in metres per pixel for ``res = gsd / G``.
            base_res: ``res`` at the reference size (``'reference'``) or at every
                scale (``'constant'``).
            reference_size: Reference side in pixels for ``'reference'`` mode
                (None: the native image size).
            default_gsd: GSD in metres per pixel for batches that carry none.
            interpolation: Resampling: ``'bilinear'``, ``'bicubic'``, ``'area'``
                (the reference kNN) or ``'nearest'``.
            antialias: Antialias when downsampling (bilinear/bicubic).
            max_bank_batches: Use at most this many training batches for the bank.
            model_kwargs: Extra encoder constructor arguments.
            save_plot: Write the accuracy-vs-GSD plot and CSV to the log directory.
            query_chunk_size: Queries per similarity block.
            bank_chunk_size: Bank entries per similarity block.

        Raises:
            ValueError: For an out-of-range argument (the message names it).
        """
        multiscale = MultiScaleEvaluation(
            scales,
            res_mode=res_mode,
            reference_gsd=reference_gsd,
            base_res=base_res,
            reference_size=reference_size,
            default_gsd=default_gsd,
            interpolation=interpolation,
            antialias=antialias,
        )
        for name, value in (
            ('k', k),
            ('query_chunk_size', query_chunk_size),
            ('bank_chunk_size', bank_chunk_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if vote not in ('weighted', 'majority'):
            raise ValueError(f"vote must be 'weighted' or 'majority', got {vote!r}")
        if pool not in ('token', 'mean'):
            raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if max_bank_batches is not None and max_bank_batches < 1:
            raise ValueError(
                f'max_bank_batches must be >= 1 or None, got {max_bank_batches!r}'
            )
        self.weights = weights
        super().__init__()
        #: The multi-scale protocol (scales, resampling, ``res`` rule).
        self.multiscale = multiscale
        self.results: list[ScaleResult] = []
        self._queries = _Features()
        self._bank = _Features()

    # ------------------------------------------------------------------ setup
    def configure_callbacks(self) -> list[Callback]:
        """Install :class:`~torchgeo_scalemae.callbacks.RemoveEmptyLogDir`.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        return not_configured(self._trainer, [RemoveEmptyLogDir()])

    def configure_models(self) -> None:
        """Build the encoder and load its weights; it stays frozen."""
        encoder = build_encoder(
            self.hparams['model'],
            self.hparams['in_channels'],
            self.hparams['model_kwargs'],
        )
        self.model = load_encoder_weights(encoder, self.weights)
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def scales(self) -> list[float]:
        """The evaluation scales."""
        return list(self.multiscale.scales)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def multiscale_features(self, batch: Mapping[str, Any], out: _Features) -> None:
        """Encode one batch at every scale and append to *out*.

        Args:
            batch: Dict with ``image`` (B, C, H, W), ``label`` (B,) and optionally
                ``gsd`` (B,) in metres per pixel.
            out: The split's per-scale accumulator.

        Raises:
            ValueError: If the batch has no ``label``, or no GSD with
                ``res_mode='gsd'``.
        """
        if 'label' not in batch:
            raise ValueError(
                f'kNN evaluation needs labelled batches; got keys {sorted(batch)}'
            )
        labels = torch.as_tensor(batch['label']).reshape(-1).long()
        self.model.eval()
        patch = encoder_patch_size(self.model)
        for item in self.multiscale.scaled_batches(batch, patch):
            feats = encoder_features(
                self.model, item.image, item.res, self.hparams['pool']
            )
            out.features.setdefault(item.index, []).append(feats.float())
            out.labels.setdefault(item.index, []).append(labels.to(feats.device))
            out.stats.update(item)

    def _bank_batches(self) -> Iterable[Any]:
        trainer = self.trainer
        datamodule = getattr(trainer, 'datamodule', None)
        if datamodule is None:
            raise RuntimeError(
                'MultiScaleKNN needs a datamodule (its training split is the kNN bank); '
                'run it with torchgeo test/validate --data ...'
            )
        if getattr(datamodule, 'train_dataset', None) is None:
            datamodule.setup('fit')
        dataset = getattr(datamodule, 'train_dataset', None)
        if dataset is None or isinstance(dataset, GeoDataset):
            loader = datamodule.train_dataloader()
        else:
            batch_size = getattr(datamodule, 'train_batch_size', None) or getattr(
                datamodule, 'batch_size', 1
            )
            num_workers = int(getattr(datamodule, 'num_workers', 0))
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                drop_last=False,
                num_workers=num_workers,
                collate_fn=getattr(datamodule, 'collate_fn', None),
            )
        for i, batch in enumerate(loader):
            if (
                self.hparams['max_bank_batches'] is not None
                and i >= self.hparams['max_bank_batches']
            ):
                break
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            yield datamodule.on_after_batch_transfer(batch, 0)

    def _build_bank(self) -> None:
        if self.trainer.world_size > 1:
            raise RuntimeError(
                'MultiScaleKNN runs on one device: set trainer.devices=1 '
                f'(world size is {self.trainer.world_size})'
            )
        self._bank = _Features()
        self._queries = _Features()
        # the same precision context (e.g. autocast) as the evaluation steps
        plugin = self.trainer.precision_plugin
        for batch in self._bank_batches():
            with plugin.forward_context():
                self.multiscale_features(batch, self._bank)
        if not self._bank:
            raise RuntimeError('the training split is empty: no kNN bank')

    def _evaluate(self, stage: str) -> list[ScaleResult]:
        results: list[ScaleResult] = []
        if not self._queries:
            return results
        classes = 0
        for index in range(len(self.multiscale.scales)):
            bank_x, bank_y = self._bank.cat(index)
            query_x, query_y = self._queries.cat(index)
            classes = self.hparams['num_classes'] or (
                int(max(bank_y.max(), query_y.max())) + 1
            )
            pred = knn_predict(
                query_x,
                bank_x,
                bank_y,
                classes,
                k=self.hparams['k'],
                temperature=self.hparams['temperature'],
                vote=self.hparams['vote'],
                query_chunk_size=self.hparams['query_chunk_size'],
                bank_chunk_size=self.hparams['bank_chunk_size'],
            )
            accuracy = float((pred == query_y).float().mean())
            results.append(
                self._queries.stats.result(
                    index, accuracy, num_bank=int(bank_y.numel())
                )
            )
        prefix = f'{stage}_knn_acc'
        for r in results:
            self.log(metric_name(prefix, r), r.accuracy)
        self.log(prefix, sum(r.accuracy for r in results) / len(results))
        self.results = results
        self._report(stage, results, classes)
        self._queries = _Features()
        self._bank = _Features()
        return results

    @rank_zero_only
    def _report(self, stage: str, results: list[ScaleResult], classes: int) -> None:
        hp = self.hparams
        weights = weights_label(self.weights)
        title = (
            f'Multi-scale kNN ({stage}): {hp["model"]}, weights={weights}, '
            f'k={hp["k"]}, vote={hp["vote"]}, T={hp["temperature"]}, '
            f'res_mode={hp["res_mode"]}, bank={results[0].num_bank}'
        )
        folder = None
        if hp['save_plot']:
            folder = self.trainer.log_dir or self.trainer.default_root_dir
        report_scale_results(
            results,
            title,
            folder=folder,
            stem=f'knn_{stage}',
            metadata={'model': hp['model'], 'weights': weights},
            chance=1.0 / classes if classes else None,
            plot_title=(
                f'kNN accuracy vs GSD ({stage}; weights: '
                f'{os.path.basename(weights) or weights})'
            ),
            random_init=self.weights is None or self.weights is False,
        )

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self) -> None:
        """Build the bank from the training split."""
        if not self.trainer.sanity_checking:
            self._build_bank()

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Encode a validation batch at every scale.

        Args:
            batch: Dict with ``image``, ``label`` and optionally ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        if not self.trainer.sanity_checking:
            self.multiscale_features(batch, self._queries)

    def on_validation_epoch_end(self) -> None:
        """Classify the validation queries and report per-scale accuracy."""
        if not self.trainer.sanity_checking:
            self._evaluate('val')

    def on_test_epoch_start(self) -> None:
        """Build the bank from the training split."""
        self._build_bank()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Encode a test batch at every scale.

        Args:
            batch: Dict with ``image``, ``label`` and optionally ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        self.multiscale_features(batch, self._queries)

    def on_test_epoch_end(self) -> None:
        """Classify the test queries and report per-scale accuracy."""
        self._evaluate('test')

    def training_step(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not supported: kNN evaluation trains nothing.

        Args:
            args: Ignored.
            kwargs: Ignored.

        Raises:
            RuntimeError: Always; use ``torchgeo test`` or ``torchgeo validate``.
        """
        raise RuntimeError(
            'MultiScaleKNN trains nothing: run `torchgeo test` or `torchgeo validate`'
        )

    def configure_optimizers(self) -> Any:
        """Not supported: kNN evaluation trains nothing.

        Raises:
            RuntimeError: Always; use ``torchgeo test`` or ``torchgeo validate``.
        """
        raise RuntimeError(
            'MultiScaleKNN trains nothing: run `torchgeo test` or `torchgeo validate`'
        )
