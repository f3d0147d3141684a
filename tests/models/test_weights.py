"""Weight enums and TorchGeo-style builders, offline.

Weight URLs are redirected (TorchGeo's pattern: ``monkeypatch.setattr(weights.value,
'url', ...)``) to ``file://`` URIs of files written by the test, so the real download,
cache and hash-check code runs. ViT-L loads use meta tensors in the exact released key
layout (tests/data/reference/reference_checkpoint_keys.json), built on the meta device.
"""

import argparse
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torchgeo.models import ScaleMAELarge16_Weights

from torchgeo_scalemae.models import (
    ScaleMAE,
    ScaleMAEEncoder,
    scalemae_vit_tiny_patch16,
)
from torchgeo_scalemae.models import builders as B
from torchgeo_scalemae.models.weights import (
    ScaleMAEEncoderLarge16_Weights,
    ScaleMAEPretrainLarge16_Weights,
)

from .reference_data import DATA, encoder_state, load_fixture

ENCODER = ScaleMAEEncoderLarge16_Weights.FMOW_RGB
FULL = ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP
MEMBERS = [*ScaleMAEEncoderLarge16_Weights, *ScaleMAEPretrainLarge16_Weights]
META_KEYS = (
    'dataset',
    'bands',
    'in_chans',
    'model',
    'publication',
    'repo',
    'license',
    'ssl_method',
    'img_size',
    'res_convention',
    'default_res',
)


def _vit_l_reference_keys() -> dict[str, list[int]]:
    data = json.loads((DATA / 'reference_checkpoint_keys.json').read_text())
    keys: dict[str, list[int]] = data['vit_large_patch16']['keys']
    return keys


def _meta_tensors(shapes: dict[str, list[int]]) -> dict[str, Tensor]:
    return {k: torch.empty(v, device='meta') for k, v in shapes.items()}


def _hashed_file(obj: Any, folder: Path, stem: str) -> Path:
    """torch.save ``obj`` as ``<stem>-<sha256[:8]>.pth``, the name check_hash reads."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f'{stem}.tmp'
    torch.save(obj, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f'{stem}-{digest[:8]}.pth'
    tmp.rename(path)
    return path


def _released_layout(
    state: dict[str, Tensor], args: argparse.Namespace
) -> dict[str, Any]:
    """A checkpoint as the reference ``save_model`` writes it (``mae/util/misc.py``)."""
    return {
        'model': state,
        'optimizer': {
            'state': {},
            'param_groups': [{'lr': 1.5e-4, 'weight_decay': 0.05, 'params': [0, 1]}],
        },
        'epoch': 799,
        'scaler': {'scale': 65536.0, 'growth_factor': 2.0, '_growth_tracker': 0},
        'args': args,
    }


def _reference_args(**kwargs: Any) -> argparse.Namespace:
    """Reference main_pretrain.py arguments (recipe defaults) with overrides."""
    base: dict[str, Any] = {
        'batch_size': 64,
        'epochs': 800,
        'input_size': 224,
        'mask_ratio': 0.75,
        'norm_pix_loss': True,
        'weight_decay': 0.05,
        'blr': 1.5e-4,
        'output_dir': './output_dir',
        'target_size': [448],
        'decoder_depth': 3,
        'fcn_dim': 512,
        'fcn_layers': 2,
        'independent_fcn_head': True,
        'progressive': False,
        'base_resolution': 2.5,
        'dist_url': 'env://',
    }
    base.update(kwargs)
    return argparse.Namespace(**base)


@pytest.fixture
def redirect(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Point a weight member's URL at a local file (file:// URI)."""

    def apply(member: Any, path: Path) -> None:
        monkeypatch.setattr(member.value, 'url', path.as_uri())

    return apply


# ----------------------------------------------------------------------- enums
@pytest.mark.parametrize('member', MEMBERS, ids=str)
def test_meta_has_torchgeo_keys_and_res_convention(member: Any) -> None:
    for key in META_KEYS:
        assert key in member.meta, key
    assert member.meta['license'] == 'CC-BY-NC-4.0'
    assert member.meta['ssl_method'] == 'scalemae'
    assert member.meta['in_chans'] == len(member.meta['bands']) == 3
    assert member.meta['default_res'] == 1.0
    assert 'not metres' in member.meta['res_convention']
    assert member.meta['pretrain_res_range'] == (2.2, 5.0)


def test_class_names_differ_from_torchgeo() -> None:
    import torchgeo.models as tgm

    for enum in (ScaleMAEEncoderLarge16_Weights, ScaleMAEPretrainLarge16_Weights):
        assert not hasattr(tgm, enum.__name__)


def test_encoder_weights_are_torchgeo_file() -> None:
    assert ENCODER.url == ScaleMAELarge16_Weights.FMOW_RGB.url
    assert ENCODER.url.rsplit('-', 1)[1].startswith('386989c9')
    assert ENCODER.meta['img_size'] == ScaleMAELarge16_Weights.FMOW_RGB.meta['img_size']
    x = torch.randint(0, 256, (2, 3, 8, 8)).float()
    ours = ENCODER.transforms(x.clone())
    theirs = ScaleMAELarge16_Weights.FMOW_RGB.transforms(x.clone())
    torch.testing.assert_close(ours, theirs)


def test_full_checkpoint_url_and_integrity_meta() -> None:
    assert FULL.url.endswith('/base-800/scalemae-vitlarge-800.pth')
    assert FULL.meta['sha256'] is None  # not recorded yet: see the enum docstring
    assert 'band_config' in FULL.meta['args_applied']
    assert 'use_l1_loss' in FULL.meta['args_applied']


# --------------------------------------------------------------- encoder load
def test_encoder_weights_hash_checked_strict_default_res(
    tmp_path: Path, redirect: Any
) -> None:
    reference = _vit_l_reference_keys()
    encoder_keys = encoder_state(_meta_tensors(reference))  # HF file: encoder subset
    assert 'pos_embed' in encoder_keys
    redirect(ENCODER, _hashed_file(encoder_keys, tmp_path / 'src', 'encoder'))
    with torch.device('meta'):
        model = B.scalemae_vit_large_patch16(ENCODER, num_classes=0)
    assert isinstance(model, ScaleMAEEncoder)
    assert model.res == ENCODER.meta['default_res'] == 1.0
    assert model.embed_dim == 1024 and len(model.blocks) == 24


def test_encoder_builders_without_weights() -> None:
    model = B.scalemae_vit_tiny_patch16(res=2.5)
    assert model.res == 2.5
    assert list(model._modules)[-1] == 'head'  # TorchGeo's loader reads the last child
    assert B.scalemae_vit_tiny_patch16(in_chans=4).in_chans == 4
    with torch.device('meta'):
        for builder in (
            B.scalemae_vit_base_patch16,
            B.scalemae_vit_large_patch16,
            B.scalemae_vit_huge_patch14,
        ):
            assert builder().res == 1.0


def test_encoder_weights_real_values_load(
    tmp_path: Path, redirect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a tiny encoder stands in for ViT-L so real values can be compared
    monkeypatch.setitem(
        B.ENCODER_CONFIGS,
        'scalemae_vit_large_patch16',
        B.ENCODER_CONFIGS['scalemae_vit_tiny_patch16'],
    )
    source = scalemae_vit_tiny_patch16(num_classes=0)
    state = {**source.state_dict(), 'pos_embed': torch.zeros(1, 197, 64)}
    redirect(ENCODER, _hashed_file(state, tmp_path / 'src', 'tiny'))
    model = B.scalemae_vit_large_patch16(
        'ScaleMAEEncoderLarge16_Weights.FMOW_RGB', res=3.0
    )
    assert model.res == 3.0
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    # a classifier head stays random and does not block loading
    with_head = B.scalemae_vit_large_patch16('FMOW_RGB', num_classes=5)
    assert with_head.head.weight.shape == (5, 64)


def test_encoder_weights_wrong_hash_rejected(tmp_path: Path, redirect: Any) -> None:
    path = _hashed_file({'x': torch.zeros(1)}, tmp_path / 'src', 'bad')
    wrong = path.with_name('bad-00000000.pth')
    path.rename(wrong)
    redirect(ENCODER, wrong)
    with torch.device('meta'), pytest.raises(RuntimeError, match='hash'):
        B.scalemae_vit_large_patch16(ENCODER)


def test_encoder_weights_key_mismatch_named(
    tmp_path: Path, redirect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        B.ENCODER_CONFIGS,
        'scalemae_vit_large_patch16',
        B.ENCODER_CONFIGS['scalemae_vit_tiny_patch16'],
    )
    state = scalemae_vit_tiny_patch16(num_classes=0).state_dict()
    del state['norm.weight']
    state['decoder_embed.weight'] = torch.zeros(2, 2)
    redirect(ENCODER, _hashed_file(state, tmp_path / 'src', 'tiny'))
    with pytest.raises(RuntimeError, match=r'norm\.weight.*decoder_embed\.weight'):
        B.scalemae_vit_large_patch16(ENCODER)


def test_encoder_builder_argument_errors() -> None:
    with pytest.raises(ValueError, match='in_chans=4'):
        B.scalemae_vit_large_patch16(ENCODER, in_chans=4)
    with pytest.raises(ValueError, match='weights must be one of'):
        B.scalemae_vit_large_patch16('ScaleMAELarge16_Weights.FMOW_RGB')
    with pytest.raises(ValueError, match='weights must be one of'):
        B.scalemae_vit_large_patch16(FULL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='no pretrained weights exist'):
        B.scalemae_vit_tiny_patch16(ENCODER)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='res must be a finite positive number'):
        B.scalemae_vit_tiny_patch16(res=0.0)


# ------------------------------------------------------------ full checkpoint
def test_full_checkpoint_vit_l_layout_converts(tmp_path: Path, redirect: Any) -> None:
    state = _meta_tensors(_vit_l_reference_keys())
    args = _reference_args(
        model='mae_vit_large_patch16', band_config=[14, 56], use_l1_loss=True
    )
    path = tmp_path / 'src' / 'scalemae-vitlarge-800.pth'
    path.parent.mkdir()
    torch.save(_released_layout(state, args), path)
    redirect(FULL, path)
    with torch.device('meta'):
        model = B.scalemae(FULL)
    assert isinstance(model, ScaleMAE)
    assert model.encoder.res == FULL.meta['default_res']
    assert model.loss.band_config == (14, 56)
    assert model.loss.use_l1_loss
    assert model.encoder.embed_dim == 1024 and len(model.encoder.blocks) == 24


def test_full_checkpoint_values_and_args(tmp_path: Path, redirect: Any) -> None:
    fixture = load_fixture('ref_small_paper')  # L1 high band, band_config (14, 56)
    meta = fixture['meta']
    args = _reference_args(
        input_size=meta['img'],
        band_config=meta['band'],
        use_l1_loss=meta['l1'],
        l1_loss_weight=meta['l1w'],
        fcn_dim=meta['fcn_dim'],
        mask_ratio=0.6,
    )
    path = tmp_path / 'src' / 'scalemae-vitlarge-800.pth'
    path.parent.mkdir()
    torch.save(_released_layout(fixture['state'], args), path)
    redirect(FULL, path)
    model = B.scalemae_pretrain_vit_large_patch16(
        'ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP', res=2.0
    )
    assert model.encoder.res == 2.0
    assert model.mask_ratio == 0.6
    assert model.loss.band_config == (14, 56) and model.loss.use_l1_loss
    torch.testing.assert_close(
        model.encoder.cls_token, fixture['state']['cls_token'], rtol=0, atol=0
    )
    # the checkpoint is cached: a second build reads the cached copy
    path.unlink()
    again = B.scalemae_pretrain_vit_large_patch16(FULL)
    assert again.encoder.res == 1.0
    # get_state_dict: the converted weights of the model meta['model'] builds
    state = FULL.get_state_dict(progress=False, check_hash=True, weights_only=True)
    assert {k.split('.')[0] for k in state} == {'encoder', 'decoder'}
    again.load_state_dict(state, strict=True)
    assert set(FULL.get_checkpoint(progress=False)['model']) == set(fixture['state'])


def test_full_checkpoint_sha256_checked_when_recorded(
    tmp_path: Path, redirect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / 'src' / 'scalemae-vitlarge-800.pth'
    path.parent.mkdir()
    torch.save({'model': {'cls_token': torch.zeros(1, 1, 4)}}, path)
    redirect(FULL, path)
    monkeypatch.setitem(FULL.meta, 'sha256', '0' * 64)
    with pytest.raises(RuntimeError, match='sha256'):
        FULL.get_checkpoint(progress=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(FULL.meta, 'sha256', digest)
    assert set(FULL.get_checkpoint(progress=False)) == {'model'}


class _NotAllowed:
    """A global that weights-only unpickling must refuse."""


def test_full_checkpoint_unpickles_weights_only(tmp_path: Path, redirect: Any) -> None:
    path = tmp_path / 'src' / 'scalemae-vitlarge-800.pth'
    path.parent.mkdir()
    torch.save({'model': {}, 'args': _NotAllowed()}, path)
    redirect(FULL, path)
    with pytest.raises(RuntimeError, match='weights_only=False') as info:
        FULL.get_checkpoint(progress=False)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


def test_full_checkpoint_layout_checked(tmp_path: Path, redirect: Any) -> None:
    path = tmp_path / 'src' / 'scalemae-vitlarge-800.pth'
    path.parent.mkdir()
    torch.save({'state_dict': {}}, path)
    redirect(FULL, path)
    with pytest.raises(RuntimeError, match="'model' entry"):
        FULL.get_checkpoint(progress=False)


def test_pretrain_builders_without_weights() -> None:
    model = B.scalemae_pretrain_vit_tiny_patch16(res=4.0)
    assert isinstance(model, ScaleMAE) and model.encoder.res == 4.0
    with pytest.raises(ValueError, match='no pretrained weights exist'):
        B.scalemae_pretrain_vit_tiny_patch16(FULL)  # type: ignore[arg-type]
    with torch.device('meta'):
        for builder in (
            B.scalemae,
            B.scalemae_pretrain_vit_base_patch16,
            B.scalemae_pretrain_vit_huge_patch14,
        ):
            assert builder().encoder.res == 1.0
