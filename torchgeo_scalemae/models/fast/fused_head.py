# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The full-resolution stage of a Laplacian head as one fused, batch-chunked operator.

A Laplacian head ends with ``ConvTranspose (k1 x) -> GELU -> grouped 3x3 conv ->
GELU -> 1x1 conv -> GELU -> ConvTranspose (k2 x)`` (paper Fig. 2). Everything
after the first transposed convolution runs at the prediction's resolution (224 x
224 x 256 per image for the recipe's high-frequency head), and in plain PyTorch each
of those layers is a separate pass over maps of hundreds of megabytes: the step is
bound by memory traffic, not arithmetic, and autograd keeps every activation.

:class:`FullResolutionStage` computes the same function with a hand-written
backward pass, a few images at a time (``chunk``, which bounds the temporary maps
to one chunk's worth), without autograd's intermediate tensors. By default it
stores the six full-resolution maps the backward pass needs (three
pre-activations and three activations); with ``recompute=True`` it stores
only two (the first transposed convolution's and the grouped convolution's
outputs) and recomputes the rest per chunk, with one extra per-pixel matrix
product. Results equal the layer-by-layer computation up to float rounding;
parameters keep their :class:`torch.nn.ConvTranspose2d` / :class:`torch.nn.Conv2d`
shapes.
"""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ('FullResolutionStage', 'full_resolution_stage')

#: Default bytes of one full-width (``C1``-channel) map per chunk on the CPU: about
#: one recipe-size image (224 x 224 x 256 float32 = 49 MiB). It bounds the
#: temporary maps; on the benchmark CPU neither smaller nor larger chunks were
#: faster.
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: The same on other devices (GPUs), where fewer, larger chunks launch fewer kernels.
DEFAULT_ACCELERATOR_CHUNK_BYTES = 2**30


def _shuffled_halves(y: Tensor, k: int) -> Tensor:
    """The first product's output as its two pixel-shuffled half maps, a view.

    ``y`` is (n, h, w, k*2*k*C) with columns ordered (row offset, half, column
    offset, channel); the view is (n, 2, h, k, w, k, C), which is the memory
    layout of two channels-last (n, k*h, k*w, C) maps, so copying between the two
    moves runs of k*C contiguous values.
    """
    n, h, w, columns = y.shape
    c = columns // (2 * k * k)
    return y.view(n, h, w, k, 2, k, c).permute(0, 4, 1, 3, 2, 5, 6)


def _shuffled_gelu(y: Tensor, k: int) -> Tensor:
    """GELU of the first product's output ``y``, as (n, 2, k*h, k*w, C) half maps."""
    n, h, w, columns = y.shape
    c = columns // (2 * k * k)
    out = y.new_empty(n, 2, h * k, w * k, c)
    torch.ops.aten.gelu.out(_shuffled_halves(y, k), out=out.view(n, 2, h, k, w, k, c))
    return out


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
    Laplacian head does; oneDNN's grouped kernel for two channels per group is
    several times slower than its depthwise ones. The first product's columns are
    therefore ordered so that its GELU writes two half maps, group ``g``'s first
    input channel in the first and its second in the second, and the grouped
    convolution runs as one depthwise 3D convolution over the pair (kernel depth
    2, no depth padding). Its input gradient is the depthwise 3D convolution of the
    output gradient with the flipped kernel (depth padding 1), which writes the two
    half maps' gradients directly; its kernel gradient comes from two 2D depthwise
    ones. The first product's bias rides on a column of ones appended to ``z``,
    which the backward pass reuses for the bias gradient.
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

        # z with a column of ones: the first product adds its bias, and the
        # backward pass gets the bias gradient from the weight-gradient product
        z_ones = z.new_empty(b, h, w, c_in + 1)
        z_ones[..., :c_in] = z
        z_ones[..., c_in] = 1
        # the pre-activations the GELU gradients need; without ``recompute`` also
        # the activations the products' weight gradients need
        y1 = z.new_empty(b, h, w, k1 * k1 * c1)
        a2, y3, a3 = (full(c2), full(c1), full(c1)) if store else [None] * 3
        a1: list[Tensor] = []  # per chunk (n, 2, H, W, C2) with ``store``
        s: list[Tensor] = []  # per chunk (n, H, W, C2)
        out = z.new_empty(b, hh, k2, ww, k2, c_out)
        for part in _chunks(b, chunk):
            n = part.stop - part.start
            y1c = y1[part]
            torch.mm(
                z_ones[part].view(-1, c_in + 1),
                params.w1,
                out=y1c.view(-1, k1 * k1 * c1),
            )
            a1c = _shuffled_gelu(y1c, k1)
            # the grouped convolution: a depthwise 3D one over the two halves
            conv = F.conv3d(
                a1c.permute(0, 4, 1, 2, 3),
                params.w3,
                params.b3,
                1,
                (0, padding, padding),
                1,
                c2,
            )
            sc = conv[:, :, 0].permute(0, 2, 3, 1).contiguous()
            s.append(sc)
            if store:
                a1.append(a1c)
            del a1c, conv
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
            # (n*hh*ww, k2*k2*C_out) -> the pixel shuffle
            out[part].copy_(o.view(n, hh, ww, k2, k2, c_out).permute(0, 1, 3, 2, 4, 5))
        empty = z.new_empty(0)
        ctx.save_for_backward(
            z_ones,
            y1,
            *s,
            *a1,
            *(empty if t is None else t for t in (a2, y3, a3)),
            *weights,
        )
        ctx.config = (padding, chunk, recompute)
        ctx.params = params  # the weights in the kernels' layouts, built once
        return out.view(b, hh * k2, ww * k2, c_out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # noqa: D102
        # the parameters are saved too, so that autograd refuses a backward pass
        # after they were modified in place
        padding, chunk, recompute = ctx.config
        z_ones, y1, *rest = ctx.saved_tensors
        chunks = _chunks(z_ones.shape[0], chunk)
        s, rest = rest[: len(chunks)], rest[len(chunks) :]
        a1, rest = (
            ([], rest) if recompute else (rest[: len(chunks)], rest[len(chunks) :])
        )
        a2, y3, a3 = rest[:3]
        needs = ctx.needs_input_grad
        params: _Params = ctx.params
        c_in, c1, k1, c2, _, c_out, k2 = params.shapes
        b, h, w, _ = z_ones.shape
        hh, ww = k1 * h, k1 * w
        grad = grad.reshape(b, hh, k2, ww, k2, c_out)
        grad_z = z_ones.new_empty(b, h, w, c_in) if needs[0] else None
        acc: dict[str, Tensor | None] = dict.fromkeys(
            ('w1', 'w3_0', 'w3_1', 'b3', 'w_pw', 'b_pw', 'w_up2', 'b_up2')
        )
        w1_t = params.w1_transposed() if needs[0] else None
        # each half's 2D depthwise kernels; and the 3D kernel flipped: the input
        # gradient of a stride-1 "same" convolution is the convolution of the
        # output gradient with the flipped kernel
        w3_halves = [params.w3[:, :, j].contiguous() for j in range(2)]
        w3_flipped = params.w3.flip(2, 3, 4)
        for index, part in enumerate(chunks):
            n = part.stop - part.start
            pixels = n * hh * ww
            sc = s[index]
            # the activations: stored, or recomputed from the two stored maps
            a2c = F.gelu(sc) if recompute else a2[part]
            y3c = params.pointwise(a2c, None) if recompute else y3[part]
            a3c = F.gelu(y3c) if recompute else a3[part]
            # last transposed convolution: per-pixel products C1 -> k2*k2*C_out
            g_o = grad[part].permute(0, 1, 3, 2, 4, 5).reshape(pixels, k2 * k2 * c_out)
            # (k2*k2*C_out, C1): this orientation of the skinny product is ~2x faster
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
            g_s = g_s.permute(0, 3, 1, 2)  # (n, C2, H, W) channels-last
            del g
            y1c = y1[part]
            if needs[3]:
                # the grouped kernel's gradient, one half of its input at a time
                a1c = _shuffled_gelu(y1c, k1) if recompute else a1[index]
                for j in range(2):
                    g_w3 = torch.ops.aten.convolution_backward(
                        g_s,
                        a1c[:, j].permute(0, 3, 1, 2),
                        w3_halves[j],
                        None,
                        [1, 1],
                        [padding, padding],
                        [1, 1],
                        False,
                        [0, 0],
                        c2,
                        [False, True, False],
                    )[1]
                    key = f'w3_{j}'
                    acc[key] = _accumulate(acc[key], g_w3)
                    del g_w3
                del a1c
            # the input gradient: the depthwise 3D convolution of g_s (depth 1,
            # padded to depth 2) with the flipped kernel, as (n, 2, H, W, C2)
            g_a1 = F.conv3d(
                g_s.unsqueeze(2), w3_flipped, None, 1, (1, padding, padding), 1, c2
            ).permute(0, 2, 3, 4, 1)
            del g_s
            # GELU after the first transposed convolution (shuffled layout)
            g_y1 = torch.empty_like(y1c)
            torch.ops.aten.gelu_backward.grad_input(
                g_a1.reshape(n, 2, h, k1, w, k1, c2),
                _shuffled_halves(y1c, k1),
                grad_input=_shuffled_halves(g_y1, k1),
            )
            del g_a1
            g_y1 = g_y1.view(-1, k1 * k1 * c1)
            # weight and bias gradients in one product (z's column of ones)
            z_c = z_ones[part].view(-1, c_in + 1)
            acc['w1'] = _accumulate(acc['w1'], z_c.t() @ g_y1)
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

    ``w1`` (C_in + 1, k1*k1*C1): the first transposed convolution's per-pixel
    products with the channels innermost in group-halves order (see
    :class:`FullResolutionStage`), its bias as the last row; ``w3`` (C1, 1, k, k)
    and ``b3`` (C1,): the grouped convolution as a depthwise one in the same order,
    the bias on the first half; ``w_pw`` (C1, C2): the 1x1 convolution; ``w_up2``
    (C1, k2*k2*C_out): the last transposed convolution, sub-pixels outermost.
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
        # (C_in + 1, k1, 2, k1, C2): each pixel's products ordered (row offset,
        # half, column offset, group); channel 2g + j of the transposed
        # convolution is group g's channel in half j
        weight = up1_weight.detach().view(c_in, c2, 2, k1, k1).permute(0, 3, 2, 4, 1)
        bias = up1_bias.detach().view(c2, 2).t()[None, :, None].expand(k1, 2, k1, c2)
        self.w1 = (
            torch.cat((weight, bias.unsqueeze(0)), dim=0)
            .reshape(c_in + 1, k1 * k1 * c1)
            .to(dtype)
        )
        # (C2, 1, 2, k, k): a depthwise 3D kernel, depth j for the j-th half
        self.w3 = conv3_weight.detach().unsqueeze(1).to(dtype)
        self.b3 = conv3_bias.detach().to(dtype)
        self.w_pw = conv1_weight.detach().view(c1, c2).to(dtype)
        self.b_pw = conv1_bias.detach().to(dtype)
        self.w_up2 = (
            up2_weight.detach().permute(0, 2, 3, 1).reshape(c1, k2 * k2 * c_out)
        ).to(dtype)
        self.b_up2 = up2_bias.detach().repeat(k2 * k2).to(dtype)

    def w1_transposed(self) -> Tensor:
        """``w1.t()`` without the bias row, contiguous (k1*k1*C1, C_in) (faster)."""
        return self.w1[: self.shapes[0]].t().contiguous()

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
        c_in, c1, k1, c2, _, c_out, k2 = self.shapes

        def shaped(key: str) -> Tensor:
            value = acc[key]
            assert value is not None
            return value

        # (C_in + 1, k1, 2, k1, C2) -> (C_in + 1, C2, 2, k1, k1); the last row is
        # the bias's
        w1_and_bias = shaped('w1').view(c_in + 1, k1, 2, k1, c2).permute(0, 4, 2, 1, 3)
        g_w1 = w1_and_bias[:c_in].reshape(c_in, c1, k1, k1)
        g_b1 = w1_and_bias[c_in].sum((2, 3)).reshape(c1)
        first, second = acc['w3_0'], acc['w3_1']
        g_w3 = (
            None
            if first is None or second is None
            else torch.cat((first, second), dim=1)
        )
        g_pw = shaped('w_pw').view(c1, c2, 1, 1)
        g_up2 = shaped('w_up2').view(k2, k2, c_out, c1).permute(3, 2, 0, 1)
        g_b_up2 = shaped('b_up2').view(k2 * k2, c_out).sum(0)
        return [
            g_w1.contiguous(), g_b1, g_w3, shaped('b3'),
            g_pw, shaped('b_pw'), g_up2.contiguous(), g_b_up2,
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
        recompute: store two full-resolution maps instead of six, recomputing the
            GELU outputs and the 1x1 convolution's output in the backward pass.

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
