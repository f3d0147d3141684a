# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Exact fast implementations of the decoder's convolutions, as functions of modules.

Each function takes a plain :class:`torch.nn.Conv2d` or
:class:`torch.nn.ConvTranspose2d` of :class:`~torchgeo_scalemae.models.BandpassDecoder`
and computes what its ``forward`` computes, reading the module's own parameters, so
the state dict is the stock one:

- a transposed convolution whose kernel equals its stride maps every input pixel to
  an independent ``k x k`` block: one matrix product on the channels-last pixels
  and a pixel shuffle (:func:`conv_transpose`);
- a 1x1 convolution is a per-pixel matrix product (:func:`conv`);
- a grouped convolution with two input channels and one output channel per group
  (the Laplacian heads' 3x3 convolutions) is a depthwise convolution followed by a
  sum of channel pairs, faster on CPUs (:func:`conv`);
- a 1x1 convolution after such a transposed convolution composes with it into one
  product (:func:`conv_transpose_then_pointwise`).

Results equal the stock operators up to float rounding; outputs are channels-last.
"""

from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = (
    'conv',
    'conv_transpose',
    'conv_transpose_then_pointwise',
    'is_pixel_shuffle_transpose',
    'is_pointwise',
)


def is_pixel_shuffle_transpose(module: nn.Module) -> TypeGuard[nn.ConvTranspose2d]:
    """Whether ``module`` is a ConvTranspose2d whose kernel equals its stride."""
    return (
        type(module) is nn.ConvTranspose2d
        and module.kernel_size == module.stride
        and module.padding == (0, 0)
        and module.output_padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def is_pointwise(module: nn.Module) -> TypeGuard[nn.Conv2d]:
    """Whether ``module`` is a plain 1x1 Conv2d (a per-pixel matrix product)."""
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == 'zeros'
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.padding in ((0, 0), 'valid')
        and module.groups == 1
    )


def is_paired_grouped(module: nn.Module) -> TypeGuard[nn.Conv2d]:
    """Whether ``module`` is a grouped Conv2d with 2 inputs and 1 output per group."""
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == 'zeros'
        and module.dilation == (1, 1)
        and module.stride == (1, 1)
        and module.groups == module.out_channels
        and module.in_channels == 2 * module.out_channels
    )


def _pixel_shuffle(y: Tensor, kh: int, kw: int) -> Tensor:
    """(B, H, W, kh*kw*C) per-pixel products, channels innermost, to (B, C, kh*H, kw*W).

    One copy, which moves runs of C values; the result is channels-last.
    """
    b, h, w, kkc = y.shape
    c = kkc // (kh * kw)
    y = y.view(b, h, w, kh, kw, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * kh, w * kw, c).permute(0, 3, 1, 2)


def linear_args(module: nn.ConvTranspose2d) -> tuple[Tensor, Tensor | None]:
    """Weight and bias of a kernel-equals-stride transposed convolution as a product.

    Returns:
        ``(weight, bias)`` for :func:`torch.nn.functional.linear` on channels-last
        pixels: (kh*kw*C_out, C_in) and (kh*kw*C_out,) or None, channels innermost.
    """
    kh, kw = module.kernel_size
    c, out_c = module.in_channels, module.out_channels
    weight = module.weight.permute(0, 2, 3, 1).reshape(c, kh * kw * out_c).t()
    bias = None if module.bias is None else module.bias.repeat(kh * kw)
    return weight, bias


def conv_transpose(module: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``module(x)``: (B, C_in, H, W) to (B, C_out, kH, kW), channels-last."""
    if not is_pixel_shuffle_transpose(module):
        out: Tensor = module(x)
        return out
    y = F.linear(x.permute(0, 2, 3, 1), *linear_args(module))
    return _pixel_shuffle(y, *module.kernel_size)


def conv_transpose_then_pointwise(
    up: nn.ConvTranspose2d, pointwise: nn.Conv2d, x: Tensor
) -> Tensor:
    """``pointwise(up(x))`` as one per-pixel matrix product.

    A 1x1 convolution after a transposed convolution whose kernel equals its stride
    acts on each output pixel independently, so the two compose into one transposed
    convolution with weight ``W_up @ W_1x1`` per sub-pixel and bias
    ``W_1x1 @ b_up + b_1x1``: fewer products than the pair, and no stored
    intermediate. Gradients reach both layers' parameters.

    Args:
        up: the transposed convolution.
        pointwise: a 1x1 convolution with ``up.out_channels`` input channels.
        x: (B, C_in, H, W) input.

    Returns:
        (B, C_1x1, kH, kW) channels-last, equal to ``pointwise(up(x))`` up to
        float rounding.
    """
    if not (
        is_pixel_shuffle_transpose(up)
        and is_pointwise(pointwise)
        and pointwise.in_channels == up.out_channels
    ):
        return conv(pointwise, conv_transpose(up, x))
    c = x.shape[1]
    kh, kw = up.kernel_size
    mid, out_c = up.out_channels, pointwise.out_channels
    w_point = pointwise.weight.view(out_c, mid)
    weight = (
        up.weight.permute(0, 2, 3, 1).reshape(c * kh * kw, mid) @ w_point.t()
    ).view(c, kh * kw * out_c)
    bias: Tensor | None = None
    if up.bias is not None:
        bias = up.bias @ w_point.t()
    if pointwise.bias is not None:
        bias = pointwise.bias if bias is None else bias + pointwise.bias
    if bias is not None:
        bias = bias.repeat(kh * kw)
    y = F.linear(x.permute(0, 2, 3, 1), weight.t(), bias)
    return _pixel_shuffle(y, kh, kw)


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


def conv(module: nn.Conv2d, x: Tensor) -> Tensor:
    """``module(x)`` for a 1x1 or a paired grouped convolution; else the stock one."""
    c_in, c_out = module.in_channels, module.out_channels
    if is_pointwise(module):
        y = F.linear(
            x.permute(0, 2, 3, 1), module.weight.view(c_out, c_in), module.bias
        )
        return y.permute(0, 3, 1, 2)
    if not is_paired_grouped(module):
        out: Tensor = module(x)
        return out
    weight = module.weight.reshape(c_in, 1, *module.kernel_size)
    # the bias rides on each pair's first channel, and the pairs are summed by one
    # strided add (a size-2 reduction is ~10x slower)
    bias = None
    if module.bias is not None:
        bias = torch.stack((module.bias, torch.zeros_like(module.bias)), dim=-1).view(
            c_in
        )
    y = F.conv2d(x, weight, bias, module.stride, module.padding, 1, c_in)
    summed: Tensor = _PairSum.apply(y.permute(0, 2, 3, 1))
    return summed.permute(0, 3, 1, 2)
