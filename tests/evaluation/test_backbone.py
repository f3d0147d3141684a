# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from torchgeo_scalemae.evaluation.backbone import (
    build_encoder,
    encoder_features,
    extract_encoder_state_dict,
    load_encoder_weights,
)
from torchgeo_scalemae.models import ScaleMAEEncoder

TINY = 'scalemae_vit_tiny_patch16'


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sb = b.state_dict()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, sb[key])


def test_build_encoder() -> None:
    enc = build_encoder(TINY)
    assert isinstance(enc, ScaleMAEEncoder)
    assert enc.num_classes == 0
    sized = build_encoder(
        'scalemae_vit', 4, {'embed_dim': 48, 'depth': 1, 'num_heads': 3}
    )
    assert isinstance(sized, ScaleMAEEncoder)
    assert sized.embed_dim == 48
    assert sized.in_chans == 4
    timm_vit = build_encoder('vit_tiny_patch16_224', 3, {'depth': 1})
    assert isinstance(timm_vit, VisionTransformer)
    # dynamic size: any multiple of the patch size works
    assert encoder_features(timm_vit, torch.rand(2, 3, 48, 48)).shape == (2, 192)
    with pytest.raises(ValueError, match='in_channels'):
        build_encoder(TINY, 0)


@pytest.mark.parametrize(
    'prefix', ['', 'model.encoder.', 'backbone.vit.', 'model.', 'encoder.']
)
def test_extract_any_prefix(prefix: str) -> None:
    source = build_encoder(TINY)
    state: dict[str, Any] = {f'{prefix}{k}': v for k, v in source.state_dict().items()}
    # decoder blocks with the same names must not win over the encoder
    for i in range(3):
        state[f'decoder.blocks.{i}.norm1.weight'] = torch.zeros(64)
    state['decoder.norm.weight'] = torch.zeros(64)
    extracted = extract_encoder_state_dict({'state_dict': state}, build_encoder(TINY))
    assert set(extracted) == set(source.state_dict())


def test_load_file_forms(tmp_path: Path) -> None:
    source = build_encoder(TINY)
    torch.save(source.state_dict(), tmp_path / 'enc.pth')
    save_file(source.state_dict(), str(tmp_path / 'enc.safetensors'))
    torch.save({'model': source.state_dict(), 'epoch': 3}, tmp_path / 'ref.pth')
    for name in ('enc.pth', 'enc.safetensors', 'ref.pth'):
        target = load_encoder_weights(build_encoder(TINY), str(tmp_path / name))
        assert_same(target, source)


def test_weight_enum_string(monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_encoder(TINY)

    class FakeWeights:
        def get_state_dict(self, **kwargs: Any) -> dict[str, torch.Tensor]:
            return {f'encoder.{k}': v for k, v in source.state_dict().items()}

    seen: list[str] = []

    def fake_get_weight(name: str) -> FakeWeights:
        seen.append(name)
        return FakeWeights()

    monkeypatch.setattr('torchgeo.models.get_weight', fake_get_weight)
    target = load_encoder_weights(build_encoder(TINY), 'Some_Weights.MEMBER')
    assert seen == ['Some_Weights.MEMBER']
    assert_same(target, source)


def test_missing_and_mismatched_weights(tmp_path: Path) -> None:
    source = build_encoder(TINY)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith('norm')}
    torch.save(partial, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match='miss 2 encoder parameters'):
        load_encoder_weights(build_encoder(TINY), str(tmp_path / 'partial.pth'))
    torch.save({'x': torch.zeros(1)}, tmp_path / 'none.pth')
    with pytest.raises(ValueError, match='no encoder weights found'):
        load_encoder_weights(build_encoder(TINY), str(tmp_path / 'none.pth'))
    wide = build_encoder(
        'scalemae_vit', 3, {'embed_dim': 32, 'depth': 2, 'num_heads': 2}
    )
    torch.save(wide.state_dict(), tmp_path / 'wide.pth')
    with pytest.raises(ValueError, match='do not fit'):
        load_encoder_weights(build_encoder(TINY), str(tmp_path / 'wide.pth'))


def test_encoder_features_pooling() -> None:
    enc = build_encoder(TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    res = torch.tensor([1.0, 4.0])
    tokens = enc.forward_features(x, res=res)
    torch.testing.assert_close(encoder_features(enc, x, res), tokens[:, 0])
    torch.testing.assert_close(
        encoder_features(enc, x, res, 'mean'), tokens[:, 1:].mean(1)
    )
    # res reaches the GSD encoding: a different res gives different features
    assert not torch.allclose(
        encoder_features(enc, x, res), encoder_features(enc, x, res * 2)
    )
    with pytest.raises(ValueError, match='pool'):
        encoder_features(enc, x, res, 'max')  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'model': None}, TypeError, 'model must be an encoder name'),
        ({'model': 3}, TypeError, 'got 3'),
        ({'model': ''}, ValueError, "got ''"),
        ({'model': 'no_such_net'}, ValueError, "unknown encoder model 'no_such_net'"),
        ({'in_channels': 'abc'}, TypeError, "in_channels must be an int, got 'abc'"),
        ({'in_channels': 2.5}, TypeError, 'got 2.5'),
        ({'in_channels': 0}, ValueError, 'got 0'),
        (
            {'model_kwargs': 'abc'},
            TypeError,
            "model_kwargs must be a mapping or None, got 'abc'",
        ),
        ({'model_kwargs': [1]}, TypeError, r'got \[1\]'),
    ],
)
def test_build_encoder_names_bad_arguments(
    kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        build_encoder(**{'model': 'scalemae_vit_tiny_patch16', **kwargs})


@pytest.mark.parametrize('encoder', [None, 'abc'])
def test_encoder_functions_need_a_module(encoder: Any) -> None:
    with pytest.raises(TypeError, match=r'encoder must be a torch\.nn\.Module, got'):
        load_encoder_weights(encoder, None)
    with pytest.raises(TypeError, match=r'encoder must be a torch\.nn\.Module, got'):
        encoder_features(encoder, torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize(
    ('images', 'error', 'match'),
    [
        (None, TypeError, r'images must be a \(B, C, H, W\) tensor, got None'),
        (torch.rand(3, 32, 32), ValueError, r'shape \(3, 32, 32\)'),
        (torch.rand(0, 3, 32, 32), ValueError, r'shape \(0, 3, 32, 32\)'),
        (torch.ones(1, 3, 32, 32, dtype=torch.uint8), ValueError, 'torch.uint8'),
    ],
)
def test_encoder_features_rejects_bad_images(
    images: Any, error: type, match: str
) -> None:
    encoder = build_encoder('scalemae_vit_tiny_patch16')
    with pytest.raises(error, match=match):
        encoder_features(encoder, images)
