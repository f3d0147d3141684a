# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale kNN evaluation, runnable with ``torchgeo test`` and ``torchgeo validate``.

.. versionadded:: 0.1
"""

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader
from torchgeo.datasets import GeoDataset
from torchgeo.tasks import BaseTask
from torchvision.models._api import WeightsEnum

from ..evaluation.backbone import (
    Pool,
    build_encoder,
    encoder_features,
    load_encoder_weights,
)
from ..evaluation.knn import KNNVote, knn_predict
from ..evaluation.report import (
    ScaleResult,
    format_table,
    metric_name,
    plot_accuracy_vs_gsd,
    write_csv,
)
from ..evaluation.scales import (
    Interpolation,
    ResMode,
    check_scales,
    resize_to_scale,
    scale_res,
)
from ..gsd import GSD_KEY, gsd_from_batch

__all__ = ('MultiScaleKNN',)


def _patch_size(encoder: torch.nn.Module) -> int:
    patch = getattr(getattr(encoder, 'patch_embed', None), 'patch_size', None)
    if patch is None:
        return 1
    return int(patch[0] if isinstance(patch, Sequence) else patch)


class _ScaleFeatures:
    """Features, labels, GSDs and res values of one split at one scale."""

    def __init__(self) -> None:
        self.features: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.gsd: list[Tensor] = []
        self.res: list[Tensor] = []
        self.size: tuple[int, int] = (0, 0)

    def cat(self) -> tuple[Tensor, Tensor, float, float]:
        """Return features (N, D), labels (N,), median GSD and median res."""
        gsd = torch.cat(self.gsd).float() if self.gsd else torch.tensor([math.nan])
        res = torch.cat(self.res).float()
        return (
            torch.cat(self.features),
            torch.cat(self.labels),
            float(gsd.median()),
            float(res.median()),
        )


class MultiScaleKNN(BaseTask):
    """kNN classification accuracy of a frozen encoder at several image scales.

    The Scale-MAE kNN protocol (spec 7.1): for every evaluation scale, **both** the
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

    **Scales and res.** See :mod:`torchgeo_scalemae.evaluation.scales`: each scale is a
    fraction of the native size or a pixel size, rounded to a multiple of the patch
    size; ``gsd`` is updated by :class:`~torchgeo_scalemae.transforms.GSDResize`
    and ``res = gsd / reference_gsd`` (``res_mode='gsd'``), or the reference's
    relative rule ``res = base_res * reference_size / size`` (``'reference'``), or a
    constant (``'constant'``). A batch without ``gsd`` uses ``default_gsd`` (or the
    GeoDataset ``bounds``).

    **Weights.** Pass a pretraining checkpoint as ``weights`` (a path), **not** as
    ``--ckpt_path``: LightningCLI would rebuild the pretraining task from the
    checkpoint's hyperparameters. Lightning checkpoints of
    :class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining`, TorchGeo's ``MAE`` and
    ``Classification``, encoder-only state dicts and weight enums all work
    (:func:`~torchgeo_scalemae.evaluation.backbone.load_encoder_weights`).

    **Results.** For each scale the accuracy is logged as
    ``<stage>_knn_acc_<size>px_gsd<gsd>m`` (e.g. ``test_knn_acc_112px_gsd0.61m``;
    the GSD is the median over the queries; no GSD part when unknown), a table is
    printed, and ``knn_<stage>_results.csv`` plus ``knn_<stage>_accuracy_vs_gsd.png``
    are written to the trainer's log directory. :attr:`results` holds the last
    :class:`~torchgeo_scalemae.evaluation.report.ScaleResult` list.

    Runs on one device (the bank is not gathered across processes).

    .. versionadded:: 0.1
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
            k: Number of neighbours (spec 7.1: 20).
            temperature: Temperature of the weighted vote (spec 7.1: 0.07).
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
            ValueError: For invalid scales, ``k``, ``temperature``, ``vote``, ``pool``,
                ``res_mode``, ``reference_gsd`` or ``default_gsd``.
        """
        check_scales(scales)
        if k < 1:
            raise ValueError(f'k must be >= 1, got {k}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if vote not in ('weighted', 'majority'):
            raise ValueError(f"vote must be 'weighted' or 'majority', got {vote!r}")
        if pool not in ('token', 'mean'):
            raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
        if res_mode not in ('gsd', 'reference', 'constant'):
            raise ValueError(
                f"res_mode must be 'gsd', 'reference' or 'constant', got {res_mode!r}"
            )
        for name, value in (('reference_gsd', reference_gsd), ('base_res', base_res)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be finite and > 0, got {value!r}')
        if default_gsd is not None and not (
            math.isfinite(default_gsd) and default_gsd > 0
        ):
            raise ValueError(f'default_gsd must be > 0 metres, got {default_gsd!r}')
        if num_classes is not None and num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.weights = weights
        super().__init__()
        self.results: list[ScaleResult] = []
        self._queries: dict[float, _ScaleFeatures] = {}
        self._bank: dict[float, _ScaleFeatures] = {}

    # ------------------------------------------------------------------ setup
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
        return check_scales(self.hparams['scales'])

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def multiscale_features(
        self, batch: Mapping[str, Any], out: dict[float, _ScaleFeatures]
    ) -> None:
        """Encode one batch at every scale and append to *out*.

        Args:
            batch: Dict with ``image`` (B, C, H, W), ``label`` (B,) and optionally
                ``gsd`` (B,) in metres per pixel.
            out: Per-scale accumulators.
        """
        image = batch['image']
        if 'label' not in batch:
            raise ValueError(
                f'kNN evaluation needs labelled batches; got keys {sorted(batch)}'
            )
        labels = torch.as_tensor(batch['label']).reshape(-1).long()
        gsd: Tensor | None
        try:
            gsd = gsd_from_batch(batch, self.hparams['default_gsd'])
        except ValueError:
            if self.hparams['res_mode'] == 'gsd':
                raise
            gsd = None
        base = dict(batch)
        if gsd is not None:
            base[GSD_KEY] = gsd
        patch = _patch_size(self.model)
        width = image.shape[-1]
        self.model.eval()
        for scale in self.scales:
            resized = resize_to_scale(
                base,
                scale,
                patch,
                interpolation=self.hparams['interpolation'],
                antialias=self.hparams['antialias'],
            )
            x = resized['image']
            res = scale_res(
                self.hparams['res_mode'],
                gsd=resized.get(GSD_KEY),
                size=x.shape[-1],
                native=width,
                batch_size=x.shape[0],
                reference_gsd=self.hparams['reference_gsd'],
                base_res=self.hparams['base_res'],
                reference_size=self.hparams['reference_size'],
                device=x.device,
            )
            feats = encoder_features(self.model, x, res, self.hparams['pool'])
            acc = out.setdefault(scale, _ScaleFeatures())
            acc.features.append(feats.float())
            acc.labels.append(labels.to(feats.device))
            acc.res.append(res.detach())
            if resized.get(GSD_KEY) is not None:
                acc.gsd.append(resized[GSD_KEY].detach().float())
            acc.size = (int(x.shape[-2]), int(x.shape[-1]))

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
        self._bank = {}
        self._queries = {}
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
        num_classes = self.hparams['num_classes']
        for scale in self.scales:
            bank = self._bank[scale]
            query = self._queries[scale]
            bank_x, bank_y, _, _ = bank.cat()
            query_x, query_y, gsd, res = query.cat()
            classes = num_classes or int(max(bank_y.max(), query_y.max())) + 1
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
                ScaleResult(
                    scale=scale,
                    height=query.size[0],
                    width=query.size[1],
                    gsd=gsd,
                    res=res,
                    accuracy=accuracy,
                    num_queries=int(query_y.numel()),
                    num_bank=int(bank_y.numel()),
                )
            )
        prefix = f'{stage}_knn_acc'
        for r in results:
            self.log(metric_name(prefix, r), r.accuracy)
        self.log(prefix, sum(r.accuracy for r in results) / len(results))
        self.results = results
        self._report(stage, results)
        self._queries = {}
        self._bank = {}
        return results

    @rank_zero_only
    def _report(self, stage: str, results: list[ScaleResult]) -> None:
        hp = self.hparams
        title = (
            f'Multi-scale kNN ({stage}): {hp["model"]}, k={hp["k"]}, '
            f'vote={hp["vote"]}, T={hp["temperature"]}, res_mode={hp["res_mode"]}, '
            f'bank={results[0].num_bank}'
        )
        print(format_table(results, title), flush=True)
        if hp['save_plot']:
            log_dir = self.trainer.log_dir or self.trainer.default_root_dir
            write_csv(results, os.path.join(log_dir, f'knn_{stage}_results.csv'))
            plot_accuracy_vs_gsd(
                {hp['model']: results},
                os.path.join(log_dir, f'knn_{stage}_accuracy_vs_gsd.png'),
                title=f'kNN accuracy vs GSD ({stage})',
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
