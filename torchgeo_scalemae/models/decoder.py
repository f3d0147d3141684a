# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The Scale-MAE band-pass (Laplacian) decoder (paper Sec. 3.3 and Fig. 2).

The decoder of the reference ``mae/models_mae.py`` (``MaskedAutoencoderViT``'s
``decoder_*``, ``fpn`` and ``fcn_*`` modules, and ``mae/lib/fpn.py``): a small
transformer over the encoder's tokens and mask tokens, two upsampling branches,
and two Laplacian heads that reconstruct the low band at the input size and the
high band at twice the input size. An exact, faster implementation of the same
modules is switched on with ``fast_path=True`` (:mod:`~torchgeo_scalemae.models.fast`).
"""

from functools import partial
from typing import Any

import torch
from timm.layers.norm import LayerNorm
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .pos_embed import GSDPositionalEmbedding

__all__ = (
    'BandpassDecoder',
    'ChannelLayerNorm',
    'FeatureMappingBlock',
    'LaplacianHead',
    'head_upsampling_factors',
    'set_fast_path',
)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (not GroupNorm).

    Normalises each pixel's C values, as the reference's permute-LayerNorm-permute;
    the parameters live under ``.ln`` as in the released checkpoint. On a
    channels-last input the permutes are free.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        """Initialise the norm.

        Args:
            num_channels: C.
            eps: LayerNorm epsilon (the reference uses 1e-6).
        """
        super().__init__()
        self.ln = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise (B, C, H, W) over C; returns (B, C, H, W) channels-last."""
        out: Tensor = self.ln(x.permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2)


def head_upsampling_factors(patch_size: int) -> tuple[int, int]:
    """Factors of a Laplacian head's two transposed convolutions for a patch size.

    The upsampling branches give maps at 2x (low) and 4x (high) the patch grid; each
    head must then upsample by ``patch_size / 2`` so that the low prediction has the
    input size and the high prediction twice that. For patch 16 this is the
    recipe's 4 x 2; for patch 14 (ViT-H/14) it is 7 x 1; in general the last factor
    is 2 when ``patch_size / 2`` is even, else 1.

    Args:
        patch_size: the encoder's patch size in pixels; must be even.

    Returns:
        (first, last) transposed-convolution factors, product ``patch_size / 2``.

    Raises:
        ValueError: for an odd or non-positive patch size.
    """
    if patch_size <= 0 or patch_size % 2:
        raise ValueError(f'patch_size must be a positive even number, got {patch_size}')
    total = patch_size // 2
    last = 2 if total % 2 == 0 else 1
    return total // last, last


class FeatureMappingBlock(nn.Module):
    """GELU, grouped 3x3 conv (C -> C/2), GELU, 1x1 conv (C/2 -> C), plus a 1x1 residual.

    ``mae/lib/fpn.py``'s ``FCNHead`` block of the reference.
    """

    def __init__(self, dim: int) -> None:
        """Initialise the block.

        Args:
            dim: channels C (even).
        """
        super().__init__()
        self.convs = nn.Sequential(
            nn.GELU(),
            nn.Conv2d(dim, dim // 2, 3, padding=1, groups=dim // 2),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, 1),
        )
        self.residual = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, H, W) to (B, C, H, W)."""
        out: Tensor = self.convs(x) + self.residual(x)
        return out


class LaplacianHead(nn.Module):
    """A Laplacian block: 1x1 projection, feature mapping blocks, reconstruction.

    Reconstruction: channel-LayerNorm, ConvTranspose (``first`` x), GELU, grouped 3x3
    conv, GELU, 1x1 conv, GELU, ConvTranspose (``last`` x) to the output channels.
    The map is upsampled by ``first * last`` (8 for the recipe).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_layers: int,
        out_chans: int,
        factors: tuple[int, int] = (4, 2),
    ) -> None:
        """Initialise the head.

        Args:
            in_dim: input channels (the decoder width).
            hidden_dim: head width (``fcn_dim``); a positive multiple of 4.
            num_layers: number of feature mapping blocks (``fcn_layers``).
            out_chans: output channels (the image channels).
            factors: the two transposed convolutions' factors (see
                :func:`head_upsampling_factors`).

        Raises:
            ValueError: for a bad width or layer count.
        """
        super().__init__()
        if hidden_dim <= 0 or hidden_dim % 4:
            raise ValueError(
                f'fcn_dim must be a positive multiple of 4, got {hidden_dim}'
            )
        if num_layers < 0:
            raise ValueError(f'fcn_layers must be >= 0, got {num_layers}')
        first, last = factors
        self.proj = nn.Conv2d(in_dim, hidden_dim, 1)
        self.conv_blocks = nn.Sequential(
            *[FeatureMappingBlock(hidden_dim) for _ in range(num_layers)]
        )
        half, quarter = hidden_dim // 2, hidden_dim // 4
        self.pred = nn.Sequential(
            ChannelLayerNorm(hidden_dim),
            nn.ConvTranspose2d(hidden_dim, half, first, stride=first),
            nn.GELU(),
            nn.Conv2d(half, quarter, 3, padding=1, groups=quarter),
            nn.GELU(),
            nn.Conv2d(quarter, half, 1),
            nn.GELU(),
            nn.ConvTranspose2d(half, out_chans, last, stride=last),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in_dim, h, w) to (B, out_chans, first*last*h, first*last*w)."""
        out: Tensor = self.pred(self.conv_blocks(self.proj(x)))
        return out


class BandpassDecoder(nn.Module):
    """Scale-MAE's decoder: transformer, two upsampling branches, Laplacian heads.

    1. ``embed`` (Linear) the encoder latent; append the learned ``mask_token`` for
       every removed patch and un-shuffle with ``ids_restore``; add the GSD encoding
       at decoder width for the same input grid and ``res`` as the encoder; drop the
       class token.
    2. ``blocks`` (timm Blocks, fused attention) and ``norm``; reshape to a
       (B, D, h, w) map.
    3. ``up_low``: ConvTranspose 2x to (2h, 2w). ``up_high``: ConvTranspose 2x,
       channel-LayerNorm, GELU, ConvTranspose 2x to (4h, 4w); with
       ``progressive=True`` instead channel-LayerNorm, GELU, ConvTranspose applied to
       ``up_low``'s output.
    4. ``head_low`` and ``head_high`` (or one shared ``head``): Laplacian heads that
       upsample by ``patch_size / 2``, giving the low prediction at the input size
       and the high one at twice the input size, with as many channels as the input.

    With ``fast_path=True`` steps 3 and 4 run on the exact fast path of
    :mod:`~torchgeo_scalemae.models.fast` (same parameters and state dict, results
    equal to float rounding, less time and memory on CPUs). With
    ``checkpoint_heads=True`` the heads recompute their activations in the backward
    pass instead of storing them (most of the decoder's memory).
    """

    def __init__(
        self,
        encoder_dim: int,
        out_chans: int = 3,
        patch_size: int = 16,
        embed_dim: int = 512,
        depth: int = 3,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        fcn_dim: int = 512,
        fcn_layers: int = 2,
        independent_heads: bool = True,
        progressive: bool = False,
        fast_path: bool = False,
        checkpoint_heads: bool = False,
        recompute_heads: bool = False,
        **block_kwargs: Any,
    ) -> None:
        """Initialise the decoder.

        Args:
            encoder_dim: width of the encoder latent.
            out_chans: channels of both predictions (the input channels).
            patch_size: the encoder's patch size (even), pixels.
            embed_dim: decoder width (a multiple of 4 and of ``num_heads``).
            depth: number of decoder transformer blocks.
            num_heads: attention heads of the decoder blocks.
            mlp_ratio: MLP ratio of the decoder blocks.
            fcn_dim: Laplacian head width.
            fcn_layers: feature mapping blocks per head.
            independent_heads: two heads with separate weights (the recipe) or one
                shared head.
            progressive: chain the high branch on the low branch's output.
            fast_path: run the branches and heads on the exact fast path
                (:mod:`~torchgeo_scalemae.models.fast`); also the attribute
                :attr:`fast_path`.
            checkpoint_heads: activation checkpointing of the heads in training.
            recompute_heads: on the fast path, store two full-resolution maps per
                head instead of six and recompute the other four in the backward
                pass: less memory for one extra per-pixel matrix product (exact).
            **block_kwargs: extra arguments of :class:`timm.models.vision_transformer.Block`.

        Raises:
            ValueError: for inconsistent sizes.
        """
        super().__init__()
        for name, value in (
            ('encoder_dim', encoder_dim),
            ('out_chans', out_chans),
            ('embed_dim', embed_dim),
            ('num_heads', num_heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f'decoder depth must be an int >= 0, got {depth!r}')
        if embed_dim % num_heads:
            raise ValueError(
                f'decoder embed_dim {embed_dim} is not divisible by num_heads {num_heads}'
            )
        factors = head_upsampling_factors(patch_size)
        self.embed_dim = embed_dim
        self.out_chans = out_chans
        self.patch_size = patch_size
        self.independent_heads = independent_heads
        self.progressive = progressive
        #: Run the branches and heads on the exact fast path.
        self.fast_path = bool(fast_path)
        #: Activation checkpointing of the heads in training.
        self.checkpoint_heads = checkpoint_heads
        #: Fast path only: store two full-resolution maps per head instead of six.
        self.recompute_heads = recompute_heads
        #: Fast path only: bytes of one full-width full-resolution map per chunk of
        #: the fused head stage; None picks the device's default.
        self.fast_chunk_bytes: int | None = None
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_encoder = GSDPositionalEmbedding(embed_dim)
        block_kwargs.setdefault('qkv_bias', True)
        block_kwargs.setdefault('norm_layer', partial(LayerNorm, eps=1e-6))
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, mlp_ratio, **block_kwargs)
                for _ in range(depth)
            ]
        )
        self.norm = LayerNorm(embed_dim, eps=1e-6)
        d = embed_dim
        self.up_low = nn.Sequential(nn.ConvTranspose2d(d, d, 2, stride=2))
        if progressive:
            self.up_high = nn.Sequential(
                ChannelLayerNorm(d), nn.GELU(), nn.ConvTranspose2d(d, d, 2, stride=2)
            )
        else:
            self.up_high = nn.Sequential(
                nn.ConvTranspose2d(d, d, 2, stride=2),
                ChannelLayerNorm(d),
                nn.GELU(),
                nn.ConvTranspose2d(d, d, 2, stride=2),
            )
        head = partial(LaplacianHead, d, fcn_dim, fcn_layers, out_chans, factors)
        self.head_high: LaplacianHead | None = head() if independent_heads else None
        self.head_low: LaplacianHead | None = head() if independent_heads else None
        self.head: LaplacianHead | None = None if independent_heads else head()
        for module in self.modules():
            if hasattr(module, 'fused_attn'):
                setattr(module, 'fused_attn', True)  # noqa: B010

    def heads(self) -> tuple[LaplacianHead, LaplacianHead]:
        """The (low, high) Laplacian heads (the same module twice when shared)."""
        if self.head is not None:
            return self.head, self.head
        assert self.head_low is not None and self.head_high is not None
        return self.head_low, self.head_high

    def forward_tokens(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        res: Tensor,
        grid_size: tuple[int, int],
    ) -> Tensor:
        """Steps 1 and 2: the decoder transformer, as a (B, D, h, w) map.

        Args:
            latent: (B, 1 + K, D_enc) encoder output (class token first).
            ids_restore: (B, N) un-shuffling permutation, N = h * w.
            res: (B,) float32 per-sample scale of the *input* (the encoder's res).
            grid_size: the patch grid (h, w).

        Returns:
            (B, D, h, w) decoder feature map.
        """
        h, w = grid_size
        b, n = ids_restore.shape
        tokens = self.embed(latent)[:, 1:]
        mask_tokens = self.mask_token.to(tokens.dtype).expand(
            b, n - tokens.shape[1], -1
        )
        tokens = torch.cat([tokens, mask_tokens], dim=1)
        index = ids_restore.unsqueeze(-1).expand(b, n, self.embed_dim)
        tokens = torch.gather(tokens, 1, index)
        pe = self.pos_encoder(res, (h, w), b)[:, 1:]
        tokens = tokens + pe.to(tokens.dtype)
        tokens = self.norm(self.blocks(tokens))
        fmap: Tensor = tokens.reshape(b, h, w, self.embed_dim).permute(0, 3, 1, 2)
        return fmap

    def _head(self, head: LaplacianHead, x: Tensor) -> Tensor:
        if self.checkpoint_heads and self.training and torch.is_grad_enabled():
            out: Tensor = checkpoint(head, x, use_reentrant=False)
            return out
        pred: Tensor = head(x)
        return pred

    def decode_branches(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 3 and 4: the upsampling branches and the Laplacian heads.

        Args:
            fmap: (B, D, h, w) decoder feature map.

        Returns:
            ``(pred_low, pred_high)``: (B, C, p*h, p*w) and (B, C, 2p*h, 2p*w).
        """
        if self.fast_path and not torch.compiler.is_compiling():
            from .fast import decode_branches

            return decode_branches(self, fmap)
        head_low, head_high = self.heads()
        low = self.up_low(fmap)
        high = self.up_high(low if self.progressive else fmap)
        return self._head(head_low, low), self._head(head_high, high)

    def forward(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        res: Tensor,
        grid_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor]:
        """Decode the encoder latent into the two band predictions.

        Args:
            latent: (B, 1 + K, D_enc) encoder output (class token first).
            ids_restore: (B, N) un-shuffling permutation, N = h * w.
            res: (B,) float32 per-sample scale of the *input* (the encoder's res).
            grid_size: the patch grid (h, w).

        Returns:
            ``(pred_low, pred_high)``: (B, C, p*h, p*w) and (B, C, 2p*h, 2p*w).
        """
        fmap = self.forward_tokens(latent, ids_restore, res, grid_size)
        return self.decode_branches(fmap)


def set_fast_path(module: nn.Module, enabled: bool = True) -> None:
    """Switch the exact fast path of every :class:`BandpassDecoder` in ``module``.

    Args:
        module: a model containing decoders (for example a
            :class:`~torchgeo_scalemae.models.ScaleMAE`), or a decoder.
        enabled: True for the fast path, False for the plain modules.

    Raises:
        TypeError: if ``module`` is not an :class:`torch.nn.Module` or ``enabled``
            not a bool.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f'module must be a torch.nn.Module, got {type(module).__name__}'
        )
    if not isinstance(enabled, bool):
        raise TypeError(f'enabled must be a bool, got {enabled!r}')
    for m in module.modules():
        if isinstance(m, BandpassDecoder):
            m.fast_path = enabled
