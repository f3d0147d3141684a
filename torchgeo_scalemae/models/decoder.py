# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The Scale-MAE band-pass (Laplacian) decoder (spec section 4).

.. versionadded:: 0.1
"""

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers.norm import LayerNorm
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .fused_head import full_resolution_stage
from .pos_embed import GSDPositionalEmbedding

__all__ = (
    'BandpassDecoder',
    'ChannelLayerNorm',
    'FastConv2d',
    'FastConvTranspose2d',
    'FeatureMappingBlock',
    'LaplacianHead',
    'head_upsampling_factors',
)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (not GroupNorm).

    Normalises each pixel's C values, as the reference's permute-LayerNorm-permute;
    the parameters live under ``.ln`` as in the released checkpoint. On a
    channels-last input the permutes are free.

    .. versionadded:: 0.1
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


def _pixel_shuffle(y: Tensor, kh: int, kw: int) -> Tensor:
    """(B, H, W, kh*kw*C) per-pixel products, channels innermost, to (B, C, kh*H, kw*W).

    One copy, which moves runs of C values; the result is channels-last.
    """
    b, h, w, kkc = y.shape
    c = kkc // (kh * kw)
    y = y.view(b, h, w, kh, kw, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * kh, w * kw, c).permute(0, 3, 1, 2)


class FastConvTranspose2d(nn.ConvTranspose2d):
    """``ConvTranspose2d`` whose kernel equals its stride, as a matmul + pixel shuffle.

    Such a transposed convolution maps every input pixel to an independent
    ``k x k`` output block: one (C_in x k*k*C_out) matrix product on the
    channels-last pixels followed by a reshuffle. Parameters keep the shapes of
    :class:`torch.nn.ConvTranspose2d`, so checkpoints load unchanged. Other
    configurations, or ``fast=False``, run the stock operator.

    .. versionadded:: 0.1
    """

    fast: bool = True

    def _can_be_fast(self) -> bool:
        return (
            self.fast
            and self.kernel_size == self.stride
            and self.padding == (0, 0)
            and self.output_padding == (0, 0)
            and self.dilation == (1, 1)
            and self.groups == 1
        )

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        """Upsample (B, C_in, H, W) to (B, C_out, kH, kW) (channels-last)."""
        if output_size is not None or not self._can_be_fast():
            return super().forward(x, output_size)
        # products with the channels innermost, (B, H, W, kh*kw*C_out), so that the
        # pixel shuffle copies runs of C_out values rather than single ones
        y = F.linear(x.permute(0, 2, 3, 1), *self.linear_args())
        return _pixel_shuffle(y, *self.kernel_size)

    def forward_then_pointwise(self, x: Tensor, pointwise: 'FastConv2d') -> Tensor:
        """``pointwise(self(x))`` as one per-pixel matrix product.

        A 1x1 convolution after a transposed convolution whose kernel equals its
        stride acts on each output pixel independently, so the two compose into one
        transposed convolution with weight ``W_up @ W_1x1`` per sub-pixel and bias
        ``W_1x1 @ b_up + b_1x1``: for the recipe's high branch (28 x 28 -> 56 x 56, 512
        channels) about half the products of the pair, and no stored intermediate.
        Gradients reach both layers' parameters. Off the fast path, or for another
        kind of ``pointwise``: the plain composition.

        Args:
            x: (B, C_in, H, W) input.
            pointwise: a 1x1 :class:`FastConv2d` with ``C_out`` input channels.

        Returns:
            (B, C_1x1, kH, kW) channels-last, equal to ``pointwise(self(x))`` up to
            float rounding.
        """
        if not (
            self._can_be_fast()
            and isinstance(pointwise, FastConv2d)
            and pointwise.is_fast_pointwise()
            and pointwise.in_channels == self.out_channels
        ):
            out: Tensor = pointwise(self.forward(x))
            return out
        c = x.shape[1]
        kh, kw = self.kernel_size
        mid, out_c = self.out_channels, pointwise.out_channels
        w_point = pointwise.weight.view(out_c, mid)
        # (C_in*kh*kw, mid) @ (mid, out_c): per sub-pixel products, channels innermost
        weight = (
            self.weight.permute(0, 2, 3, 1).reshape(c * kh * kw, mid) @ w_point.t()
        ).view(c, kh * kw * out_c)
        bias: Tensor | None = None
        if self.bias is not None:
            bias = self.bias @ w_point.t()
        if pointwise.bias is not None:
            bias = pointwise.bias if bias is None else bias + pointwise.bias
        if bias is not None:
            bias = bias.repeat(kh * kw)
        y = F.linear(x.permute(0, 2, 3, 1), weight.t(), bias)
        return _pixel_shuffle(y, kh, kw)

    def linear_args(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias of the per-pixel product with the channels innermost.

        Returns:
            ``(weight, bias)`` for :func:`torch.nn.functional.linear` on
            channels-last pixels: (kh*kw*C_out, C_in) and (kh*kw*C_out,) or None.
        """
        kh, kw = self.kernel_size
        c, out_c = self.in_channels, self.out_channels
        # weight (C_in, C_out, kh, kw) -> (C_in, kh, kw, C_out) -> (kh*kw*C_out, C_in):
        # one copy of the weight (8 MiB for the recipe's 512 -> 256 x 4 x 4), so that
        # each pixel's products come out with the channels innermost
        weight = self.weight.permute(0, 2, 3, 1).reshape(c, kh * kw * out_c).t()
        bias = None if self.bias is None else self.bias.repeat(kh * kw)
        return weight, bias


class FastConv2d(nn.Conv2d):
    """``Conv2d`` with exact fast paths for the decoder's 1x1 and grouped 3x3 convs.

    A 1x1 convolution runs as a matmul on the channels-last pixels. A grouped
    convolution whose groups have several input channels and one output channel
    (the Laplacian heads' 3x3 convolutions) runs as a depthwise convolution followed
    by a sum over each group's channels, which is faster on CPUs. Parameters keep
    the shapes of :class:`torch.nn.Conv2d`; ``fast=False`` runs the stock operator.

    .. versionadded:: 0.1
    """

    fast: bool = True

    def is_fast_pointwise(self) -> bool:
        """Whether this is a 1x1 convolution that runs as a per-pixel matmul."""
        return (
            self.fast
            and self.padding_mode == 'zeros'
            and self.dilation == (1, 1)
            and self.kernel_size == (1, 1)
            and self.stride == (1, 1)
            and self.padding in ((0, 0), 'valid')
            and self.groups == 1
        )

    def forward(self, x: Tensor) -> Tensor:
        """Convolve (B, C_in, H, W) to (B, C_out, H', W')."""
        c_in, c_out, groups = self.in_channels, self.out_channels, self.groups
        if self.is_fast_pointwise():
            y = F.linear(
                x.permute(0, 2, 3, 1), self.weight.view(c_out, c_in), self.bias
            )
            return y.permute(0, 3, 1, 2)
        if not self.fast or self.padding_mode != 'zeros' or self.dilation != (1, 1):
            return super().forward(x)
        if groups == c_out and c_in // groups > 1 and self.stride == (1, 1):
            per_group = c_in // groups
            weight = self.weight.reshape(c_in, 1, *self.kernel_size)
            if per_group == 2:
                # the bias rides on each pair's first channel, and the pairs are
                # summed by one strided add (a size-2 reduction is ~10x slower)
                bias = None
                if self.bias is not None:
                    bias = torch.stack(
                        (self.bias, torch.zeros_like(self.bias)), dim=-1
                    ).view(c_in)
                y = F.conv2d(x, weight, bias, self.stride, self.padding, 1, c_in)
                out: Tensor = _PairSum.apply(y.permute(0, 2, 3, 1))
                return out.permute(0, 3, 1, 2)
            y = F.conv2d(x, weight, None, self.stride, self.padding, 1, c_in)
            b, _, h, w = y.shape
            y = y.permute(0, 2, 3, 1).reshape(b, h, w, c_out, per_group).sum(-1)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


class _PairSum(torch.autograd.Function):
    """Sum of adjacent channel pairs: (..., 2C) -> (..., C), one strided add.

    The backward pass writes both members' (equal) gradients with one stack.
    """

    @staticmethod
    def forward(ctx: Any, y: Tensor) -> Tensor:
        return torch.add(y[..., 0::2], y[..., 1::2])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.stack((grad, grad), dim=-1).flatten(-2)


def set_fast_ops(module: nn.Module, enabled: bool) -> None:
    """Switch the exact fast paths of every fast layer in ``module`` on or off.

    Args:
        module: a module containing :class:`FastConv2d` / :class:`FastConvTranspose2d`.
        enabled: True for the fast paths, False for the stock PyTorch operators.

    .. versionadded:: 0.1
    """
    for m in module.modules():
        if isinstance(m, (FastConv2d, FastConvTranspose2d)):
            m.fast = enabled


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

    .. versionadded:: 0.1
    """
    if patch_size <= 0 or patch_size % 2:
        raise ValueError(f'patch_size must be a positive even number, got {patch_size}')
    total = patch_size // 2
    last = 2 if total % 2 == 0 else 1
    return total // last, last


class FeatureMappingBlock(nn.Module):
    """GELU, grouped 3x3 conv (C -> C/2), GELU, 1x1 conv (C/2 -> C), plus a 1x1 residual.

    .. versionadded:: 0.1
    """

    def __init__(self, dim: int) -> None:
        """Initialise the block.

        Args:
            dim: channels C (even).
        """
        super().__init__()
        self.convs = nn.Sequential(
            nn.GELU(),
            FastConv2d(dim, dim // 2, 3, padding=1, groups=dim // 2),
            nn.GELU(),
            FastConv2d(dim // 2, dim, 1),
        )
        self.residual = FastConv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, H, W) to (B, C, H, W) (channels-last on the fast path).

        On the fast path the residual's product is the starting value of the last
        1x1 convolution's (one ``addmm``), so the sum costs no separate pass.
        """
        act, conv3, act2, conv1 = self.convs
        residual = self.residual
        if not (
            isinstance(conv1, FastConv2d)
            and isinstance(residual, FastConv2d)
            and conv1.is_fast_pointwise()
            and residual.is_fast_pointwise()
        ):
            out: Tensor = self.convs(x) + self.residual(x)
            return out
        b, c, h, w = x.shape
        hidden = act2(conv3(act(x))).permute(0, 2, 3, 1)  # (B, H, W, C/2)
        bias: Tensor | None = residual.bias
        if conv1.bias is not None:
            bias = conv1.bias if bias is None else bias + conv1.bias
        start = F.linear(x.permute(0, 2, 3, 1), residual.weight.view(c, c), bias).view(
            -1, c
        )
        out = torch.addmm(
            start, hidden.reshape(-1, hidden.shape[-1]), conv1.weight.view(c, -1).t()
        )
        return out.view(b, h, w, c).permute(0, 3, 1, 2)


class LaplacianHead(nn.Module):
    """A Laplacian block: 1x1 projection, feature mapping blocks, reconstruction.

    Reconstruction: channel-LayerNorm, ConvTranspose (``first`` x), GELU, grouped 3x3
    conv, GELU, 1x1 conv, GELU, ConvTranspose (``last`` x) to the output channels.
    The map is upsampled by ``first * last`` (8 for the recipe).

    .. versionadded:: 0.1
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
        self.proj = FastConv2d(in_dim, hidden_dim, 1)
        self.conv_blocks = nn.Sequential(
            *[FeatureMappingBlock(hidden_dim) for _ in range(num_layers)]
        )
        half, quarter = hidden_dim // 2, hidden_dim // 4
        self.pred = nn.Sequential(
            ChannelLayerNorm(hidden_dim),
            FastConvTranspose2d(hidden_dim, half, first, stride=first),
            nn.GELU(),
            FastConv2d(half, quarter, 3, padding=1, groups=quarter),
            nn.GELU(),
            FastConv2d(quarter, half, 1),
            nn.GELU(),
            FastConvTranspose2d(half, out_chans, last, stride=last),
        )

    #: Store two full-resolution maps instead of six in the fused stage and
    #: recompute the other four in the backward pass (see
    #: :func:`~torchgeo_scalemae.models.fused_head.full_resolution_stage`); the
    #: decoder sets it before each call from its own ``recompute_heads``.
    recompute: bool = False
    #: Bytes of one full-width full-resolution map per chunk of the fused stage;
    #: None picks the device's default (64 MiB on the CPU, 1 GiB elsewhere).
    chunk_bytes: int | None = None

    def can_fuse(self) -> bool:
        """Whether :meth:`forward` runs the fused full-resolution stage.

        True for the standard head layout with the fast paths on, outside
        ``torch.compile`` (which fuses the elementwise work itself).
        """
        return not torch.compiler.is_compiling() and self._fusable() is not None

    def _fusable(
        self,
    ) -> (
        tuple[
            ChannelLayerNorm,
            FastConvTranspose2d,
            FastConv2d,
            FastConv2d,
            FastConvTranspose2d,
        ]
        | None
    ):
        norm, up, act, conv3, act2, conv1, act3, up2 = self.pred
        if not (
            isinstance(norm, ChannelLayerNorm)
            and all(
                type(a) is nn.GELU and a.approximate == 'none'
                for a in (act, act2, act3)
            )
            and isinstance(up, FastConvTranspose2d)
            and isinstance(up2, FastConvTranspose2d)
            and isinstance(conv3, FastConv2d)
            and isinstance(conv1, FastConv2d)
        ):
            return None
        for u in (up, up2):
            if not (
                u._can_be_fast()
                and u.bias is not None
                and u.kernel_size[0] == u.kernel_size[1]
            ):
                return None
        k = conv3.kernel_size[0]
        grouped = (
            conv3.fast
            and conv3.bias is not None
            and conv3.kernel_size == (k, k)
            and k % 2 == 1
            and conv3.padding == (k // 2, k // 2)
            and conv3.stride == (1, 1)
            and conv3.dilation == (1, 1)
            and conv3.padding_mode == 'zeros'
            and conv3.groups == conv3.out_channels
            and conv3.in_channels == 2 * conv3.out_channels
        )
        if not (grouped and conv1.is_fast_pointwise() and conv1.bias is not None):
            return None
        return norm, up, conv3, conv1, up2

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, in_dim, h, w) to (B, out_chans, first*last*h, first*last*w)."""
        return self.forward_projected(self.proj(x))

    def forward_projected(self, x: Tensor) -> Tensor:
        """:meth:`forward` after ``proj``: (B, hidden_dim, h, w) to the prediction.

        The decoder calls it with ``proj`` already folded into the preceding
        transposed convolution
        (:meth:`FastConvTranspose2d.forward_then_pointwise`).
        """
        x = self.conv_blocks(x)
        layers = None if torch.compiler.is_compiling() else self._fusable()
        if layers is None:
            out: Tensor = self.pred(x)
            return out
        norm, up, conv3, conv1, up2 = layers
        assert up.bias is not None and conv3.bias is not None
        assert conv1.bias is not None and up2.bias is not None
        z = norm.ln(x.permute(0, 2, 3, 1))
        out = full_resolution_stage(
            z,
            up.weight,
            up.bias,
            conv3.weight,
            conv3.bias,
            conv1.weight,
            conv1.bias,
            up2.weight,
            up2.bias,
            padding=k if isinstance(k := conv3.padding[0], int) else 0,
            chunk_bytes=self.chunk_bytes,
            recompute=self.recompute,
        )
        return out.permute(0, 3, 1, 2)


class BandpassDecoder(nn.Module):
    """Scale-MAE's decoder: transformer, two upsampling branches, Laplacian heads.

    1. ``embed`` (Linear) the encoder latent; append the learned ``mask_token`` for
       every removed patch and un-shuffle with ``ids_restore``; add the GSD encoding
       at decoder width for the same input grid and ``res`` as the encoder; drop the
       class token.
    2. ``blocks`` (timm Blocks, fused attention) and ``norm``; reshape to a
       (B, D, h, w) map (channels-last).
    3. ``up_low``: ConvTranspose 2x to (2h, 2w). ``up_high``: ConvTranspose 2x,
       channel-LayerNorm, GELU, ConvTranspose 2x to (4h, 4w); with
       ``progressive=True`` instead channel-LayerNorm, GELU, ConvTranspose applied to
       ``up_low``'s output.
    4. ``head_low`` and ``head_high`` (or one shared ``head``): Laplacian heads that
       upsample by ``patch_size / 2``, giving the low prediction at the input size
       and the high one at twice the input size, with as many channels as the input.

    Transposed convolutions whose kernel equals the stride run as matmuls with a
    pixel shuffle, 1x1 convolutions as matmuls and the grouped 3x3 convolutions as
    depthwise convolutions plus a channel-pair sum, all on channels-last maps (exact
    to float32 rounding; ``fast_ops=False`` uses the stock operators). Each head's
    full-resolution stage runs as one fused operator with a hand-written backward
    pass, a few images at a time (:mod:`~torchgeo_scalemae.models.fused_head`). With ``checkpoint_heads=True`` the heads recompute their activations in the backward
    pass instead of storing them (most of the decoder's memory).

    .. versionadded:: 0.1
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
        fast_ops: bool = True,
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
            fast_ops: use the exact fast layer implementations.
            checkpoint_heads: activation checkpointing of the heads in training.
            recompute_heads: store two full-resolution maps per head instead of
                six and recompute the other four (the GELU outputs and the 1x1
                convolution's output) in the backward pass: less memory for one
                extra per-pixel matrix product per head (exact; applies to the
                fused stage, i.e. with ``fast_ops`` outside ``torch.compile``).
            **block_kwargs: extra arguments of :class:`timm.models.vision_transformer.Block`.

        Raises:
            ValueError: for inconsistent sizes.
        """
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f'decoder embed_dim {embed_dim} is not divisible by num_heads {num_heads}'
            )
        if out_chans <= 0:
            raise ValueError(f'out_chans must be positive, got {out_chans}')
        factors = head_upsampling_factors(patch_size)
        self.embed_dim = embed_dim
        self.out_chans = out_chans
        self.patch_size = patch_size
        self.independent_heads = independent_heads
        self.progressive = progressive
        self.checkpoint_heads = checkpoint_heads
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
        self.up_low = nn.Sequential(FastConvTranspose2d(d, d, 2, stride=2))
        if progressive:
            self.up_high = nn.Sequential(
                ChannelLayerNorm(d), nn.GELU(), FastConvTranspose2d(d, d, 2, stride=2)
            )
        else:
            self.up_high = nn.Sequential(
                FastConvTranspose2d(d, d, 2, stride=2),
                ChannelLayerNorm(d),
                nn.GELU(),
                FastConvTranspose2d(d, d, 2, stride=2),
            )
        head = partial(LaplacianHead, d, fcn_dim, fcn_layers, out_chans, factors)
        self.head_high: nn.Module | None = head() if independent_heads else None
        self.head_low: nn.Module | None = head() if independent_heads else None
        self.head: nn.Module | None = None if independent_heads else head()
        for module in self.modules():
            if hasattr(module, 'fused_attn'):
                setattr(module, 'fused_attn', True)  # noqa: B010
        set_fast_ops(self, fast_ops)
        self.recompute_heads = recompute_heads

    def set_fast_ops(self, enabled: bool) -> None:
        """Switch the exact fast layer implementations on or off.

        Args:
            enabled: True for the fast paths, False for the stock operators.
        """
        set_fast_ops(self, enabled)

    def _run_head(self, head: nn.Module, x: Tensor, projected: bool = False) -> Tensor:
        checkpointed = (
            self.checkpoint_heads and self.training and torch.is_grad_enabled()
        )
        if isinstance(head, LaplacianHead):
            # a checkpointed head is rerun in the backward pass, and that rerun's
            # own stored maps set the peak: store the fewest
            head.recompute = self.recompute_heads or checkpointed
        function = (
            head.forward_projected
            if projected and isinstance(head, LaplacianHead)
            else head
        )
        if checkpointed:
            out: Tensor = checkpoint(function, x, use_reentrant=False)
            return out
        out = function(x)
        return out

    def _heads(self) -> tuple[nn.Module, nn.Module]:
        if self.head is not None:
            return self.head, self.head
        assert self.head_low is not None and self.head_high is not None
        return self.head_low, self.head_high

    @staticmethod
    def _composable(
        branch: nn.Sequential, head: nn.Module
    ) -> tuple[FastConvTranspose2d, FastConv2d] | None:
        """The branch's last layer and the head's projection, if they compose."""
        up = branch[-1]
        if (
            isinstance(up, FastConvTranspose2d)
            and up._can_be_fast()
            and isinstance(head, LaplacianHead)
            and isinstance(head.proj, FastConv2d)
            and head.proj.is_fast_pointwise()
        ):
            return up, head.proj
        return None

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
        h, w = grid_size
        b, n = ids_restore.shape
        x = self.embed(latent)
        tokens = x[:, 1:]
        mask_tokens = self.mask_token.to(tokens.dtype).expand(
            b, n - tokens.shape[1], -1
        )
        tokens = torch.cat([tokens, mask_tokens], dim=1)
        index = ids_restore.unsqueeze(-1).expand(b, n, self.embed_dim)
        tokens = torch.gather(tokens, 1, index)
        pe = self.pos_encoder(res, (h, w), b)[:, 1:]
        tokens = tokens + pe.to(tokens.dtype)
        tokens = self.norm(self.blocks(tokens))
        fmap = tokens.reshape(b, h, w, self.embed_dim).permute(0, 3, 1, 2)
        head_low, head_high = self._heads()
        # each branch's last transposed convolution and its head's 1x1 projection
        # run as one product where both are on the fast path (the low branch's
        # output also feeds the high branch when progressive, so it stays)
        pair = None if self.progressive else self._composable(self.up_low, head_low)
        if pair is None:
            low = self.up_low(fmap)
            pred_low = self._run_head(head_low, low)
        else:
            low = self.up_low[:-1](fmap)
            projected = pair[0].forward_then_pointwise(low, pair[1])
            pred_low = self._run_head(head_low, projected, projected=True)
        high_in = low if self.progressive else fmap
        pair = self._composable(self.up_high, head_high)
        if pair is None:
            pred_high = self._run_head(head_high, self.up_high(high_in))
        else:
            projected = pair[0].forward_then_pointwise(
                self.up_high[:-1](high_in), pair[1]
            )
            pred_high = self._run_head(head_high, projected, projected=True)
        return pred_low, pred_high
