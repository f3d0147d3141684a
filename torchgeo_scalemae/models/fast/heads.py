# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The fast path of the decoder's upsampling branches and Laplacian heads.

:func:`decode_branches` computes what
:meth:`~torchgeo_scalemae.models.BandpassDecoder.decode_branches` computes, from the
same modules and parameters, with the exact fast operators of :mod:`.layers`:

- each branch's last transposed convolution and its head's 1x1 projection run as
  one product;
- each feature mapping block's residual product is the starting value of its last
  1x1 convolution (one ``addmm``);
- each head's full-resolution stage (ConvTranspose, GELU, grouped 3x3 conv, GELU,
  1x1 conv, GELU, ConvTranspose) runs as one fused operator with a hand-written
  backward pass, a few images at a time (:mod:`.fused_head`).

Anything that does not have the standard layout falls back to the module's own
forward, so the result is always the decoder's.
"""

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .fused_head import full_resolution_stage
from .layers import (
    conv,
    conv_transpose,
    conv_transpose_then_pointwise,
    is_paired_grouped,
    is_pixel_shuffle_transpose,
    is_pointwise,
)

if TYPE_CHECKING:
    from ..decoder import (
        BandpassDecoder,
        ChannelLayerNorm,
        FeatureMappingBlock,
        LaplacianHead,
    )

__all__ = ('can_fuse', 'decode_branches', 'feature_mapping_block', 'laplacian_head')


def feature_mapping_block(block: 'FeatureMappingBlock', x: Tensor) -> Tensor:
    """``block(x)``: (B, C, H, W) to (B, C, H, W), channels-last.

    The residual's product is the starting value of the last 1x1 convolution's.
    """
    act, conv3, act2, conv1 = block.convs
    residual = block.residual
    if not (
        type(conv3) is nn.Conv2d and is_pointwise(conv1) and is_pointwise(residual)
    ):
        out: Tensor = block(x)
        return out
    b, c, h, w = x.shape
    hidden: Tensor = act2(conv(conv3, act(x))).permute(0, 2, 3, 1)  # (B, H, W, C/2)
    bias: Tensor | None = residual.bias
    if conv1.bias is not None:
        bias = conv1.bias if bias is None else bias + conv1.bias
    start = F.linear(x.permute(0, 2, 3, 1), residual.weight.view(c, c), bias)
    out = torch.addmm(
        start.view(-1, c),
        hidden.reshape(-1, hidden.shape[-1]),
        conv1.weight.view(c, -1).t(),
    )
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def can_fuse(head: 'LaplacianHead') -> bool:
    """Whether the head's full-resolution stage has the fused operator's layout."""
    from ..decoder import ChannelLayerNorm

    norm, up, act, conv3, act2, conv1, act3, up2 = head.pred
    if not (
        isinstance(norm, ChannelLayerNorm)
        and all(
            type(a) is nn.GELU and a.approximate == 'none' for a in (act, act2, act3)
        )
        and is_paired_grouped(conv3)
    ):
        return False
    for u in (up, up2):
        if not (
            is_pixel_shuffle_transpose(u)
            and u.kernel_size[0] == u.kernel_size[1]
            and u.bias is not None
        ):
            return False
    k = conv3.kernel_size[0]
    return (
        conv3.bias is not None
        and conv3.kernel_size == (k, k)
        and k % 2 == 1
        and conv3.padding == (k // 2, k // 2)
        and is_pointwise(conv1)
        and conv1.bias is not None
    )


def laplacian_head(
    head: 'LaplacianHead',
    x: Tensor,
    *,
    projected: bool = False,
    recompute: bool = False,
    chunk_bytes: int | None = None,
) -> Tensor:
    """``head(x)`` on the fast path.

    Args:
        head: the Laplacian head.
        x: (B, in_dim, h, w), or with ``projected`` the output of ``head.proj``.
        projected: ``x`` has already been through ``head.proj``.
        recompute: store two full-resolution maps in the fused stage instead of
            six and recompute the other four in the backward pass.
        chunk_bytes: bytes of one full-width full-resolution map per chunk of the
            fused stage; None picks the device's default.

    Returns:
        (B, out_chans, f*h, f*w), channels-last.
    """
    if not projected:
        x = conv(head.proj, x)
    for block in head.conv_blocks:
        x = feature_mapping_block(cast('FeatureMappingBlock', block), x)
    if not can_fuse(head):
        out: Tensor = head.pred(x)
        return out
    norm, up, _, conv3, _, conv1, _, up2 = cast(
        tuple[
            'ChannelLayerNorm',
            nn.ConvTranspose2d,
            nn.Module,
            nn.Conv2d,
            nn.Module,
            nn.Conv2d,
            nn.Module,
            nn.ConvTranspose2d,
        ],
        tuple(head.pred),
    )
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
        padding=int(conv3.kernel_size[0]) // 2,
        chunk_bytes=chunk_bytes,
        recompute=recompute,
    )
    return out.permute(0, 3, 1, 2)


def _run_head(
    decoder: 'BandpassDecoder', head: 'LaplacianHead', x: Tensor, projected: bool
) -> Tensor:
    """Run a head on the fast path, checkpointed when the decoder asks for it."""
    checkpointed = (
        decoder.checkpoint_heads and decoder.training and torch.is_grad_enabled()
    )
    # a checkpointed head is rerun in the backward pass, and that rerun's own stored
    # maps set the peak: store the fewest
    recompute = decoder.recompute_heads or checkpointed

    def run(inputs: Tensor) -> Tensor:
        return laplacian_head(
            head,
            inputs,
            projected=projected,
            recompute=recompute,
            chunk_bytes=decoder.fast_chunk_bytes,
        )

    if checkpointed:
        out: Tensor = checkpoint(run, x, use_reentrant=False)
        return out
    return run(x)


def _branch(branch: nn.Sequential, x: Tensor) -> Tensor:
    """Run an upsampling branch with the fast transposed convolutions."""
    for layer in branch:
        x = (
            conv_transpose(layer, x)
            if isinstance(layer, nn.ConvTranspose2d)
            else layer(x)
        )
    return x


def _branch_into_head(
    decoder: 'BandpassDecoder', branch: nn.Sequential, head: 'LaplacianHead', x: Tensor
) -> Tensor:
    """``head(branch(x))``, the branch's last layer composed with the projection."""
    before = _branch(branch[:-1], x)
    last = branch[-1]
    if not isinstance(last, nn.ConvTranspose2d):
        return _run_head(decoder, head, last(before), projected=False)
    projected = conv_transpose_then_pointwise(last, head.proj, before)
    return _run_head(decoder, head, projected, projected=True)


def decode_branches(decoder: 'BandpassDecoder', fmap: Tensor) -> tuple[Tensor, Tensor]:
    """The two upsampling branches and Laplacian heads of ``decoder`` on ``fmap``.

    Args:
        decoder: the decoder whose modules are used.
        fmap: (B, D, h, w) decoder feature map.

    Returns:
        ``(pred_low, pred_high)``: (B, C, p*h, p*w) and (B, C, 2p*h, 2p*w).
    """
    head_low, head_high = decoder.heads()
    if decoder.progressive:
        # the low branch's output also feeds the high branch: it is kept whole
        low = _branch(decoder.up_low, fmap)
        pred_low = _run_head(decoder, head_low, low, projected=False)
        return pred_low, _branch_into_head(decoder, decoder.up_high, head_high, low)
    return (
        _branch_into_head(decoder, decoder.up_low, head_low, fmap),
        _branch_into_head(decoder, decoder.up_high, head_high, fmap),
    )
