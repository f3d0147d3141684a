import contextlib
import math
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException

from torchgeo_scalemae.models import (
    REFERENCE_CONFIG_KEYS,
    ScaleMAE,
    ScaleMAEOutput,
    convert_reference_state_dict,
    create_scalemae,
    list_scalemae_models,
    scalemae_pretrain_vit_tiny_patch16,
    set_fast_path,
)

from .fake_cuda import SyncDetector, cuda_autocast, fake_cuda


def reference_model(meta: dict[str, Any], **extra: Any) -> ScaleMAE:
    return ScaleMAE.from_reference_config(
        img_size=meta['img'],
        patch_size=meta['patch'],
        embed_dim=meta['dim'],
        depth=meta['depth'],
        num_heads=meta['heads'],
        decoder_embed_dim=meta['ddim'],
        decoder_depth=meta['ddepth'],
        decoder_num_heads=meta['dheads'],
        fcn_dim=meta['fcn_dim'],
        fcn_layers=meta['fcn_layers'],
        band_config=meta['band'],
        use_l1_loss=meta['l1'],
        l1_loss_weight=meta['l1w'],
        **extra,
    )


@pytest.mark.parametrize('fast_path', [True, False])
def test_parity_with_reference(fixture: dict[str, Any], fast_path: bool) -> None:
    model = reference_model(fixture['meta'])
    set_fast_path(model, fast_path)
    model.load_state_dict(convert_reference_state_dict(fixture['state']), strict=True)
    with torch.no_grad():
        out = model(
            fixture['input'],
            res=fixture['res'],
            targets=fixture['target'],
            noise=fixture['noise'],
        )
        cls = model.encoder.forward_features(fixture['input'], res=fixture['res'])[:, 0]
        pe = model.decoder.pos_encoder(fixture['res'], (4, 4))
    assert isinstance(out, ScaleMAEOutput)
    assert out.loss is not None
    torch.testing.assert_close(out.loss, fixture['loss'][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_high, fixture['pred_high'], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_low, fixture['pred_low'], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mask, fixture['mask'], atol=0, rtol=0)
    torch.testing.assert_close(cls, fixture['cls_feature'], atol=1e-5, rtol=0)
    torch.testing.assert_close(pe, fixture['pos_embed_encoder'], atol=1e-5, rtol=0)


def test_tiny_builder_is_fixture_size(fixture: dict[str, Any]) -> None:
    model = scalemae_pretrain_vit_tiny_patch16(
        band_config=fixture['meta']['band'], use_l1_loss=fixture['meta']['l1']
    )
    model.load_state_dict(convert_reference_state_dict(fixture['state']), strict=True)
    out = model(fixture['input'], fixture['res'], fixture['target'], fixture['noise'])
    assert out.loss is not None
    torch.testing.assert_close(out.loss, fixture['loss'][0], atol=1e-5, rtol=0)


def test_shapes_224_and_mask_count() -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    out = model(torch.randn(2, 3, 224, 224), torch.tensor([2.5, 4.0]))
    assert out.loss is None and out.loss_low is None and out.loss_high is None
    assert out.pred_low.shape == (2, 3, 224, 224)
    assert out.pred_high.shape == (2, 3, 448, 448)
    assert torch.all(out.mask.sum(1) == 147)


def test_non_square_multichannel_backward() -> None:
    model = scalemae_pretrain_vit_tiny_patch16(in_chans=4, loss_preset='paper')
    x = torch.randn(2, 4, 32, 48)
    out = model(x, 2.0, torch.randn(2, 4, 64, 96), mask_ratio=0.5)
    assert out.pred_low.shape == (2, 4, 32, 48)
    assert out.pred_high.shape == (2, 4, 64, 96)
    assert out.loss is not None
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    assert missing == []


def test_from_reference_config_defaults_and_errors() -> None:
    assert REFERENCE_CONFIG_KEYS['band_config'] == (7, 56)
    with torch.device('meta'):
        model = ScaleMAE.from_reference_config()
    assert model.encoder.embed_dim == 1024 and len(model.encoder.blocks) == 24
    assert model.decoder.embed_dim == 512 and len(model.decoder.blocks) == 3
    assert model.loss.band_config == (7, 56) and not model.loss.use_l1_loss
    assert model.mask_ratio == 0.75 and model.in_chans == 3 and model.patch_size == 16
    with pytest.raises(
        TypeError, match=r"unknown reference config keys \['norm_pix'\]"
    ):
        ScaleMAE.from_reference_config(norm_pix=True)


@pytest.mark.parametrize(
    ('target_shape', 'match'),
    [
        ((2, 3, 32, 32), 'exactly twice the input size'),
        ((2, 3, 64, 96), 'exactly twice the input size'),
        ((2, 4, 64, 64), 'exactly twice the input size'),
        ((1, 3, 64, 64), 'exactly twice the input size'),
    ],
)
def test_bad_targets(target_shape: tuple[int, ...], match: str) -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(2, 3, 32, 32), targets=torch.randn(*target_shape))


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'images': torch.randn(2, 4, 32, 32)}, 'expected 3 input channels, got 4'),
        ({'images': torch.randn(2, 3, 40, 32)}, 'multiples of the patch size'),
        (
            {'images': torch.zeros(2, 3, 32, 32, dtype=torch.uint8)},
            'images must be a floating-point tensor',
        ),
        ({'res': 0.0}, 'res'),
        ({'res': math.nan}, 'res'),
        ({'res': math.inf}, 'res'),
        ({'res': torch.tensor([1.0, -1.0])}, 'res'),
        ({'res': torch.ones(5)}, 'res'),
        ({'mask_ratio': 1.5}, 'mask_ratio'),
        ({'noise': torch.rand(2, 3)}, 'noise'),
    ],
)
def test_bad_inputs(kwargs: dict[str, Any], match: str) -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    kwargs.setdefault('images', torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_bad_constructor() -> None:
    with pytest.raises(ValueError, match='mask_ratio'):
        scalemae_pretrain_vit_tiny_patch16(mask_ratio=1.0)
    # named as the caller named them, not as the layer that would fail first
    with pytest.raises(ValueError, match='in_chans must be a positive int, got 0'):
        scalemae_pretrain_vit_tiny_patch16(in_chans=0)
    with pytest.raises(ValueError, match='img_size must be positive, got 0'):
        scalemae_pretrain_vit_tiny_patch16(img_size=0)


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'fast_path': 'yes'}, TypeError, "fast_path must be True or False, got 'yes'"),
        ({'progressive': 1}, TypeError, 'progressive must be True or False, got 1'),
        ({'per_patch_loss': None}, TypeError, 'per_patch_loss'),
        ({'use_l1_loss': 'no'}, TypeError, 'use_l1_loss must be True, False or None'),
        ({'drop_path_rate': float('nan')}, ValueError, r'drop_path_rate .* got nan'),
        ({'drop_path_rate': -0.1}, ValueError, 'drop_path_rate'),
        ({'drop_path_rate': 1.0}, ValueError, 'drop_path_rate'),
        ({'mlp_ratio': 0}, ValueError, 'mlp_ratio must be a positive finite number'),
        ({'mlp_ratio': '4'}, ValueError, "mlp_ratio .* got '4'"),
        ({'fcn_dim': 0}, ValueError, 'fcn_dim must be a positive int, got 0'),
        ({'fcn_layers': 1.5}, ValueError, 'fcn_layers must be a positive int, got 1.5'),
    ],
)
def test_bad_settings_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        scalemae_pretrain_vit_tiny_patch16(**kwargs)


def test_loss_per_patch_must_be_a_bool() -> None:
    from torchgeo_scalemae.models import BandpassLoss

    with pytest.raises(TypeError, match="per_patch must be True or False, got 'x'"):
        BandpassLoss(per_patch='x')  # type: ignore[arg-type]


def test_create_by_name() -> None:
    names = list_scalemae_models()
    assert 'scalemae_pretrain_vit_tiny_patch16' in names and 'scalemae' in names
    model = create_scalemae('scalemae_pretrain_vit_tiny_patch16', in_chans=1)
    assert model.in_chans == 1
    with torch.device('meta'):
        huge = create_scalemae('scalemae_pretrain_vit_huge_patch14')
        base = create_scalemae('scalemae_pretrain_vit_base_patch16')
    assert huge.patch_size == 14 and base.encoder.embed_dim == 768
    with pytest.raises(ValueError, match="unknown Scale-MAE model 'nope'"):
        create_scalemae('nope')


def test_bf16_autocast_loss_close() -> None:
    torch.manual_seed(0)
    model = scalemae_pretrain_vit_tiny_patch16().eval()
    x, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 4)
    with torch.no_grad():
        ref = model(x, torch.tensor([2.0, 4.0]), t, noise)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x, torch.tensor([2.0, 4.0]), t, noise)
    assert low.loss is not None and ref.loss is not None
    assert low.loss.dtype == torch.float32
    assert abs(low.loss.item() - ref.loss.item()) / ref.loss.item() < 0.02


def test_compile_tiny() -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    compiled = torch.compile(model, backend='aot_eager')
    x, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 4)
    res = torch.tensor([1.0, 2.0])
    a = compiled(x, res, t, noise)
    b = model(x, res, t, noise)
    assert a.loss is not None and b.loss is not None
    torch.testing.assert_close(a.loss, b.loss)
    a.loss.backward()


@pytest.mark.slow
def test_compile_inductor_tiny() -> None:
    """Full inductor compilation (minutes on a small CPU: excluded by default)."""
    model = scalemae_pretrain_vit_tiny_patch16()
    compiled = torch.compile(model)
    x, t = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    noise, res = torch.rand(2, 4), torch.tensor([1.0, 2.0])
    a, b = compiled(x, res, t, noise), model(x, res, t, noise)
    assert a.loss is not None and b.loss is not None
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)


def test_output_carries_the_band_targets_of_the_loss() -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    out = model(images, res=1.0, targets=targets)
    low, high = model.loss.targets(targets, (32, 32))
    assert out.target_low is not None and out.target_high is not None
    torch.testing.assert_close(out.target_low, low, rtol=0, atol=0)
    torch.testing.assert_close(out.target_high, high, rtol=0, atol=0)
    no_targets = model(images, res=1.0)
    assert no_targets.target_low is None and no_targets.target_high is None


@pytest.mark.parametrize('autocast', [False, True])
@pytest.mark.parametrize('res_kind', ['tensor', 'float'])
def test_forward_on_cuda_never_synchronises(autocast: bool, res_kind: str) -> None:
    """Forward and loss on (fake) CUDA: no value ever goes back to the host."""
    model = scalemae_pretrain_vit_tiny_patch16(recompute_heads=True, fast_path=True)
    model.decoder.fast_chunk_bytes = 8 * 2**10  # one image per chunk
    with fake_cuda(model) as fake:
        x = torch.randn(2, 3, 32, 32, device='cuda')
        target = torch.randn(2, 3, 64, 64, device='cuda')
        res: torch.Tensor | float = (
            torch.tensor([1.0, 2.5], device='cuda') if res_kind == 'tensor' else 2.0
        )
        with cuda_autocast() if autocast else contextlib.nullcontext():
            out = fake(x, res, target)
    assert out.loss is not None
    assert out.pred_high.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert out.loss.device.type == 'cuda' and out.loss.shape == ()
    assert out.loss.dtype == torch.float32
    assert out.pred_high.shape == (2, 3, 64, 64) and out.pred_high.is_cuda
    assert out.mask.shape == (2, 4)


def test_fake_cuda_catches_a_synchronisation() -> None:
    """The check above is not vacuous: ``.item()`` on fake CUDA raises."""
    model = torch.nn.Linear(2, 1)
    with fake_cuda(model) as fake:
        y = fake(torch.ones(3, 2, device='cuda'))
        with pytest.raises(DataDependentOutputException):
            y.sum().item()
        with pytest.raises(DataDependentOutputException):
            bool((y > 0).any())


@pytest.mark.parametrize('heads', ['stored', 'recompute', 'checkpoint'])
def test_backward_never_synchronises(heads: str) -> None:
    """The backward pass reads no tensor value on the host, on any device."""
    model = scalemae_pretrain_vit_tiny_patch16(
        recompute_heads=heads == 'recompute',
        checkpoint_heads=heads == 'checkpoint',
        fast_path=True,
    )
    out = model(
        torch.randn(2, 3, 32, 32), torch.tensor([1.0, 2.5]), torch.randn(2, 3, 64, 64)
    )
    assert out.loss is not None
    with SyncDetector() as detector:
        out.loss.backward()
    assert detector.calls == []
    assert all(p.grad is not None for p in model.decoder.parameters())
    with SyncDetector() as detector:
        torch.ones(2).sum().item()
    assert detector.calls == ['aten._local_scalar_dense.default']


def test_bad_inputs_fail_with_the_value_named() -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    images = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r'the batch is empty: images of shape \(0,'):
        model(images[:0])
    with pytest.raises(TypeError, match=r"mask_ratio must be a number in .*'0\.5'"):
        model(images, mask_ratio='0.5')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"mask_ratio must be a number in .*'0\.5'"):
        scalemae_pretrain_vit_tiny_patch16(mask_ratio='0.5')
    with pytest.raises(ValueError, match=r'mask_ratio=0\.95 keeps no visible patch'):
        model(images, mask_ratio=0.95)  # 16 patches: int(16 * 0.05) == 0
    with pytest.raises(TypeError, match=r'noise must be a \(2, 16\) tensor, got list'):
        model(images, noise=[[0.0] * 16] * 2)  # type: ignore[arg-type]
    noise = torch.rand(2, 16)
    noise[0, 3] = float('nan')
    with pytest.raises(ValueError, match='noise must be finite'):
        model(images, noise=noise)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
def test_other_float_dtypes_are_cast(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = scalemae_pretrain_vit_tiny_patch16().eval()
    images = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 4)
    with torch.no_grad():
        want = model(images, noise=noise).pred_low
        got = model(images.to(dtype), noise=noise).pred_low
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got, want, atol=5e-2 if dtype == torch.float16 else 1e-5, rtol=0
    )


def test_images_are_checked_once_per_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    model = scalemae_pretrain_vit_tiny_patch16()
    calls: list[int] = []
    original = model.encoder._check_input

    def counting(x: torch.Tensor) -> tuple[int, int]:
        calls.append(1)
        return original(x)

    monkeypatch.setattr(model.encoder, '_check_input', counting)
    model(torch.randn(2, 3, 32, 32), targets=torch.randn(2, 3, 64, 64))
    assert len(calls) == 1
