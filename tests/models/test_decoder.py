import pytest
import torch
from torch import nn

from torchgeo_scalemae.models import (
    BandpassDecoder,
    ChannelLayerNorm,
    head_upsampling_factors,
    set_fast_path,
)


def test_channel_layernorm_is_not_groupnorm() -> None:
    x = torch.randn(2, 8, 5, 6)
    norm = ChannelLayerNorm(8)
    want = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(
        0, 3, 1, 2
    )
    torch.testing.assert_close(norm(x), want)
    gn = nn.functional.group_norm(x, 1, eps=1e-6)
    assert not torch.allclose(norm(x), gn, atol=1e-3)
    assert set(dict(norm.named_parameters())) == {'ln.weight', 'ln.bias'}


def test_head_factors() -> None:
    assert head_upsampling_factors(16) == (4, 2)
    assert head_upsampling_factors(14) == (7, 1)
    assert head_upsampling_factors(8) == (2, 2)
    with pytest.raises(ValueError, match='positive even number, got 15'):
        head_upsampling_factors(15)


def decode(
    dec: BandpassDecoder, grid: tuple[int, int], b: int = 2
) -> tuple[torch.Tensor, ...]:
    n = grid[0] * grid[1]
    keep = max(1, n // 4)
    ids_restore = torch.stack([torch.randperm(n) for _ in range(b)])
    latent = torch.randn(b, 1 + keep, 24)
    return dec(latent, ids_restore, torch.tensor([1.0, 2.0][:b]), grid)


@pytest.mark.parametrize(
    ('patch', 'grid', 'chans'), [(16, (2, 3), 3), (14, (2, 2), 5), (8, (3, 2), 1)]
)
def test_output_sizes(patch: int, grid: tuple[int, int], chans: int) -> None:
    dec = BandpassDecoder(
        24, chans, patch, embed_dim=16, depth=1, num_heads=2, fcn_dim=8
    )
    low, high = decode(dec, grid)
    h, w = grid[0] * patch, grid[1] * patch
    assert low.shape == (2, chans, h, w)
    assert high.shape == (2, chans, 2 * h, 2 * w)


@pytest.mark.parametrize(('progressive', 'independent'), [(True, True), (False, False)])
def test_variants(progressive: bool, independent: bool) -> None:
    dec = BandpassDecoder(
        24,
        3,
        16,
        embed_dim=16,
        depth=2,
        num_heads=2,
        fcn_dim=8,
        fcn_layers=1,
        progressive=progressive,
        independent_heads=independent,
    )
    names = set(dict(dec.named_parameters()))
    if progressive:
        assert {'up_high.0.ln.weight', 'up_high.2.weight'} <= names
    else:
        assert {'up_high.0.weight', 'up_high.1.ln.weight', 'up_high.3.weight'} <= names
    assert ('head.proj.weight' in names) is not independent
    assert ('head_high.proj.weight' in names) is independent
    low, high = decode(dec, (2, 2))
    assert low.shape == (2, 3, 32, 32) and high.shape == (2, 3, 64, 64)


def test_checkpoint_heads_same_gradients() -> None:
    torch.manual_seed(0)
    dec = BandpassDecoder(24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8)
    latent = torch.randn(2, 2, 24)
    ids = torch.stack([torch.randperm(4) for _ in range(2)])
    res = torch.tensor([1.0, 3.0])

    def grads(flag: bool) -> list[torch.Tensor]:
        dec.checkpoint_heads = flag
        dec.zero_grad()
        low, high = dec(latent, ids, res, (2, 2))
        (low.square().mean() + high.abs().mean()).backward()
        return [p.grad.clone() for p in dec.parameters() if p.grad is not None]

    dec.train()
    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b)


def test_fused_attention_and_bad_config() -> None:
    dec = BandpassDecoder(24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8)
    assert all(m.fused_attn for m in dec.modules() if hasattr(m, 'fused_attn'))
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        BandpassDecoder(24, embed_dim=18, num_heads=4)
    with pytest.raises(ValueError, match='fcn_dim must be a positive multiple of 4'):
        BandpassDecoder(24, embed_dim=16, num_heads=2, fcn_dim=6)
    with pytest.raises(ValueError, match='out_chans must be a positive int, got 0'):
        BandpassDecoder(24, 0, embed_dim=16, num_heads=2)
    with pytest.raises(ValueError, match='num_heads must be a positive int, got 0'):
        BandpassDecoder(24, embed_dim=16, num_heads=0)
    with pytest.raises(ValueError, match='decoder depth must be an int >= 0, got -1'):
        BandpassDecoder(24, embed_dim=16, num_heads=2, depth=-1)


def test_plain_modules_and_state_dict_keys() -> None:
    """Plain torch layers, so the state dict is the stock (released) layout."""
    dec = BandpassDecoder(24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8)
    kinds = {type(m) for m in dec.modules()}
    assert nn.Conv2d in kinds and nn.ConvTranspose2d in kinds
    assert all(
        type(m).__module__.startswith(
            (
                'torch',
                'timm',
                'torchgeo_scalemae.models.decoder',
                'torchgeo_scalemae.models.pos_embed',
            )
        )
        for m in dec.modules()
    )
    keys = set(dec.state_dict())
    assert {'head_low.proj.weight', 'head_low.pred.1.weight', 'up_low.0.weight'} <= keys
    fast = BandpassDecoder(
        24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8, fast_path=True
    )
    assert set(fast.state_dict()) == keys


def test_set_fast_path_validates() -> None:
    with pytest.raises(TypeError, match=r'must be a torch\.nn\.Module, got int'):
        set_fast_path(3, True)  # type: ignore[arg-type]
    dec = BandpassDecoder(24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8)
    with pytest.raises(TypeError, match="enabled must be a bool, got 'yes'"):
        set_fast_path(dec, 'yes')  # type: ignore[arg-type]
    set_fast_path(nn.Sequential(dec))
    assert dec.fast_path


def test_decoder_runs_in_bf16_under_autocast() -> None:
    """The heads' convolutions, norms and activations stay bf16 under CPU autocast."""
    from torch.utils._python_dispatch import TorchDispatchMode

    dtypes: dict[str, set[torch.dtype]] = {}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(  # type: ignore[no-untyped-def]
            self, func, types, args=(), kwargs=None
        ):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            first = out[0] if isinstance(out, tuple) else out
            if isinstance(first, torch.Tensor) and first.ndim == 4:
                dtypes.setdefault(name, set()).add(first.dtype)
            return out

    torch.manual_seed(0)
    dec = BandpassDecoder(24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8)
    with Record(), torch.autocast('cpu', dtype=torch.bfloat16):
        low, high = decode(dec, (2, 2))
    assert low.dtype == high.dtype == torch.bfloat16
    for op in ('convolution', 'gelu', 'native_layer_norm', 'add'):
        assert dtypes.get(op) == {torch.bfloat16}, (op, dtypes.get(op))


@pytest.mark.parametrize('checkpoint_heads', [False, True])
def test_recompute_heads_same_gradients_less_saved(checkpoint_heads: bool) -> None:
    torch.manual_seed(0)
    dec = BandpassDecoder(
        24, 3, 16, embed_dim=16, depth=1, num_heads=2, fcn_dim=8, fast_path=True
    ).train()
    dec.checkpoint_heads = checkpoint_heads
    latent = torch.randn(2, 2, 24)
    ids = torch.stack([torch.randperm(4) for _ in range(2)])
    res = torch.tensor([1.0, 3.0])

    def run(flag: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        dec.recompute_heads = flag
        dec.zero_grad()
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            low, high = dec(latent, ids, res, (2, 2))
        (low.square().mean() + high.abs().mean()).backward()
        grads = [p.grad.clone() for p in dec.parameters() if p.grad is not None]
        return [low, high], grads, sum(saved.values())

    outs_a, grads_a, bytes_a = run(False)
    outs_b, grads_b, bytes_b = run(True)
    for a, b in zip(outs_a + grads_a, outs_b + grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert dec.recompute_heads
    if not checkpoint_heads:
        # two full-resolution maps per head are stored instead of six
        assert bytes_b < bytes_a


@pytest.mark.parametrize('progressive', [False, True])
@pytest.mark.parametrize('independent', [True, False])
@pytest.mark.parametrize('checkpoint_heads', [False, True])
def test_fast_decoder_equals_stock_decoder(
    progressive: bool, independent: bool, checkpoint_heads: bool
) -> None:
    """The fast path (composed projections, fused stages) vs the plain modules."""
    torch.manual_seed(0)
    dec = (
        BandpassDecoder(
            24,
            3,
            16,
            embed_dim=16,
            depth=1,
            num_heads=2,
            fcn_dim=8,
            progressive=progressive,
            independent_heads=independent,
            checkpoint_heads=checkpoint_heads,
            fast_path=True,
        )
        .double()
        .train()
    )
    latent = torch.randn(2, 2, 24, dtype=torch.float64)
    ids = torch.stack([torch.randperm(4) for _ in range(2)])
    res = torch.tensor([1.0, 3.0])

    def run() -> list[torch.Tensor]:
        dec.zero_grad()
        low, high = dec(latent, ids, res, (2, 2))
        (low.square().mean() + high.abs().mean()).backward()
        return [low, high, *(p.grad.clone() for p in dec.parameters())]

    fast = run()
    set_fast_path(dec, False)
    assert not dec.fast_path
    stock = run()
    for a, b in zip(fast, stock, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
