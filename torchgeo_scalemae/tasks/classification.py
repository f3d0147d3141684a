# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GSD-aware image classification: linear probing and fine-tuning of Scale-MAE.

.. versionadded:: 0.1
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.optim import AdamW
from torchgeo.tasks import Classification
from torchmetrics.classification import MulticlassAccuracy
from torchvision.models._api import WeightsEnum

from ..callbacks import RemoveEmptyLogDir
from ..callbacks._defaults import not_configured
from ..evaluation.backbone import Pool, build_encoder, load_encoder_weights
from ..evaluation.report import ScaleResult, metric_name, report_scale_results
from ..evaluation.scales import (
    Interpolation,
    MultiScaleEvaluation,
    ResMode,
    ScaleStats,
    encoder_patch_size,
)
from ..gsd import GSD_KEY
from ..models import ScaleMAEEncoder
from ..transforms import GSDRandomResizedCrop
from ._finetune import compute_scale_metrics, run_labels, scale_metrics
from ._optim import check_layer_decay, layer_decay_groups, plateau_schedule

__all__ = ('ScaleMAEClassification',)


class ScaleMAEClassification(Classification):
    """Image classification with a Scale-MAE encoder that sees each batch's GSD.

    A subclass of :class:`torchgeo.tasks.Classification` (same losses, metrics,
    logging and CLI arguments) whose every step passes
    ``res = gsd / reference_gsd`` of the batch to the encoder
    (``batch['gsd']`` in metres per pixel, else GeoDataset ``bounds``, else
    ``default_gsd``; see :mod:`torchgeo_scalemae.evaluation.scales` for the other
    ``res_mode`` values).

    * **Linear probing** (``freeze_backbone=True``): the encoder is frozen and the
      head is ``BatchNorm1d(affine=False, eps=1e-6)`` followed by a ``Linear`` layer
      with truncated-normal (std 0.01) weights, as in the reference
      ``main_linprobe.py``. ``probe_batchnorm`` switches the BatchNorm on or off
      explicitly.
    * **Fine-tuning** (``freeze_backbone=False``): all parameters train; with
      ``layer_decay`` (e.g. 0.75) the learning rate of block ``i`` of ``L`` is scaled
      by ``layer_decay ** (L + 1 - i)`` (timm's ``param_groups_layer_decay``) and
      AdamW uses betas (0.9, 0.95), ``weight_decay`` on weights only.
    * **Training crops** (``train_size``): a GSD-aware random resized crop of every
      training batch (the reference trains at 224 px with area scale (0.5, 1)).
    * **Multi-scale testing** (``eval_scales``): every test batch is also resized to
      each scale (GSD updated, ``res`` recomputed,
      :class:`~torchgeo_scalemae.evaluation.scales.MultiScaleEvaluation`) and the
      top-1 accuracy per scale is logged as ``test_acc_<size>px_gsd<gsd>m``, printed
      as a table, written to ``classification_test_results.csv`` (with ``model``,
      ``weights`` and ``checkpoint`` columns) and plotted, with the chance line
      ``1 / num_classes``, to ``classification_test_accuracy_vs_gsd.png`` in the log
      directory; both paths are printed.

    Weights follow :func:`~torchgeo_scalemae.evaluation.backbone.load_encoder_weights`
    (weight enums, ``'Class.MEMBER'`` strings, encoder state dicts, Lightning
    checkpoints of the pretraining task); the classifier head always starts fresh.
    ``torchgeo test --ckpt_path`` takes a checkpoint written by this task's
    ``torchgeo fit``; a pretraining checkpoint goes in ``weights``. A test of an
    encoder that started from a random initialisation (no ``weights``, no
    ``--ckpt_path``) warns so.
    """

    def __init__(
        self,
        model: str = 'scalemae_vit_base_patch16',
        weights: WeightsEnum | str | bool | None = None,
        in_channels: int = 3,
        task: Literal['binary', 'multiclass', 'multilabel'] = 'multiclass',
        num_classes: int | None = None,
        num_labels: int | None = None,
        labels: list[str] | None = None,
        pos_weight: Tensor | None = None,
        loss: Literal['ce', 'bce', 'jaccard', 'focal', 'dice'] = 'ce',
        class_weights: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
        pool: Pool = 'token',
        probe_batchnorm: bool | None = None,
        layer_decay: float | None = None,
        weight_decay: float = 0.05,
        res_mode: ResMode = 'gsd',
        reference_gsd: float = 1.0,
        base_res: float = 1.0,
        reference_size: int | None = None,
        default_gsd: float | None = None,
        eval_scales: Sequence[float] | None = None,
        interpolation: Interpolation = 'bilinear',
        antialias: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        train_size: int | None = None,
        train_scale: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        """Initialize a new ScaleMAEClassification task.

        Args:
            model: Encoder name: a ``scalemae_vit_*`` builder or any timm model.
            weights: Encoder weights (enum, ``'Class.MEMBER'``, file path, Lightning
                checkpoint) or None.
            in_channels: Number of input channels.
            task: ``'binary'``, ``'multiclass'`` or ``'multilabel'``.
            num_classes: Number of classes (multiclass).
            num_labels: Number of labels (multilabel).
            labels: Class names.
            pos_weight: Positive-class weight of the ``'bce'`` loss.
            loss: ``'ce'``, ``'bce'``, ``'jaccard'``, ``'focal'`` or ``'dice'``.
            class_weights: Per-class weights of the ``'ce'`` loss.
            ignore_index: Class index ignored by loss and metrics.
            lr: Learning rate (of the head, and of the last layer with layer decay).
            patience: Patience of the ReduceLROnPlateau scheduler, epochs.
            freeze_backbone: Linear probing: train the head only.
            pool: ``'token'`` (class token after the final norm) or ``'mean'``.
            probe_batchnorm: Put ``BatchNorm1d(affine=False)`` before the linear
                head; None means "when ``freeze_backbone``" (the reference's
                linear probe).
            layer_decay: Layer-wise lr decay factor in (0, 1] for fine-tuning; None
                disables it (plain AdamW on all trainable parameters).
            weight_decay: AdamW weight decay (biases, norms and tokens excluded).
            res_mode: ``'gsd'``, ``'reference'`` or ``'constant'``.
            reference_gsd: ``G`` in metres per pixel for ``res = gsd / G``.
            base_res: ``res`` at the reference size / everywhere (other modes).
            reference_size: Reference side in pixels for ``'reference'`` mode.
            default_gsd: GSD in metres per pixel of batches that carry none.
            eval_scales: Test scales (fractions ``<= 1`` or pixel sizes ``> 1``);
                None tests at the native size only.
            interpolation: Resampling for ``eval_scales``.
            antialias: Antialias when downsampling.
            model_kwargs: Extra encoder constructor arguments.
            train_size: If given, every training batch is randomly resized-cropped
                to this square size in pixels
                (:class:`~torchgeo_scalemae.transforms.GSDRandomResizedCrop`, bicubic,
                ``gsd`` updated) before the encoder, as the reference's RRC at 224.
            train_scale: Area range of that crop, a fraction of the image
                (reference: (0.5, 1)). With ``res_mode='reference'`` the crop's
                zoom multiplies ``res`` (``base_res x crop px / train_size``, the
                reference's training rule).

        Raises:
            ValueError: For an out-of-range argument (the message names it), or
                ``eval_scales`` with a non-multiclass task.
        """
        # validates the scales and the res rule (used at every step, not only for
        # eval_scales)
        multiscale = MultiScaleEvaluation(
            (1.0,) if eval_scales is None else eval_scales,
            res_mode=res_mode,
            reference_gsd=reference_gsd,
            base_res=base_res,
            reference_size=reference_size,
            default_gsd=default_gsd,
            interpolation=interpolation,
            antialias=antialias,
        )
        check_layer_decay(layer_decay)
        if pool not in ('token', 'mean'):
            raise ValueError(f"pool must be 'token' or 'mean', got {pool!r}")
        if train_size is not None and train_size < 1:
            raise ValueError(f'train_size must be >= 1 pixel, got {train_size!r}')
        if eval_scales is not None and task != 'multiclass':
            raise ValueError(f"eval_scales needs task='multiclass', got task={task!r}")
        super().__init__(
            model=model,
            weights=weights,
            in_channels=in_channels,
            task=task,
            num_classes=num_classes,
            num_labels=num_labels,
            labels=labels,
            pos_weight=pos_weight,
            loss=loss,
            class_weights=class_weights,
            ignore_index=ignore_index,
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
        )
        #: The multi-scale protocol and ``res`` rule of every step.
        self.multiscale = multiscale
        self._scale_stats = ScaleStats()
        self.scale_results: list[ScaleResult] = []
        self.train_crop = (
            None
            if train_size is None
            else GSDRandomResizedCrop(
                train_size, scale=(float(train_scale[0]), float(train_scale[1]))
            )
        )

    # ------------------------------------------------------------------ models
    def configure_callbacks(self) -> list[Callback]:
        """Install :class:`~torchgeo_scalemae.callbacks.RemoveEmptyLogDir`.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        return not_configured(self._trainer, [RemoveEmptyLogDir()])

    def configure_models(self) -> None:
        """Build the encoder with a classifier head and load encoder weights."""
        hp = self.hparams
        outputs = hp['num_classes'] or hp['num_labels'] or 1
        kwargs: dict[str, Any] = {
            'global_pool': 'token' if hp['pool'] == 'token' else 'avg'
        }
        kwargs.update(hp['model_kwargs'] or {})
        kwargs['num_classes'] = outputs
        model = build_encoder(hp['model'], hp['in_channels'], kwargs)
        self.model = load_encoder_weights(model, self.weights)
        batchnorm = hp['probe_batchnorm']
        if batchnorm is None:
            batchnorm = hp['freeze_backbone']
        features = int(getattr(self.model, 'num_features', 0))
        linear = nn.Linear(features, outputs)
        nn.init.trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        head: nn.Module = linear
        if batchnorm:
            head = nn.Sequential(
                nn.BatchNorm1d(features, affine=False, eps=1e-6), linear
            )
        self.model.head = head
        if hp['freeze_backbone']:
            self.model.requires_grad_(False)
            head.requires_grad_(True)

        self.scale_metrics = scale_metrics(
            hp['eval_scales'],
            lambda: MulticlassAccuracy(
                num_classes=outputs, average='micro', ignore_index=hp['ignore_index']
            ),
        )

    def configure_optimizers(self) -> Any:
        """AdamW (betas 0.9, 0.95) with optional layer-wise lr decay + plateau schedule.

        Returns:
            Optimizer and learning-rate scheduler configuration.
        """
        hp = self.hparams
        if hp['layer_decay'] is None:
            params = [p for p in self.parameters() if p.requires_grad]
            optimizer = AdamW(
                params, lr=hp['lr'], betas=(0.9, 0.95), weight_decay=hp['weight_decay']
            )
        else:
            groups = layer_decay_groups(
                self.model, hp['lr'], hp['weight_decay'], hp['layer_decay']
            )
            optimizer = AdamW(groups, lr=hp['lr'], betas=(0.9, 0.95))
        return plateau_schedule(optimizer, hp['patience'], self.monitor)

    def on_train_epoch_start(self) -> None:
        """Keep a frozen encoder in eval mode (only the head trains)."""
        if self.hparams['freeze_backbone']:
            self.model.eval()
            self.model.head.train()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, res: Tensor | None = None) -> Tensor:
        """Logits of the encoder and head.

        Args:
            x: (B, C, H, W) images.
            res: (B,) per-sample ``gsd / reference_gsd``; None uses the encoder's
                default. Ignored by encoders other than ScaleMAEEncoder.

        Returns:
            (B, num_classes) logits.
        """
        if isinstance(self.model, ScaleMAEEncoder):
            out: Tensor = self.model(x, res=res)
        else:
            out = self.model(x)
        return out

    def batch_res(
        self, batch: Mapping[str, Any], image: Tensor, native: int | None = None
    ) -> Tensor:
        """``res`` for a batch whose images are *image* (see ``res_mode``).

        Args:
            batch: The batch (``gsd`` read from it, already matching *image*).
            image: (B, C, H, W) images fed to the encoder.
            native: Native side in pixels for ``'reference'`` mode (default: W).

        Returns:
            float32 (B,) ``res`` on the image's device.
        """
        return self.multiscale.res(batch, image, native)

    def _step(self, batch: Any, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        x = batch['image']
        res: Tensor | None = None
        if stage == 'train' and self.train_crop is not None:
            with torch.no_grad():
                gsd = self.multiscale.batch_gsd(batch)
                if gsd is None:  # only the crop's zoom is needed
                    gsd = torch.ones(x.shape[0], device=x.device)
                batch = self.train_crop({**batch, GSD_KEY: gsd})
                if self.hparams['res_mode'] == 'reference':
                    # the reference's training rule: base_res x crop px / output px
                    zoom = batch[GSD_KEY] / gsd
                    res = self.multiscale.res(batch, x) * zoom
                else:  # the batch GSD was checked above: not again after the crop
                    res = self.multiscale.res(batch, batch['image'], gsd=batch[GSD_KEY])
            x = batch['image']
        y = batch['label']
        if res is None:
            res = self.batch_res(batch, x)
        y_hat = self.forward(x, res).squeeze(1)
        metrics = getattr(self, f'{stage}_metrics')
        metrics(y_hat, y)
        target = y.float() if self.hparams['loss'] == 'bce' else y
        loss: Tensor = self.criterion(y_hat, target)
        self.log(f'{stage}_loss', loss, batch_size=x.shape[0])
        return loss, y_hat, y

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss with the batch's GSD.

        Args:
            batch: Dict with ``image`` (B, C, H, W), ``label`` and ``gsd`` (B,).
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.

        Returns:
            The loss.
        """
        return self._step(batch, 'train')[0]

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Compute the validation loss and metrics with the batch's GSD.

        Args:
            batch: Dict with ``image``, ``label`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        self._step(batch, 'val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Test metrics at the native size and, with ``eval_scales``, at every scale.

        Args:
            batch: Dict with ``image``, ``label`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        self._step(batch, 'test')
        if self.hparams['eval_scales'] is None:
            return
        patch = encoder_patch_size(self.model)
        for item in self.multiscale.scaled_batches(batch, patch):
            y_hat = self.forward(item.image, item.res)
            self._scale_metric(item.index).update(y_hat, batch['label'])
            self._scale_stats.update(item)

    def _scale_metric(self, index: int) -> MulticlassAccuracy:
        return cast(MulticlassAccuracy, self.scale_metrics[str(index)])

    def on_test_epoch_end(self) -> None:
        """Log test metrics and the per-scale accuracies (table, CSV and plot)."""
        super().on_test_epoch_end()
        if self.hparams['eval_scales'] is None or not len(self._scale_stats):
            return
        results = [
            self._scale_stats.result(index, float(value))
            for index, value in enumerate(compute_scale_metrics(self.scale_metrics))
        ]
        for r in results:
            self.log(metric_name('test_acc', r), r.accuracy)
        self.scale_results = results
        self._scale_stats.reset()
        self._report(results)

    @rank_zero_only
    def _report(self, results: list[ScaleResult]) -> None:
        hp = self.hparams
        mode = 'linear probe' if hp['freeze_backbone'] else 'fine-tuned'
        run = run_labels(self.trainer, self.weights, hp['model'], mode)
        classes = hp['num_classes']
        report_scale_results(
            results,
            f'Multi-scale test {run.title}',
            folder=run.folder,
            stem='classification_test',
            metadata=run.metadata,
            chance=1.0 / classes if classes else None,
            plot_title=f'Accuracy vs GSD {run.plot_note}',
            random_init=run.random_init,
        )

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Class probabilities with the batch's GSD.

        Args:
            batch: Dict with ``image`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.

        Returns:
            (B, num_classes) probabilities.
        """
        x = batch['image']
        y_hat = self.forward(x, self.batch_res(batch, x))
        if self.hparams['task'] == 'multiclass':
            return y_hat.softmax(dim=1)
        probs: Tensor = y_hat.sigmoid()
        return probs
