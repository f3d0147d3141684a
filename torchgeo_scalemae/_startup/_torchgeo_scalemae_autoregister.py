# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Start-up hook: register torchgeo-scalemae when TorchGeo's models or tasks are imported.

This file is installed as a *top-level* module (``_torchgeo_scalemae_autoregister``) next
to ``torchgeo_scalemae_autoregister.pth`` and ``torchgeo_scalemae_autoregister.start`` in
``site-packages``. At interpreter start-up, the ``.pth`` import line (Python < 3.15) or
the PEP 829 ``.start`` entry point (Python >= 3.15, where the ``.start`` file disables the
``.pth`` import line) calls :func:`install`, which only inserts a tiny finder at the front of
:data:`sys.meta_path`. Nothing else is imported: no torch, no TorchGeo, not even
:mod:`importlib.util` (``benchmarks/startup_overhead.py`` measures the cost).

When ``torchgeo.models`` or ``torchgeo.tasks`` is later imported, the finder wraps that
module's loader so that, right after the module body has run, ``torchgeo_scalemae`` is
imported (its ``__init__`` calls :func:`torchgeo_scalemae.register`).

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
PACKAGE = 'torchgeo_scalemae'
_OFF = frozenset({'0', 'false', 'no', 'off'})
MARKER = '_torchgeo_scalemae_autoregister'
_attempted = False  # one try per process: a failure warns once, not per trigger


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


def _register_now() -> None:
    """Import torchgeo_scalemae (which registers itself), never breaking TorchGeo."""
    global _attempted
    if _attempted or not enabled() or PACKAGE in sys.modules:
        # Already imported, or being imported right now (its own import of
        # torchgeo.models fired this hook): its __init__ registers at its end.
        return
    _attempted = True
    try:
        __import__(PACKAGE)
    except Exception as error:  # noqa: BLE001 (report, but never break torchgeo)
        import warnings

        warnings.warn(
            f'torchgeo-scalemae automatic registration failed ({type(error).__name__}: '
            f'{error}); TorchGeo works without the Scale-MAE names. '
            f'`import {PACKAGE}` raises the full error; set {ENV_VAR}=0 to silence '
            'this hook.',
            RuntimeWarning,
            stacklevel=2,
        )


class _Loader:
    """Loader proxy that runs the real loader, then registers (fallback path)."""

    def __init__(self, loader: 'Any') -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> 'Any':
        return getattr(self._loader, name)

    def create_module(self, spec: 'Any') -> 'ModuleType | None':
        result: ModuleType | None = self._loader.create_module(spec)
        return result

    def exec_module(self, module: 'ModuleType') -> None:
        self._loader.exec_module(module)
        _bind_to_parent(module)
        _register_now()


class Finder:
    """A :data:`sys.meta_path` finder reacting only to the TorchGeo trigger modules.

    For any other name :meth:`find_spec` returns None at once (a set look-up). For a
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
        if fullname not in TRIGGERS:
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
            _register_now()

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):
            spec.loader = _Loader(loader)
        return spec


def install() -> None:
    """Append the finder to :data:`sys.meta_path` unless switched off or present.

    Called at interpreter start-up by the ``.pth`` line or the ``.start`` entry point.
    If a trigger module is already imported, registration runs at once.
    """
    if not enabled():
        return
    if any(getattr(finder, MARKER, False) for finder in sys.meta_path):
        return
    if any(name in sys.modules for name in TRIGGERS):
        _register_now()
        return
    # first, so it sees the trigger names before the path-based finders answer
    sys.meta_path.insert(0, Finder())


def uninstall() -> None:
    """Remove the finder from :data:`sys.meta_path` (for tests)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, MARKER, False)]
