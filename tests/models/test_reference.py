import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.conftest import shared_path
from torchgeo_scalemae.models import (
    UNUSED_REFERENCE_KEYS,
    ScaleMAE,
    convert_reference_state_dict,
    reference_key_to_ours,
    scalemae_pretrain_vit_base_patch16,
    scalemae_pretrain_vit_large_patch16,
)

from .reference_data import DATA

LAYOUT = json.loads((DATA / 'reference_checkpoint_keys.json').read_text())


@pytest.mark.parametrize(
    ('name', 'builder'),
    [
        ('vit_large_patch16', scalemae_pretrain_vit_large_patch16),
        ('vit_base_patch16', scalemae_pretrain_vit_base_patch16),
    ],
)
def test_full_layout_loads_strictly(
    name: str, builder: Callable[..., ScaleMAE]
) -> None:
    info = LAYOUT[name]
    state = {k: torch.empty(v, device='meta') for k, v in info['keys'].items()}
    with torch.device('meta'):
        model = builder()
    converted = convert_reference_state_dict(state)
    assert len(converted) == len(state) - 3
    model.load_state_dict(converted, strict=True, assign=True)
    for key, value in converted.items():
        assert model.state_dict()[key].shape == value.shape
    unused = sum(torch.Size(info['keys'][k]).numel() for k in UNUSED_REFERENCE_KEYS)
    used = sum(p.numel() for p in model.parameters())
    assert used == info['num_params'] - unused
    assert info['num_params'] == {'vit_large_patch16': 322_930_438}.get(
        name, 105_296_390
    )


def test_key_mapping() -> None:
    assert (
        reference_key_to_ours('blocks.3.attn.qkv.weight')
        == 'encoder.blocks.3.attn.qkv.weight'
    )
    assert reference_key_to_ours('cls_token') == 'encoder.cls_token'
    assert reference_key_to_ours('mask_token') == 'decoder.mask_token'
    assert (
        reference_key_to_ours('fpn.fpn1.1.ln.weight') == 'decoder.up_high.1.ln.weight'
    )
    assert reference_key_to_ours('fpn.fpn2.0.bias') == 'decoder.up_low.0.bias'
    assert (
        reference_key_to_ours('fcn_low.pred.7.weight')
        == 'decoder.head_low.pred.7.weight'
    )
    assert reference_key_to_ours('fcn.proj.weight') == 'decoder.head.proj.weight'
    assert (
        reference_key_to_ours('decoder_blocks.2.norm1.bias')
        == 'decoder.blocks.2.norm1.bias'
    )
    for key in UNUSED_REFERENCE_KEYS:
        assert reference_key_to_ours(key) is None
    with pytest.raises(KeyError):
        reference_key_to_ours('mask_token_extra')


def test_unknown_and_missing_keys_named(fixture: dict[str, Any]) -> None:
    state = dict(fixture['state'])
    with pytest.raises(KeyError, match=r'head\.weight.*pos_emb_projection\.weight'):
        convert_reference_state_dict(
            {
                **state,
                'head.weight': torch.zeros(1),
                'pos_emb_projection.weight': torch.zeros(1),
            }
        )
    del state['decoder_embed.weight']
    with pytest.raises(ValueError, match=r'decoder\.embed\.weight'):
        convert_reference_state_dict(state)


def test_missing_block_key_fails_strict_load(fixture: dict[str, Any]) -> None:
    from .test_scale_mae import reference_model

    state = dict(fixture['state'])
    del state['decoder_blocks.1.mlp.fc2.bias']
    model = reference_model(fixture['meta'])
    with pytest.raises(RuntimeError, match=r'decoder\.blocks\.1\.mlp\.fc2\.bias'):
        model.load_state_dict(convert_reference_state_dict(state), strict=True)


def test_ddp_prefix_stripped(fixture: dict[str, Any]) -> None:
    state = {'module.' + k: v for k, v in fixture['state'].items()}
    assert 'encoder.cls_token' in convert_reference_state_dict(state)


@pytest.mark.shared
def test_fixture_copies_match_shared() -> None:
    for name in (
        'ref_small_code.safetensors',
        'ref_small_paper.safetensors',
        'reference_checkpoint_keys.json',
    ):
        original = shared_path('fixtures', 'reference', name)
        assert original.read_bytes() == (DATA / name).read_bytes(), name


def test_converter_rejects_what_is_not_a_state_dict() -> None:
    with pytest.raises(TypeError, match='got NoneType'):
        convert_reference_state_dict(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='got list'):
        convert_reference_state_dict([('cls_token', torch.zeros(1))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"these are not: \['cls_token'\]"):
        convert_reference_state_dict({'cls_token': [0.0]})


@pytest.mark.parametrize('key', [None, 3, ['cls_token']])
def test_reference_key_to_ours_rejects_non_strings(key: Any) -> None:
    with pytest.raises(TypeError, match=r'key must be a state-dict key \(str\), got'):
        reference_key_to_ours(key)
