# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""timm entrypoints and pretrained configs of the Scale-MAE encoders.

The functions here are timm model entrypoints (``(pretrained=False, **kwargs)``): thin
wrappers that hand the package's one builder per name (:mod:`~.models.builders`) to
:func:`timm.models.build_model_with_cfg`, so ``pretrained_cfg``, ``features_only``,
``out_indices``, ``in_chans`` and ``num_classes`` behave as for timm's own ViTs.
:func:`torchgeo_scalemae.register` registers them in timm; this module itself touches
no registry.
"""

from collections.abc import Callable
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor

from .models.builders import ENCODER_CONFIGS, ENCODERS
from .models.checkpoint import encoder_keys_for, model_state_dict
from .models.encoder import ScaleMAEEncoder
from .models.weights import FMOW_RGB_URL

# a list: timm's register_model appends entrypoint names to the module's __all__
__all__ = [
    'DEPTHS',
    'ENTRYPOINTS',
    'scalemae_vit_base_patch16',
    'scalemae_vit_huge_patch14',
    'scalemae_vit_large_patch16',
    'scalemae_vit_tiny_patch16',
]

#: Number of transformer blocks of each encoder (``features_only`` default indices).
DEPTHS = {name: config['depth'] for name, config in ENCODER_CONFIGS.items()}


_RES_NOTE = (
    'res is relative, not metres; the default res 1.0 follows '
    "ScaleMAEEncoderLarge16_Weights.FMOW_RGB.meta['default_res']"
)


def _cfg(url: str = '', **kwargs: Any) -> dict[str, Any]:
    # num_classes=0: these are feature encoders (no classifier in any checkpoint);
    # TorchGeo's tasks and timm users pass num_classes explicitly for a head.
    return {
        'url': url,
        'num_classes': 0,
        'input_size': (3, 224, 224),
        'pool_size': None,
        'crop_pct': 1.0,
        'interpolation': 'bicubic',
        'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'paper_ids': 'arXiv:2212.14532',
        'paper_name': 'Scale-MAE: A Scale-Aware Masked Autoencoder for Multiscale '
        'Geospatial Representation Learning',
        'origin_url': 'https://github.com/bair-climate-initiative/scale-mae',
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        'scalemae_vit_tiny_patch16': _cfg(),
        'scalemae_vit_base_patch16': _cfg(),
        'scalemae_vit_large_patch16.fmow_rgb': _cfg(
            url=FMOW_RGB_URL, license='cc-by-nc-4.0', notes=(_RES_NOTE,)
        ),
        'scalemae_vit_huge_patch14': _cfg(),
    }
)


def _filter_fn(state_dict: dict[str, Any], model: ScaleMAEEncoder) -> dict[str, Any]:
    """Keep the encoder keys of a checkpoint (timm ``pretrained_filter_fn``)."""
    return encoder_keys_for(model, model_state_dict(state_dict))


_RES_GETTERS: dict[type, type] = {}


def _features_forward(self: Any, x: Tensor, res: Tensor | float | None = None) -> Any:
    """(B, C, H, W) images to the feature maps of ``out_indices``, at scale ``res``."""
    return self.model.forward_intermediates(
        x,
        indices=self.out_indices,
        norm=self.norm,
        output_fmt=self.output_fmt,
        intermediates_only=True,
        res=res,
    )


def _accept_res(wrapper: Any) -> Any:
    """Make a timm ``features_only`` wrapper's ``forward`` take ``res`` (in place).

    timm's feature getter calls ``forward_intermediates(x)`` only; the subclass made
    here (one per wrapper class) passes ``res`` through as well.
    """
    base = type(wrapper)
    cls = _RES_GETTERS.get(base)
    if cls is None:
        cls = type(
            f'ScaleMAE{base.__name__}',
            (base,),
            {'forward': _features_forward, '__module__': __name__},
        )
        _RES_GETTERS[base] = cls
    wrapper.__class__ = cls
    return wrapper


def _create(variant: str, pretrained: bool, **kwargs: Any) -> ScaleMAEEncoder:
    out_indices = kwargs.pop('out_indices', min(3, DEPTHS[variant]))
    model: ScaleMAEEncoder = build_model_with_cfg(
        ENCODERS[variant],
        variant,
        pretrained,
        pretrained_filter_fn=_filter_fn,
        feature_cfg={'out_indices': out_indices, 'feature_cls': 'getter'},
        **kwargs,
    )
    if kwargs.get('features_only'):
        model = _accept_res(model)
    return model


def scalemae_vit_tiny_patch16(
    pretrained: bool = False, **kwargs: Any
) -> ScaleMAEEncoder:
    """Entrypoint (timm) of the tiny test-sized encoder (64-d, 2 blocks, 4 heads).

    Args:
        pretrained: must be False (no weights).
        **kwargs: timm keyword arguments (``in_chans``, ``num_classes``,
            ``features_only``, ``out_indices``, ``res``...).

    Returns:
        The encoder (or a timm feature wrapper with ``features_only=True``).
    """
    return _create('scalemae_vit_tiny_patch16', pretrained, **kwargs)


def scalemae_vit_base_patch16(
    pretrained: bool = False, **kwargs: Any
) -> ScaleMAEEncoder:
    """Entrypoint (timm) of the ViT-B/16 encoder.

    Args:
        pretrained: must be False (no weights).
        **kwargs: timm keyword arguments.

    Returns:
        The encoder (or a timm feature wrapper with ``features_only=True``).
    """
    return _create('scalemae_vit_base_patch16', pretrained, **kwargs)


def scalemae_vit_large_patch16(
    pretrained: bool = False, **kwargs: Any
) -> ScaleMAEEncoder:
    """Entrypoint (timm) of the ViT-L/16 encoder; tag ``fmow_rgb`` has the released weights.

    Args:
        pretrained: load the ``fmow_rgb`` weights (the file of
            ``ScaleMAEEncoderLarge16_Weights.FMOW_RGB``, fetched by timm).
        **kwargs: timm keyword arguments.

    Returns:
        The encoder (or a timm feature wrapper with ``features_only=True``).
    """
    return _create('scalemae_vit_large_patch16', pretrained, **kwargs)


def scalemae_vit_huge_patch14(
    pretrained: bool = False, **kwargs: Any
) -> ScaleMAEEncoder:
    """Entrypoint (timm) of the ViT-H/14 encoder.

    Args:
        pretrained: must be False (no weights).
        **kwargs: timm keyword arguments.

    Returns:
        The encoder (or a timm feature wrapper with ``features_only=True``).
    """
    return _create('scalemae_vit_huge_patch14', pretrained, **kwargs)


#: The entrypoints by timm name.
ENTRYPOINTS: dict[str, Callable[..., ScaleMAEEncoder]] = {
    'scalemae_vit_tiny_patch16': scalemae_vit_tiny_patch16,
    'scalemae_vit_base_patch16': scalemae_vit_base_patch16,
    'scalemae_vit_large_patch16': scalemae_vit_large_patch16,
    'scalemae_vit_huge_patch14': scalemae_vit_huge_patch14,
}
