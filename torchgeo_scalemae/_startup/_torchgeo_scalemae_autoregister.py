# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Start-up hook: register torchgeo-scalemae when TorchGeo or timm is imported.

This file is installed as a *top-level* module (``_torchgeo_scalemae_autoregister``) next
to ``torchgeo_scalemae_autoregister.pth`` and ``torchgeo_scalemae_autoregister.start`` in
``site-packages``. At interpreter start-up, the ``.pth`` import line (Python < 3.15) or
the PEP 829 ``.start`` entry point (Python >= 3.15, where the ``.start`` file disables the
``.pth`` import line) calls :func:`install`, which only inserts a tiny finder at the front of
:data:`sys.meta_path`. Nothing else is imported: no torch, no TorchGeo, not even
:mod:`importlib.util` (``benchmarks/startup_overhead.py`` measures the cost).

When ``torchgeo.models`` or ``torchgeo.tasks`` is later imported, the finder wraps that
module's loader so that, right after the module body has run, ``torchgeo_scalemae`` is
imported (its ``__init__`` calls :func:`torchgeo_scalemae.register`). When ``timm`` is
imported first, the package is imported with :data:`importing_for_timm` set: ``register``
then fills timm's registry only (timm and the encoder modules, never TorchGeo, which
takes seconds to import) and leaves TorchGeo's tables to the ``torchgeo.models`` trigger,
which completes the registration if TorchGeo is imported later.

Set ``TORCHGEO_SCALEMAE_AUTOREGISTER=0`` (or ``false``, ``no``, ``off``) to switch the
hook off; ``import torchgeo_scalemae`` then remains the explicit route.

.. versionadded:: 0.1
"""

import os
import sys

# Only os and sys (already loaded by site.py) are imported at start-up; typing names are
# for the type checker only (mypy treats any ``TYPE_CHECKING`` name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

ENV_VAR = 'TORCHGEO_SCALEMAE_AUTOREGISTER'
TRIGGERS = frozenset({'torchgeo.models', 'torchgeo.tasks'})
#: Modules whose import registers the timm entrypoints only (TorchGeo is not imported).
TIMM_TRIGGERS = frozenset({'timm'})
PACKAGE = 'torchgeo_scalemae'
_OFF = frozenset({'0', 'false', 'no', 'off'})
MARKER = '_torchgeo_scalemae_autoregister'
_attempted = False  # one import try per process: a failure warns once, not per trigger
#: True while this hook imports the package for a timm trigger: ``register()`` then
#: registers in timm only and defers TorchGeo (read by ``torchgeo_scalemae.registry``).
importing_for_timm = False


def enabled() -> bool:
    """Return whether automatic registration is switched on.

    Returns:
        False when the environment variable ``TORCHGEO_SCALEMAE_AUTOREGISTER`` is one of
        ``0``, ``false``, ``no`` or ``off`` (case-insensitive), else True.
    """
    return os.environ.get(ENV_VAR, '1').strip().lower() not in _OFF


def _bind_to_parent(module: 'ModuleType') -> None:
    """Set ``torchgeo.models`` on ``torchgeo`` now rather than after exec_module.

    The import system binds a submodule to its parent package only after the loader
    returns; the registration code runs before that, and on Python >= 3.12 reading
    ``torchgeo.models`` then raises "cannot access submodule ... (most likely due to a
    circular import)". Binding early sets the same attribute the import system sets.
    """
    parent, _, child = module.__name__.rpartition('.')
    package = sys.modules.get(parent)
    if package is not None and sys.modules.get(module.__name__) is module:
        setattr(package, child, module)


def _warn(error: Exception) -> None:
    import warnings

    warnings.warn(
        f'torchgeo-scalemae automatic registration failed ({type(error).__name__}: '
        f'{error}); TorchGeo and timm work without the Scale-MAE names. '
        f'`import {PACKAGE}` raises the full error; set {ENV_VAR}=0 to silence '
        'this hook.',
        RuntimeWarning,
        stacklevel=3,
    )


def _finish_deferred() -> None:
    """Complete a timm-only registration now that TorchGeo's models are importable."""
    registry = sys.modules.get(PACKAGE + '.registry')
    if not getattr(registry, 'torchgeo_deferred', False):
        return
    try:
        registry.register()  # type: ignore[union-attr]
    except Exception as error:  # noqa: BLE001 (report, but never break torchgeo)
        _warn(error)


def _register_now(for_timm: bool = False) -> None:
    """Import torchgeo_scalemae (which registers itself), never breaking TorchGeo.

    Args:
        for_timm: the trigger is a timm module: import the package with
            :data:`importing_for_timm` set, so that TorchGeo is not imported.
    """
    global _attempted, importing_for_timm
    if not enabled():
        return
    if PACKAGE in sys.modules:
        # Already imported, or being imported right now (its own import of timm or
        # torchgeo.models fired this hook): its __init__ registers at its end. After a
        # timm-only registration, a TorchGeo trigger fills TorchGeo's tables.
        if not for_timm:
            _finish_deferred()
        return
    if _attempted:
        return
    _attempted = True
    importing_for_timm = for_timm
    try:
        __import__(PACKAGE)
    except Exception as error:  # noqa: BLE001 (report, but never break torchgeo)
        _warn(error)
    finally:
        importing_for_timm = False


class _Loader:
    """Loader proxy that runs the real loader, then registers (fallback path)."""

    def __init__(self, loader: 'Any', for_timm: bool = False) -> None:
        self._loader = loader
        self._for_timm = for_timm

    def __getattr__(self, name: str) -> 'Any':
        return getattr(self._loader, name)

    def create_module(self, spec: 'Any') -> 'ModuleType | None':
        result: ModuleType | None = self._loader.create_module(spec)
        return result

    def exec_module(self, module: 'ModuleType') -> None:
        self._loader.exec_module(module)
        _bind_to_parent(module)
        _register_now(self._for_timm)


class Finder:
    """A :data:`sys.meta_path` finder reacting only to the trigger modules.

    The triggers are :data:`TRIGGERS` (TorchGeo) and :data:`TIMM_TRIGGERS`. For any other
    name :meth:`find_spec` returns None at once (a set look-up). For a
    trigger it asks the finders after itself for the real spec and wraps the loader's
    ``exec_module`` so that registration runs right after the module body.
    """

    _torchgeo_scalemae_autoregister = True

    def find_spec(
        self, fullname: str, path: 'Sequence[str] | None' = None, target: 'Any' = None
    ) -> 'Any':
        """Find the spec of a trigger module and hook its loader.

        Args:
            fullname: Fully qualified module name.
            path: The parent package's ``__path__``.
            target: Module object for reloads.

        Returns:
            The real module spec with a hooked loader, or None (not a trigger, or no
            other finder knows the module).
        """
        for_timm = fullname in TIMM_TRIGGERS
        if not for_timm and fullname not in TRIGGERS:
            return None
        for finder in sys.meta_path:
            if getattr(finder, MARKER, False):
                continue
            find_spec = getattr(finder, 'find_spec', None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        original = loader.exec_module

        def exec_module(module: 'ModuleType') -> None:
            try:
                original(module)
            finally:
                # restore the class method so the loader looks untouched afterwards
                loader.__dict__.pop('exec_module', None)
            _bind_to_parent(module)
            _register_now(for_timm)

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):
            spec.loader = _Loader(loader, for_timm)
        return spec


def install() -> None:
    """Append the finder to :data:`sys.meta_path` unless switched off or present.

    Called at interpreter start-up by the ``.pth`` line or the ``.start`` entry point.
    If a trigger module is already imported, registration runs at once (for timm alone
    when only a timm trigger is, the finder then still watches TorchGeo's).
    """
    if not enabled():
        return
    if any(getattr(finder, MARKER, False) for finder in sys.meta_path):
        return
    if any(name in sys.modules for name in TRIGGERS):
        _register_now()
        return
    if any(name in sys.modules for name in TIMM_TRIGGERS):
        _register_now(for_timm=True)
    # first, so it sees the trigger names before the path-based finders answer
    sys.meta_path.insert(0, Finder())


def uninstall() -> None:
    """Remove the finder from :data:`sys.meta_path` (for tests)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, MARKER, False)]
