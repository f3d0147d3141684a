# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Register Scale-MAE models and weights in TorchGeo's and timm's registries.

TorchGeo 0.10 has no plugin mechanism: :func:`torchgeo.models.get_model`,
:func:`~torchgeo.models.get_model_weights`, :func:`~torchgeo.models.get_weight` and
:func:`~torchgeo.models.list_models` read two private module-level dicts of
``torchgeo.models.api`` (``_model`` and ``_model_weights``). This is the only module of
the package that touches them (and timm's registry). :func:`register`:

- mutates those dicts in place (TorchGeo's functions, and the tasks that imported them,
  read the module globals at call time), appending after TorchGeo's own entries so that
  TorchGeo's names always resolve first;
- never replaces or changes an entry it does not own: if a name (or a weight's
  ``str``) is already taken by TorchGeo or timm, it raises :class:`RegistryError` and
  registers nothing;
- checks that the tables still have the shape this code was written for (types, the
  entries it expects, that the public functions read these very dicts) and raises
  :class:`RegistryError` otherwise; a TorchGeo outside the tested version range only
  warns when the structure checks pass;
- is idempotent and thread-safe;
- makes :func:`~torchgeo.models.get_model_weights` of a registered name without
  weights (for example ``'scalemae_vit_base_patch16'``) raise :class:`NoWeightsError`,
  a :class:`KeyError` like TorchGeo's own for its weightless models, whose message
  names the model and lists the names that have weights. For that, after filling
  ``_model_weights`` in place, the first registration rebinds
  ``torchgeo.models.api._model_weights`` to a ``dict`` subclass holding the same
  entries in the same order, whose only difference is that message.

``import torchgeo_scalemae`` calls :func:`register`; the start-up hook (see
``docs/user/registry.rst``) does so as soon as ``torchgeo.models`` or
``torchgeo.tasks`` is imported. When the hook imports the package because ``timm`` was
imported, :func:`register` fills timm's registry only (TorchGeo is not imported) and
sets :data:`torchgeo_deferred`; the hook's TorchGeo trigger then calls it again.

.. versionadded:: 0.1
"""

import re
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn
from torchvision.models._api import WeightsEnum

from . import _timm_models
from .models import builders as _builders
from .models import weights as _weights

__all__ = (
    'SUPPORTED_TORCHGEO',
    'TIMM_MODELS',
    'TORCHGEO_MODELS',
    'TORCHGEO_WEIGHTS',
    'WEIGHT_ENUMS',
    'NoWeightsError',
    'RegistryError',
    'is_registered',
    'register',
    'torchgeo_deferred',
)

#: TorchGeo versions whose private tables this module was written and tested against:
#: ``[low, high)``.
SUPPORTED_TORCHGEO = ('0.10.1', '0.11')

#: TorchGeo model names and their builders (TorchGeo-style: ``weights`` first).
TORCHGEO_MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        'scalemae': _builders.scalemae,
        'scalemae_pretrain_vit_tiny_patch16': _builders.scalemae_pretrain_vit_tiny_patch16,
        'scalemae_pretrain_vit_base_patch16': _builders.scalemae_pretrain_vit_base_patch16,
        'scalemae_pretrain_vit_large_patch16': _builders.scalemae_pretrain_vit_large_patch16,
        'scalemae_pretrain_vit_huge_patch14': _builders.scalemae_pretrain_vit_huge_patch14,
        'scalemae_vit_tiny_patch16': _builders.scalemae_vit_tiny_patch16,
        'scalemae_vit_base_patch16': _builders.scalemae_vit_base_patch16,
        'scalemae_vit_large_patch16': _builders.scalemae_vit_large_patch16,
        'scalemae_vit_huge_patch14': _builders.scalemae_vit_huge_patch14,
    }
)

#: TorchGeo model names that have weights, and their weight enums.
TORCHGEO_WEIGHTS: Mapping[str, type[WeightsEnum]] = MappingProxyType(
    {
        'scalemae': _weights.ScaleMAEPretrainLarge16_Weights,
        'scalemae_pretrain_vit_large_patch16': _weights.ScaleMAEPretrainLarge16_Weights,
        'scalemae_vit_large_patch16': _weights.ScaleMAEEncoderLarge16_Weights,
    }
)

#: Every weight enum of the package.
WEIGHT_ENUMS: tuple[type[WeightsEnum], ...] = (
    _weights.ScaleMAEEncoderLarge16_Weights,
    _weights.ScaleMAEPretrainLarge16_Weights,
)

#: timm model names (the encoders) and their timm entrypoints.
TIMM_MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    dict(_timm_models.ENTRYPOINTS)
)

_PACKAGE = __name__.split('.')[0]
_HOOK = '_torchgeo_scalemae_autoregister'
_lock = threading.RLock()
_registered = False

#: True after a timm-only registration (the start-up hook imported the package for a
#: ``timm`` import) until TorchGeo's tables are filled as well.
torchgeo_deferred = False


class RegistryError(RuntimeError):
    """Registration is impossible: a name is taken, or a registry changed shape.

    .. versionadded:: 0.1
    """


class NoWeightsError(KeyError):
    """``get_model_weights`` of a registered Scale-MAE name that has no weights.

    A :class:`KeyError`, as TorchGeo raises for its own weightless models, so code that
    catches ``KeyError`` keeps working; the message names the model and lists the names
    of :data:`TORCHGEO_WEIGHTS`.
    """

    def __str__(self) -> str:
        """The message itself (a plain KeyError shows the repr of its argument)."""
        return str(self.args[0]) if self.args else ''


def _no_weights_error(key: object) -> KeyError:
    """The error of a ``_model_weights`` look-up that found nothing."""
    name = key if isinstance(key, str) else getattr(key, '__name__', None)
    ours = isinstance(name, str) and name in TORCHGEO_MODELS
    if ours and (key is name or TORCHGEO_MODELS[str(name)] is key):
        return NoWeightsError(
            f'torchgeo-scalemae model {name!r} has no released weights (build it '
            f'with weights=None); models with weights: {sorted(TORCHGEO_WEIGHTS)}'
        )
    return KeyError(key)


class _ModelWeights(dict[Any, Any]):
    """TorchGeo's ``_model_weights`` table; a miss on one of our names explains itself.

    Same items and the same ``KeyError`` for every other key: only the message of our
    weightless names changes (:class:`NoWeightsError`).
    """

    _torchgeo_scalemae_table = True

    def __missing__(self, key: object) -> Any:
        raise _no_weights_error(key)


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.match(r'(\d+)\.(\d+)(?:\.(\d+))?', version)
    if match is None:
        raise RegistryError(f'cannot parse the TorchGeo version {version!r}')
    return tuple(int(part or 0) for part in match.groups())


def _ours(obj: object) -> bool:
    """Whether a registry value belongs to this package (also after a reload)."""
    module = getattr(obj, '__module__', None) or ''
    return module == _PACKAGE or module.startswith(_PACKAGE + '.')


def _torchgeo_api() -> Any:
    """Import ``torchgeo.models.api`` and check that its tables have the known shape."""
    import torchgeo
    import torchgeo.models
    from torchgeo.models import api

    version = getattr(torchgeo, '__version__', '0')
    low, high = SUPPORTED_TORCHGEO
    if not _version_tuple(low) <= _version_tuple(version) < _version_tuple(high):
        warnings.warn(
            f'torchgeo-scalemae was tested with torchgeo >={low},<{high}, found '
            f'{version}; its private model tables look compatible, registering anyway',
            RuntimeWarning,
            stacklevel=3,
        )

    def fail(problem: str) -> RegistryError:
        return RegistryError(
            f'cannot register Scale-MAE in torchgeo {version}: {problem}. '
            f'torchgeo-scalemae supports torchgeo >={low},<{high}: install one, e.g. '
            f"pip install 'torchgeo>={low},<{high}'"
        )

    model = getattr(api, '_model', None)
    model_weights = getattr(api, '_model_weights', None)
    if not isinstance(model, dict) or not isinstance(model_weights, dict):
        raise fail(
            'torchgeo.models.api._model and _model_weights are no longer dicts '
            f'(found {type(model).__name__} and {type(model_weights).__name__})'
        )
    if not all(isinstance(k, str) and callable(v) for k, v in model.items()):
        raise fail('torchgeo.models.api._model no longer maps names to builders')
    anchor = model.get('scalemae_large_patch16')
    anchor_enum = model_weights.get('scalemae_large_patch16')
    if (
        anchor is None
        or anchor_enum is None
        or model_weights.get(anchor) is not anchor_enum
    ):
        raise fail(
            "torchgeo's own 'scalemae_large_patch16' is no longer keyed by name and by "
            'builder in torchgeo.models.api._model_weights'
        )
    if not all(
        isinstance(v, type) and issubclass(v, WeightsEnum)
        for v in model_weights.values()
    ):
        raise fail(
            'torchgeo weight enums no longer subclass torchvision.models.WeightsEnum'
        )
    for function, table in (
        ('get_model', '_model'),
        ('list_models', '_model'),
        ('get_model_weights', '_model_weights'),
        ('get_weight', '_model_weights'),
    ):
        api_function = getattr(api, function, None)
        if (
            api_function is None
            or getattr(torchgeo.models, function, None) is not api_function
            or getattr(api_function, '__globals__', {}).get(table)
            is not getattr(api, table)
        ):
            raise fail(f'torchgeo.models.{function} no longer reads api.{table}')
    return api


def _check_torchgeo(api: Any) -> None:
    """Raise if any of our names or weight strings is taken by someone else."""
    taken = [
        name
        for name in TORCHGEO_MODELS
        if name in api._model and not _ours(api._model[name])
    ]
    taken += [
        name
        for name in TORCHGEO_WEIGHTS
        if name in api._model_weights and not _ours(api._model_weights[name])
    ]
    if taken:
        raise RegistryError(
            f'TorchGeo already has models named {sorted(set(taken))}; torchgeo-scalemae '
            'never replaces entries it does not own, so nothing was registered'
        )
    ours = {str(member) for enum in WEIGHT_ENUMS for member in enum}
    for key, enum in api._model_weights.items():
        if isinstance(key, str) and not _ours(enum):
            clash = ours & {str(member) for member in enum}
            if clash:
                raise RegistryError(
                    f'TorchGeo weight names {sorted(clash)} (enum {enum.__name__}, model '
                    f'{key!r}) clash with torchgeo-scalemae weights; nothing was '
                    'registered'
                )


def _register_torchgeo(api: Any) -> None:
    for name, builder in TORCHGEO_MODELS.items():
        if api._model.get(name) is not builder:
            api._model[name] = builder
    for name, enum in TORCHGEO_WEIGHTS.items():
        builder = TORCHGEO_MODELS[name]
        for key in (builder, name):
            if api._model_weights.get(key) is not enum:
                api._model_weights[key] = enum
    if not getattr(type(api._model_weights), '_torchgeo_scalemae_table', False):
        # filled in place first (a reference held elsewhere sees our entries too);
        # get_model_weights reads the module global at call time: the same entries in
        # a dict whose misses on our weightless names name the model (NoWeightsError)
        api._model_weights = _ModelWeights(api._model_weights)


def _check_timm() -> None:
    import timm.models

    taken = [
        name
        for name in TIMM_MODELS
        if timm.models.is_model(name) and not _ours(timm.models.model_entrypoint(name))
    ]
    if taken:
        raise RegistryError(
            f'timm already has models named {taken}; torchgeo-scalemae never replaces '
            'entries it does not own, so nothing was registered'
        )


def _register_timm() -> None:
    import timm.models

    for name, entrypoint in TIMM_MODELS.items():
        if (
            timm.models.is_model(name)
            and timm.models.model_entrypoint(name) is entrypoint
        ):
            continue
        with warnings.catch_warnings():
            # re-registering our own entrypoint after a module reload
            warnings.filterwarnings('ignore', message=f'Overwriting {name} in registry')
            timm.models.register_model(entrypoint)


def register() -> None:
    """Register the Scale-MAE models and weights in TorchGeo and timm (idempotent).

    After this call, in TorchGeo: :func:`~torchgeo.models.get_model` builds every name
    of :data:`TORCHGEO_MODELS` (``'scalemae'`` is the paper's full model: ViT-L/16
    encoder and bandpass decoder); :func:`~torchgeo.models.get_model_weights` returns
    the enum of each name in :data:`TORCHGEO_WEIGHTS` (keyed by name and by builder, as
    TorchGeo does); :func:`~torchgeo.models.get_weight` resolves
    ``'ScaleMAEEncoderLarge16_Weights.FMOW_RGB'`` and
    ``'ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP'``. In timm:
    :func:`timm.create_model` builds every name of :data:`TIMM_MODELS` (the encoders),
    so TorchGeo's ``Classification``, ``MAE``, ``MoCo``, ``SimCLR`` and ``BYOL`` tasks
    accept them as ``model``.

    All checks run before anything is changed, so a failure registers nothing. When the
    start-up hook imports the package for a ``timm`` import (see
    ``docs/user/registry.rst``), only timm's registry is filled, without importing
    TorchGeo, and :data:`torchgeo_deferred` is set; the hook's ``torchgeo.models``
    trigger calls this function again to fill TorchGeo's tables.

    Raises:
        RegistryError: if a name or weight string is taken by TorchGeo or timm, or
            TorchGeo's tables changed shape.

    .. versionadded:: 0.1
    """
    global _registered, torchgeo_deferred
    with _lock:
        if not _registered and _for_timm_only():
            _check_timm()
            _register_timm()
            torchgeo_deferred = True
            return
        torchgeo_deferred = False  # before importing torchgeo: no second hook call
        api = _torchgeo_api()
        _check_torchgeo(api)
        _check_timm()
        _register_torchgeo(api)
        _register_timm()
        _registered = True


def _for_timm_only() -> bool:
    """Whether the start-up hook is importing the package for a ``timm`` import."""
    return bool(getattr(sys.modules.get(_HOOK), 'importing_for_timm', False))


def is_registered() -> bool:
    """Whether every name and weight is present in TorchGeo's and timm's registries.

    Returns:
        True when :func:`register` has run and its entries are still in place.

    .. versionadded:: 0.1
    """
    # imported first: after a timm-only registration the start-up hook's TorchGeo
    # trigger completes the registration during this import
    import timm.models
    from torchgeo.models import api

    if not _registered:
        return False

    return (
        all(api._model.get(n) is b for n, b in TORCHGEO_MODELS.items())
        and all(api._model_weights.get(n) is e for n, e in TORCHGEO_WEIGHTS.items())
        and all(
            timm.models.is_model(n) and timm.models.model_entrypoint(n) is f
            for n, f in TIMM_MODELS.items()
        )
    )
