# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from typing import Any

import pytest
import torch
from torch import Tensor

from torchgeo_scalemae.models import (
    PYRAMID_SCALES,
    ScaleMAEEncoder,
    ScaleMAEUPerNet,
    ViTPyramidNeck,
    default_pyramid_indices,
    scalemae_vit_tiny_patch16,
)


def tiny_encoder(in_chans: int = 3, depth: int = 2, patch: int = 16) -> ScaleMAEEncoder:
    return ScaleMAEEncoder(
        patch_size=patch,
        img_size=4 * patch,
        embed_dim=32,
        depth=depth,
        num_heads=4,
        in_chans=in_chans,
        num_classes=0,
    )


def tiny_model(**kwargs: Any) -> ScaleMAEUPerNet:
    encoder = kwargs.pop('encoder', None) or tiny_encoder(kwargs.pop('in_chans', 3))
    kwargs.setdefault('num_classes', 3)
    kwargs.setdefault('decoder_channels', 16)
    return ScaleMAEUPerNet(encoder, **kwargs)


@pytest.mark.parametrize(
    ('depth', 'expected'),
    [
        (12, [3, 5, 7, 11]),
        (24, [7, 11, 15, 23]),
        (32, [10, 15, 20, 31]),
        (4, [0, 1, 2, 3]),
        (2, [0, 0, 0, 1]),
        (1, [0, 0, 0, 0]),
    ],
)
def test_default_indices(depth: int, expected: list[int]) -> None:
    assert default_pyramid_indices(depth) == expected


def test_default_indices_rejects_bad_depth() -> None:
    with pytest.raises(ValueError, match='depth must be a positive int, got 0'):
        default_pyramid_indices(0)


@pytest.mark.parametrize(('height', 'width'), [(64, 64), (48, 96), (16, 32), (80, 48)])
def test_pyramid_shapes_and_strides(height: int, width: int) -> None:
    model = tiny_model(neck_channels=[8, 16, 24, 32])
    images = torch.randn(2, 3, height, width)
    pyramid = model.pyramid(images)
    assert model.output_strides() == (4.0, 8.0, 16.0, 32.0)
    assert [f.shape[1] for f in pyramid] == [8, 16, 24, 32]
    for feature, stride in zip(pyramid[:3], (4, 8, 16), strict=True):
        assert tuple(feature.shape[-2:]) == (height // stride, width // stride)
    # the coarsest level keeps odd (and one-patch) grids: ceil(h / 2)
    grid = (height // 16, width // 16)
    assert tuple(pyramid[3].shape[-2:]) == tuple(-(-g // 2) for g in grid)
    assert len(PYRAMID_SCALES) == 4


@pytest.mark.parametrize(('in_chans', 'num_classes'), [(1, 2), (3, 6), (13, 1)])
def test_logits_shape(in_chans: int, num_classes: int) -> None:
    model = tiny_model(in_chans=in_chans, num_classes=num_classes)
    images = torch.randn(2, in_chans, 48, 80)
    logits = model(images, torch.tensor([0.5, 2.0]))
    assert logits.shape == (2, num_classes, 48, 80)
    assert torch.isfinite(logits).all()


def test_patch_14_logits_at_input_size() -> None:
    model = tiny_model(encoder=tiny_encoder(patch=14))
    logits = model(torch.randn(2, 3, 56, 42))
    assert logits.shape == (2, 3, 56, 42)
    assert model.output_strides() == (3.5, 7.0, 14.0, 28.0)


def test_backward_reaches_encoder_neck_and_decoder() -> None:
    model = tiny_model()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name in ('encoder.patch_embed.proj.weight', 'neck.levels.0.0.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.decoder.psp.blocks[0][1][0].weight.grad is not None
    # the unused final norm is frozen (no unused trainable parameter under DDP)
    assert not model.encoder.norm.weight.requires_grad


def test_res_reaches_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    calls: list[dict[str, Any]] = []
    original = model.encoder.forward_intermediates

    def spy(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(model.encoder, 'forward_intermediates', spy)
    res = torch.tensor([0.25, 4.0])
    model(torch.randn(2, 3, 32, 32), res)
    [call] = calls
    assert call['res'] is res
    assert call['indices'] == [0, 1]
    # and it changes the output: the GSD encoding depends on res
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x, torch.tensor([0.25, 0.25]))
        b = model(x, torch.tensor([4.0, 4.0]))
    assert not torch.allclose(a, b)


def test_pos_encoder_sees_res(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    seen: list[Tensor] = []
    original = model.encoder.pos_encoder.forward

    def spy(res: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        seen.append(res)
        return original(res, *args, **kwargs)

    monkeypatch.setattr(model.encoder.pos_encoder, 'forward', spy)
    model(torch.randn(2, 3, 32, 32), torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(seen[-1], torch.tensor([0.5, 3.0]))


def test_indices_pick_blocks() -> None:
    encoder = tiny_encoder(depth=4)
    model = tiny_model(encoder=encoder, indices=[-1, 0, 2, 1])
    assert model.indices == [3, 0, 2, 1]
    model = tiny_model(encoder=tiny_encoder(depth=4), indices=[0, 0, 1, 1])
    # blocks 2 and 3 never run: frozen
    assert not any(p.requires_grad for p in model.encoder.blocks[2].parameters())
    assert all(p.requires_grad for p in model.encoder.blocks[1].parameters())
    model(torch.randn(2, 3, 32, 32))


def test_decoder_norm_identity_trains_with_batch_of_one() -> None:
    model = tiny_model(decoder_norm='identity')
    model.train()
    # smp's pyramid-pooling output conv always has BatchNorm: one image needs a
    # coarsest level of more than one cell (64 px: 2 x 2 at stride 32)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    model = tiny_model()
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        model(torch.randn(1, 3, 64, 64))


def test_builder_encoder_works() -> None:
    model = ScaleMAEUPerNet(scalemae_vit_tiny_patch16(num_classes=0), 2)
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 2, 32, 48)


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'num_classes': 0}, ValueError, 'num_classes must be a positive int, got 0'),
        ({'decoder_channels': -1}, ValueError, 'decoder_channels .* got -1'),
        ({'indices': [0, 1]}, ValueError, 'indices must name 4 blocks'),
        ({'indices': [0, 1, -3, 1]}, ValueError, 'block index -3 is out of range'),
        ({'indices': [0, 1, 1, 1.5]}, TypeError, 'block indices must be ints'),
        ({'indices': 'last'}, TypeError, 'indices must be a sequence'),
        ({'neck_channels': [8, 8]}, ValueError, r'neck_channels .* \[8, 8\]'),
        ({'neck_channels': 'wide'}, TypeError, 'neck_channels'),
        ({'decoder_norm': 'groupnorm'}, ValueError, "decoder_norm .* 'groupnorm'"),
        ({'norm': 1}, TypeError, 'norm must be a bool'),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        tiny_model(**kwargs)


def test_bad_encoder() -> None:
    with pytest.raises(TypeError, match='must be a ScaleMAEEncoder, got Linear'):
        ScaleMAEUPerNet(torch.nn.Linear(2, 2), 3)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match='multiples of the patch size'):
        model(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match='expected 3 input channels, got 4'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'shape \(B, C, H, W\)'):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='floating-point'):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match='res'):
        model(torch.randn(2, 3, 32, 32), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match='res'):
        model(torch.randn(2, 3, 32, 32), torch.ones(3))


def test_neck_rejects_bad_features() -> None:
    neck = ViTPyramidNeck(8)
    with pytest.raises(ValueError, match='expected 4 feature maps, got 2'):
        neck([torch.randn(1, 8, 2, 2)] * 2)
    with pytest.raises(ValueError, match=r'\(B, D, h, w\)'):
        neck([torch.randn(1, 8, 4)] * 4)
    with pytest.raises(ValueError, match='embed_dim must be a positive int'):
        ViTPyramidNeck(0)
