# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE pretraining as a TorchGeo task (``torchgeo fit --config``).

.. versionadded:: 0.1
"""

import math
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor
from torchgeo.tasks import BaseTask
from torchvision.models._api import WeightsEnum

from ..cpu_memory import retain_freed_cpu_memory
from ..gsd import gsd_from_batch, gsd_to_res
from ..models import ScaleMAEOutput
from ._checkpoint import AtomicCheckpointIO
from ._optim import (
    StepLambdaLR,
    TimedWarmupCosine,
    WarmupCosine,
    fused_kernel_devices,
    param_groups,
    scaled_lr,
    unfused_parameter,
)

__all__ = ('NonFiniteLossError', 'ScaleMAEPretraining')


class NonFiniteLossError(FloatingPointError):
    """Raised when the pretraining loss becomes NaN or infinite.

    Raised before the optimiser step (and before any checkpoint is written) so that
    no checkpoint with non-finite weights exists; resume from the last checkpoint
    with a lower learning rate, another precision or cleaned data.

    .. versionadded:: 0.1
    """


def _first_tensor_device(batch: Mapping[str, Any]) -> torch.device:
    image = batch.get('image')
    if not isinstance(image, Tensor):
        raise TypeError(
            f"batch must contain an 'image' tensor (B, C, H, W), got keys {sorted(batch)}"
        )
    return image.device


def _strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _resolve_weight_name(name: str) -> WeightsEnum:
    """Resolve a ``'EnumClass.MEMBER'`` string to a weight enum member."""
    from torchgeo.models import get_weight

    try:
        weight: WeightsEnum = get_weight(name)
        return weight
    except ValueError:
        pass
    from ..models import weights as weights_module

    cls_name, _, member = name.partition('.')
    enum_cls = getattr(weights_module, cls_name, None)
    if member and isinstance(enum_cls, type) and issubclass(enum_cls, WeightsEnum):
        found = getattr(enum_cls, member, None)
        if isinstance(found, WeightsEnum):
            return found
    raise ValueError(
        f'weights={name!r} is neither an existing file nor a known weight enum '
        "member ('EnumClass.MEMBER', e.g. 'ScaleMAEPretrainLarge16_Weights."
        "FMOW_RGB_800EP')"
    )


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    """Read a state dict from a Lightning ``.ckpt``, safetensors or torch file."""
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        # e.g. the reference checkpoint's argparse.Namespace
        from ..models import load_reference_checkpoint

        try:
            state_dict, _ = load_reference_checkpoint(path)
        except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError):
            raise ValueError(
                f'could not read weights from {str(path)!r}: {err}'
            ) from err
        return dict(state_dict)
    if not isinstance(obj, Mapping):
        raise TypeError(
            f'weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict'
        )
    if 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
        # a Lightning checkpoint of this task (keys model.*) or of another task
        sd = obj['state_dict']
        inner = _strip_prefix(sd, 'model.')
        return inner if inner else dict(sd)
    if 'model' in obj and isinstance(obj['model'], Mapping):
        from ..models import convert_reference_state_dict

        return dict(convert_reference_state_dict(dict(obj['model'])))
    return dict(obj)


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

    Optimisation follows the paper's recipe (spec 6): AdamW with betas (0.9, 0.95),
    weight decay 0.05 on weight matrices only, ``lr = base_lr * effective_batch /
    256`` where ``effective_batch = batch_size * accumulate_grad_batches *
    world_size``, and per-step linear warmup followed by a half-cycle cosine.

    Logged (to every logger in use): ``train_loss``, ``train_loss_low``,
    ``train_loss_high``, ``train_psnr_low``, ``train_psnr_high`` and the trivial
    predictors' ``train_psnr_low_baseline`` (each image's mean colour over its
    visible pixels) and ``train_psnr_high_baseline`` (zero), on the masked pixels in
    the units the loss sees; ``train_pred_std_low``/``_high`` and
    ``train_target_std_low``/``_high`` (a prediction std collapsing towards zero
    while the target's is not signals collapse, and
    :class:`~torchgeo_scalemae.callbacks.BandCollapseWarning` warns), ``lr``,
    ``train_gsd_min``/``train_gsd_max`` (metres per pixel of the input), and every
    ``image_log_interval`` steps an image grid of the same samples (TensorBoard
    ``add_image``; a PNG under ``<log_dir>/images`` for the CSV logger). At the end
    of a fit :class:`~torchgeo_scalemae.callbacks.ReconstructionSummary` prints both
    bands against their baselines. With ``trainer.max_time`` and no step or epoch
    bound the cosine follows the time budget. No metric is copied to the host in the
    training step.

    .. versionadded:: 0.1
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
        retain_cpu_memory: bool = True,
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
                optimiser steps (0 disables).
            nan_check_interval: Check the loss for NaN/inf every this many
                optimiser steps (each check is one host-device synchronisation on
                GPU; 0 disables the periodic check). Non-finite losses are
                remembered on the device between checks and always checked before a
                checkpoint is saved, so no checkpoint with non-finite weights is
                ever written.
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
            retain_cpu_memory: When fitting on the CPU, keep freed memory in the
                process (:func:`~torchgeo_scalemae.cpu_memory.retain_freed_cpu_memory`,
                glibc only) instead of returning it to the operating system after
                every tensor: each step otherwise page-faults its full-resolution
                maps in again (about 1.3x slower on the benchmark machine). The
                resident memory then stays at its peak between steps.
            fused_adamw: Update all parameters with torch's fused AdamW kernel
                (``torch.optim.AdamW(fused=True)``; the same update, rounded
                differently): on the benchmark CPU the optimiser step of a ViT-B
                model took 0.08 to 0.11 s instead of the 0.28 to 0.39 s of torch's
                default implementation. None (default) uses it when every trainable
                parameter is a floating-point tensor on a device the kernel
                supports, unless gradients are clipped under a gradient scaler
                (``precision='16-mixed'``), which Lightning does not allow with
                an optimiser that unscales its gradients itself. False uses torch's
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
        if (
            isinstance(collapse_patience, bool)
            or not isinstance(collapse_patience, int)
            or collapse_patience < 0
        ):
            raise ValueError(
                'collapse_patience must be an int >= 0 (0 disables), got '
                f'{collapse_patience!r}'
            )
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
        )
        self.weights = weights
        super().__init__()
        self._nonfinite: Tensor | None = None
        self._last_image_step = -1
        self._image_samples: dict[str, Tensor] | None = None
        self._image_noise: Tensor | None = None
        #: Detached ``(4,)`` std of the low prediction, low target, high prediction
        #: and high target at the last training step (read by
        #: :class:`~torchgeo_scalemae.callbacks.BandCollapseWarning`).
        self.band_std: Tensor | None = None

    def configure_callbacks(self) -> list[Callback]:
        """Install the reconstruction summary and the band-collapse warning.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        from ..callbacks import BandCollapseWarning, ReconstructionSummary

        trainer = self._trainer
        present = list(getattr(trainer, 'callbacks', []))
        # Lightning replaces trainer callbacks of a returned type: never return one
        # the user configured
        callbacks: list[Callback] = []
        if not any(isinstance(c, ReconstructionSummary) for c in present):
            callbacks.append(ReconstructionSummary())
        patience = int(self.hparams.get('collapse_patience', 5))
        if patience and not any(isinstance(c, BandCollapseWarning) for c in present):
            callbacks.append(BandCollapseWarning(patience=patience))
        return callbacks

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
        self.model = create_scalemae(self.hparams['model'], **kwargs)
        patch = int(self.model.patch_size)
        if self.hparams['input_size'] % patch:
            raise ValueError(
                f'input_size={self.hparams["input_size"]} must be a multiple of the '
                f'patch size {patch} of model {self.hparams["model"]!r}'
            )
        pair_kwargs: dict[str, Any] = dict(self.hparams['pair_kwargs'] or {})
        pair_kwargs.setdefault('scale', tuple(self.hparams['crop_scale']))
        # GSD values are checked once in _pair (only where that is free: on CPU)
        pair_kwargs.setdefault('validate', False)
        self.pair = ScaleMAEPair(self.hparams['input_size'], **pair_kwargs)
        if self.weights is not None:
            self._load_weights(self.weights)
        if self.hparams['compile']:
            self.model.compile()

    def _load_weights(self, weights: WeightsEnum | str | os.PathLike[str]) -> None:
        if isinstance(weights, WeightsEnum):
            state_dict = weights.get_state_dict(progress=True, weights_only=True)
        elif isinstance(weights, str | os.PathLike):
            path = Path(weights).expanduser()
            if path.is_file():
                state_dict = _load_weights_file(path)
            else:
                enum = _resolve_weight_name(str(weights))
                state_dict = enum.get_state_dict(progress=True, weights_only=True)
        else:
            raise TypeError(
                f'weights must be a weight enum member, a name or a path, got '
                f'{type(weights).__name__}: {weights!r}'
            )
        state_dict = dict(state_dict)
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
        """AdamW with a per-step linear-warmup + cosine schedule (spec 6).

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
        timer = _time_budget(trainer)
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
            batch_size = self.hparams['batch_size'] or self._infer_batch_size()
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
            fused=True if self._use_fused_adamw(groups) else None,
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

    def _use_fused_adamw(self, groups: list[dict[str, Any]]) -> bool:
        """Resolve ``fused_adamw`` for these parameter groups and this trainer."""
        requested = self.hparams.get('fused_adamw')  # absent in older checkpoints
        trainer = self.trainer
        scaled_clipping = getattr(
            trainer.precision_plugin, 'scaler', None
        ) is not None and bool(trainer.gradient_clip_val)
        unfused = unfused_parameter(groups)
        if requested is None:
            return unfused is None and not scaled_clipping
        if requested and unfused is not None:
            raise ValueError(
                'fused_adamw=True needs floating-point parameters on one of the '
                f'devices {list(fused_kernel_devices())}, but a parameter of shape '
                f'{tuple(unfused.shape)} is {unfused.dtype} on {unfused.device}; '
                'set fused_adamw=False or None'
            )
        if requested and scaled_clipping:
            raise ValueError(
                'fused_adamw=True cannot be combined with gradient clipping '
                f'(gradient_clip_val={trainer.gradient_clip_val!r}) under a '
                "gradient scaler (precision='16-mixed'): the fused step unscales the "
                'gradients itself; set fused_adamw=False or None, or use bf16-mixed'
            )
        return bool(requested)

    def _infer_batch_size(self) -> int:
        trainer = self.trainer
        datamodule = getattr(trainer, 'datamodule', None)
        size = getattr(datamodule, 'batch_size', None)
        if size is None:
            loader = getattr(trainer, 'train_dataloader', None)
            size = getattr(loader, 'batch_size', None)
        if not isinstance(size, int) or size < 1:
            raise ValueError(
                'cannot infer the batch size for lr = base_lr * effective_batch / 256 '
                f'(found {size!r}); set the task hparam lr or batch_size'
            )
        return size

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        """Install atomic checkpoint writes and, on the CPU, the memory retention.

        See ``atomic_checkpoints`` and ``retain_cpu_memory``.

        Args:
            stage: Lightning stage (``'fit'``, ...).
        """
        trainer = self._trainer
        if trainer is None:
            return
        if (
            stage == 'fit'
            and self.hparams.get('retain_cpu_memory', True)
            and trainer.strategy.root_device.type == 'cpu'
            and retain_freed_cpu_memory()
        ):
            rank_zero_info(
                'torchgeo_scalemae: freed CPU memory is kept for reuse '
                '(retain_cpu_memory=True)'
            )
        if not self.hparams['atomic_checkpoints']:
            return
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop on a non-finite loss every ``nan_check_interval`` steps.

        Args:
            optimizer: The optimiser about to step.
        """
        interval = self.hparams['nan_check_interval']
        if interval > 0 and self.global_step % interval == 0:
            self._raise_if_nonfinite('before the optimiser step')

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint after a non-finite loss.

        Args:
            checkpoint: The checkpoint dict being built.
        """
        self._raise_if_nonfinite('before writing a checkpoint')

    def _raise_if_nonfinite(self, when: str) -> None:
        flag = self._nonfinite
        if flag is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag.float(), reduce_op='sum')
        if bool(flag):  # the one host-device synchronisation of the check
            raise NonFiniteLossError(
                'the Scale-MAE pretraining loss became NaN or infinite (detected at '
                f'global step {self.global_step}, {when}); training stops here so '
                'that no checkpoint with non-finite weights is written. Check the '
                'data for NaN/inf pixels or invalid gsd values, lower lr/base_lr, or '
                'resume from the last checkpoint with precision 32'
            )

    # ------------------------------------------------------------------ steps
    def _pair(self, batch: Mapping[str, Any], train: bool) -> dict[str, Tensor]:
        device = _first_tensor_device(batch)
        gsd = gsd_from_batch(
            batch, self.hparams['default_gsd'], check_values=device.type == 'cpu'
        )
        image = batch['image'].float()
        if image.ndim != 4 or image.shape[1] != self.hparams['in_channels']:
            raise ValueError(
                f'batch image must be (B, {self.hparams["in_channels"]}, H, W) '
                f'(in_channels={self.hparams["in_channels"]}), got shape '
                f'{tuple(image.shape)}'
            )
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            if train and self.hparams['hflip']:
                flip = torch.rand(image.shape[0], device=device) < 0.5
                image = torch.where(flip[:, None, None, None], image.flip(-1), image)
            pair: dict[str, Tensor] = dict(self.pair({'image': image, 'gsd': gsd}))
        return pair

    def _shared_step(self, batch: Mapping[str, Any], prefix: str) -> Tensor:
        pair = self._pair(batch, train=prefix == 'train')
        res = gsd_to_res(pair['gsd'], self.hparams['reference_gsd'])
        out = self.model(pair['image'], res=res, targets=pair['target'])
        loss: Tensor = out.loss
        batch_size = int(pair['image'].shape[0])
        on_step = prefix == 'train'
        # validation metrics are epoch-only: reduce them over processes (one
        # collective per epoch); training step values are each process's own
        sync = not on_step
        log = {
            'batch_size': batch_size,
            'on_step': on_step,
            'on_epoch': True,
            'sync_dist': sync,
        }
        self.log(f'{prefix}_loss', loss, prog_bar=True, **log)  # type: ignore[arg-type]
        self.log(f'{prefix}_loss_low', out.loss_low, **log)  # type: ignore[arg-type]
        self.log(f'{prefix}_loss_high', out.loss_high, **log)  # type: ignore[arg-type]
        with torch.no_grad():
            metrics = self._band_metrics(out)
        for name, value in metrics.items():
            self.log(f'{prefix}_{name}', value, **log)  # type: ignore[arg-type]
        gsd = pair['gsd']
        self.log(
            f'{prefix}_gsd_min',
            gsd.min(),
            reduce_fx='min',
            batch_size=batch_size,
            on_step=on_step,
            on_epoch=True,
            sync_dist=sync,
        )
        self.log(
            f'{prefix}_gsd_max',
            gsd.max(),
            reduce_fx='max',
            batch_size=batch_size,
            on_step=on_step,
            on_epoch=True,
            sync_dist=sync,
        )
        if prefix == 'train':
            finite = torch.isfinite(loss.detach())
            flag = ~finite
            self._nonfinite = (
                flag if self._nonfinite is None else self._nonfinite | flag
            )
            self._maybe_log_images(pair, out)
        return loss

    def _band_metrics(self, out: ScaleMAEOutput) -> dict[str, Tensor]:
        """PSNR of both bands on the masked pixels and the std collapse signals."""
        pred_low = out.pred_low.float()
        pred_high = out.pred_high.float()
        # the band targets the loss was computed against (not computed again here)
        low_t, high_t = out.target_low, out.target_high
        assert low_t is not None and high_t is not None, 'step ran without targets'
        patch = int(self.model.patch_size)
        grid = pred_low.shape[-1] // patch
        mask = out.mask.float().reshape(-1, 1, grid, grid)
        mse_low = _masked_mse(pred_low, low_t, mask)
        mse_high = _masked_mse(pred_high, high_t, mask)
        # the trivial predictors: each image's mean colour over its visible pixels
        # for the low band, zero for the high band
        mse_low_baseline = _masked_mse(_visible_mean(low_t, mask), low_t, mask)
        mse_high_baseline = _masked_mse(torch.zeros_like(high_t), high_t, mask)
        stds = torch.stack([pred_low.std(), low_t.std(), pred_high.std(), high_t.std()])
        if self.training:
            self.band_std = stds.detach()
        return {
            'psnr_low': _psnr(mse_low),
            'psnr_high': _psnr(mse_high),
            'psnr_low_baseline': _psnr(mse_low_baseline),
            'psnr_high_baseline': _psnr(mse_high_baseline),
            'pred_std_low': stds[0],
            'pred_std_high': stds[2],
            'target_std_low': stds[1],
            'target_std_high': stds[3],
        }

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
        """No-op: pretraining has no test metric (use the evaluation tasks).

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

    # ------------------------------------------------------------------ images
    def _maybe_log_images(self, pair: Mapping[str, Tensor], out: Any) -> None:
        interval = self.hparams['image_log_interval']
        trainer = self._trainer
        if interval <= 0 or trainer is None or not trainer.loggers:
            return
        step = self.global_step
        if step == self._last_image_step or (
            step % interval and not self._is_last_step()
        ):
            return
        if getattr(trainer, 'sanity_checking', False):
            return
        self._last_image_step = step
        if not trainer.is_global_zero:
            return
        with torch.no_grad():
            fixed, fixed_out = self._fixed_reconstruction(pair)
            grid = self.reconstruction_grid(fixed, fixed_out)
        for logger in trainer.loggers:
            _log_image(logger, 'reconstruction', grid, step)

    def _fixed_reconstruction(
        self, pair: Mapping[str, Tensor], max_samples: int = 4
    ) -> tuple[dict[str, Tensor], Any]:
        """Reconstruct the same samples, with the same mask, at every logged step.

        The first logged batch's first ``max_samples`` scale pairs and a mask drawn
        once are kept; each call runs the model on them in evaluation mode, so the
        grids of a run can be compared with one another.
        """
        if self._image_samples is None:
            n = min(max_samples, int(pair['image'].shape[0]))
            self._image_samples = {
                key: pair[key][:n].detach().clone()
                for key in ('image', 'target', 'gsd')
            }
            patch = int(self.model.patch_size)
            h, w = (int(v) // patch for v in pair['image'].shape[-2:])
            generator = torch.Generator().manual_seed(0)
            self._image_noise = torch.rand(n, h * w, generator=generator).to(
                pair['image'].device
            )
        fixed = self._image_samples
        was_training = self.model.training
        self.model.eval()
        try:
            res = gsd_to_res(fixed['gsd'], self.hparams['reference_gsd'])
            out = self.model(
                fixed['image'],
                res=res,
                targets=fixed['target'],
                noise=self._image_noise,
            )
        finally:
            self.model.train(was_training)
        return fixed, out

    def _is_last_step(self) -> bool:
        """Whether this optimiser step is the run's last (max_steps or max_epochs)."""
        trainer = self.trainer
        max_steps = trainer.max_steps
        if max_steps is not None and 0 < max_steps <= self.global_step + 1:
            return True
        max_epochs = trainer.max_epochs
        return bool(
            max_epochs is not None
            and max_epochs > 0
            and self.current_epoch == max_epochs - 1
            and trainer.is_last_batch
        )

    #: Column titles of :meth:`reconstruction_grid`.
    GRID_COLUMNS: tuple[str, ...] = (
        'input',
        'masked input',
        'low band',
        'high band',
        'both bands',
        'with visible',
        'target',
    )

    def reconstruction_grid(
        self, pair: Mapping[str, Tensor], out: Any, max_samples: int = 4
    ) -> Tensor:
        """Build the image grid of a step, one row per sample, titled columns.

        Columns (:attr:`GRID_COLUMNS`): input, masked input, low-band prediction,
        high-band prediction, recombination of both bands, the recombination with
        the visible patches of the target pasted back, and the target. All shown
        at the target size ``2S``; the first three bands (or band 0 as grey) are
        shown, each row stretched to the target's range; the signed high band is
        shown with 0 as mid-grey and plus or minus the largest absolute high-band
        target value as white or black. With ``normalize_targets`` the predictions
        are per-patch normalised, and are shown rescaled with the target's patch
        mean and std (as MAE's visualisations do).

        Args:
            pair: The scale pair (``image`` ``(B, C, S, S)``, ``target``
                ``(B, C, 2S, 2S)``).
            out: The :class:`~torchgeo_scalemae.models.ScaleMAEOutput` of the step.
            max_samples: Number of rows.

        Returns:
            A float ``(3, H, W)`` image in ``[0, 1]`` on the CPU, with a title row.

        .. versionadded:: 0.1
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
        patch = int(self.model.patch_size)
        grid = image.shape[-1] // patch
        low_t, high_t = self.model.loss.targets(target, tuple(pred_low.shape[-2:]))
        if getattr(self.model.loss, 'normalize_targets', False):
            mean, std = patch_statistics(low_t, patch)
            pred_low = pred_low * std + mean
            mean, std = patch_statistics(high_t, 2 * patch)
            pred_high = pred_high * std + mean
        removed = out.mask[:n].float().reshape(n, 1, grid, grid)
        keep = 1.0 - F.interpolate(removed, size=image.shape[-2:], mode='nearest')
        keep_target = 1.0 - F.interpolate(removed, size=size, mode='nearest')
        recombined = recombine_bands(pred_low, pred_high, self.model.loss.high_blur)
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
        return _with_titles(image_grid, self.GRID_COLUMNS, int(size[-1]) + 2)


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


class _TimeFraction:
    """Fraction of a Lightning :class:`~lightning.pytorch.callbacks.Timer` budget spent.

    Reads the training time of the timer (restored on resumption), so a resumed run
    continues its time-based schedule.
    """

    def __init__(self, timer: Any) -> None:
        self.timer = timer

    def __call__(self) -> float:
        elapsed = float(self.timer.time_elapsed('train'))
        remaining = self.timer.time_remaining('train')
        if remaining is None:
            return 0.0
        total = elapsed + max(0.0, float(remaining))
        return elapsed / total if total > 0 else 1.0


def _time_budget(trainer: Any) -> _TimeFraction | None:
    """The time-budget fraction of ``trainer.max_time``, or None without one."""
    from lightning.pytorch.callbacks import Timer

    for callback in getattr(trainer, 'callbacks', []):
        if isinstance(callback, Timer) and callback.time_remaining('train') is not None:
            return _TimeFraction(callback)
    return None


def _psnr(mse: Tensor) -> Tensor:
    """PSNR in dB of a mean squared error, for targets of unit peak."""
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def _visible_mean(target: Tensor, patch_mask: Tensor) -> Tensor:
    """Each image's per-channel mean over its visible pixels, broadcast to its size.

    Args:
        target: ``(B, C, H, W)``.
        patch_mask: ``(B, 1, h, w)`` with 1 on removed patches.

    Returns:
        ``(B, C, H, W)``: the prediction of a decoder that only copies the mean colour
        of what it sees.
    """
    keep = 1.0 - F.interpolate(patch_mask, size=target.shape[-2:], mode='nearest')
    total = keep.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    mean = (target * keep).sum(dim=(2, 3), keepdim=True) / total
    return mean.expand_as(target)


def _masked_mse(pred: Tensor, target: Tensor, patch_mask: Tensor) -> Tensor:
    """Mean squared error per band value over masked pixels.

    Args:
        pred: ``(B, C, H, W)``.
        target: ``(B, C, H, W)``.
        patch_mask: ``(B, 1, h, w)`` with 1 on removed patches.

    Returns:
        0-d tensor.
    """
    mask = F.interpolate(patch_mask, size=pred.shape[-2:], mode='nearest')
    err = ((pred - target) ** 2 * mask).sum()
    return err / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def _to_rgb(x: Tensor) -> Tensor:
    if x.shape[1] >= 3:
        return x[:, :3]
    return x[:, :1].expand(-1, 3, -1, -1)


def _log_image(logger: Any, tag: str, grid: Tensor, step: int) -> None:
    """Send an image ``(3, H, W)`` in ``[0, 1]`` to a Lightning logger."""
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


def _validate_hparams(**kw: Any) -> None:
    def bad(name: str, rule: str) -> ValueError:
        return ValueError(f'{name} must be {rule}, got {kw[name]!r}')

    for name in ('in_channels', 'input_size'):
        if isinstance(kw[name], bool) or not isinstance(kw[name], int) or kw[name] < 1:
            raise bad(name, 'a positive int')
    if not 0.0 <= kw['mask_ratio'] < 1.0:
        raise bad('mask_ratio', 'in [0, 1)')
    if kw['loss'] not in ('reference', 'paper', 'normalized'):
        raise bad('loss', "'reference', 'paper' or 'normalized'")
    for name in ('default_gsd', 'lr', 'reference_gsd', 'base_lr'):
        value = kw[name]
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise bad(name, 'a finite positive number')
    low, high = kw['crop_scale']
    if not 0.0 < low <= high <= 1.0:
        raise bad('crop_scale', '(low, high) with 0 < low <= high <= 1')
    if kw['batch_size'] is not None and kw['batch_size'] < 1:
        raise bad('batch_size', 'a positive int or None')
    if not math.isfinite(kw['weight_decay']) or kw['weight_decay'] < 0:
        raise bad('weight_decay', 'finite and >= 0')
    if len(kw['betas']) != 2 or not all(0.0 <= b < 1.0 for b in kw['betas']):
        raise bad('betas', 'two numbers in [0, 1)')
    if kw['warmup_epochs'] < 0:
        raise bad('warmup_epochs', '>= 0')
    if kw['warmup_steps'] is not None and kw['warmup_steps'] < 0:
        raise bad('warmup_steps', '>= 0 or None')
    if kw['min_lr'] < 0:
        raise bad('min_lr', '>= 0')
    if kw['lr'] is not None and kw['min_lr'] > kw['lr']:
        raise bad('min_lr', f'<= lr ({kw["lr"]!r})')
    for name in ('image_log_interval', 'nan_check_interval'):
        if kw[name] < 0:
            raise bad(name, '>= 0 (0 disables)')
    if kw['fused_adamw'] is not None and not isinstance(kw['fused_adamw'], bool):
        raise bad('fused_adamw', 'True, False or None')
