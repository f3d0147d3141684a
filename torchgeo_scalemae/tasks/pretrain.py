# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE pretraining as a TorchGeo task (``torchgeo fit --config``).

.. versionadded:: 0.1
"""

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor
from torchgeo.tasks import BaseTask
from torchvision.models._api import WeightsEnum

from ..callbacks import (
    BandCollapseWarning,
    NonFiniteLossGuard,
    ReconstructionImages,
    ReconstructionSummary,
    RemoveEmptyLogDir,
)
from ..callbacks._defaults import not_configured
from ..callbacks.nan_guard import NonFiniteLossError
from ..cpu_memory import retain_freed_cpu_memory
from ..gsd import gsd_from_batch, gsd_to_res
from ._checkpoint import AtomicCheckpointIO
from ._metrics import band_metrics
from ._optim import (
    StepLambdaLR,
    TimedWarmupCosine,
    WarmupCosine,
    infer_batch_size,
    param_groups,
    scaled_lr,
    time_budget,
    use_fused_adamw,
)

__all__ = ('NonFiniteLossError', 'ScaleMAEPretraining')


#: Whether this process has reported ``retain_cpu_memory`` (once per process).
_RETAIN_REPORTED = False


def _image_device(batch: Mapping[str, Any]) -> torch.device:
    """The device of ``batch['image']``, which must be a ``(B, C, H, W)`` tensor.

    The channel count and size are the model's to check (once per forward).
    """
    image = batch.get('image')
    if not isinstance(image, Tensor) or image.ndim != 4:
        got = tuple(image.shape) if isinstance(image, Tensor) else sorted(batch)
        raise ValueError(f"batch 'image' must be a (B, C, H, W) tensor, got {got}")
    return image.device


class ScaleMAEPretraining(BaseTask):
    """Scale-MAE self-supervised pretraining (Reed et al., ICCV 2023).

    Each training batch ``{'image': (B, C, H, W), 'gsd': (B,), ...}`` (``gsd`` in
    metres per pixel; taken from GeoDataset ``bounds`` or ``default_gsd`` when
    absent) is turned on the device into a scale pair
    (:class:`~torchgeo_scalemae.transforms.ScaleMAEPair`): a random square crop
    resized to the target ``(B, C, 2S, 2S)`` and the input ``(B, C, S, S)`` with
    ``S = input_size``, whose GSD is twice the target's. The model sees
    ``res = gsd / reference_gsd`` of the input, masks ``mask_ratio`` of the patches
    and reconstructs a low band at ``S`` and a high band at ``2S``.

    Optimisation follows the paper's recipe (section 4; reference
    ``main_pretrain.py``): AdamW with betas (0.9, 0.95), weight decay 0.05 on
    weight matrices only, ``lr = base_lr * effective_batch / 256`` where
    ``effective_batch = batch_size * accumulate_grad_batches * world_size``, and
    per-step linear warmup followed by a half-cycle cosine. With
    ``trainer.max_time`` and no step or epoch bound the cosine follows the time
    budget.

    Logged with ``self.log`` (to every logger in use), where ``<stage>`` is
    ``train`` (per step and per epoch, so Lightning adds ``_step`` and ``_epoch``
    to the names) or ``val`` (per epoch):

    * ``<stage>_loss``, ``<stage>_loss_low``, ``<stage>_loss_high``: the loss and
      its two bands;
    * ``<stage>_psnr_low``, ``<stage>_psnr_high``: each band's PSNR in dB on the
      masked pixels, in the units the loss sees, and ``<stage>_psnr_low_baseline``,
      ``<stage>_psnr_high_baseline``: the same for the trivial predictors (each
      image's mean colour over its visible pixels; zero);
    * ``<stage>_pred_std_low``, ``<stage>_pred_std_high``,
      ``<stage>_target_std_low``, ``<stage>_target_std_high``: the spread of each
      band's prediction and target (a prediction std collapsing towards zero while
      the target's is not signals collapse);
    * ``<stage>_gsd_min``, ``<stage>_gsd_max``: the input GSD range in metres per
      pixel;
    * ``lr`` (training steps only): the learning rate of the first parameter
      group.

    No metric is copied to the host in the training step. The task installs these
    callbacks unless ``trainer.callbacks`` holds one of the same type:
    :class:`~torchgeo_scalemae.callbacks.ReconstructionImages` (a grid of the same
    samples every ``image_log_interval`` steps),
    :class:`~torchgeo_scalemae.callbacks.ReconstructionSummary` (both bands against
    their baselines at the end of a fit),
    :class:`~torchgeo_scalemae.callbacks.BandCollapseWarning`
    (``collapse_patience``), :class:`~torchgeo_scalemae.callbacks.NonFiniteLossGuard`
    (``nan_check_interval``) and
    :class:`~torchgeo_scalemae.callbacks.RemoveEmptyLogDir`.

    The task has no test stage: evaluate a pretraining checkpoint with
    :class:`~torchgeo_scalemae.tasks.MultiScaleKNN` or
    :class:`~torchgeo_scalemae.tasks.ScaleMAEClassification`, passing it as their
    ``weights``.
    """

    ignore = ('weights',)
    monitor = 'train_loss'
    mode = 'min'

    def __init__(
        self,
        model: str = 'scalemae_pretrain_vit_base_patch16',
        weights: WeightsEnum | str | None = None,
        in_channels: int = 3,
        input_size: int = 224,
        mask_ratio: float = 0.75,
        loss: Literal['reference', 'paper', 'normalized'] = 'reference',
        default_gsd: float | None = None,
        reference_gsd: float = 1.0,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        lr: float | None = None,
        base_lr: float = 1.5e-4,
        batch_size: int | None = None,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        decay_tokens: bool = False,
        warmup_epochs: float = 20.0,
        warmup_steps: int | None = None,
        min_lr: float = 0.0,
        image_log_interval: int = 500,
        nan_check_interval: int = 1,
        atomic_checkpoints: bool = True,
        compile: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        pair_kwargs: dict[str, Any] | None = None,
        retain_cpu_memory: bool = False,
        fused_adamw: bool | None = None,
        collapse_patience: int = 5,
    ) -> None:
        """Initialise a new ScaleMAEPretraining task.

        Args:
            model: Name of a full-model builder
                (:func:`torchgeo_scalemae.models.create_scalemae`), e.g.
                ``'scalemae_pretrain_vit_large_patch16'`` (the paper's model) or
                ``'scalemae_pretrain_vit_tiny_patch16'`` (tests, quickstart).
            weights: Initial weights: a weight enum member, its
                ``'EnumClass.MEMBER'`` string, or a path (Lightning ``.ckpt``,
                ``.safetensors``, torch file or a released reference checkpoint).
                A full Scale-MAE state dict (``encoder.*``/``decoder.*`` keys)
                continues pretraining (loaded strictly); encoder-only (timm ViT)
                weights initialise the encoder and leave the decoder random. For
                exact resumption of a run use ``--ckpt_path`` instead.
            in_channels: Number of image bands ``C``.
            input_size: Encoder input side ``S`` in pixels; the target is ``2S``.
                Must be a multiple of the patch size.
            mask_ratio: Fraction of patches removed, in ``[0, 1)``.
            loss: Band targets and losses: ``'reference'`` (the released code: full
                low band, L2 + L2), ``'paper'`` (the paper's band split, L1 on
                the high band) or ``'normalized'`` (the reference bands with
                per-patch normalised targets, MAE's ``norm_pix_loss``; the
                small-budget recipes' choice, see the evaluation guide).
            default_gsd: GSD in metres per pixel used when a batch carries neither
                ``gsd`` nor GeoDataset ``bounds``.
            reference_gsd: Reference GSD ``G`` in metres per pixel;
                ``res = gsd / reference_gsd``.
            crop_scale: Area range of the random square crop, a fraction of the
                image, ``0 < low <= high <= 1``.
            hflip: Flip each training sample horizontally with probability 0.5
                before cropping (as the reference does).
            lr: Absolute peak learning rate. When None it is
                ``base_lr * effective_batch_size / 256``.
            base_lr: Peak learning rate per 256 samples (paper: 1.5e-4).
            batch_size: Per-process batch size used for the LR scaling; None reads
                it from the datamodule or the train dataloader.
            weight_decay: AdamW decoupled weight decay of matrices (paper: 0.05).
            betas: AdamW betas (paper: (0.9, 0.95)).
            decay_tokens: Also decay the cls/mask/pos tokens (the released code
                does, because it splits on ``ndim`` only). False follows timm's
                ``no_weight_decay``; norms and biases are never decayed.
            warmup_epochs: Linear-warmup length in epochs (paper: 20), converted
                to optimiser steps; fractions allowed.
            warmup_steps: Linear-warmup length in optimiser steps; overrides
                ``warmup_epochs`` when given.
            min_lr: Final learning rate of the cosine (paper: 0).
            image_log_interval: Log a reconstruction image grid every this many
                optimiser steps
                (:class:`~torchgeo_scalemae.callbacks.ReconstructionImages`); 0
                disables.
            nan_check_interval: Check the loss for NaN/inf every this many
                optimiser steps (:class:`~torchgeo_scalemae.callbacks.NonFiniteLossGuard`;
                each check is one host-device synchronisation on GPU; 0 disables
                the periodic check). Non-finite losses are remembered on the device
                between checks and always checked before a checkpoint is saved, so
                no checkpoint with non-finite weights is ever written.
            atomic_checkpoints: Replace the trainer's default checkpoint writer by
                :class:`~torchgeo_scalemae.tasks.AtomicCheckpointIO` (write a
                temporary file beside the target, then rename).
            compile: Compile the model with :func:`torch.compile`.
            model_kwargs: Extra keyword arguments for the model builder (e.g.
                decoder sizes).
            pair_kwargs: Extra keyword arguments for
                :class:`~torchgeo_scalemae.transforms.ScaleMAEPair` (e.g.
                ``antialias``, ``align_corners``, ``resample``, ``ratio``,
                ``reference_ratio``); the defaults reproduce the reference.
            retain_cpu_memory: Opt-in. When fitting on the CPU, keep freed memory in
                the process
                (:func:`~torchgeo_scalemae.cpu_memory.retain_freed_cpu_memory`,
                glibc only) instead of returning it to the operating system after
                every large tensor, so that steps stop page-faulting their
                full-resolution maps in again (see the performance guide). This
                changes ``malloc`` settings for the whole process, for good, and
                the resident memory then stays at its peak between steps; a
                message says so once per process.
            fused_adamw: Update all parameters with torch's fused AdamW kernel
                (``torch.optim.AdamW(fused=True)``; the same update, rounded
                differently, and faster; see the performance guide). None
                (default) uses it when every trainable parameter is a
                floating-point tensor on a device the kernel supports, unless
                gradients are clipped under a gradient scaler
                (``precision='16-mixed'``), which Lightning does not allow with an
                optimiser that unscales its gradients itself. False uses torch's
                default implementation.
            collapse_patience: Warn once per band when its prediction's std stays
                below a tenth of its target's for this many logged steps
                (:class:`~torchgeo_scalemae.callbacks.BandCollapseWarning`, checked
                every ``log_every_n_steps``); 0 disables. A
                :class:`~torchgeo_scalemae.callbacks.BandCollapseWarning` in
                ``trainer.callbacks`` replaces this one.

        Raises:
            ValueError: If an argument is out of range (the message names it).
        """
        _validate_hparams(
            in_channels=in_channels,
            input_size=input_size,
            mask_ratio=mask_ratio,
            loss=loss,
            default_gsd=default_gsd,
            reference_gsd=reference_gsd,
            crop_scale=crop_scale,
            lr=lr,
            base_lr=base_lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            betas=betas,
            warmup_epochs=warmup_epochs,
            warmup_steps=warmup_steps,
            min_lr=min_lr,
            image_log_interval=image_log_interval,
            nan_check_interval=nan_check_interval,
            fused_adamw=fused_adamw,
            collapse_patience=collapse_patience,
            hflip=hflip,
            decay_tokens=decay_tokens,
            atomic_checkpoints=atomic_checkpoints,
            compile=compile,
            retain_cpu_memory=retain_cpu_memory,
        )
        self.weights = weights
        super().__init__()
        #: Detached ``(4,)`` std of the low prediction, low target, high prediction
        #: and high target at the last training step (read by
        #: :class:`~torchgeo_scalemae.callbacks.BandCollapseWarning`).
        self.band_std: Tensor | None = None

    def configure_callbacks(self) -> list[Callback]:
        """Install the default callbacks (see the class docstring).

        A callback of the same type in ``trainer.callbacks`` replaces the default.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        hp = self.hparams
        defaults: list[Callback] = [
            ReconstructionSummary(),
            NonFiniteLossGuard(hp.get('nan_check_interval', 1)),
            RemoveEmptyLogDir(),
        ]
        if hp.get('image_log_interval', 500):
            defaults.append(ReconstructionImages(hp['image_log_interval']))
        if hp.get('collapse_patience', 5):
            defaults.append(BandCollapseWarning(patience=hp['collapse_patience']))
        return not_configured(self._trainer, defaults)

    # ------------------------------------------------------------------ models
    def configure_models(self) -> None:
        """Build the model, the scale-pair transform and load the weights."""
        from ..models import create_scalemae
        from ..transforms import ScaleMAEPair

        kwargs: dict[str, Any] = dict(self.hparams['model_kwargs'] or {})
        kwargs.setdefault('in_chans', self.hparams['in_channels'])
        kwargs.setdefault('img_size', self.hparams['input_size'])
        kwargs.setdefault('mask_ratio', self.hparams['mask_ratio'])
        kwargs.setdefault('loss_preset', self.hparams['loss'])
        # the decoder's exact fast path: same weights, less time and memory per step
        # (docs: performance); model_kwargs={'fast_path': False} runs plain modules
        kwargs.setdefault('fast_path', True)
        self.model = create_scalemae(self.hparams['model'], **kwargs)
        patch = int(self.model.patch_size)
        if self.hparams['input_size'] % patch:
            raise ValueError(
                f'input_size={self.hparams["input_size"]} must be a multiple of the '
                f'patch size {patch} of model {self.hparams["model"]!r}'
            )
        pair_kwargs: dict[str, Any] = dict(self.hparams['pair_kwargs'] or {})
        pair_kwargs.setdefault('scale', tuple(self.hparams['crop_scale']))
        # GSD values are checked once in scale_pair (only where that is free: on CPU)
        pair_kwargs.setdefault('validate', False)
        self.pair = ScaleMAEPair(self.hparams['input_size'], **pair_kwargs)
        if self.weights is not None:
            self._load_weights(self.weights)
        if self.hparams['compile']:
            self.model.compile()

    def _load_weights(self, weights: WeightsEnum | str | os.PathLike[str]) -> None:
        from ..models import load_weights

        state_dict = load_weights(weights)
        if any(k.startswith(('encoder.', 'decoder.')) for k in state_dict):
            try:
                result = self.model.load_state_dict(state_dict, strict=False)
            except RuntimeError as err:  # shape mismatches
                raise ValueError(
                    f'full Scale-MAE weights {weights!r} do not fit model '
                    f'{self.hparams["model"]!r} (in_channels='
                    f'{self.hparams["in_channels"]}): {err}'
                ) from err
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f'full Scale-MAE weights {weights!r} do not match model '
                    f'{self.hparams["model"]!r}: missing {result.missing_keys[:8]}, '
                    f'unexpected {result.unexpected_keys[:8]}'
                )
            return
        self._load_encoder_weights(state_dict, weights)

    def _load_encoder_weights(
        self, state_dict: dict[str, Tensor], source: object
    ) -> None:
        encoder = self.model.encoder
        own = encoder.state_dict()
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if not k.startswith(('head.', 'fc_norm.', 'head_drop.'))
        }
        for key, value in list(state_dict.items()):
            if key in own and own[key].shape != value.shape:
                warnings.warn(
                    f'encoder weight {key!r} has shape {tuple(value.shape)} in '
                    f'{source!r} but {tuple(own[key].shape)} in the model (e.g. a '
                    'different number of bands); it stays randomly initialised',
                    stacklevel=3,
                )
                del state_dict[key]
        result = encoder.load_state_dict(state_dict, strict=False)
        matched = set(state_dict) - set(result.unexpected_keys)
        if not matched:
            raise ValueError(
                f'no key of the weights {source!r} matches the encoder of '
                f'{self.hparams["model"]!r} (first keys: {list(state_dict)[:5]})'
            )
        # pos_embed is a fixed table that the GSD encoding replaces
        missing = [k for k in result.missing_keys if k != 'pos_embed']
        if missing or result.unexpected_keys:
            warnings.warn(
                f'encoder weights {source!r}: missing keys {missing[:8]}, unexpected '
                f'keys {result.unexpected_keys[:8]}',
                stacklevel=3,
            )

    # ------------------------------------------------------------------ optim
    def configure_optimizers(self) -> OptimizerLRScheduler:
        """AdamW with a per-step linear-warmup + cosine schedule.

        Returns:
            The optimiser and the step-wise LR scheduler.

        Raises:
            ValueError: If the run length or batch size cannot be determined.
        """
        trainer = self.trainer
        total = trainer.estimated_stepping_batches
        if trainer.train_dataloader is None:
            # with max_steps set, Lightning estimates without loading the data; the
            # batch size and the epoch length (warmup_epochs) need it
            trainer.fit_loop.setup_data()
        timer = time_budget(trainer)
        if timer is None and (not math.isfinite(total) or total < 1):
            raise ValueError(
                f'cannot schedule the learning rate: the trainer estimates {total} '
                'optimiser steps; set trainer.max_steps, trainer.max_epochs or '
                'trainer.max_time'
            )
        total_steps = int(total) if math.isfinite(total) and total >= 1 else None
        accumulate = int(trainer.accumulate_grad_batches)
        lr = self.hparams['lr']
        if lr is None:
            batch_size = self.hparams['batch_size'] or infer_batch_size(trainer)
            effective = int(batch_size) * accumulate * int(trainer.world_size)
            lr = scaled_lr(self.hparams['base_lr'], effective)
        self.peak_lr = float(lr)

        warmup = self.hparams['warmup_steps']
        if warmup is None:
            batches = trainer.num_training_batches
            if not math.isfinite(batches):
                raise ValueError(
                    'warmup_epochs needs a sized train dataloader; give warmup_steps '
                    'instead'
                )
            steps_per_epoch = max(1, math.ceil(int(batches) / accumulate))
            warmup = round(self.hparams['warmup_epochs'] * steps_per_epoch)
        self.warmup_steps = int(warmup)
        if total_steps is not None and self.warmup_steps >= total_steps:
            warnings.warn(
                f'the warmup ({self.warmup_steps} steps) is not shorter than the run '
                f'({total_steps} optimiser steps): the learning rate only rises; '
                'lower warmup_epochs/warmup_steps',
                stacklevel=2,
            )

        groups = param_groups(
            self.model.named_parameters(),
            self.hparams['weight_decay'],
            decay_tokens=self.hparams['decay_tokens'],
        )
        optimizer = torch.optim.AdamW(
            groups,
            lr=self.peak_lr,
            betas=tuple(self.hparams['betas']),
            # absent in checkpoints written before the hparam existed
            fused=True
            if use_fused_adamw(self.hparams.get('fused_adamw'), groups, trainer)
            else None,
        )
        min_ratio = self.hparams['min_lr'] / self.peak_lr
        schedule: WarmupCosine
        if timer is not None:
            # stop at max_time: the cosine follows the time budget (and the step
            # count when there is one), so it ends when the run does
            schedule = TimedWarmupCosine(
                self.warmup_steps, timer, total_steps, min_ratio
            )
        else:
            assert total_steps is not None
            schedule = WarmupCosine(self.warmup_steps, total_steps, min_ratio)
        scheduler = StepLambdaLR(optimizer, schedule)
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'},
        }

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        """Install atomic checkpoint writes and, if asked, the CPU memory retention.

        See ``atomic_checkpoints`` and ``retain_cpu_memory``.

        Args:
            stage: Lightning stage (``'fit'``, ...).
        """
        trainer = self._trainer
        if trainer is None:
            return
        if (
            stage == 'fit'
            and self.hparams.get('retain_cpu_memory', False)
            and trainer.strategy.root_device.type == 'cpu'
        ):
            _retain_cpu_memory()
        if not self.hparams['atomic_checkpoints']:
            return
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_test_start(self) -> None:
        """Refuse to test: pretraining has no test metric.

        ``torchgeo test --config <evaluation config> --ckpt_path <pretraining
        checkpoint>`` lands here: LightningCLI rebuilds the task stored in the
        checkpoint (this one) instead of the configured evaluation task, which would
        then run nothing and exit successfully.

        Raises:
            RuntimeError: Always, naming the option to use instead.
        """
        ckpt = self._trainer.ckpt_path if self._trainer is not None else None
        path = ckpt or 'PATH'
        raise RuntimeError(
            'ScaleMAEPretraining has no test stage. '
            + (
                f'The checkpoint given with --ckpt_path ({ckpt}) is a pretraining '
                'checkpoint, so LightningCLI rebuilt the pretraining task from it '
                'instead of the evaluation task of the config. '
                if ckpt
                else ''
            )
            + 'To evaluate a pretraining checkpoint with MultiScaleKNN or '
            'ScaleMAEClassification, pass it as their weights: '
            f'--model.init_args.weights {path} (without --ckpt_path)'
        )

    # ------------------------------------------------------------------ steps
    def scale_pair(
        self, batch: Mapping[str, Any], train: bool = True
    ) -> dict[str, Tensor]:
        """Turn a batch into the scale pair that the model learns from.

        Args:
            batch: Batch dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``
                (metres per pixel) or GeoDataset ``bounds``, or neither with
                ``default_gsd``.
            train: Flip each sample horizontally with probability 0.5 first (with
                ``hflip``).

        Returns:
            Dict with the input ``image`` ``(B, C, S, S)``, its ``gsd`` ``(B,)`` and
            the ``target`` ``(B, C, 2S, 2S)``
            (:class:`~torchgeo_scalemae.transforms.ScaleMAEPair`).
        """
        device = _image_device(batch)
        # the batch GSD is checked once here, where that is free (on the CPU)
        gsd = gsd_from_batch(
            batch, self.hparams['default_gsd'], check_values=device.type == 'cpu'
        )
        image = batch['image'].float()
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            if train and self.hparams['hflip']:
                flip = torch.rand(image.shape[0], device=device) < 0.5
                image = torch.where(flip[:, None, None, None], image.flip(-1), image)
            pair: dict[str, Tensor] = dict(self.pair({'image': image, 'gsd': gsd}))
        return pair

    def _shared_step(self, batch: Mapping[str, Any], prefix: str) -> Tensor:
        pair = self.scale_pair(batch, train=prefix == 'train')
        res = gsd_to_res(pair['gsd'], self.hparams['reference_gsd'], check_values=False)
        out = self.model(pair['image'], res=res, targets=pair['target'])
        loss: Tensor = out.loss
        batch_size = int(pair['image'].shape[0])
        on_step = prefix == 'train'
        # validation metrics are epoch-only: reduce them over processes (one
        # collective per epoch); training step values are each process's own
        sync = not on_step
        log: dict[str, Any] = {
            'batch_size': batch_size,
            'on_step': on_step,
            'on_epoch': True,
            'sync_dist': sync,
        }
        self.log(f'{prefix}_loss', loss, prog_bar=True, **log)
        self.log(f'{prefix}_loss_low', out.loss_low, **log)
        self.log(f'{prefix}_loss_high', out.loss_high, **log)
        with torch.no_grad():
            metrics, stds = band_metrics(out, int(self.model.patch_size))
        if self.training:
            self.band_std = stds.detach()
        for name, value in metrics.items():
            self.log(f'{prefix}_{name}', value, **log)
        gsd = pair['gsd']
        self.log(f'{prefix}_gsd_min', gsd.min(), reduce_fx='min', **log)
        self.log(f'{prefix}_gsd_max', gsd.max(), reduce_fx='max', **log)
        return loss

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Make the scale pair, mask, reconstruct both bands and return the loss.

        Args:
            batch: Batch dict with ``image`` ``(B, C, H, W)`` and ``gsd`` ``(B,)``
                (metres per pixel) or GeoDataset ``bounds``.
            batch_idx: Index of the batch in the epoch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The 0-d loss tensor.
        """
        if self._trainer is not None and self.trainer.optimizers:
            lr = float(self.trainer.optimizers[0].param_groups[0]['lr'])  # host float
            self.log('lr', lr, on_step=True, on_epoch=False, prog_bar=True)
        return self._shared_step(batch, 'train')

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Log the reconstruction loss of a validation batch (``val_loss``, ...).

        Args:
            batch: Batch dict as in :meth:`training_step`.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        self._shared_step(batch, 'val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Never runs: :meth:`on_test_start` refuses the test stage.

        Args:
            batch: Unused.
            batch_idx: Unused.
            dataloader_idx: Unused.
        """

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """No-op: pretraining has no predictions.

        Args:
            batch: Unused.
            batch_idx: Unused.
            dataloader_idx: Unused.
        """


def _retain_cpu_memory() -> None:
    """Keep freed CPU memory in the process; say so once per process."""
    global _RETAIN_REPORTED
    if retain_freed_cpu_memory() and not _RETAIN_REPORTED:
        _RETAIN_REPORTED = True
        rank_zero_info(
            'torchgeo_scalemae: freed CPU memory is kept for reuse by this process '
            '(retain_cpu_memory=True: glibc malloc settings changed for the whole '
            'process)'
        )


def _validate_hparams(**kw: Any) -> None:
    """Check the task's hparams once, at construction (the message names the bad one)."""

    def bad(name: str, rule: str) -> ValueError:
        return ValueError(f'{name} must be {rule}, got {kw[name]!r}')

    def is_number(value: Any) -> bool:
        return (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
        )

    for name in ('in_channels', 'input_size'):
        if isinstance(kw[name], bool) or not isinstance(kw[name], int) or kw[name] < 1:
            raise bad(name, 'a positive int')
    if not is_number(kw['mask_ratio']) or not 0.0 <= kw['mask_ratio'] < 1.0:
        raise bad('mask_ratio', 'a number in [0, 1)')
    if kw['loss'] not in ('reference', 'paper', 'normalized'):
        raise bad('loss', "'reference', 'paper' or 'normalized'")
    for name in ('default_gsd', 'lr', 'reference_gsd', 'base_lr'):
        value = kw[name]
        if value is not None and (not is_number(value) or value <= 0):
            raise bad(name, 'a finite positive number')
    crop = kw['crop_scale']
    if (
        isinstance(crop, str)
        or not isinstance(crop, Sequence)
        or len(crop) != 2
        or not all(is_number(v) for v in crop)
        or not 0.0 < crop[0] <= crop[1] <= 1.0
    ):
        raise bad('crop_scale', '(low, high) with 0 < low <= high <= 1')
    batch_size = kw['batch_size']
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise bad('batch_size', 'a positive int or None')
    if not is_number(kw['weight_decay']) or kw['weight_decay'] < 0:
        raise bad('weight_decay', 'finite and >= 0')
    betas = kw['betas']
    if (
        isinstance(betas, str)
        or not isinstance(betas, Sequence)
        or len(betas) != 2
        or not all(is_number(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise bad('betas', 'two numbers in [0, 1)')
    if not is_number(kw['warmup_epochs']) or kw['warmup_epochs'] < 0:
        raise bad('warmup_epochs', 'a finite number >= 0')
    warmup_steps = kw['warmup_steps']
    if warmup_steps is not None and (
        isinstance(warmup_steps, bool)
        or not isinstance(warmup_steps, int)
        or warmup_steps < 0
    ):
        raise bad('warmup_steps', 'an int >= 0 or None')
    if not is_number(kw['min_lr']) or kw['min_lr'] < 0:
        raise bad('min_lr', 'a finite number >= 0')
    if kw['lr'] is not None and kw['min_lr'] > kw['lr']:
        raise bad('min_lr', f'<= lr ({kw["lr"]!r})')
    for name in ('image_log_interval', 'nan_check_interval', 'collapse_patience'):
        value = kw[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(name, 'an int >= 0 (0 disables)')
    for name in (
        'hflip',
        'decay_tokens',
        'atomic_checkpoints',
        'compile',
        'retain_cpu_memory',
    ):
        if not isinstance(kw[name], bool):
            raise bad(name, 'True or False')
    if kw['fused_adamw'] is not None and not isinstance(kw['fused_adamw'], bool):
        raise bad('fused_adamw', 'True, False or None')
