import math

import numpy as np
import pytest
import torch

from torchgeo_scalemae.models import GSDPositionalEmbedding, check_res


def mae_2d_sincos(dim: int, g: int) -> np.ndarray:
    """The standard MAE table (independent NumPy derivation, float64)."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(g, dtype=np.float64), np.arange(g, dtype=np.float64))
    emb = np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb], axis=0)


def test_res1_is_mae_table() -> None:
    pe = GSDPositionalEmbedding(1024)(1.0, (14, 14))
    assert pe.shape == (1, 197, 1024)
    assert pe.dtype == torch.float32
    expected = torch.from_numpy(mae_2d_sincos(1024, 14)).float()
    torch.testing.assert_close(pe[0], expected, atol=1e-5, rtol=0)


def test_scaling_is_subsampling() -> None:
    enc = GSDPositionalEmbedding(64)
    pe2 = enc(torch.tensor([2.0]), (7, 7))[0, 1:].reshape(7, 7, 64)
    pe1 = enc(torch.tensor([1.0]), (14, 14))[0, 1:].reshape(14, 14, 64)
    torch.testing.assert_close(pe2, pe1[::2, ::2], atol=1e-5, rtol=0)


def test_layout_and_per_sample_res() -> None:
    d = 16
    enc = GSDPositionalEmbedding(d)
    res = torch.tensor([1.0, 2.5, 4.0])
    pe = enc(res, (2, 3))
    assert pe.shape == (3, 7, d)
    assert torch.all(pe[:, 0] == 0)
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d / 4))
    for n, r in enumerate(res.tolist()):
        for i in range(2):
            for j in range(3):
                x, y = r * j * omega, r * i * omega
                want = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()]).float()
                torch.testing.assert_close(
                    pe[n, 1 + i * 3 + j], want, atol=1e-6, rtol=0
                )


def test_float_res_and_batch_size() -> None:
    enc = GSDPositionalEmbedding(8)
    pe = enc(2.0, (3, 5), batch_size=4)
    assert pe.shape == (4, 16, 8)
    torch.testing.assert_close(pe, enc(torch.full((4,), 2.0), (3, 5)))
    assert enc(torch.tensor(2.0), (3, 5), batch_size=2).shape == (2, 16, 8)


def test_float32_under_bf16_autocast() -> None:
    enc = GSDPositionalEmbedding(32)
    res = torch.tensor([3.0, 10.0])
    ref = enc(res, (4, 4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        pe = enc(res.bfloat16().float(), (4, 4))
    assert pe.dtype == torch.float32
    torch.testing.assert_close(pe, ref)


def test_grid_cache_reused() -> None:
    enc = GSDPositionalEmbedding(8)
    enc(1.0, (2, 2))
    enc(2.0, (2, 2))
    assert len(enc._grids) == 1
    enc(1.0, (2, 3))
    assert len(enc._grids) == 2


def test_meta_device() -> None:
    with torch.device('meta'):
        enc = GSDPositionalEmbedding(8)
    out = enc(torch.ones(2, device='meta'), (2, 2))
    assert out.shape == (2, 5, 8)
    assert out.device.type == 'meta'


@pytest.mark.parametrize('dim', [0, 6, -4])
def test_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match='multiple of 4'):
        GSDPositionalEmbedding(dim)


@pytest.mark.parametrize(
    ('res', 'match'),
    [
        (0.0, 'finite positive'),
        (-1.0, 'finite positive'),
        (math.nan, 'finite positive'),
        (math.inf, 'finite positive'),
        (torch.tensor([1.0, 0.0]), 'finite and positive'),
        (torch.tensor([1.0, math.nan]), 'finite and positive'),
        (torch.tensor([math.inf, 1.0]), 'finite and positive'),
        (torch.ones(3), r'shape \(2,\)'),
        (torch.ones(2, 1), r'shape \(2,\)'),
        (torch.ones(2, dtype=torch.bool), 'real-valued'),
    ],
)
def test_bad_res(res: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_res(res, 2)  # type: ignore[arg-type]


def test_res_type_error() -> None:
    with pytest.raises(TypeError, match='float or a tensor'):
        check_res('1.0', 2)  # type: ignore[arg-type]


def test_bad_grid() -> None:
    with pytest.raises(ValueError, match='grid_size'):
        GSDPositionalEmbedding(8)(1.0, (0, 3))


def test_module_cast_keeps_float32_frequencies() -> None:
    enc = GSDPositionalEmbedding(64)
    ref = enc(torch.tensor([3.0, 7.5]), (5, 4))
    enc.bfloat16()
    assert enc.omega.dtype == torch.bfloat16
    out = enc(torch.tensor([3.0, 7.5]), (5, 4))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize(
    'grid_size',
    ['ab', 'abc', 4, None, 1.5, (1.5, 2), (0, 2), (-1, 2), (2, 3, 4), (True, 2)],
)
def test_forward_rejects_bad_grid_sizes(grid_size: object) -> None:
    embed = GSDPositionalEmbedding(8)
    with pytest.raises(ValueError, match=r'grid_size must be a pair \(H, W\)'):
        embed(torch.ones(2), grid_size, 2)  # type: ignore[arg-type]


def test_forward_accepts_lists_and_torch_sizes() -> None:
    embed = GSDPositionalEmbedding(8)
    a = embed(torch.ones(2), [2, 3], 2)  # type: ignore[arg-type]
    b = embed(torch.ones(2), torch.Size([2, 3]), 2)
    assert a.shape == b.shape == (2, 7, 8) and torch.equal(a, b)
