# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The full-resolution stage of a Laplacian head as one fused, batch-chunked operator.

A Laplacian head ends with ``ConvTranspose (k1 x) -> GELU -> grouped 3x3 conv ->
GELU -> 1x1 conv -> GELU -> ConvTranspose (k2 x)`` (spec section 4). Everything
after the first transposed convolution runs at the prediction's resolution (224 x
224 x 256 per image for the recipe's high-frequency head), and in plain PyTorch each
of those layers is a separate pass over maps of hundreds of megabytes: the step is
bound by memory traffic, not arithmetic, and autograd keeps every activation.

:class:`FullResolutionStage` computes the same function with a hand-written
backward pass, a few images at a time (``chunk``), so that each chunk's maps are
reused while they are still in the CPU's caches, without autograd's intermediate
tensors. By default it stores the six full-resolution maps the backward pass needs
(three pre-activations and three activations); with ``recompute=True`` it stores
only two (the first transposed convolution's and the grouped convolution's
outputs) and recomputes the rest per chunk, with one extra per-pixel matrix
product. Results equal the layer-by-layer computation up to float rounding;
parameters keep their :class:`torch.nn.ConvTranspose2d` / :class:`torch.nn.Conv2d`
shapes.

.. versionadded:: 0.1
"""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ('FullResolutionStage', 'full_resolution_stage')

#: Default bytes of one full-width (``C1``-channel) map per chunk on the CPU: about
#: one recipe-size image (224 x 224 x 256 float32 = 49 MiB), small enough that a
#: chunk's handful of maps stays in a server CPU's last-level cache.
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: The same on other devices (GPUs), where fewer, larger chunks launch fewer kernels.
DEFAULT_ACCELERATOR_CHUNK_BYTES = 2**30


def _shuffle_view(y: Tensor, k: int) -> Tensor:
    """(n, h, w, k*k*C) un-shuffled products as a (n, h, k, w, k, C) shuffled view."""
    n, h, w, kkc = y.shape
    return y.view(n, h, w, k, k, kkc // (k * k)).permute(0, 1, 3, 2, 4, 5)


def _shuffled_gelu(y: Tensor, k: int, out: Tensor) -> Tensor:
    """GELU of the pixel-shuffled ``y`` (n, h, w, k*k*C), written into ``out``.

    Returns ``out`` viewed as (n, k*h, k*w, C) (channels innermost).
    """
    n, h, w, kkc = y.shape
    c = kkc // (k * k)
    target = out.view(n, h, k, w, k, c)
    torch.ops.aten.gelu.out(_shuffle_view(y, k), out=target)
    return out.view(n, h * k, w * k, c)


def _chunks(batch: int, chunk: int) -> list[slice]:
    return [slice(i, min(i + chunk, batch)) for i in range(0, batch, chunk)]


def _accumulate(acc: Tensor | None, value: Tensor) -> Tensor:
    """Sum gradients over chunks in at least float32."""
    if acc is None:
        return (
            value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
        )
    return acc.add_(value)


class FullResolutionStage(torch.autograd.Function):
    """``up2(gelu(conv1(gelu(conv3(gelu(up1(z)))))))`` with a chunked backward pass.

    Inputs are channels-last: ``z`` is (B, h, w, C_in) (the layer-normed head
    features) and the output is (B, k1*k2*h, k1*k2*w, C_out). The grouped 3x3
    convolution must have two input channels per group (``C1 = 2 * C2``), as every
    Laplacian head does. It runs as a depthwise convolution (the bias added to each
    group's first channel) followed by one strided add of each group's two
    channels: oneDNN's grouped kernel for two channels per group is several times
    slower.
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        z: Tensor,
        up1_weight: Tensor,
        up1_bias: Tensor,
        conv3_weight: Tensor,
        conv3_bias: Tensor,
        conv1_weight: Tensor,
        conv1_bias: Tensor,
        up2_weight: Tensor,
        up2_bias: Tensor,
        padding: int,
        chunk: int,
        recompute: bool,
    ) -> Tensor:
        weights = (
            up1_weight, up1_bias, conv3_weight, conv3_bias,
            conv1_weight, conv1_bias, up2_weight, up2_bias,
        )  # fmt: skip
        params = _Params(weights, z.dtype)
        c_in, c1, k1, c2, _, c_out, k2 = params.shapes
        b, h, w, _ = z.shape
        hh, ww = k1 * h, k1 * w
        store = not recompute

        def full(channels: int) -> Tensor:
            return z.new_empty(b, hh, ww, channels)

        # the pre-activations the GELU gradients need; without ``recompute`` also
        # the activations the products' weight gradients need
        y1, s = z.new_empty(b, h, w, k1 * k1 * c1), full(c2)
        a1, a2, y3, a3 = (
            (full(c1), full(c2), full(c1), full(c1)) if store else [None] * 4
        )
        out = z.new_empty(b, hh, k2, ww, k2, c_out)
        for part in _chunks(b, chunk):
            n = part.stop - part.start
            y1c = y1[part]
            torch.addmm(
                params.b1,
                z[part].reshape(-1, c_in),
                params.w1,
                out=y1c.view(-1, k1 * k1 * c1),
            )
            a1c = _shuffled_gelu(
                y1c, k1, torch.empty_like(y1c) if a1 is None else a1[part]
            )
            d = F.conv2d(
                a1c.permute(0, 3, 1, 2), params.w3, params.b3, 1, padding, 1, c1
            ).permute(0, 2, 3, 1)
            sc = s[part]
            torch.add(d[..., 0::2], d[..., 1::2], out=sc)  # each group's two channels
            del a1c, d
            a2c = (
                F.gelu(sc) if a2 is None else torch.ops.aten.gelu.out(sc, out=a2[part])
            )
            y3c = params.pointwise(a2c, None if y3 is None else y3[part])
            del a2c
            a3c = (
                F.gelu(y3c)
                if a3 is None
                else torch.ops.aten.gelu.out(y3c, out=a3[part])
            )
            del y3c
            o = torch.addmm(params.b_up2, a3c.view(-1, c1), params.w_up2)
            del a3c
            # (n*hh*ww, C_out*k2*k2) -> the pixel shuffle
            out[part].copy_(o.view(n, hh, ww, c_out, k2, k2).permute(0, 1, 4, 2, 5, 3))
        empty = z.new_empty(0)
        ctx.save_for_backward(
            z, y1, s, *(empty if t is None else t for t in (a1, a2, y3, a3)), *weights
        )
        ctx.config = (padding, chunk, recompute)
        ctx.params = params  # the weights in the kernels' layouts, built once
        return out.view(b, hh * k2, ww * k2, c_out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        # the parameters are saved too, so that autograd refuses a backward pass
        # after they were modified in place
        z, y1, s, a1, a2, y3, a3, *_ = ctx.saved_tensors
        padding, chunk, recompute = ctx.config
        needs = ctx.needs_input_grad
        params: _Params = ctx.params
        c_in, c1, k1, c2, _, c_out, k2 = params.shapes
        b, h, w, _ = z.shape
        hh, ww = k1 * h, k1 * w
        grad = grad.reshape(b, hh, k2, ww, k2, c_out)
        grad_z = z.new_empty(z.shape) if needs[0] else None
        acc: dict[str, Tensor | None] = dict.fromkeys(
            ('w1', 'w3', 'b3', 'w_pw', 'b_pw', 'w_up2', 'b_up2')
        )
        w1_t = params.w1_transposed() if needs[0] else None
        for part in _chunks(b, chunk):
            n = part.stop - part.start
            pixels = n * hh * ww
            sc = s[part]
            # the activations: stored, or recomputed from the two stored maps
            a2c = F.gelu(sc) if recompute else a2[part]
            y3c = params.pointwise(a2c, None) if recompute else y3[part]
            a3c = F.gelu(y3c) if recompute else a3[part]
            # last transposed convolution: per-pixel products C1 -> C_out*k2*k2
            g_o = grad[part].permute(0, 1, 3, 5, 2, 4).reshape(pixels, c_out * k2 * k2)
            # (C_out*k2*k2, C1): this orientation of the skinny product is ~2x faster
            acc['w_up2'] = _accumulate(acc['w_up2'], g_o.t() @ a3c.view(pixels, c1))
            acc['b_up2'] = _accumulate(acc['b_up2'], g_o.sum(0))
            del a3c
            g = g_o @ params.w_up2.t()  # grad of a3, then in place of y3, ...
            torch.ops.aten.gelu_backward.grad_input(
                g, y3c.view(pixels, c1), grad_input=g
            )
            del y3c
            # 1x1 convolution C2 -> C1
            acc['w_pw'] = _accumulate(acc['w_pw'], g.t() @ a2c.view(pixels, c2))
            acc['b_pw'] = _accumulate(acc['b_pw'], g.sum(0))
            del a2c
            g = g @ params.w_pw
            torch.ops.aten.gelu_backward.grad_input(
                g, sc.view(pixels, c2), grad_input=g
            )
            g_s = g.view(n, hh, ww, c2)
            acc['b3'] = _accumulate(acc['b3'], g_s.sum((0, 1, 2)))
            # the grouped convolution as a depthwise one plus the pair sum
            g_d = torch.stack((g_s, g_s), dim=-1).view(n, hh, ww, c1)
            del g, g_s
            y1c = y1[part]
            a1c = (
                _shuffled_gelu(y1c, k1, torch.empty_like(y1c))
                if recompute
                else a1[part]
            )
            g_a1, g_w3, _ = torch.ops.aten.convolution_backward(
                g_d.permute(0, 3, 1, 2),
                a1c.view(n, hh, ww, c1).permute(0, 3, 1, 2),
                params.w3,
                None,
                [1, 1],
                [padding, padding],
                [1, 1],
                False,
                [0, 0],
                c1,
                [True, needs[3], False],
            )
            del g_d, a1c
            if needs[3]:
                acc['w3'] = _accumulate(acc['w3'], g_w3)
            # GELU after the first transposed convolution (shuffled layout)
            g_y1 = torch.empty_like(y1c)
            torch.ops.aten.gelu_backward.grad_input(
                g_a1.permute(0, 2, 3, 1).reshape(n, h, k1, w, k1, c1),
                _shuffle_view(y1c, k1),
                grad_input=_shuffle_view(g_y1, k1),
            )
            del g_a1
            g_y1 = g_y1.view(-1, k1 * k1 * c1)
            # weight and bias gradients in one product: z with a column of ones
            z_c = z[part].reshape(-1, c_in)
            z_ones = torch.cat((z_c, z_c.new_ones(z_c.shape[0], 1)), dim=1)
            acc['w1'] = _accumulate(acc['w1'], z_ones.t() @ g_y1)
            if grad_z is not None and w1_t is not None:
                torch.mm(g_y1, w1_t, out=grad_z[part].view(-1, c_in))
            del g_y1
        grads = params.to_parameter_grads(acc)
        return (
            grad_z,
            *(g if needs[i + 1] else None for i, g in enumerate(grads)),
            None,
            None,
            None,
        )


class _Params:
    """The stage's parameters in the layouts its kernels use, and back.

    ``w1`` (C_in, k1*k1*C1): the first transposed convolution's per-pixel products
    with channels innermost; ``w3`` (C1, 1, k, k) and ``b3`` (C1,): the grouped
    convolution as a depthwise one, the bias on each group's first channel;
    ``w_pw`` (C1, C2): the 1x1 convolution; ``w_up2`` (C1, C_out*k2*k2): the last
    transposed convolution.
    """

    def __init__(self, weights: Sequence[Tensor], dtype: torch.dtype) -> None:
        (
            up1_weight, up1_bias, conv3_weight, conv3_bias,
            conv1_weight, conv1_bias, up2_weight, up2_bias,
        ) = weights  # fmt: skip
        c_in, c1, k1 = up1_weight.shape[0], up1_weight.shape[1], up1_weight.shape[2]
        c2, kernel = conv3_weight.shape[0], conv3_weight.shape[2]
        c_out, k2 = up2_weight.shape[1], up2_weight.shape[2]
        self.shapes = (c_in, c1, k1, c2, kernel, c_out, k2)
        self._up1_weight = up1_weight.detach()
        self._dtype = dtype
        # (C_in, k1, k1, C1): each pixel's products with the channels innermost
        self.w1 = (
            self._up1_weight.permute(0, 2, 3, 1).reshape(c_in, k1 * k1 * c1).to(dtype)
        )
        self.b1 = up1_bias.detach().repeat(k1 * k1).to(dtype)
        # the grouped convolution as a depthwise one: channel 2g + j of the input
        # is filtered by conv3_weight[g, j]; the bias rides on each group's first
        self.w3 = conv3_weight.detach().reshape(c1, 1, kernel, kernel).to(dtype)
        bias = conv3_bias.detach()
        self.b3 = torch.stack((bias, torch.zeros_like(bias)), dim=-1).view(c1).to(dtype)
        self.w_pw = conv1_weight.detach().view(c1, c2).to(dtype)
        self.b_pw = conv1_bias.detach().to(dtype)
        self.w_up2 = up2_weight.detach().reshape(c1, c_out * k2 * k2).to(dtype)
        self.b_up2 = up2_bias.detach().repeat_interleave(k2 * k2).to(dtype)

    def w1_transposed(self) -> Tensor:
        """``w1.t()`` contiguous (k1*k1*C1, C_in) (faster products), one copy."""
        c_in, c1, k1 = self.shapes[:3]
        return (
            self._up1_weight.permute(2, 3, 1, 0)
            .reshape(k1 * k1 * c1, c_in)
            .to(self._dtype)
        )

    def pointwise(self, a2: Tensor, out: Tensor | None) -> Tensor:
        """The 1x1 convolution of ``a2`` (n, H, W, C2) to (n, H, W, C1)."""
        n, hh, ww, c2 = a2.shape
        flat = a2.reshape(-1, c2)
        if out is None:
            result = torch.addmm(self.b_pw, flat, self.w_pw.t())
        else:
            result = torch.addmm(
                self.b_pw, flat, self.w_pw.t(), out=out.view(-1, self.w_pw.shape[0])
            )
        return result.view(n, hh, ww, -1)

    def to_parameter_grads(self, acc: dict[str, Tensor | None]) -> list[Tensor | None]:
        """Chunk-summed gradients in the parameters' own layouts (8 entries)."""
        c_in, c1, k1, c2, kernel, c_out, k2 = self.shapes

        def shaped(key: str) -> Tensor:
            value = acc[key]
            assert value is not None
            return value

        w1_and_bias = shaped('w1')  # (C_in + 1, k1*k1*C1): the last row is the bias's
        g_w1 = w1_and_bias[:c_in].view(c_in, k1, k1, c1).permute(0, 3, 1, 2)
        g_b1 = w1_and_bias[c_in].view(k1 * k1, c1).sum(0)
        w3 = acc['w3']
        g_w3 = None if w3 is None else w3.view(c2, 2, kernel, kernel)
        g_pw = shaped('w_pw').view(c1, c2, 1, 1)
        g_up2 = shaped('w_up2').t().reshape(c1, c_out, k2, k2)
        g_b_up2 = shaped('b_up2').view(c_out, k2 * k2).sum(1)
        return [
            g_w1.contiguous(), g_b1, g_w3, shaped('b3'),
            g_pw, shaped('b_pw'), g_up2, g_b_up2,
        ]  # fmt: skip


def full_resolution_stage(
    z: Tensor,
    up1_weight: Tensor,
    up1_bias: Tensor,
    conv3_weight: Tensor,
    conv3_bias: Tensor,
    conv1_weight: Tensor,
    conv1_bias: Tensor,
    up2_weight: Tensor,
    up2_bias: Tensor,
    *,
    padding: int = 1,
    chunk_bytes: int | None = None,
    recompute: bool = False,
) -> Tensor:
    """Run :class:`FullResolutionStage`, choosing the chunk size from a byte budget.

    Under autocast the inputs are cast to the autocast dtype first (the stage then
    runs in that dtype and sums its weight gradients in float32).

    Args:
        z: (B, h, w, C_in) channels-last input.
        up1_weight: (C_in, C1, k1, k1) first transposed convolution (kernel = stride).
        up1_bias: (C1,).
        conv3_weight: (C2, 2, k, k) grouped convolution, ``C1 = 2 * C2``, odd k.
        conv3_bias: (C2,).
        conv1_weight: (C1, C2, 1, 1) pointwise convolution.
        conv1_bias: (C1,).
        up2_weight: (C1, C_out, k2, k2) last transposed convolution (kernel = stride).
        up2_bias: (C_out,).
        padding: the grouped convolution's padding (``k // 2``).
        chunk_bytes: bytes of one C1-channel full-resolution map per chunk; at
            least one image per chunk. None: :data:`DEFAULT_CHUNK_BYTES` on the
            CPU, :data:`DEFAULT_ACCELERATOR_CHUNK_BYTES` elsewhere.
        recompute: store two maps instead of three, recomputing the 1x1
            convolution's output in the backward pass.

    Returns:
        (B, k1*k2*h, k1*k2*w, C_out) channels-last prediction.

    Raises:
        ValueError: for shapes that do not form such a stage.
    """
    if z.ndim != 4:
        raise ValueError(f'z must be (B, h, w, C), got shape {tuple(z.shape)}')
    c_in, c1, k1, k1w = up1_weight.shape
    c2 = conv3_weight.shape[0]
    if (
        z.shape[-1] != c_in
        or k1 != k1w
        or conv3_weight.shape[:2] != (c2, 2)
        or c1 != 2 * c2
        or conv1_weight.shape != (c1, c2, 1, 1)
        or up2_weight.shape[0] != c1
        or up2_weight.shape[2] != up2_weight.shape[3]
    ):
        raise ValueError(
            'inconsistent full-resolution stage shapes: '
            f'z {tuple(z.shape)}, up1 {tuple(up1_weight.shape)}, '
            f'conv3 {tuple(conv3_weight.shape)}, conv1 {tuple(conv1_weight.shape)}, '
            f'up2 {tuple(up2_weight.shape)}'
        )
    if chunk_bytes is None:
        cpu = z.device.type == 'cpu'
        chunk_bytes = DEFAULT_CHUNK_BYTES if cpu else DEFAULT_ACCELERATOR_CHUNK_BYTES
    if (
        isinstance(chunk_bytes, bool)
        or not isinstance(chunk_bytes, int)
        or chunk_bytes <= 0
    ):
        raise ValueError(f'chunk_bytes must be a positive int, got {chunk_bytes!r}')
    device_type = z.device.type
    tensors = [
        z, up1_weight, up1_bias, conv3_weight, conv3_bias,
        conv1_weight, conv1_bias, up2_weight, up2_bias,
    ]  # fmt: skip
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        tensors = [t.to(dtype) for t in tensors]
    z = tensors[0].contiguous()
    per_image = z.shape[1] * z.shape[2] * k1 * k1 * c1 * z.element_size()
    chunk = max(1, chunk_bytes // max(per_image, 1))
    with torch.autocast(device_type, enabled=False):
        out: Tensor = FullResolutionStage.apply(
            z, *tensors[1:], padding, chunk, recompute
        )
    return out
