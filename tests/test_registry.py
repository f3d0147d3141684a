"""Registration in TorchGeo and timm, the start-up hook, and the registry docs page."""

import hashlib
import importlib.util
import os
import pkgutil
import re
import site
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import timm
import timm.models
import torch
import torchgeo
import torchgeo.models
from torchgeo.models import api, get_model, get_model_weights, get_weight, list_models
from torchvision.models._api import Weights, WeightsEnum

import torchgeo_scalemae
from torchgeo_scalemae import registry
from torchgeo_scalemae.models import ScaleMAE, ScaleMAEEncoder
from torchgeo_scalemae.registry import (
    TIMM_MODELS,
    TORCHGEO_MODELS,
    TORCHGEO_WEIGHTS,
    WEIGHT_ENUMS,
    NoWeightsError,
    RegistryError,
)

ROOT = Path(__file__).resolve().parents[1]
STARTUP = ROOT / 'torchgeo_scalemae' / '_startup'
HOOK = '_torchgeo_scalemae_autoregister'
TINY = 'scalemae_vit_tiny_patch16'
MEMBERS = [member for enum in WEIGHT_ENUMS for member in enum]


def _snapshot() -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    return list(api._model.items()), list(api._model_weights.items())


# ------------------------------------------------------------------- TorchGeo
def test_import_registers() -> None:
    assert torchgeo_scalemae.is_registered()
    for name, builder in TORCHGEO_MODELS.items():
        assert api._model[name] is builder
        assert name in list_models()
    for name, enum in TORCHGEO_WEIGHTS.items():
        assert get_model_weights(name) is enum
        assert get_model_weights(TORCHGEO_MODELS[name]) is enum


def test_register_is_idempotent() -> None:
    before = _snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        torchgeo_scalemae.register()
        torchgeo_scalemae.register()
    after = _snapshot()
    assert [k for k, _ in before[0]] == [k for k, _ in after[0]]
    assert all(a[1] is b[1] for a, b in zip(before[0], after[0], strict=True))
    assert all(a[1] is b[1] for a, b in zip(before[1], after[1], strict=True))
    assert torchgeo_scalemae.is_registered()


@pytest.mark.parametrize('member', MEMBERS, ids=str)
def test_get_weight_round_trip(member: WeightsEnum) -> None:
    assert get_weight(str(member)) is member
    assert get_weight(str(member)) == member
    assert member.meta['model'] in TORCHGEO_MODELS


def test_torchgeo_own_entries_untouched_and_first() -> None:
    theirs = [k for k, v in api._model.items() if not registry._ours(v)]
    assert list(api._model)[: len(theirs)] == theirs  # ours come after
    assert (
        api._model['scalemae_large_patch16'] is torchgeo.models.scalemae_large_patch16
    )
    assert api._model['vit_small_patch16_224'] is torchgeo.models.vit_small_patch16_224
    own = get_weight('ScaleMAELarge16_Weights.FMOW_RGB')
    assert own is torchgeo.models.ScaleMAELarge16_Weights.FMOW_RGB
    assert (
        get_model_weights('scalemae_large_patch16')
        is torchgeo.models.ScaleMAELarge16_Weights
    )
    for key, enum in api._model_weights.items():
        if not registry._ours(enum):
            assert enum.__module__.startswith('torchgeo.'), key


def test_get_model_builds_tiny_models() -> None:
    encoder = get_model(TINY, in_chans=4)
    assert isinstance(encoder, ScaleMAEEncoder) and encoder.in_chans == 4
    model = get_model('scalemae_pretrain_vit_tiny_patch16', res=2.0)
    assert isinstance(model, ScaleMAE) and model.encoder.res == 2.0


def test_get_model_builds_every_name_on_meta() -> None:
    with torch.device('meta'):
        for name in TORCHGEO_MODELS:
            model = get_model(name)
            assert isinstance(model, ScaleMAE | ScaleMAEEncoder), name
    with torch.device('meta'):
        full = get_model('scalemae')
    assert full.encoder.embed_dim == 1024 and len(full.encoder.blocks) == 24


def test_collision_with_torchgeo_name_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api._model, TINY, torchgeo.models.vit_small_patch16_224)
    monkeypatch.delitem(api._model, 'scalemae')
    before = _snapshot()
    with pytest.raises(RegistryError, match=TINY):
        torchgeo_scalemae.register()
    assert _snapshot() == before  # nothing registered, nothing replaced
    assert api._model[TINY] is torchgeo.models.vit_small_patch16_224


def test_collision_with_torchgeo_weight_name_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = WeightsEnum(  # type: ignore[call-overload]
        'ScaleMAEEncoderLarge16_Weights',
        {'FMOW_RGB': Weights(url='x', transforms=None, meta={})},
        module='torchgeo.models.fake',
    )
    monkeypatch.setitem(api._model_weights, 'fake_model', fake)
    with pytest.raises(
        RegistryError, match=r'ScaleMAEEncoderLarge16_Weights\.FMOW_RGB'
    ):
        torchgeo_scalemae.register()


def test_collision_with_timm_name_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = timm.models.model_entrypoint('vit_tiny_patch16_224')
    real = timm.models.model_entrypoint
    monkeypatch.setattr(
        timm.models,
        'model_entrypoint',
        lambda name, *a, **k: foreign if name == TINY else real(name, *a, **k),
    )
    with pytest.raises(RegistryError, match='timm already has'):
        torchgeo_scalemae.register()


@pytest.mark.parametrize(
    ('attribute', 'value', 'message'),
    [
        ('_model', [], 'no longer dicts'),
        ('_model_weights', (), 'no longer dicts'),
        ('get_weight', lambda name: None, 'get_weight no longer reads'),
    ],
)
def test_changed_table_shape_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, attribute: str, value: Any, message: str
) -> None:
    monkeypatch.setattr(api, attribute, value)
    with pytest.raises(RegistryError, match=message) as info:
        torchgeo_scalemae.register()
    assert 'supports torchgeo >=0.10.1,<0.11' in str(info.value)


def test_missing_anchor_entry_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(api._model_weights, 'scalemae_large_patch16')
    with pytest.raises(RegistryError, match='scalemae_large_patch16'):
        torchgeo_scalemae.register()


def test_untested_version_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchgeo, '__version__', '0.11.0')
    with pytest.warns(RuntimeWarning, match='tested with torchgeo >=0.10.1,<0.11'):
        torchgeo_scalemae.register()
    assert torchgeo_scalemae.is_registered()


WEIGHTLESS = sorted(set(TORCHGEO_MODELS) - set(TORCHGEO_WEIGHTS))


@pytest.mark.parametrize('name', WEIGHTLESS)
def test_get_model_weights_of_weightless_name_explains(name: str) -> None:
    # a KeyError, as TorchGeo raises for its own weightless models, naming the model
    # and the names that have weights
    for key in (name, TORCHGEO_MODELS[name]):
        with pytest.raises(KeyError) as info:
            get_model_weights(key)
        assert isinstance(info.value, NoWeightsError)
        message = str(info.value)
        assert f"'{name}' has no released weights" in message
        for with_weights in TORCHGEO_WEIGHTS:
            assert with_weights in message


def test_weights_table_filled_in_place_then_rebound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    theirs = {k: v for k, v in api._model_weights.items() if not registry._ours(v)}
    monkeypatch.setattr(api, '_model_weights', theirs)  # a plain dict, as TorchGeo's
    torchgeo_scalemae.register()
    table = api._model_weights
    assert table is not theirs and type(table).__name__ == '_ModelWeights'
    # a reference to the old dict sees our entries too, in the same order
    assert list(table.items()) == list(theirs.items())
    assert theirs['scalemae'] is TORCHGEO_WEIGHTS['scalemae']
    torchgeo_scalemae.register()  # idempotent: no second rebinding
    assert api._model_weights is table


def test_get_model_weights_other_misses_unchanged() -> None:
    weightless = [n for n in api._model if n not in api._model_weights]
    for key in ['no_such_model', *[n for n in weightless if not n.startswith('scale')]]:
        with pytest.raises(KeyError) as info:
            get_model_weights(key)
        assert type(info.value) is KeyError and info.value.args == (key,)
    assert isinstance(api._model_weights, dict)
    assert get_model_weights('scalemae_large_patch16') is (
        torchgeo.models.ScaleMAELarge16_Weights
    )


# ------------------------------------------------------------------------ timm
def test_timm_names_and_pretrained_cfgs() -> None:
    assert set(timm.list_models('scalemae*')) == set(TIMM_MODELS)
    assert timm.list_models('scalemae*', pretrained=True) == [
        'scalemae_vit_large_patch16.fmow_rgb'
    ]
    for name, entrypoint in TIMM_MODELS.items():
        assert timm.models.model_entrypoint(name) is entrypoint
    cfg = timm.models.get_pretrained_cfg('scalemae_vit_large_patch16')
    assert (
        cfg is not None
        and cfg.url == get_weight('ScaleMAEEncoderLarge16_Weights.FMOW_RGB').url
    )
    assert cfg.num_classes == 0 and cfg.license == 'cc-by-nc-4.0'


def test_timm_create_model_in_chans_classes_features() -> None:
    model = timm.create_model(TINY, in_chans=4, num_classes=3, res=2.0)
    assert isinstance(model, ScaleMAEEncoder)
    assert model.pretrained_cfg['architecture'] == TINY
    x = torch.randn(2, 4, 32, 48)
    assert model(x).shape == (2, 3)
    assert model.res == 2.0
    features = timm.create_model(TINY, in_chans=4, features_only=True)
    maps = features(x)
    assert [tuple(m.shape) for m in maps] == [(2, 64, 2, 3)] * 2
    assert features.feature_info.channels() == [64, 64]
    final, inter = model.forward_intermediates(
        x, indices=1, res=torch.tensor([1.0, 2.0])
    )
    assert final.shape == (2, 7, 64) and inter[0].shape == (2, 64, 2, 3)


def test_timm_pretrained_loads_local_file(tmp_path: Path) -> None:
    # the ``fmow_rgb`` cfg with its file redirected (timm's pretrained_cfg_overlay)
    source = timm.create_model(TINY)
    state = {**source.state_dict(), 'pos_embed': torch.zeros(1, 197, 64)}
    path = tmp_path / 'tiny.pth'
    torch.save(state, path)
    model = timm.create_model(
        TINY, pretrained=True, in_chans=5, pretrained_cfg_overlay={'file': str(path)}
    )
    assert model.patch_embed.proj.weight.shape[1] == 5  # timm adapted the first conv
    torch.testing.assert_close(model.cls_token, source.cls_token)


@pytest.mark.parametrize('task', ['Classification', 'MoCo', 'SimCLR', 'BYOL', 'MAE'])
def test_torchgeo_tasks_accept_timm_names(task: str) -> None:
    import torchgeo.tasks

    cls = getattr(torchgeo.tasks, task)
    kwargs: dict[str, Any] = {'model': TINY, 'in_channels': 4}
    if task == 'Classification':
        kwargs['num_classes'] = 3
    if task == 'MAE':
        kwargs['size'] = 224  # TorchGeo's MAE needs the model's default img_size
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        module = cls(**kwargs)
    backbone = getattr(module, 'model', None) or module.backbone
    found = [m for m in backbone.modules() if isinstance(m, ScaleMAEEncoder)]
    assert found and found[0].in_chans == 4
    if task == 'Classification':
        assert module(torch.randn(2, 4, 32, 32)).shape == (2, 3)
    if task == 'MAE':
        # lightly's wrapper reads vit.pos_embed: the fixed table at res = 1
        batch = {'image': torch.rand(2, 4, 224, 224)}
        loss = module.training_step(batch, 0)
        assert torch.isfinite(loss)
        loss.backward()


def test_segmentation_accepts_timm_universal_backbone() -> None:
    # smp's 'tu-' encoders go through timm features_only (ViT-B: DPT needs 4 blocks)
    from torchgeo.tasks import SemanticSegmentation

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        task = SemanticSegmentation(
            model='dpt',
            backbone='tu-scalemae_vit_base_patch16',
            in_channels=4,
            num_classes=3,
        )
    assert any(isinstance(m, ScaleMAEEncoder) for m in task.model.modules())
    with torch.no_grad():
        assert task.model(torch.randn(1, 4, 64, 64)).shape == (1, 3, 64, 64)


def test_classification_loads_weights_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo.tasks import Classification

    member = get_weight('ScaleMAEEncoderLarge16_Weights.FMOW_RGB')
    source = timm.create_model(TINY)
    state = {**source.state_dict(), 'pos_embed': torch.zeros(1, 197, 64)}
    torch.save(state, tmp_path / 'w.tmp')
    digest = hashlib.sha256((tmp_path / 'w.tmp').read_bytes()).hexdigest()
    path = (tmp_path / 'w.tmp').rename(tmp_path / f'w-{digest[:8]}.pth')
    monkeypatch.setattr(member.value, 'url', path.as_uri())
    task = Classification(model=TINY, weights=str(member), in_channels=3, num_classes=3)
    assert list(dict(task.model.named_children()))[-1] == 'head'
    torch.testing.assert_close(task.model.cls_token, source.cls_token)
    torch.testing.assert_close(
        task.model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight
    )


def test_register_callback_is_a_lightning_callback() -> None:
    from lightning.pytorch import Callback

    callback = torchgeo_scalemae.Register()
    assert isinstance(callback, Callback)
    assert type(callback).__name__ == 'Register'
    with pytest.raises(AttributeError, match='no attribute'):
        torchgeo_scalemae.NoSuchThing  # noqa: B018


# -------------------------------------------------------- start-up hook (unit)
@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """The hook module loaded from source, wired to throw-away fake packages."""
    spec = importlib.util.spec_from_file_location(
        'hook_under_test', STARTUP / f'{HOOK}.py'
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, body in {
        'fake_tg/__init__.py': '',
        'fake_tg/models.py': 'VALUE = 1\n',
        'fake_tg/other.py': '',
        'fake_plugin/__init__.py': (
            'import sys\nimport fake_tg\n'
            'REGISTERED = fake_tg.models.VALUE  # reads the parent attribute\n'
        ),
        'broken_plugin/__init__.py': 'raise RuntimeError("tables changed")\n',
        'fake_timm/__init__.py': 'VALUE = 2\n',
        # a plugin whose register() follows the hook's flag, like registry.register
        'timm_plugin/__init__.py': (
            'import sys\nfrom . import registry\n'
            "registry.register(sys.modules['hook_under_test'].importing_for_timm)\n"
        ),
        'timm_plugin/registry.py': (
            'CALLS = []\ntorchgeo_deferred = False\n'
            'def register(for_timm=False):\n'
            '    global torchgeo_deferred\n'
            '    CALLS.append(for_timm)\n'
            '    torchgeo_deferred = for_timm\n'
        ),
    }.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(module, 'TRIGGERS', frozenset({'fake_tg.models'}))
    monkeypatch.setattr(module, 'TIMM_TRIGGERS', frozenset({'fake_timm'}))
    monkeypatch.setitem(sys.modules, 'hook_under_test', module)
    monkeypatch.setattr(module, 'PACKAGE', 'fake_plugin')
    monkeypatch.delenv(module.ENV_VAR, raising=False)
    meta_path = list(sys.meta_path)
    # drop the real hook's finder (installed in this environment) while testing
    sys.meta_path[:] = [f for f in meta_path if not getattr(f, module.MARKER, False)]
    yield module
    sys.meta_path[:] = meta_path
    for name in list(sys.modules):
        if name.split('.')[0] in {
            'fake_tg',
            'fake_plugin',
            'broken_plugin',
            'fake_timm',
            'timm_plugin',
        }:
            del sys.modules[name]


def test_hook_imports_plugin_after_trigger(hook: ModuleType) -> None:
    hook.install()
    hook.install()  # once only
    assert sum(getattr(f, hook.MARKER, False) for f in sys.meta_path) == 1
    assert getattr(sys.meta_path[0], hook.MARKER, False)
    import fake_tg.other  # not a trigger

    assert 'fake_plugin' not in sys.modules
    import fake_tg.models

    assert sys.modules['fake_plugin'].REGISTERED == 1
    loader = fake_tg.models.__loader__
    assert 'exec_module' not in vars(loader)  # the loader is left as found
    hook.uninstall()
    assert not any(getattr(f, hook.MARKER, False) for f in sys.meta_path)


def test_hook_timm_trigger_registers_timm_then_torchgeo(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, 'PACKAGE', 'timm_plugin')
    hook.install()
    import fake_timm

    plugin = sys.modules['timm_plugin']
    assert fake_timm.VALUE == 2
    assert plugin.registry.CALLS == [True]  # imported for timm only
    assert plugin.registry.torchgeo_deferred and not hook.importing_for_timm
    import fake_timm as again  # a second import runs nothing

    assert again is fake_timm and plugin.registry.CALLS == [True]
    import fake_tg.models  # the TorchGeo trigger completes the registration

    assert plugin.registry.CALLS == [True, False]
    assert not plugin.registry.torchgeo_deferred
    assert 'exec_module' not in vars(fake_tg.models.__loader__)


def test_hook_timm_trigger_after_package_import_does_nothing(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, 'PACKAGE', 'timm_plugin')
    import timm_plugin  # explicit import first: register() with the flag unset

    hook.install()
    import fake_tg.models  # noqa: F401
    import fake_timm  # noqa: F401

    assert timm_plugin.registry.CALLS == [False]


def test_hook_install_with_timm_already_imported(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, 'PACKAGE', 'timm_plugin')
    import fake_timm  # noqa: F401

    hook.install()
    assert sys.modules['timm_plugin'].registry.CALLS == [True]
    assert any(getattr(f, hook.MARKER, False) for f in sys.meta_path)  # still watches


def test_hook_deferred_registration_failure_warns(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, 'PACKAGE', 'timm_plugin')
    hook.install()
    import fake_timm  # noqa: F401

    registry_module = sys.modules['timm_plugin.registry']

    def fail() -> None:
        raise RuntimeError('tables changed later')

    monkeypatch.setattr(registry_module, 'register', fail)
    with pytest.warns(RuntimeWarning, match='tables changed later'):
        import fake_tg.models
    assert fake_tg.models.VALUE == 1


def test_hook_ignores_other_names(hook: ModuleType) -> None:
    finder = hook.Finder()
    assert finder.find_spec('json') is None
    assert finder.find_spec('fake_tg.nonexistent') is None


@pytest.mark.parametrize('value', ['0', 'false', 'No', ' off '])
def test_hook_switched_off(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(hook.ENV_VAR, value)
    assert not hook.enabled()
    hook.install()
    assert not any(getattr(f, hook.MARKER, False) for f in sys.meta_path)


def test_hook_failure_warns_and_keeps_torchgeo_importable(
    hook: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, 'PACKAGE', 'broken_plugin')
    hook.install()
    with pytest.warns(RuntimeWarning, match='tables changed'):
        import fake_tg.models
    assert fake_tg.models.VALUE == 1


def test_startup_files_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    pth = (STARTUP / 'torchgeo_scalemae_autoregister.pth').read_text().splitlines()
    start = (STARTUP / 'torchgeo_scalemae_autoregister.start').read_text().splitlines()
    assert pth == [f'import {HOOK} as _h; _h.install()']
    entries = [line for line in start if line.strip() and not line.startswith('#')]
    assert entries == [f'{HOOK}:install']
    # what Python >= 3.15 does with a .start line (PEP 829): resolve, then call
    monkeypatch.syspath_prepend(str(STARTUP))
    entry_point = pkgutil.resolve_name(entries[0])
    assert callable(entry_point) and entry_point.__name__ == 'install'
    source = (STARTUP / f'{HOOK}.py').read_text()
    imports = re.findall(r'^(?:import|from) (\S+)', source, flags=re.MULTILINE)
    assert imports == ['os', 'sys']  # nothing heavy at start-up
    pyproject = (ROOT / 'pyproject.toml').read_text()
    for name in (f'{HOOK}.py', 'torchgeo_scalemae_autoregister.pth'):
        assert f'"torchgeo_scalemae/_startup/{name}" = "{name}"' in pyproject


# ------------------------------------------------- start-up hook (installed)
def _installed_hook() -> Path | None:
    """The site-packages folder holding the hook's .pth, if it is installed here."""
    folders = [*site.getsitepackages(), sysconfig.get_paths()['purelib']]
    for folder in folders:
        if (Path(folder) / 'torchgeo_scalemae_autoregister.pth').exists():
            return Path(folder)
    return None


def _require_installed_hook() -> Path:
    folder = _installed_hook()
    problem = None
    if folder is None:
        problem = (
            'the start-up hook is not installed in this environment; run '
            '`pip install -e .` (scripts/test.sh does) to test the no-import route'
        )
    elif (folder / f'{HOOK}.py').read_bytes() != (STARTUP / f'{HOOK}.py').read_bytes():
        problem = (
            f'the installed {folder / HOOK}.py differs from the source (editable '
            'installs copy it); run `pip install -e .` again'
        )
    if problem:
        if os.environ.get('CI'):
            pytest.fail(problem + ' (CI is set, so this is an error, not a skip)')
        pytest.skip(problem)
    assert folder is not None
    return folder


NO_IMPORT_SCRIPT = """
import sys, torch
from torchgeo.models import get_model, get_weight, list_models
assert 'torchgeo_scalemae' in sys.modules, 'hook did not register'
from torchgeo_scalemae.registry import TORCHGEO_MODELS, WEIGHT_ENUMS
assert set(TORCHGEO_MODELS) <= set(list_models())
with torch.device('meta'):
    for name in TORCHGEO_MODELS:
        get_model(name)
for enum in WEIGHT_ENUMS:
    for member in enum:
        assert get_weight(str(member)) is member
print('OK', type(get_model('scalemae_vit_tiny_patch16')).__name__)
"""


def _fresh_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    environment.pop('PYTHONPATH', None)
    return subprocess.run(
        [sys.executable, '-c', code],
        check=False,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.xdist_group('subprocess')
def test_no_import_route_in_fresh_interpreter() -> None:
    _require_installed_hook()
    result = _fresh_python(NO_IMPORT_SCRIPT, TORCHGEO_SCALEMAE_AUTOREGISTER='1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'OK ScaleMAEEncoder'


TIMM_ONLY_SCRIPT = """
import sys, timm, torch
names = timm.list_models('scalemae*')
model = timm.create_model('scalemae_vit_tiny_patch16', in_chans=4, num_classes=3)
logits = model(torch.zeros(1, 4, 32, 32))
heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'torchgeo')
print(','.join(names), type(model).__name__, tuple(logits.shape), heavy, sep='|')
"""


@pytest.mark.xdist_group('subprocess')
def test_timm_only_program_creates_models_without_torchgeo() -> None:
    _require_installed_hook()
    result = _fresh_python(TIMM_ONLY_SCRIPT, TORCHGEO_SCALEMAE_AUTOREGISTER='1')
    assert result.returncode == 0, result.stderr[-3000:]
    names, kind, shape, heavy = result.stdout.strip().split('|')
    assert set(names.split(',')) == set(TIMM_MODELS)
    assert (kind, shape) == ('ScaleMAEEncoder', '(1, 3)')
    assert heavy == '[]'  # torchgeo was never imported


@pytest.mark.xdist_group('subprocess')
def test_timm_first_then_torchgeo_completes_registration() -> None:
    _require_installed_hook()
    code = (
        'import timm, sys; import torchgeo_scalemae.registry as r; '
        'deferred = r.torchgeo_deferred; '
        'from torchgeo.models import get_model_weights, list_models; '
        "print(deferred, r.torchgeo_deferred, 'scalemae' in list_models(), "
        "get_model_weights('scalemae').__name__, r.is_registered())"
    )
    result = _fresh_python(code, TORCHGEO_SCALEMAE_AUTOREGISTER='1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        'True',
        'False',
        'True',
        'ScaleMAEPretrainLarge16_Weights',
        'True',
    ]


@pytest.mark.xdist_group('subprocess')
def test_no_import_route_switched_off() -> None:
    _require_installed_hook()
    code = (
        'import sys; import torchgeo.models as m; '
        "print(sys.modules.get('torchgeo_scalemae') is None, "
        "'scalemae' in m.list_models())"
    )
    result = _fresh_python(code, TORCHGEO_SCALEMAE_AUTOREGISTER='0')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ['True', 'False']


@pytest.mark.xdist_group('subprocess')
def test_startup_imports_nothing_heavy() -> None:
    _require_installed_hook()
    code = (
        'import sys; '
        "print(any(f.__class__.__module__ == '" + HOOK + "' for f in sys.meta_path), "
        "sorted(m for m in ('torch', 'torchgeo', 'torchgeo_scalemae', 'timm') "
        'if m in sys.modules))'
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == 'True []'


@pytest.mark.xdist_group('subprocess')
def test_cli_config_with_register_callback(tmp_path: Path) -> None:
    # hook off: only the config's Register callback makes the encoder name known
    from tests.evaluation.fake_datasets import make_ucmerced

    make_ucmerced(tmp_path / 'data', per_split=2)
    code = (
        'import sys; from torchgeo.main import main; main(sys.argv[1:]); '
        "print('OK', 'torchgeo_scalemae' in sys.modules)"
    )
    result = subprocess.run(
        [
            sys.executable,
            '-c',
            code,
            'fit',
            f'--config={ROOT / "tests" / "conf" / "registry_classification.yaml"}',
            f'--data.dict_kwargs.root={tmp_path / "data"}',
            f'--trainer.default_root_dir={tmp_path}',
        ],
        check=False,
        cwd=tmp_path,
        env={**os.environ, 'TORCHGEO_SCALEMAE_AUTOREGISTER': '0'},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == 'OK True'


# ------------------------------------------------------------------------ docs
def test_docs_page_lists_every_name_and_weight() -> None:
    text = (ROOT / 'docs' / 'user' / 'registry.rst').read_text()
    documented = set(re.findall(r'``(scalemae\w*)``', text))
    registered = set(TORCHGEO_MODELS) | set(TIMM_MODELS)
    assert registered <= documented, registered - documented
    assert documented - registered <= {'scalemae_large_patch16'}
    for member in MEMBERS:
        assert f'``{member}``' in text, member
    for name, enum in TORCHGEO_WEIGHTS.items():
        assert re.search(rf'``{name}``\s*\|[^\n]*{enum.__name__}', text), name
