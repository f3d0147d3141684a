import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from torchgeo_scalemae.models import (
    infer_reference_config,
    load_reference_checkpoint,
    reference_args_to_config,
    scalemae_from_reference_checkpoint,
)

from .reference_data import DATA


def save_training_checkpoint(path: Path, fixture: dict[str, Any], **args: Any) -> None:
    meta = fixture['meta']
    namespace = argparse.Namespace(
        model='mae_vit_base_patch16',
        input_size=meta['img'],
        decoder_depth=meta['ddepth'],
        fcn_dim=meta['fcn_dim'],
        fcn_layers=meta['fcn_layers'],
        independent_fcn_head=True,
        progressive=False,
        band_config=list(meta['band']),
        use_l1_loss=meta['l1'],
        l1_loss_weight=meta['l1w'],
        mask_ratio=0.75,
        norm_pix_loss=True,
        **args,
    )
    torch.save(
        {
            'model': fixture['state'],
            'optimizer': {},
            'epoch': 3,
            'scaler': {},
            'args': namespace,
        },
        path,
    )


def test_load_checkpoint_with_namespace(
    tmp_path: Path, fixture: dict[str, Any]
) -> None:
    path = tmp_path / 'checkpoint-3.pth'
    save_training_checkpoint(path, fixture)
    state, args = load_reference_checkpoint(path)
    assert args is not None and args['band_config'] == list(fixture['meta']['band'])
    assert 'decoder.mask_token' in state and 'pos_embed' not in state


def test_model_from_checkpoint_parity(tmp_path: Path, fixture: dict[str, Any]) -> None:
    path = tmp_path / 'checkpoint.pth'
    save_training_checkpoint(path, fixture)
    # args name ViT-B; the shapes say 64-d: override the heads (4) to match the fixture
    model = scalemae_from_reference_checkpoint(
        path, embed_dim=64, depth=2, num_heads=4, decoder_num_heads=4
    )
    assert model.loss.band_config == tuple(fixture['meta']['band'])
    assert model.loss.use_l1_loss == fixture['meta']['l1']
    with torch.no_grad():
        out = model(
            fixture['input'], fixture['res'], fixture['target'], fixture['noise']
        )
    assert out.loss is not None
    torch.testing.assert_close(out.loss, fixture['loss'][0], atol=1e-5, rtol=0)


def test_bare_state_dict_infers_architecture(fixture: dict[str, Any]) -> None:
    config = infer_reference_config(fixture['state'])
    assert config == {
        'patch_size': 16,
        'in_chans': 3,
        'embed_dim': 64,
        'depth': 2,
        'num_heads': 4,
        'decoder_embed_dim': 32,
        'decoder_depth': 3,
        'decoder_num_heads': 4,
        'mlp_ratio': 4.0,
        'fcn_dim': 32,
        'fcn_layers': 2,
        'independent_fcn_head': True,
        'progressive': False,
    }
    model = scalemae_from_reference_checkpoint(
        {'model': fixture['state']},
        band_config=fixture['meta']['band'],
        use_l1_loss=fixture['meta']['l1'],
    )
    with torch.no_grad():
        out = model(
            fixture['input'], fixture['res'], fixture['target'], fixture['noise']
        )
    assert out.loss is not None
    torch.testing.assert_close(out.loss, fixture['loss'][0], atol=1e-5, rtol=0)


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ('pwned',))


def test_arbitrary_pickles_refused(tmp_path: Path, fixture: dict[str, Any]) -> None:
    path = tmp_path / 'evil.pth'
    torch.save({'model': fixture['state'], 'args': Evil()}, path)
    with pytest.raises(RuntimeError, match='cannot be unpickled weights-only'):
        load_reference_checkpoint(path)
    with pytest.raises(RuntimeError, match='cannot be unpickled weights-only'):
        scalemae_from_reference_checkpoint(path)


def test_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / 'list.pth'
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match='holds a list, not a checkpoint dict'):
        load_reference_checkpoint(path)


def test_args_mapping() -> None:
    config = reference_args_to_config(
        {'model': 'mae_vit_huge_patch14', 'band_config': [14, 56], 'use_l1_loss': True}
    )
    assert config == {
        'patch_size': 14,
        'embed_dim': 1280,
        'depth': 32,
        'num_heads': 16,
        'band_config': (14, 56),
        'use_l1_loss': True,
    }
    with pytest.raises(ValueError, match="unknown reference model 'vit_xl'"):
        reference_args_to_config({'model': 'vit_xl'})
    with pytest.raises(ValueError, match="'args' must be"):
        load_reference_checkpoint({'model': {}, 'args': 3})


def test_not_a_checkpoint_files(tmp_path: Path) -> None:
    from torchgeo_scalemae.models import load_weights, read_checkpoint

    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='is not a checkpoint: the file is empty'):
        read_checkpoint(empty)
    noise = tmp_path / 'noise.ckpt'
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r'noise\.ckpt.* is not a checkpoint'):
        load_weights(noise)
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'not safetensors at all')
    with pytest.raises(ValueError, match='is not a readable safetensors file'):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r'missing\.pth'):
        load_weights(tmp_path / 'missing.pth')
    with pytest.raises(TypeError, match='got int: 3'):
        load_weights(3)  # type: ignore[arg-type]


def test_infer_config_names_what_is_missing(fixture: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"missing \['patch_embed\.proj\.weight'"):
        infer_reference_config({'mask_token': torch.zeros(1, 1, 8)})
    with pytest.raises(TypeError, match='state_dict must be a mapping, got list'):
        infer_reference_config([])  # type: ignore[arg-type]
    state = {
        k: v
        for k, v in fixture['state'].items()
        if not k.startswith('decoder_blocks.1.')
    }
    with pytest.raises(ValueError, match=r'lacks whole blocks decoder_blocks\.\[1\]'):
        infer_reference_config(state)


def test_missing_last_block_of_a_released_width_is_refused() -> None:
    """A ViT-L state dict without its last block does not build a shallower model."""
    layout = json.loads((DATA / 'reference_checkpoint_keys.json').read_text())
    keys = layout['vit_large_patch16']['keys']
    state = {
        key: torch.empty(shape, device='meta')
        for key, shape in keys.items()
        if not key.startswith('blocks.23.')
    }
    with pytest.raises(ValueError, match='has 23 encoder blocks, but a 1024-wide'):
        scalemae_from_reference_checkpoint(state)


@pytest.mark.parametrize('name', [None, 3, ['x']])
def test_resolve_weights_rejects_non_strings(name: Any) -> None:
    from torchgeo_scalemae.models import resolve_weights

    with pytest.raises(TypeError, match=r"'Class.MEMBER' string, got"):
        resolve_weights(name)


@pytest.mark.parametrize('bad', [None, 'abc', [1], 3])
def test_state_dict_helpers_name_bad_arguments(bad: Any) -> None:
    from torchgeo_scalemae.models import (
        extract_encoder_state_dict,
        load_encoder_state_dict,
        scalemae_vit_tiny_patch16,
    )
    from torchgeo_scalemae.models.checkpoint import encoder_keys_for

    encoder = scalemae_vit_tiny_patch16()
    state = encoder.state_dict()
    with pytest.raises(TypeError, match=r'checkpoint must be a mapping'):
        extract_encoder_state_dict(bad, encoder)
    with pytest.raises(TypeError, match=r'state_dict must be a mapping'):
        encoder_keys_for(encoder, bad)
    with pytest.raises(TypeError, match=r'state_dict must be a mapping'):
        load_encoder_state_dict(encoder, bad)
    with pytest.raises(TypeError, match=r'args must be a mapping'):
        reference_args_to_config(bad)
    if bad is not None and not isinstance(bad, str):
        return
    with pytest.raises(TypeError, match=r'encoder must be a torch.nn.Module, got'):
        extract_encoder_state_dict(state, bad)
    with pytest.raises(TypeError, match=r'model must be a torch.nn.Module, got'):
        encoder_keys_for(bad, state)
    with pytest.raises(TypeError, match=r'model must be a torch.nn.Module, got'):
        load_encoder_state_dict(bad, state)


def test_reference_args_to_config_accepts_a_namespace() -> None:
    args = argparse.Namespace(model='mae_vit_base_patch16', input_size=224)
    assert reference_args_to_config(args) == reference_args_to_config(vars(args))
