# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GSD-aware semantic segmentation: a Scale-MAE encoder with UPerNet.

The paper's segmentation result (Sec. 4.2, Table 4, Fig. 6: SpaceNet v1 buildings,
UPerNet on a ViT-L) through ``torchgeo fit`` / ``torchgeo test``. TorchGeo's own
``SemanticSegmentation(model='upernet', backbone='tu-...')`` cannot build UPerNet on
a Vision Transformer (smp's timm encoders need a hierarchical backbone) and never
passes a GSD; :class:`ScaleMAESegmentation` builds
:class:`~torchgeo_scalemae.models.ScaleMAEUPerNet` and passes every batch's
``res = gsd / reference_gsd``.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import kornia.augmentation as K
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.optim import AdamW
from torchgeo.datamodules import BaseDataModule
from torchgeo.datasets import RGBBandsMissingError, unbind_samples
from torchgeo.tasks import SemanticSegmentation
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.models._api import WeightsEnum

from ..callbacks import RemoveEmptyLogDir
from ..callbacks._defaults import not_configured
from ..evaluation.backbone import build_encoder, load_encoder_weights
from ..evaluation.report import (
    SegmentationScaleResult,
    metric_name,
    report_segmentation_results,
)
from ..evaluation.scales import Interpolation, MultiScaleEvaluation, ResMode, ScaleStats
from ..models import ScaleMAEEncoder, ScaleMAEUPerNet
from ._finetune import compute_scale_metrics, run_labels, scale_metrics
from ._optim import (
    check_layer_decay,
    layer_decay_groups,
    param_groups,
    plateau_schedule,
)

__all__ = ('ScaleMAESegmentation',)

#: Default test scales: the paper's 100, 75 and 50 % image sizes (Fig. 6).
DEFAULT_TEST_SCALES: tuple[float, ...] = (1.0, 0.75, 0.5)


def iou_from_confusion(confusion: Tensor, ignore_index: int | None) -> list[float]:
    """Per-class intersection over union from a confusion matrix.

    Args:
        confusion: (K, K) counts, rows the targets, columns the predictions.
        ignore_index: A class left out of the result (its row and column are
            dropped first), or None.

    Returns:
        K IoUs in [0, 1] (NaN for a class absent from targets and predictions),
        without the ignored class when it is one of the K.
    """
    confusion = confusion.double()
    keep = [
        k
        for k in range(confusion.shape[0])
        if ignore_index is None or k != ignore_index
    ]
    confusion = confusion[keep][:, keep]
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    return [float(v) for v in iou]


def mean_iou(ious: Sequence[float]) -> float:
    """The mean of the finite IoUs (NaN when there is none)."""
    finite = [v for v in ious if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class ScaleMAESegmentation(SemanticSegmentation):
    """Semantic segmentation with a Scale-MAE UPerNet that sees each batch's GSD.

    A subclass of :class:`torchgeo.tasks.SemanticSegmentation` (same losses,
    metrics, validation figures and CLI arguments; ``model`` is always UPerNet)
    whose model is :class:`~torchgeo_scalemae.models.ScaleMAEUPerNet` and whose
    every step passes ``res = gsd / reference_gsd`` of the batch to the encoder
    (``batch['gsd']`` in metres per pixel, else GeoDataset ``bounds``, else
    ``default_gsd``; see :mod:`torchgeo_scalemae.evaluation.scales` for the other
    ``res_mode`` values).

    * **Neck**: the patch tokens of the encoder blocks ``indices`` become a
      pyramid at strides 4, 8, 16 and 32 pixels (16-pixel patches; see
      :class:`~torchgeo_scalemae.models.ViTPyramidNeck`).
    * **Fine-tuning**: with ``layer_decay`` (e.g. 0.65) the neck, decoder and
      head train at ``lr``, encoder block ``i`` (1 to ``L``) at
      ``lr * layer_decay ** (L + 1 - i)`` and the patch embedding at
      ``lr * layer_decay ** (L + 1)`` (timm's ``param_groups_layer_decay``, with
      the decoder as the top layer, as in BEiT and MAE segmentation). AdamW uses betas (0.9, 0.999) and ``weight_decay`` on weights only
      (biases, norms and tokens excluded).
    * **Frozen encoder** (``freeze_backbone=True``): only the neck, decoder and
      head train; ``freeze_decoder=True`` also freezes neck and decoder.
    * **Multi-scale testing** (``test_scales``, default 100, 75 and 50 % of the
      image size as in the paper's Fig. 6): every test batch is also resized to
      each scale (images bilinearly, masks with nearest-neighbour sampling, GSD
      updated, ``res`` recomputed;
      :class:`~torchgeo_scalemae.evaluation.scales.MultiScaleEvaluation`), and the
      IoU of every class and the mIoU at that scale are logged as
      ``test_iou_<class>_<size>px_gsd<gsd>m`` and ``test_miou_<size>px_gsd<gsd>m``,
      printed as a table, written to ``segmentation_test_results.csv`` (columns
      ``scale,height,width,gsd,class,iou``, then ``model``, ``weights`` and
      ``checkpoint``; one row per scale and class plus one whose class is
      ``mean``) and plotted to ``segmentation_test_miou_vs_gsd.png`` in the log
      directory; both paths are printed. The ignored class (``ignore_index``) is
      left out of the IoUs and of the mean; a class absent from targets and
      predictions at a scale has IoU NaN and is left out of that mean.

    Weights follow :func:`~torchgeo_scalemae.evaluation.backbone.load_encoder_weights`
    (weight enums, ``'Class.MEMBER'`` strings, encoder state dicts, exported
    ``.safetensors`` files, Lightning checkpoints of the pretraining task); the
    neck, decoder and head always start fresh. ``torchgeo test --ckpt_path`` takes
    a checkpoint written by this task's ``torchgeo fit``.
    """

    def __init__(
        self,
        backbone: str = 'scalemae_vit_base_patch16',
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
        lr: float = 1e-4,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        indices: list[int] | None = None,
        decoder_channels: int = 256,
        neck_channels: list[int] | int | None = None,
        decoder_norm: Literal[
            'batchnorm', 'identity', 'layernorm', 'instancenorm'
        ] = 'batchnorm',
        layer_decay: float | None = None,
        weight_decay: float = 0.05,
        res_mode: ResMode = 'gsd',
        reference_gsd: float = 1.0,
        base_res: float = 1.0,
        reference_size: int | None = None,
        default_gsd: float | None = None,
        test_scales: Sequence[float] | None = DEFAULT_TEST_SCALES,
        interpolation: Interpolation = 'bilinear',
        antialias: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Initialize a new ScaleMAESegmentation task.

        Args:
            backbone: Encoder name: a ``scalemae_vit_*`` builder (for example
                ``scalemae_vit_large_patch16``, the paper's ViT-L/16, or
                ``scalemae_vit_tiny_patch16`` for tests) or ``scalemae_vit`` with
                the architecture in ``model_kwargs``.
            weights: Encoder weights (enum, ``'Class.MEMBER'``, ``.ckpt`` of the
                pretraining task, exported ``.safetensors`` or state-dict path) or
                None (random initialisation).
            in_channels: Number of input channels.
            task: ``'binary'``, ``'multiclass'`` or ``'multilabel'``.
            num_classes: Number of classes (multiclass; including the ignored one).
            num_labels: Number of labels (multilabel).
            labels: Class names (CSV, metric names and TorchGeo's class-wise
                metrics); default ``'0'``, ``'1'``...
            pos_weight: Positive-class weight of the ``'bce'`` loss.
            loss: ``'ce'``, ``'bce'``, ``'jaccard'``, ``'focal'`` or ``'dice'``.
            class_weights: Per-class weights of the ``'ce'`` loss.
            ignore_index: Class index ignored by loss and metrics.
            lr: Learning rate (of the neck, decoder, head and last encoder layer).
            patience: Patience of the ReduceLROnPlateau scheduler, epochs.
            freeze_backbone: Train the neck, decoder and head only.
            freeze_decoder: Also freeze the neck and decoder (train the head only).
            indices: Four encoder blocks feeding the pyramid, finest level first;
                None: :func:`~torchgeo_scalemae.models.default_pyramid_indices`
                (``[7, 11, 15, 23]`` for ViT-L).
            decoder_channels: Width of the UPerNet decoder.
            neck_channels: Channels of the pyramid levels; None keeps the encoder
                width.
            decoder_norm: Normalisation of the decoder's convolutions (BatchNorm
                needs training batches of 2 or more images).
            layer_decay: Layer-wise lr decay factor in (0, 1]; None disables it.
            weight_decay: AdamW weight decay (biases, norms and tokens excluded).
            res_mode: ``'gsd'``, ``'reference'`` or ``'constant'``.
            reference_gsd: ``G`` in metres per pixel for ``res = gsd / G``.
            base_res: ``res`` at the reference size / everywhere (other modes).
            reference_size: Reference side in pixels for ``'reference'`` mode.
            default_gsd: GSD in metres per pixel of batches that carry none.
            test_scales: Test scales (fractions ``<= 1`` or pixel sizes ``> 1``,
                rounded to multiples of the patch size); None tests at the native
                size only (TorchGeo's metrics).
            interpolation: Image resampling for ``test_scales``.
            antialias: Antialias when downsampling.
            model_kwargs: Extra encoder constructor arguments (e.g. ``img_size``,
                ``drop_path_rate``, or the architecture for ``scalemae_vit``).

        Raises:
            ValueError: For an out-of-range argument (the message names it),
                ``test_scales`` with a multilabel task, or ``weights=True``.
            TypeError: If ``backbone`` is not a Scale-MAE encoder.
        """
        multiscale = MultiScaleEvaluation(
            (1.0,) if test_scales is None else test_scales,
            res_mode=res_mode,
            reference_gsd=reference_gsd,
            base_res=base_res,
            reference_size=reference_size,
            default_gsd=default_gsd,
            interpolation=interpolation,
            antialias=antialias,
        )
        check_layer_decay(layer_decay)
        if test_scales is not None and task == 'multilabel':
            raise ValueError(
                "test_scales needs task='multiclass' or 'binary', got "
                f'task={task!r}; set test_scales=None'
            )
        if weights is True:
            raise ValueError(
                'weights=True (ImageNet weights of smp encoders) does not apply to '
                'Scale-MAE encoders; give a weight enum, its name or a file path'
            )
        if task == 'multiclass' and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 2
        ):
            raise ValueError(
                f"task='multiclass' needs num_classes >= 2, got {num_classes!r}"
            )
        if labels is not None and task == 'multiclass' and len(labels) != num_classes:
            raise ValueError(
                f'labels must name the {num_classes} classes, got {len(labels)}: '
                f'{labels!r}'
            )
        super().__init__(
            model='upernet',
            backbone=backbone,
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
            freeze_decoder=freeze_decoder,
        )
        #: The multi-scale protocol and ``res`` rule of every step.
        self.multiscale = multiscale
        self._scale_stats = ScaleStats()
        #: Per-scale results of the last multi-scale test.
        self.scale_results: list[SegmentationScaleResult] = []

    # ------------------------------------------------------------------ models
    def configure_callbacks(self) -> list[Callback]:
        """Install :class:`~torchgeo_scalemae.callbacks.RemoveEmptyLogDir`.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        return not_configured(self._trainer, [RemoveEmptyLogDir()])

    def configure_models(self) -> None:
        """Build the encoder, load its weights and add the neck, decoder and head."""
        hp = self.hparams
        encoder = build_encoder(hp['backbone'], hp['in_channels'], hp['model_kwargs'])
        if not isinstance(encoder, ScaleMAEEncoder):
            raise TypeError(
                f'backbone must name a Scale-MAE encoder (scalemae_vit_*), got '
                f'{hp["backbone"]!r} ({type(encoder).__name__})'
            )
        load_encoder_weights(encoder, self.weights)
        outputs = hp['num_classes'] or hp['num_labels'] or 1
        if hp['task'] == 'binary':
            outputs = 1
        self.model = ScaleMAEUPerNet(
            encoder,
            outputs,
            indices=hp['indices'],
            decoder_channels=hp['decoder_channels'],
            neck_channels=hp['neck_channels'],
            decoder_norm=hp['decoder_norm'],
        )
        if hp['freeze_backbone']:
            self.model.encoder.requires_grad_(False)
        if hp['freeze_decoder']:
            self.model.neck.requires_grad_(False)
            self.model.decoder.requires_grad_(False)
        classes = 2 if hp['task'] == 'binary' else hp['num_classes']
        self.scale_metrics = scale_metrics(
            hp['test_scales'],
            lambda: MulticlassConfusionMatrix(
                num_classes=classes, ignore_index=hp['ignore_index']
            ),
        )

    def configure_optimizers(self) -> Any:
        """AdamW with optional layer-wise lr decay + plateau schedule.

        Returns:
            Optimizer and learning-rate scheduler configuration.
        """
        hp = self.hparams
        model = cast(ScaleMAEUPerNet, self.model)
        if hp['layer_decay'] is None:
            groups = param_groups(self.named_parameters(), hp['weight_decay'])
        else:
            # timm puts the last block at scale 1 (the encoder has no head);
            # one more factor puts the decoder there instead (BEiT / MAE)
            groups = layer_decay_groups(
                model.encoder,
                hp['lr'],
                hp['weight_decay'],
                hp['layer_decay'],
                top_scale=hp['layer_decay'],
            )
            rest = [
                (name, p)
                for name, p in model.named_parameters()
                if not name.startswith('encoder.')
            ]
            groups += param_groups(rest, hp['weight_decay'])
        optimizer = AdamW(groups, lr=hp['lr'], betas=(0.9, 0.999))
        return plateau_schedule(optimizer, hp['patience'], self.monitor)

    def on_train_epoch_start(self) -> None:
        """Keep a frozen encoder in eval mode (no dropout or drop-path)."""
        if self.hparams['freeze_backbone']:
            self.model.encoder.eval()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, res: Tensor | float | None = None) -> Tensor:
        """Per-pixel logits, for images of any size.

        Images whose sides are not multiples of the patch size are zero-padded at
        the bottom and right (zero is the mean colour of normalised images) and
        the logits cropped back, so whole evaluation images of any size can be
        segmented at their native GSD.

        Args:
            x: (B, C, H, W) images.
            res: (B,) per-sample ``gsd / reference_gsd``; None uses the encoder's
                default.

        Returns:
            (B, num_classes, H, W) logits ((B, 1, H, W) for a binary task).
        """
        ph, pw = self.model.patch_size
        height, width = int(x.shape[-2]), int(x.shape[-1])
        pad_h, pad_w = -height % ph, -width % pw
        if x.ndim == 4 and (pad_h or pad_w):
            padded: Tensor = self.model(F.pad(x, (0, pad_w, 0, pad_h)), res)
            return padded[..., :height, :width]
        out: Tensor = self.model(x, res)
        return out

    def batch_res(self, batch: Mapping[str, Any], image: Tensor) -> Tensor:
        """``res`` for a batch whose images are *image* (see ``res_mode``).

        Args:
            batch: The batch (``gsd`` read from it, already matching *image*).
            image: (B, C, H, W) images fed to the encoder.

        Returns:
            float32 (B,) ``res`` on the image's device.
        """
        return self.multiscale.res(batch, image)

    def _step(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        x = batch['image']
        y = batch['mask']
        y_hat = self.forward(x, self.batch_res(batch, x)).squeeze(1)
        getattr(self, f'{stage}_metrics')(y_hat, y)
        target = y.float() if self.hparams['loss'] == 'bce' else y
        loss: Tensor = self.criterion(y_hat, target)
        self.log(f'{stage}_loss', loss, batch_size=x.shape[0])
        return loss, y_hat

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss and metrics with the batch's GSD.

        Args:
            batch: Dict with ``image`` (B, C, H, W), ``mask`` (B, H, W) and ``gsd``
                (B,) in metres per pixel.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.

        Returns:
            The loss.
        """
        return self._step(batch, 'train')[0]

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Validation loss and metrics with the batch's GSD, and TorchGeo's figures.

        Args:
            batch: Dict with ``image``, ``mask`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        _, y_hat = self._step(batch, 'val')
        if batch_idx < 10:
            self._log_figure(batch, y_hat, batch_idx)

    def _log_figure(self, batch: Any, y_hat: Tensor, batch_idx: int) -> None:
        """TorchGeo's validation figure: image, mask and prediction of a sample."""
        datamodule = getattr(self.trainer, 'datamodule', None)
        plot = getattr(datamodule, 'plot', None)
        experiment = getattr(self.logger, 'experiment', None) if self.logger else None
        if (
            not isinstance(datamodule, BaseDataModule)
            or plot is None
            or not hasattr(experiment, 'add_figure')
            or batch['image'].ndim != 4
        ):
            return
        denormalize = K.AugmentationSequential(
            K.Denormalize(datamodule.mean, datamodule.std), data_keys=None, keepdim=True
        )
        sample_batch = denormalize({'image': batch['image'], 'mask': batch['mask']})
        if self.hparams['task'] == 'multiclass':
            sample_batch['prediction'] = y_hat.argmax(dim=1)
        else:
            sample_batch['prediction'] = (y_hat.sigmoid() >= 0.5).long()
        for key in ('image', 'mask', 'prediction'):
            sample_batch[key] = sample_batch[key].cpu()
        sample = unbind_samples(sample_batch)[0]
        try:
            fig = plot(sample)
        except RGBBandsMissingError:
            fig = None
        if fig:
            cast(Any, experiment).add_figure(
                f'image/{batch_idx}', fig, global_step=self.global_step
            )
            plt.close()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Test metrics at the native size and at every ``test_scales`` entry.

        A scale whose size is the native one reuses the native logits.

        Args:
            batch: Dict with ``image``, ``mask`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.
        """
        _, y_hat = self._step(batch, 'test')
        if self.hparams['test_scales'] is None:
            return
        native = (int(batch['image'].shape[-2]), int(batch['image'].shape[-1]))
        patch = self.model.patch_size[0]
        for item in self.multiscale.scaled_batches(batch, patch):
            if item.size == native:  # the native grid: the logits just computed
                logits = y_hat if y_hat.ndim == 4 else y_hat.unsqueeze(1)
            else:
                logits = self.forward(item.image, item.res)
            self._scale_metric(item.index).update(
                self._predictions(logits), item.batch['mask']
            )
            self._scale_stats.update(item)

    def _predictions(self, logits: Tensor) -> Tensor:
        if self.hparams['task'] == 'binary':
            return (logits[:, 0] >= 0).long()
        return logits.argmax(dim=1)

    def _scale_metric(self, index: int) -> MulticlassConfusionMatrix:
        return cast(MulticlassConfusionMatrix, self.scale_metrics[str(index)])

    def _class_names(self) -> list[str]:
        hp = self.hparams
        classes = 2 if hp['task'] == 'binary' else int(hp['num_classes'])
        labels = hp['labels'] or [str(k) for k in range(classes)]
        ignore = hp['ignore_index']
        return [name for k, name in enumerate(labels) if ignore is None or k != ignore]

    def on_test_epoch_end(self) -> None:
        """Log test metrics and the per-scale IoUs (table, CSV and plot)."""
        super().on_test_epoch_end()
        if self.hparams['test_scales'] is None or not len(self._scale_stats):
            return
        names = self._class_names()
        results = []
        for index, confusion in enumerate(compute_scale_metrics(self.scale_metrics)):
            ious = iou_from_confusion(confusion, self.hparams['ignore_index'])
            scale = self._scale_stats.result(index, mean_iou(ious))
            results.append(
                SegmentationScaleResult(scale, tuple(zip(names, ious, strict=True)))
            )
        for r in results:
            self.log(metric_name('test_miou', r.scale), r.miou)
            for name, iou in r.class_iou:
                self.log(metric_name(f'test_iou_{name}', r.scale), iou)
        self.scale_results = results
        self._scale_stats.reset()
        self._report(results)

    @rank_zero_only
    def _report(self, results: list[SegmentationScaleResult]) -> None:
        hp = self.hparams
        mode = 'frozen encoder' if hp['freeze_backbone'] else 'fine-tuned'
        run = run_labels(self.trainer, self.weights, hp['backbone'], mode)
        report_segmentation_results(
            results,
            f'Multi-scale segmentation test {run.title}',
            folder=run.folder,
            stem='segmentation_test',
            metadata=run.metadata,
            plot_title=f'mIoU vs GSD {run.plot_note}',
            random_init=run.random_init,
        )

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor | None]:
        """Class probabilities with the batch's GSD.

        Args:
            batch: Dict with ``image`` and ``gsd``.
            batch_idx: Batch index.
            dataloader_idx: Dataloader index.

        Returns:
            Dict with ``probabilities`` (B, K, H, W) and the batch's ``bounds`` and
            ``transform`` (None when absent), as TorchGeo's task.
        """
        x = batch['image']
        y_hat = self.forward(x, self.batch_res(batch, x))
        if self.hparams['task'] == 'multiclass':
            y_hat = y_hat.softmax(dim=1)
        else:
            y_hat = y_hat.sigmoid()
        return {
            'probabilities': y_hat,
            'bounds': batch.get('bounds'),
            'transform': batch.get('transform'),
        }
