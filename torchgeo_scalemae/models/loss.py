# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The Scale-MAE band-pass reconstruction loss.

The released code's ``forward_loss`` (``mae/models_mae.py``); the paper's variant
(Sec. 3, "Reconstruction": L1 on the high band) is the ``paper`` preset.

.. versionadded:: 0.1
"""

from typing import Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from .bands import high_band_target, low_band_target

__all__ = ('BAND_PRESETS', 'BandLosses', 'BandpassLoss', 'patch_statistics')

#: Named loss settings: ``band_config`` (released-code meaning, pixels), whether the
#: high band uses L1 and its weight. ``reference`` is what the released code runs by
#: default; ``paper`` is the paper's variant (band (14, 56), L1 on the high band);
#: ``normalized`` is ``reference`` with per-patch normalised targets (MAE's
#: ``norm_pix_loss``), the small-budget recipe's choice (docs: evaluation, ablations).
BAND_PRESETS: dict[str, dict[str, object]] = {
    'reference': {
        'band_config': (7, 56),
        'use_l1_loss': False,
        'l1_loss_weight': 1.0,
        'normalize_targets': False,
    },
    'paper': {
        'band_config': (14, 56),
        'use_l1_loss': True,
        'l1_loss_weight': 1.0,
        'normalize_targets': False,
    },
    'normalized': {
        'band_config': (7, 56),
        'use_l1_loss': False,
        'l1_loss_weight': 1.0,
        'normalize_targets': True,
    },
}


def patch_statistics(
    image: Tensor, patch: int | tuple[int, int], eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Per-patch mean and standard deviation of an image, broadcast to its pixels.

    The statistics of MAE's ``norm_pix_loss`` (He et al., 2022): each non-overlapping
    ``patch`` x ``patch`` block is normalised over its pixels and channels as
    ``(x - mean) / sqrt(var + eps)``, with the unbiased variance.

    Args:
        image: (B, C, H, W); H and W multiples of the patch.
        patch: Patch size in pixels.
        eps: Added to the variance.

    Returns:
        ``(mean, std)``, each (B, C, H, W) (constant within a patch).

    Raises:
        ValueError: If the image is not 4-D or not tiled by the patch.
    """
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    if image.ndim != 4 or ph < 1 or pw < 1:
        raise ValueError(
            f'image must be (B, C, H, W) and patch positive, got {tuple(image.shape)} '
            f'and {patch!r}'
        )
    b, c, hh, ww = image.shape
    if hh % ph or ww % pw:
        raise ValueError(f'image of size {hh}x{ww} is not tiled by {ph}x{pw} patches')
    blocks = image.reshape(b, c, hh // ph, ph, ww // pw, pw)
    mean = blocks.mean(dim=(1, 3, 5), keepdim=True)
    var = blocks.var(dim=(1, 3, 5), keepdim=True)
    shape = (b, c, hh // ph, ph, ww // pw, pw)
    return (
        mean.expand(shape).reshape(b, c, hh, ww),
        (var + eps).sqrt().expand(shape).reshape(b, c, hh, ww),
    )


class BandLosses(NamedTuple):
    """The three loss values (0-d float32 tensors) and the band targets behind them.

    ``target_low`` (B, C, H, W) and ``target_high`` (B, C, 2H, 2W) are the float32
    targets the losses were computed against, returned so that callers (metrics,
    logging) need not compute them a second time.
    """

    loss: Tensor
    loss_low: Tensor
    loss_high: Tensor
    target_low: Tensor
    target_high: Tensor


class BandpassLoss(nn.Module):
    """Masked band-pass loss of Scale-MAE, exactly as the released code computes it.

    With ``m`` the patch mask (1 = removed) nearest-upsampled to each prediction's
    resolution, ``L_low = sum(m * (T_low - P_low)^2) / (sum_pixels(m) + 1e-9)`` and
    ``L_high = sum(m * rho(T_high - P_high)) / (sum_pixels(m) + 1e-9)``, where the
    numerators sum over channels and pixels and the denominators count masked pixels
    (not pixel-channels); ``rho(e) = e^2`` or ``w |e|`` with ``use_l1_loss``. The
    total is ``L_high + L_low``. Targets: :func:`~.bands.low_band_target` and
    :func:`~.bands.high_band_target` with the released code's ``band_config``
    meaning (``band_config[0]`` is the high band's blur in pixels; ``band_config[1]``
    only matters when it equals 224).

    By default (``per_patch=True``) the masked sums are computed per patch and
    weighted by the (B, N) mask instead of materialising full-resolution masks:
    identical up to float32 summation order, with two fewer full-size tensors.
    Losses are computed in float32 whatever the prediction dtype.
    """

    def __init__(
        self,
        preset: Literal['reference', 'paper', 'normalized'] | str = 'reference',
        *,
        band_config: tuple[int, int] | list[int] | None = None,
        use_l1_loss: bool | None = None,
        l1_loss_weight: float | None = None,
        per_patch: bool = True,
        normalize_targets: bool | None = None,
    ) -> None:
        """Initialise the loss.

        Args:
            preset: ``'reference'`` (band (7, 56), L2 + L2; the released code) or
                ``'paper'`` (band (14, 56), L1 on the high band).
            band_config: overrides the preset's ``(high_blur, low_size)`` in pixels.
            use_l1_loss: overrides the preset's high-band loss (L1 if True, L2 if False).
            l1_loss_weight: overrides the weight of the L1 high-band loss.
            per_patch: compute masked sums per patch (exact, cheaper) instead of with
                full-resolution masks (the released code's formulation).
            normalize_targets: normalise each band target per patch (MAE's
                ``norm_pix_loss``: the low band over each input patch, the high band
                over each patch's 2x footprint; :func:`patch_statistics`) before the
                loss; None takes the preset's. The released code ignores its
                ``norm_pix_loss`` flag, so the ``reference`` and ``paper`` presets
                do not normalise.

        Raises:
            ValueError: for an unknown preset or a bad band_config or weight.
            TypeError: if ``per_patch`` is not a bool.
        """
        super().__init__()
        if preset not in BAND_PRESETS:
            raise ValueError(
                f'unknown preset {preset!r}; choose one of {sorted(BAND_PRESETS)}'
            )
        cfg = BAND_PRESETS[preset]
        band = cfg['band_config'] if band_config is None else band_config
        assert isinstance(band, (tuple, list))
        if len(band) != 2 or any(int(b) <= 0 for b in band):
            raise ValueError(
                f'band_config must be two positive pixel sizes, got {band_config!r}'
            )
        self.preset = preset
        self.band_config: tuple[int, int] = (int(band[0]), int(band[1]))
        self.use_l1_loss = bool(
            cfg['use_l1_loss'] if use_l1_loss is None else use_l1_loss
        )
        weight = cfg['l1_loss_weight'] if l1_loss_weight is None else l1_loss_weight
        assert isinstance(weight, (int, float))
        if not weight > 0:
            raise ValueError(f'l1_loss_weight must be positive, got {weight}')
        self.l1_loss_weight = float(weight)
        if not isinstance(per_patch, bool):
            raise TypeError(f'per_patch must be True or False, got {per_patch!r}')
        self.per_patch = per_patch
        self.normalize_targets = bool(
            cfg.get('normalize_targets', False)
            if normalize_targets is None
            else normalize_targets
        )

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        high = f'l1 x {self.l1_loss_weight}' if self.use_l1_loss else 'l2'
        text = f'band_config={self.band_config}, high={high}, low=l2'
        if self.normalize_targets:
            text += ', normalize_targets=True'
        return text

    @property
    def low_blur(self) -> int | None:
        """Intermediate size of the low target (the released code's quirk)."""
        return self.band_config[1] if self.band_config[1] == 224 else None

    @property
    def high_blur(self) -> int:
        """Blur size of the high target, pixels."""
        return self.band_config[0]

    def targets(
        self, target: Tensor, low_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Return the (low, high) band targets for a (B, C, 2H, 2W) target.

        Args:
            target: (B, C, 2H, 2W) reconstruction target.
            low_size: (H, W), the low prediction's size in pixels.

        Returns:
            (B, C, H, W) low target and (B, C, 2H, 2W) high target, float32.
        """
        target = target.float()
        return (
            low_band_target(target, low_size, self.low_blur),
            high_band_target(target, self.high_blur),
        )

    @staticmethod
    def _masked_sum(err: Tensor, mask: Tensor, per_patch: bool) -> Tensor:
        """Sum of ``err`` over channels and masked pixels / number of masked pixels.

        Args:
            err: (B, C, H, W) per-pixel errors.
            mask: (B, h, w) patch mask (1 = removed); H, W are multiples of h, w.
            per_patch: per-patch sums instead of a full-resolution mask.
        """
        b, c, hh, ww = err.shape
        _, h, w = mask.shape
        ph, pw = hh // h, ww // w
        if per_patch:
            sums = err.reshape(b, c, h, ph, w, pw).sum(dim=(1, 3, 5))
            num = (sums * mask).sum()
            den = mask.sum() * (ph * pw)
        else:
            full = F.interpolate(mask[:, None], size=(hh, ww))
            num = (full * err).sum()
            den = full.sum()
        return num / (den + 1e-9)

    def forward(
        self,
        pred_low: Tensor,
        pred_high: Tensor,
        target: Tensor,
        mask: Tensor,
        grid_size: tuple[int, int],
    ) -> BandLosses:
        """Compute the loss.

        Args:
            pred_low: (B, C, H, W) low-band prediction.
            pred_high: (B, C, 2H, 2W) high-band prediction.
            target: (B, C, 2H, 2W) reconstruction target (same normalisation as the
                input images).
            mask: (B, N) patch mask, 1 = removed, N = h * w.
            grid_size: the patch grid (h, w); H and W must be multiples of it.

        Returns:
            :class:`BandLosses`: 0-d float32 losses and the band targets.

        Raises:
            ValueError: for inconsistent shapes.
        """
        b, c, hh, ww = pred_low.shape
        if tuple(pred_high.shape) != (b, c, 2 * hh, 2 * ww):
            raise ValueError(
                f'pred_high must have shape {(b, c, 2 * hh, 2 * ww)}, '
                f'got {tuple(pred_high.shape)}'
            )
        if tuple(target.shape) != tuple(pred_high.shape):
            raise ValueError(
                f'target must have shape {tuple(pred_high.shape)} (twice the input '
                f'size), got {tuple(target.shape)}'
            )
        h, w = grid_size
        if tuple(mask.shape) != (b, h * w) or hh % h or ww % w:
            raise ValueError(
                f'mask of shape {tuple(mask.shape)} and grid {grid_size} do not fit '
                f'predictions of size {hh}x{ww} with batch size {b}'
            )
        mask = mask.float().reshape(b, h, w)
        target_low, target_high = self.targets(target, (hh, ww))
        if self.normalize_targets:
            patch = (hh // h, ww // w)
            mean, std = patch_statistics(target_low, patch)
            target_low = (target_low - mean) / std
            mean, std = patch_statistics(target_high, (2 * patch[0], 2 * patch[1]))
            target_high = (target_high - mean) / std
        err_low = (target_low - pred_low.float()) ** 2
        diff = target_high - pred_high.float()
        if self.use_l1_loss:
            err_high = diff.abs() * self.l1_loss_weight
        else:
            err_high = diff**2
        loss_low = self._masked_sum(err_low, mask, self.per_patch)
        loss_high = self._masked_sum(err_high, mask, self.per_patch)
        return BandLosses(
            loss_high + loss_low, loss_low, loss_high, target_low, target_high
        )
