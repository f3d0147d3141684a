from typing import Any

import pytest
import torch
from torch import nn

from torchgeo_scalemae.models.decoder import LaplacianHead
from torchgeo_scalemae.models.fast.fused_head import full_resolution_stage
from torchgeo_scalemae.models.fast.heads import can_fuse, laplacian_head


def _grads(
    head: LaplacianHead,
    x: torch.Tensor,
    g: torch.Tensor | None = None,
    fast: bool = True,
    **kwargs: Any,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = laplacian_head(head, x, **kwargs) if fast else head(x)
    if g is None:
        g = torch.randn_like(out)
    inputs = [x, *head.parameters()]
    return out, list(torch.autograd.grad(out, inputs, g))


def _fused_and_stock(
    head: LaplacianHead, x: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Output and gradients on the fast path, then with the head's own modules."""
    with torch.no_grad():
        g = torch.randn_like(head(x))
    fused, grads_fused = _grads(head, x, g, **kwargs)
    stock, grads_stock = _grads(head, x, g, fast=False)
    return fused, grads_fused, stock, grads_stock


@pytest.mark.parametrize('factors', [(4, 2), (7, 1), (2, 2)])
@pytest.mark.parametrize('chunk_bytes', [1, 2**40])
@pytest.mark.parametrize('recompute', [False, True])
def test_fused_stage_equals_stock_layers_float64(
    factors: tuple[int, int], chunk_bytes: int, recompute: bool
) -> None:
    """Forward and every gradient equal the layer-by-layer stock operators."""
    torch.manual_seed(0)
    head = LaplacianHead(16, 16, 2, 3, factors).double()
    x = torch.randn(3, 16, 3, 2, dtype=torch.float64, requires_grad=True)
    assert can_fuse(head)
    fused, grads_fused = _grads(
        head,
        x,
        g := torch.randn(
            3, 3, *(factors[0] * factors[1] * s for s in (3, 2)), dtype=torch.float64
        ),
        chunk_bytes=chunk_bytes,
        recompute=recompute,
    )
    stock, grads_stock = _grads(head, x, g, fast=False)
    assert fused.shape == stock.shape
    torch.testing.assert_close(fused, stock, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads_fused, grads_stock, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_stage_float32_within_parity_tolerance() -> None:
    torch.manual_seed(0)
    head = LaplacianHead(32, 32, 2, 3)
    x = torch.randn(2, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    fused, grads_fused, stock, grads_stock = _fused_and_stock(head, x)
    torch.testing.assert_close(fused, stock, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_fused, grads_stock, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_frozen_parameters_and_input_without_grad() -> None:
    torch.manual_seed(0)
    head = LaplacianHead(16, 16, 1, 3).double()
    frozen = {'pred.3.weight', 'pred.7.bias'}
    for name, p in head.named_parameters():
        p.requires_grad_(name not in frozen)
    x = torch.randn(2, 16, 2, 2, dtype=torch.float64)  # no grad
    laplacian_head(head, x).square().sum().backward()
    fused = {n: p.grad for n, p in head.named_parameters()}
    head.zero_grad(set_to_none=True)
    head(x).square().sum().backward()
    for name, p in head.named_parameters():
        if name in frozen:
            assert fused[name] is None and p.grad is None
        else:
            torch.testing.assert_close(fused[name], p.grad, rtol=1e-10, atol=1e-12)


def test_backward_twice_with_retain_graph() -> None:
    """The backward pass never overwrites what it saved."""
    torch.manual_seed(0)
    head = LaplacianHead(16, 16, 1, 3)
    x = torch.randn(2, 16, 2, 2, requires_grad=True)
    out = laplacian_head(head, x)
    first = torch.autograd.grad(out.sum(), [x, *head.parameters()], retain_graph=True)
    second = torch.autograd.grad(out.sum(), [x, *head.parameters()])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_autocast_runs_in_bf16_with_float32_parameter_grads() -> None:
    torch.manual_seed(0)
    head = LaplacianHead(16, 16, 1, 3)
    x = torch.randn(2, 16, 3, 3, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = laplacian_head(head, x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    want = head(x.detach())  # float32 reference
    torch.testing.assert_close(out.float(), want, rtol=5e-2, atol=5e-2)
    for p in head.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_not_fused_for_other_layouts() -> None:
    head = LaplacianHead(16, 16, 1, 3)
    assert can_fuse(head)
    head.pred[2] = nn.GELU(approximate='tanh')
    assert not can_fuse(head)
    x = torch.randn(2, 16, 2, 2)
    # another layout runs the head's own modules
    torch.testing.assert_close(laplacian_head(head, x), head(x))
    head = LaplacianHead(16, 16, 1, 3)
    head.pred[3].padding = (0, 0)
    assert not can_fuse(head)


def test_validates_shapes_and_chunk() -> None:
    head = LaplacianHead(16, 16, 1, 3)
    _, up, _, conv3, _, conv1, _, up2 = head.pred
    args = (
        up.weight, up.bias, conv3.weight, conv3.bias,
        conv1.weight, conv1.bias, up2.weight, up2.bias,
    )  # fmt: skip
    z = torch.randn(2, 3, 3, 16)
    assert full_resolution_stage(z, *args).shape == (2, 24, 24, 3)
    with pytest.raises(ValueError, match=r'z must be \(B, h, w, C\)'):
        full_resolution_stage(z[0], *args)
    with pytest.raises(ValueError, match=r'inconsistent .* z \(2, 3, 3, 8\)'):
        full_resolution_stage(torch.randn(2, 3, 3, 8), *args)
    with pytest.raises(ValueError, match='inconsistent'):
        full_resolution_stage(z, *args[:2], args[2][:, :1], *args[3:])
    with pytest.raises(ValueError, match='chunk_bytes must be a positive int, got 0'):
        full_resolution_stage(z, *args, chunk_bytes=0)
    with pytest.raises(
        ValueError, match=r'chunk_bytes must be a positive int, got 1\.5'
    ):
        full_resolution_stage(z, *args, chunk_bytes=1.5)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('recompute', [False, True])
def test_fused_stage_on_cuda_equals_stock_layers(recompute: bool) -> None:
    torch.manual_seed(0)
    head = LaplacianHead(32, 32, 1, 3).cuda()
    x = torch.randn(3, 32, 4, 4, device='cuda', requires_grad=True)
    fused, grads_fused, stock, grads_stock = _fused_and_stock(
        head, x, recompute=recompute
    )
    torch.testing.assert_close(fused, stock, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_fused, grads_stock, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = laplacian_head(head, x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
