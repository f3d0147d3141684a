# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The full Scale-MAE model: encoder, band-pass decoder and loss (paper Fig. 2).

The reference's ``MaskedAutoencoderViT`` (``mae/models_mae.py``); the builders by
name are in :mod:`~.builders`.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .decoder import BandpassDecoder
from .encoder import ScaleMAEEncoder, check_mask_ratio
from .loss import BandpassLoss

__all__ = ('REFERENCE_CONFIG_KEYS', 'ScaleMAE', 'ScaleMAEOutput')

#: Keyword names of the reference ``MaskedAutoencoderViT`` constructor that
#: :meth:`ScaleMAE.from_reference_config` accepts, with the fMoW recipe's values.
REFERENCE_CONFIG_KEYS: dict[str, Any] = {
    'img_size': 224,
    'patch_size': 16,
    'in_chans': 3,
    'embed_dim': 1024,
    'depth': 24,
    'num_heads': 16,
    'decoder_embed_dim': 512,
    'decoder_depth': 3,
    'decoder_num_heads': 16,
    'mlp_ratio': 4.0,
    'fcn_dim': 512,
    'fcn_layers': 2,
    'independent_fcn_head': True,
    'progressive': False,
    'band_config': (7, 56),
    'use_l1_loss': False,
    'l1_loss_weight': 1.0,
}


@dataclass
class ScaleMAEOutput:
    """Result of :meth:`ScaleMAE.forward`.

    Attributes:
        loss: total loss ``loss_high + loss_low`` (0-d float32), None without targets.
        loss_low: low-band loss (0-d), None without targets.
        loss_high: high-band loss (0-d), None without targets.
        pred_low: (B, C, H, W) low-band prediction (input size).
        pred_high: (B, C, 2H, 2W) high-band prediction (twice the input size).
        mask: (B, N) patch mask, 1 = removed.
        target_low: (B, C, H, W) float32 low-band target, None without targets.
        target_high: (B, C, 2H, 2W) float32 high-band target, None without targets.
    """

    loss: Tensor | None
    loss_low: Tensor | None
    loss_high: Tensor | None
    pred_low: Tensor
    pred_high: Tensor
    mask: Tensor
    target_low: Tensor | None = None
    target_high: Tensor | None = None


def _init_reference_weights(module: nn.Module) -> None:
    """The reference's initialisation of one module (``initialize_weights``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ScaleMAE(nn.Module):
    """Scale-MAE for pretraining: GSD-aware encoder, band-pass decoder and loss.

    Computes what the released ``MaskedAutoencoderViT`` computes (checked against
    its outputs to 1e-5 in float32): patch embedding plus the GSD encoding of the
    per-sample ``res``, MAE random masking, a ViT encoder, the
    :class:`~.decoder.BandpassDecoder` and the masked :class:`~.loss.BandpassLoss`.
    The target must be the same image at exactly twice the input size (half the
    GSD): ``targets`` (B, C, 2H, 2W) for ``images`` (B, C, H, W).

    Constructor keywords follow the reference constructor (see
    :meth:`from_reference_config`); defaults are the fMoW recipe with a ViT-L/16.
    Dead reference parameters (``pos_embed``, ``decoder_pos_embed``,
    ``mask_token_decoder``) do not exist here.

    If you use this model in your research, please cite https://arxiv.org/abs/2212.14532
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 3,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        fcn_dim: int = 512,
        fcn_layers: int = 2,
        independent_fcn_head: bool = True,
        progressive: bool = False,
        band_config: tuple[int, int] | list[int] | None = None,
        use_l1_loss: bool | None = None,
        l1_loss_weight: float | None = None,
        normalize_targets: bool | None = None,
        loss_preset: str = 'reference',
        mask_ratio: float = 0.75,
        res: float = 1.0,
        drop_path_rate: float = 0.0,
        fast_path: bool = False,
        checkpoint_heads: bool = False,
        per_patch_loss: bool = True,
        recompute_heads: bool = False,
    ) -> None:
        """Initialise the model.

        Args:
            img_size: nominal input size (pixels); any multiple of the patch size works.
            patch_size: patch size, pixels (even).
            in_chans: input channels C (also the predictions' channels).
            embed_dim: encoder width.
            depth: encoder blocks.
            num_heads: encoder attention heads.
            decoder_embed_dim: decoder width.
            decoder_depth: decoder transformer blocks.
            decoder_num_heads: decoder attention heads.
            mlp_ratio: MLP ratio of all transformer blocks.
            fcn_dim: Laplacian head width.
            fcn_layers: feature mapping blocks per head.
            independent_fcn_head: two heads with separate weights (recipe) or one shared.
            progressive: chain the high upsampling branch on the low one.
            band_config: ``(high_blur, low_size)`` in pixels, released-code meaning;
                None takes the loss preset's.
            use_l1_loss: L1 (True) or L2 (False) on the high band; None: preset.
            l1_loss_weight: weight of the L1 high-band loss; None: preset.
            normalize_targets: normalise both band targets per patch (MAE's
                ``norm_pix_loss``); None: preset.
            loss_preset: ``'reference'`` (band (7, 56), L2 + L2) or ``'paper'``
                (band (14, 56), L1 high band).
            mask_ratio: default fraction of patches removed, in [0, 1).
            res: default per-sample scale when ``forward`` gets no ``res``.
            drop_path_rate: stochastic depth of the encoder (0 in the reference).
            fast_path: run the decoder's branches and heads on the exact fast
                path (:mod:`~torchgeo_scalemae.models.fast`; same weights).
            checkpoint_heads: activation checkpointing of the Laplacian heads.
            per_patch_loss: per-patch masked sums in the loss (exact, cheaper).
            recompute_heads: on the fast path, store two full-resolution maps per
                Laplacian head instead of six, recomputing the other four (the
                GELU outputs and the 1x1 convolution's output) in the backward
                pass (exact; less memory for one extra per-pixel matrix product).

        Raises:
            ValueError: for inconsistent settings, a ``drop_path_rate`` outside
                [0, 1), a non-positive ``mlp_ratio``, ``fcn_dim`` or ``fcn_layers``.
            TypeError: for a flag that is not a bool.
        """
        super().__init__()
        check_mask_ratio(mask_ratio)
        flags = {
            'independent_fcn_head': independent_fcn_head,
            'progressive': progressive,
            'fast_path': fast_path,
            'checkpoint_heads': checkpoint_heads,
            'per_patch_loss': per_patch_loss,
            'recompute_heads': recompute_heads,
        }
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f'{name} must be True or False, got {value!r}')
        for name, option in (
            ('use_l1_loss', use_l1_loss),
            ('normalize_targets', normalize_targets),
        ):
            if option is not None and not isinstance(option, bool):
                raise TypeError(f'{name} must be True, False or None, got {option!r}')
        if (
            isinstance(drop_path_rate, bool)
            or not isinstance(drop_path_rate, int | float)
            or not 0 <= drop_path_rate < 1
        ):
            raise ValueError(
                f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}'
            )
        if (
            isinstance(mlp_ratio, bool)
            or not isinstance(mlp_ratio, int | float)
            or not 0 < mlp_ratio < math.inf
        ):
            raise ValueError(
                f'mlp_ratio must be a positive finite number, got {mlp_ratio!r}'
            )
        for name, size in (('fcn_dim', fcn_dim), ('fcn_layers', fcn_layers)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f'{name} must be a positive int, got {size!r}')
        self.encoder = ScaleMAEEncoder(
            res=res,
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            weight_init='skip',
        )
        self.decoder = BandpassDecoder(
            encoder_dim=embed_dim,
            out_chans=in_chans,
            patch_size=patch_size,
            embed_dim=decoder_embed_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            fcn_dim=fcn_dim,
            fcn_layers=fcn_layers,
            independent_heads=independent_fcn_head,
            progressive=progressive,
            fast_path=fast_path,
            checkpoint_heads=checkpoint_heads,
            recompute_heads=recompute_heads,
        )
        self.loss = BandpassLoss(
            loss_preset,
            band_config=band_config,
            use_l1_loss=use_l1_loss,
            l1_loss_weight=l1_loss_weight,
            per_patch=per_patch_loss,
            normalize_targets=normalize_targets,
        )
        self.mask_ratio = float(mask_ratio)
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.initialize_weights()

    @classmethod
    def from_reference_config(cls, **kwargs: Any) -> 'ScaleMAE':
        """Build from the reference constructor's keyword names.

        Accepted keywords (fMoW recipe defaults): ``img_size=224, patch_size=16,
        in_chans=3, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512,
        decoder_depth=3, decoder_num_heads=16, mlp_ratio=4.0, fcn_dim=512,
        fcn_layers=2, independent_fcn_head=True, progressive=False,
        band_config=(7, 56), use_l1_loss=False, l1_loss_weight=1.0``.

        Args:
            **kwargs: any of the keywords above.

        Returns:
            The model.

        Raises:
            TypeError: for a keyword the reference constructor does not have (or that
                this implementation does not support), naming it.
        """
        unknown = sorted(set(kwargs) - set(REFERENCE_CONFIG_KEYS))
        if unknown:
            raise TypeError(
                f'unknown reference config keys {unknown}; accepted: '
                f'{sorted(REFERENCE_CONFIG_KEYS)}'
            )
        config = {**REFERENCE_CONFIG_KEYS, **kwargs}
        return cls(**config)

    def initialize_weights(self) -> None:
        """Initialise as the reference's ``initialize_weights`` does.

        Every Linear Xavier-uniform with zero bias, every LayerNorm (1, 0), the patch
        embedding Xavier-uniform on its flattened weight, class and mask tokens
        N(0, 0.02); convolutions keep PyTorch's default initialisation.
        """
        self.apply(_init_reference_weights)
        weight = self.encoder.patch_embed.proj.weight
        with torch.no_grad():
            flat = torch.empty_like(weight).view(weight.shape[0], -1)
            nn.init.xavier_uniform_(flat)
            weight.copy_(flat.view_as(weight))
        assert self.encoder.cls_token is not None
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def forward(
        self,
        images: Tensor,
        res: Tensor | float | None = None,
        targets: Tensor | None = None,
        noise: Tensor | None = None,
        mask_ratio: float | None = None,
    ) -> ScaleMAEOutput:
        """Mask, encode, decode and (with targets) compute the loss.

        Args:
            images: (B, C, H, W) inputs; H, W multiples of the patch size.
            res: per-sample scale ``gsd / reference_gsd`` of ``images``, (B,) or a
                float; None uses ``encoder.res``. The decoder uses the same value.
            targets: (B, C, 2H, 2W) the same scene at twice the resolution, or None.
            noise: optional (B, N) masking noise (smallest noise is kept).
            mask_ratio: overrides :attr:`mask_ratio`.

        Returns:
            A :class:`ScaleMAEOutput`.

        Raises:
            ValueError: for bad images, ``res``, ``noise`` or a target that is not
                exactly (B, C, 2H, 2W).
        """
        grid = self.encoder._check_input(images)
        b = self._check_targets(images, targets)
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        res_t = self.encoder._resolve_res(res, b)
        enc = self.encoder._forward_masked(images, grid, res_t, ratio, noise)
        pred_low, pred_high = self.decoder(
            enc.latent, enc.ids_restore, res_t, enc.grid_size
        )
        if targets is None:
            return ScaleMAEOutput(None, None, None, pred_low, pred_high, enc.mask)
        losses = self.loss(pred_low, pred_high, targets, enc.mask, enc.grid_size)
        return ScaleMAEOutput(
            losses.loss,
            losses.loss_low,
            losses.loss_high,
            pred_low,
            pred_high,
            enc.mask,
            losses.target_low,
            losses.target_high,
        )

    def _check_targets(self, images: Tensor, targets: Tensor | None) -> int:
        """Validate the target size against checked images; return the batch size."""
        b, c, h, w = images.shape
        if targets is not None:
            expected = (b, c, 2 * h, 2 * w)
            if not isinstance(targets, Tensor) or tuple(targets.shape) != expected:
                got = tuple(targets.shape) if isinstance(targets, Tensor) else targets
                raise ValueError(
                    f'targets must be exactly twice the input size, {expected} for '
                    f'images of shape {tuple(images.shape)}, got {got}'
                )
        return b
