"""The exact fast operators of the decoder's convolutions."""

import pytest
import torch
from torch import nn

from torchgeo_scalemae.models.fast.layers import (
    conv,
    conv_transpose,
    conv_transpose_then_pointwise,
    is_pixel_shuffle_transpose,
    is_pointwise,
)


@pytest.mark.parametrize(
    ('cin', 'cout', 'k'), [(16, 8, 4), (8, 3, 2), (6, 6, 7), (4, 3, 1)]
)
@pytest.mark.parametrize('channels_last', [False, True])
def test_fast_conv_transpose_exact(
    cin: int, cout: int, k: int, channels_last: bool
) -> None:
    layer = nn.ConvTranspose2d(cin, cout, k, stride=k)
    assert is_pixel_shuffle_transpose(layer)
    x = torch.randn(2, cin, 3, 5, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    fast = conv_transpose(layer, x)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, layer.weight, layer.bias])
    slow = layer(x)
    grads_slow = torch.autograd.grad(slow.square().sum(), [x, layer.weight, layer.bias])
    assert fast.shape == (2, cout, 3 * k, 5 * k)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    'kwargs',
    [
        {'in_channels': 8, 'out_channels': 12, 'kernel_size': 1},
        {
            'in_channels': 8,
            'out_channels': 4,
            'kernel_size': 3,
            'padding': 1,
            'groups': 4,
        },
        {
            'in_channels': 8,
            'out_channels': 8,
            'kernel_size': 3,
            'padding': 1,
            'groups': 8,
        },
        {'in_channels': 8, 'out_channels': 6, 'kernel_size': 3, 'padding': 1},
    ],
)
def test_fast_conv_exact(kwargs: dict[str, int]) -> None:
    layer = nn.Conv2d(**kwargs)
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    fast = conv(layer, x)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, layer.weight])
    slow = layer(x)
    g_slow = torch.autograd.grad(slow.square().sum(), [x, layer.weight])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    ('up_bias', 'point_bias'), [(True, True), (False, True), (True, False)]
)
def test_conv_transpose_then_pointwise_composes(
    up_bias: bool, point_bias: bool
) -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(6, 5, 2, stride=2, bias=up_bias).double()
    point = nn.Conv2d(5, 7, 1, bias=point_bias).double()
    assert is_pointwise(point)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    params = [x, *up.parameters(), *point.parameters()]
    fused = conv_transpose_then_pointwise(up, point, x)
    g = torch.randn_like(fused)
    grads_fused = torch.autograd.grad(fused, params, g)
    plain = point(up(x))
    grads_plain = torch.autograd.grad(plain, params, g)
    assert fused.shape == plain.shape == (2, 7, 6, 8)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # layers that do not compose run as the plain composition
    strided = nn.ConvTranspose2d(6, 5, 3, stride=2).double()
    assert not is_pixel_shuffle_transpose(strided)
    torch.testing.assert_close(
        conv_transpose_then_pointwise(strided, point, x), point(strided(x))
    )
