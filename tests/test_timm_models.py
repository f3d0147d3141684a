"""The timm entrypoints: thin wrappers of the package's builders."""

import pytest
import timm
import torch

import torchgeo_scalemae
from torchgeo_scalemae import _timm_models
from torchgeo_scalemae.models import ScaleMAEEncoder, builders


def test_entrypoints_build_what_the_builders_build() -> None:
    torchgeo_scalemae.register()
    assert set(_timm_models.ENTRYPOINTS) == set(builders.ENCODERS)
    for name, config in builders.ENCODER_CONFIGS.items():
        assert _timm_models.DEPTHS[name] == config['depth']
    torch.manual_seed(0)
    via_timm = timm.create_model('scalemae_vit_tiny_patch16', img_size=32)
    torch.manual_seed(0)
    direct = builders.scalemae_vit_tiny_patch16(img_size=32, num_classes=0)
    assert isinstance(via_timm, ScaleMAEEncoder)
    assert via_timm.pretrained_cfg['paper_ids'] == 'arXiv:2212.14532'
    assert via_timm.state_dict().keys() == direct.state_dict().keys()


def test_features_only_accepts_res() -> None:
    torchgeo_scalemae.register()
    model = timm.create_model(
        'scalemae_vit_tiny_patch16', features_only=True, img_size=32, out_indices=(1,)
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        default = model(x)
        same = model(x, res=1.0)
        other = model(x, res=torch.tensor([2.0, 4.0]))
    assert [f.shape for f in default] == [torch.Size([2, 64, 2, 2])]
    torch.testing.assert_close(default[0], same[0])
    assert not torch.allclose(default[0], other[0])
    with pytest.raises(ValueError, match='res must be a finite positive number'):
        model(x, res=-1.0)


def test_filter_fn_keeps_the_encoder_keys() -> None:
    model = builders.scalemae_vit_tiny_patch16(num_classes=0)
    state = {**model.state_dict(), 'pos_embed': torch.zeros(1, 5, 64)}
    state['head.weight'] = torch.zeros(10, 64)
    kept = _timm_models._filter_fn({'model': state}, model)
    assert 'pos_embed' not in kept and 'head.weight' not in kept
    model.load_state_dict(kept, strict=True)
