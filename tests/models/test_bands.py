import numpy as np
import pytest
import torch

from torchgeo_scalemae.models import high_band_target, low_band_target, recombine_bands


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // f, f, w // f, f).mean(axis=(3, 5))


def bilinear_up(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, align_corners=False (half-pixel centres, edge clamp), NumPy."""
    n = x.shape[-1]
    src = (np.arange(size) + 0.5) * n / size - 0.5
    src = np.clip(src, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    t = src - i0
    rows = x[..., i0, :] * (1 - t)[:, None] + x[..., i1, :] * t[:, None]
    return rows[..., i0] * (1 - t) + rows[..., i1] * t


def test_high_band_numpy() -> None:
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    want = x.numpy() - bilinear_up(block_mean(x.numpy(), 8), 64)
    got = high_band_target(x, 8)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)
    assert torch.equal(high_band_target(x, None), x)


def test_low_band_numpy() -> None:
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    np.testing.assert_allclose(
        low_band_target(x, 32).numpy(), block_mean(x.numpy(), 2), atol=1e-12
    )
    # with an intermediate size: area to 16, then area up to 32 (replication)
    want = block_mean(x.numpy(), 4).repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_allclose(
        low_band_target(x, (32, 32), 16).numpy(), want, atol=1e-12
    )


def test_high_band_of_constant_is_zero() -> None:
    x = torch.full((1, 2, 40, 56), 3.0)
    assert torch.allclose(high_band_target(x, 7), torch.zeros_like(x), atol=1e-6)


def test_recombine() -> None:
    low = torch.randn(1, 3, 32, 32)
    high = torch.randn(1, 3, 64, 64)
    out = recombine_bands(low, high, None)
    assert out.shape == (1, 3, 64, 64)
    up = torch.nn.functional.interpolate(low, size=(64, 64), mode='bilinear')
    torch.testing.assert_close(out, high + up)
    assert recombine_bands(low, high, 7).shape == (1, 3, 64, 64)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r'target must have shape \(B, C, H, W\)'):
        high_band_target(torch.randn(3, 8, 8), 2)
    with pytest.raises(ValueError, match='blur must be positive'):
        high_band_target(torch.randn(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match='output_size must be positive'):
        low_band_target(torch.randn(1, 3, 8, 8), (0, 4))
    with pytest.raises(ValueError, match='pred_low'):
        recombine_bands(torch.randn(3, 8, 8), torch.randn(1, 3, 16, 16), 2)


@pytest.mark.parametrize(
    ('target', 'error', 'match'),
    [
        (None, TypeError, 'got NoneType'),
        ([[1.0]], TypeError, 'got list'),
        (torch.ones(2, 3, 8, 8, dtype=torch.long), ValueError, 'torch.int64'),
        (torch.ones(0, 3, 8, 8), ValueError, r'empty: shape \(0, 3, 8, 8\)'),
        (torch.ones(3, 8, 8), ValueError, r'\(B, C, H, W\), got \(3, 8, 8\)'),
    ],
)
def test_band_targets_reject_bad_targets(
    target: object, error: type, match: str
) -> None:
    for call in (
        lambda: low_band_target(target, 4),  # type: ignore[arg-type]
        lambda: high_band_target(target, 4),  # type: ignore[arg-type]
        lambda: recombine_bands(target, torch.ones(2, 3, 16, 16), 4),  # type: ignore[arg-type]
    ):
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize('size', ['abc', 1.5, float('nan'), float('inf'), 0, -1, (4,)])
def test_band_sizes_name_the_bad_value(size: object) -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r'output_size must be .*got'):
        low_band_target(x, size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'blur must be .*got'):
        high_band_target(x, size)  # type: ignore[arg-type]


def test_recombine_bands_checks_batch_and_channels() -> None:
    with pytest.raises(ValueError, match=r'same batch and channel sizes'):
        recombine_bands(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 16, 16), None)
