import contextlib
import math
from typing import Any

import pytest
import torch

from torchgeo_scalemae.models import (
    EncoderOutput,
    ScaleMAEEncoder,
    scalemae_vit_base_patch16,
    scalemae_vit_huge_patch14,
    scalemae_vit_large_patch16,
    scalemae_vit_tiny_patch16,
)

from .fake_cuda import cuda_autocast, fake_cuda
from .reference_data import encoder_state


@pytest.fixture
def tiny() -> ScaleMAEEncoder:
    return scalemae_vit_tiny_patch16(num_classes=0, img_size=64).eval()


def test_cls_feature_parity(fixture: dict[str, Any]) -> None:
    enc = scalemae_vit_tiny_patch16(num_classes=0, img_size=64).eval()
    enc.load_state_dict(encoder_state(fixture['state']), strict=True)
    with torch.no_grad():
        feat = enc.forward_features(fixture['input'], res=fixture['res'])[:, 0]
        pooled = enc(fixture['input'], fixture['res'])
    torch.testing.assert_close(feat, fixture['cls_feature'], atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, feat)


def test_mask_parity(fixture: dict[str, Any]) -> None:
    enc = scalemae_vit_tiny_patch16(img_size=64)
    enc.load_state_dict(encoder_state(fixture['state']), strict=False)
    out = enc.forward_masked(fixture['input'], fixture['res'], noise=fixture['noise'])
    assert isinstance(out, EncoderOutput)
    torch.testing.assert_close(out.mask, fixture['mask'], atol=0, rtol=0)
    assert out.latent.shape == (2, 1 + 4, 64)
    assert out.grid_size == (4, 4)
    # kept tokens are those with the smallest noise
    kept = fixture['noise'].argsort(1)[:, :4]
    assert torch.all(out.mask.gather(1, kept) == 0)
    restored = out.ids_restore.argsort(1)
    torch.testing.assert_close(restored[:, :4], kept)


def test_torchgeo_layout_loads_strictly() -> None:
    """TorchGeo's FMOW_RGB file: timm names incl. a fixed pos_embed (1, 197, D)."""
    ref = scalemae_vit_tiny_patch16(num_classes=0)
    state = dict(ref.state_dict())
    assert 'pos_embed' not in state
    state['pos_embed'] = torch.zeros(1, 197, 64)
    enc = scalemae_vit_tiny_patch16(num_classes=0, img_size=64)
    enc.load_state_dict(state, strict=True)
    with pytest.raises(RuntimeError, match='Unexpected'):
        enc.load_state_dict({**state, 'bogus': torch.zeros(1)}, strict=True)


def test_dynamic_size_non_square_channels(tiny: ScaleMAEEncoder) -> None:
    x = torch.randn(2, 3, 48, 80)
    out = tiny.forward_features(x, res=torch.tensor([1.0, 2.0]))
    assert out.shape == (2, 1 + 3 * 5, 64)
    enc = scalemae_vit_tiny_patch16(in_chans=5, num_classes=7)
    assert enc(torch.randn(1, 5, 32, 16), 2.0).shape == (1, 7)


def test_res_fallback_and_per_sample(tiny: ScaleMAEEncoder) -> None:
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    a = tiny.forward_features(x)
    tiny.res = 3.0
    b = tiny.forward_features(x)
    c = tiny.forward_features(x, res=torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(c[0], a[0])
    torch.testing.assert_close(c[1], b[1])
    assert not torch.allclose(a, b)


def test_mask_ratio_zero_no_shuffle(tiny: ScaleMAEEncoder) -> None:
    x = torch.randn(2, 3, 32, 48)
    out = tiny.forward_masked(x, 2.0, mask_ratio=0.0)
    assert torch.all(out.mask == 0)
    assert torch.equal(out.ids_restore, torch.arange(6).expand(2, 6))
    torch.testing.assert_close(out.latent, tiny.forward_features(x, 2.0))


def test_mask_counts(tiny: ScaleMAEEncoder) -> None:
    out = tiny.forward_masked(torch.randn(3, 3, 224, 224), 1.0)
    assert out.mask.shape == (3, 196)
    assert torch.all(out.mask.sum(1) == 147)
    assert out.latent.shape == (3, 50, 64)


def test_forward_intermediates(tiny: ScaleMAEEncoder) -> None:
    x = torch.randn(2, 3, 32, 48)
    res = torch.tensor([1.0, 2.0])
    final, inter = tiny.forward_intermediates(x, res=res)
    assert len(inter) == 2
    assert inter[0].shape == (2, 64, 2, 3)
    torch.testing.assert_close(final, tiny.forward_features(x, res))
    only = tiny.forward_intermediates(
        x,
        indices=[0],
        output_fmt='NLC',
        intermediates_only=True,
        res=res,
        return_prefix_tokens=True,
    )
    assert only[0][0].shape == (2, 6, 64) and only[0][1].shape == (2, 1, 64)
    d = tiny.forward_intermediates(x, output_dict=True, res=res, norm=True)
    torch.testing.assert_close(d['image_features'], final)
    # timm helpers without res use the default attribute
    layers = tiny.get_intermediate_layers(x, n=1)
    torch.testing.assert_close(
        layers[0],
        tiny.forward_intermediates(
            x, indices=1, output_fmt='NLC', intermediates_only=True
        )[0],
    )
    with pytest.raises(ValueError, match='output_fmt'):
        tiny.forward_intermediates(x, output_fmt='NHWC')


def test_features_only_via_timm() -> None:
    from timm.models._features import FeatureGetterNet

    enc = scalemae_vit_tiny_patch16()
    net = FeatureGetterNet(enc, out_indices=(0, 1))
    feats = net(torch.randn(1, 3, 32, 32))
    assert [f.shape for f in feats] == [(1, 64, 2, 2)] * 2


def test_fused_attention_on(tiny: ScaleMAEEncoder) -> None:
    flags = [m.fused_attn for m in tiny.modules() if hasattr(m, 'fused_attn')]
    assert flags and all(flags)


def test_backward(tiny: ScaleMAEEncoder) -> None:
    tiny.train()
    out = tiny.forward_masked(torch.randn(2, 3, 32, 32), torch.tensor([1.0, 2.0]))
    out.latent.sum().backward()
    assert tiny.patch_embed.proj.weight.grad is not None
    assert tiny.cls_token.grad is not None


def test_builders_on_meta() -> None:
    with torch.device('meta'):
        sizes = {
            'b': scalemae_vit_base_patch16(),
            'l': scalemae_vit_large_patch16(),
            'h': scalemae_vit_huge_patch14(),
        }
    assert sizes['b'].embed_dim == 768 and len(sizes['b'].blocks) == 12
    assert sizes['l'].embed_dim == 1024 and len(sizes['l'].blocks) == 24
    assert sizes['h'].patch_size == (14, 14) and len(sizes['h'].blocks) == 32


@pytest.mark.parametrize(
    ('shape', 'match'),
    [
        ((2, 4, 32, 32), 'expected 3 input channels, got 4'),
        ((2, 3, 30, 32), 'multiples of the patch size 16x16, got 30x32'),
        ((2, 3, 32, 40), 'got 32x40'),
        ((3, 32, 32), r'expected images of shape \(B, C, H, W\)'),
    ],
)
def test_bad_images(tiny: ScaleMAEEncoder, shape: tuple[int, ...], match: str) -> None:
    x = torch.randn(*shape)
    for call in (
        tiny.forward_features,
        tiny.forward_masked,
        tiny.forward_intermediates,
    ):
        with pytest.raises(ValueError, match=match):
            call(x)


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int64, torch.bool])
def test_integer_images_rejected(tiny: ScaleMAEEncoder, dtype: torch.dtype) -> None:
    x = torch.zeros(2, 3, 32, 32, dtype=dtype)
    for call in (
        tiny.forward_features,
        tiny.forward_masked,
        tiny.forward_intermediates,
    ):
        with pytest.raises(ValueError, match=f'floating-point.*{dtype}'):
            call(x)


@pytest.mark.parametrize(
    'res',
    [
        0.0,
        -2.0,
        math.nan,
        math.inf,
        torch.tensor([1.0, -1.0]),
        torch.tensor([math.nan, 1.0]),
        torch.ones(3),
        torch.ones(2, 2),
    ],
)
def test_bad_res(tiny: ScaleMAEEncoder, res: Any) -> None:
    with pytest.raises(ValueError, match='res'):
        tiny.forward_features(torch.randn(2, 3, 32, 32), res=res)


def test_bad_masking(tiny: ScaleMAEEncoder) -> None:
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r'mask_ratio must be in \[0, 1\), got 1.0'):
        tiny.forward_masked(x, mask_ratio=1.0)
    with pytest.raises(ValueError, match=r'noise must have shape \(2, 4\)'):
        tiny.forward_masked(x, noise=torch.rand(2, 5))


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'reg_tokens': 4}, 'reg_tokens'),
        ({'class_token': False, 'global_pool': 'avg'}, 'class_token'),
        ({'pos_embed': 'learn'}, 'pos_embed'),
        ({'res': 0.0}, 'finite positive'),
        ({'img_size': 0}, 'img_size must be positive, got 0'),
        ({'img_size': (64, -64)}, r'img_size must be positive, got \(64, -64\)'),
        ({'img_size': (64, 64, 64)}, r'img_size must be an int or \(height, width\)'),
        ({'patch_size': 0}, 'patch_size must be positive, got 0'),
        ({'in_chans': 0}, 'in_chans must be a positive int, got 0'),
        ({'in_chans': 2.5}, 'in_chans'),
    ],
)
def test_bad_constructor(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        scalemae_vit_tiny_patch16(**kwargs)


def test_boolean_size_rejected() -> None:
    with pytest.raises(TypeError, match='patch_size must be an int or'):
        scalemae_vit_tiny_patch16(patch_size=True)


def test_compile_tiny(tiny: ScaleMAEEncoder) -> None:
    compiled = torch.compile(tiny.forward_features, backend='eager')
    x = torch.randn(2, 3, 32, 32)
    res = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(compiled(x, res), tiny.forward_features(x, res))


def test_timm_pos_embed_hook(tiny: ScaleMAEEncoder) -> None:
    """timm code calling self._pos_embed(patch_embed(x)) gets the default-res encoding."""
    x = torch.randn(2, 3, 32, 48)
    tiny.res = 2.0
    nhwc = tiny.patch_embed(x)
    assert nhwc.shape == (2, 2, 3, 64)
    torch.testing.assert_close(
        tiny._pos_embed(nhwc), tiny._embed(x, None, tiny._check_input(x))
    )
    with pytest.raises(ValueError, match='do not fill a 2x2 grid'):
        tiny._pos_embed(torch.randn(1, 5, 64), grid_size=(2, 2))


def test_builders_accept_size_overrides() -> None:
    from torchgeo_scalemae.models import scalemae_vit_tiny_patch16

    encoder = scalemae_vit_tiny_patch16(embed_dim=32, depth=1, num_heads=2)
    assert encoder.embed_dim == 32
    assert len(encoder.blocks) == 1
    # the fixed table for code reading vit.pos_embed is never saved
    assert encoder.pos_embed.shape == (1, 197, 32)
    assert 'pos_embed' not in encoder.state_dict()


@pytest.mark.parametrize('autocast', [False, True])
def test_cuda_forward_never_synchronises(autocast: bool) -> None:
    """Features, logits and intermediates on (fake) CUDA: no host-device copy."""
    encoder = scalemae_vit_tiny_patch16(num_classes=5, img_size=64).eval()
    with fake_cuda(encoder) as fake:
        x = torch.randn(2, 3, 64, 64, device='cuda')
        res = torch.tensor([0.5, 2.0], device='cuda')
        with cuda_autocast() if autocast else contextlib.nullcontext():
            logits = fake(x, res)
            tokens = fake.method('forward_features')(x, res)
            last = fake.method('forward_intermediates')(x, indices=1, res=res)
    assert tokens.shape == (2, 17, encoder.embed_dim) and tokens.is_cuda
    assert logits.shape == (2, 5) and logits.is_cuda
    assert last[0].is_cuda


def test_builders_reject_inconsistent_sizes() -> None:
    from torchgeo_scalemae.models import ScaleMAEEncoder, scalemae_vit_tiny_patch16

    with pytest.raises(
        ValueError, match='img_size 50 must be a multiple of the patch size 16'
    ):
        scalemae_vit_tiny_patch16(img_size=50)
    with pytest.raises(ValueError, match='patch_size must be positive, got 0'):
        scalemae_vit_tiny_patch16(patch_size=0)
    with pytest.raises(
        ValueError, match='embed_dim 66 is not divisible by num_heads 4'
    ):
        scalemae_vit_tiny_patch16(embed_dim=66)
    with pytest.raises(ValueError, match='num_heads must be a positive int, got 0'):
        ScaleMAEEncoder(embed_dim=64, num_heads=0, depth=1)


def test_head_is_the_last_child_module() -> None:
    from torchgeo_scalemae.models import scalemae_vit_tiny_patch16

    for classes in (0, 5):
        names = [
            name
            for name, _ in scalemae_vit_tiny_patch16(
                num_classes=classes
            ).named_children()
        ]
        assert names[-1] == 'head' and 'pos_encoder' in names


def test_forward_intermediates_indices_validated() -> None:
    from torchgeo_scalemae.models import scalemae_vit_tiny_patch16

    model = scalemae_vit_tiny_patch16(img_size=32)
    x = torch.randn(1, 3, 32, 32)
    assert (
        len(model.forward_intermediates(x, indices=[-1], intermediates_only=True)) == 1
    )
    with pytest.raises(ValueError, match='block index 5 is out of range for 2 blocks'):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(
        ValueError, match=r'indices=3 \(the last n blocks\) must be in 1..2'
    ):
        model.forward_intermediates(x, indices=3)


@pytest.mark.parametrize('num_patches', ['abc', [4], 4.0, float('inf'), 0, -3, True])
def test_check_mask_ratio_rejects_bad_num_patches(num_patches: Any) -> None:
    from torchgeo_scalemae.models.encoder import check_mask_ratio

    with pytest.raises(ValueError, match='num_patches must be a positive int'):
        check_mask_ratio(0.5, num_patches)


@pytest.mark.parametrize(
    ('x', 'match'),
    [
        (None, 'got NoneType'),
        ('abc', 'got str'),
        (torch.ones(2, 4), r'got \(2, 4\)'),
        (torch.ones(0, 4, 64), r'non-empty floating-point tokens, got torch.float32'),
        (torch.ones(2, 4, 64, dtype=torch.long), 'torch.int64'),
    ],
)
def test_random_masking_rejects_bad_tokens(x: Any, match: str) -> None:
    encoder = scalemae_vit_tiny_patch16()
    with pytest.raises(ValueError, match=match):
        encoder.random_masking(x, 0.5)


@pytest.mark.parametrize('x', [None, 'abc', [1.0, 2.0]])
def test_forward_intermediates_rejects_non_tensors(x: Any) -> None:
    encoder = scalemae_vit_tiny_patch16()
    with pytest.raises(ValueError, match=r'expected images of shape \(B, C, H, W\)'):
        encoder.forward_intermediates(x)
