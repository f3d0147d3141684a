"""The bundled configs: package data, ``torchgeo-scalemae-config``, and the templates."""

import importlib.util
import re
import shutil
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import torch

from torchgeo_scalemae import configs_cli
from torchgeo_scalemae.configs_cli import (
    config_dir,
    copy_config,
    find_config,
    list_configs,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
REPO_NAMES = sorted(
    p.relative_to(CONFIGS).with_suffix('').as_posix() for p in CONFIGS.rglob('*.yaml')
)


def test_lists_the_repository_configs() -> None:
    assert config_dir() == CONFIGS  # a clone or an editable install
    assert list_configs() == REPO_NAMES
    assert 'pretrain/quickstart' in REPO_NAMES


@pytest.mark.parametrize(
    'name',
    ['pretrain/quickstart', 'pretrain/quickstart.yaml', 'quickstart', ' /quickstart/ '],
)
def test_find_config_accepts_name_forms(name: str) -> None:
    assert find_config(name) == CONFIGS / 'pretrain' / 'quickstart.yaml'


@pytest.mark.parametrize(
    ('name', 'error', 'match'),
    [
        (None, TypeError, 'got None'),
        (3, TypeError, 'got 3'),
        (['quickstart'], TypeError, r"\['quickstart'\]"),
        ('', ValueError, "got ''"),
        ('.yaml', ValueError, "got '.yaml'"),
        ('nonexistent', ValueError, r"'nonexistent'; available: \["),
    ],
)
def test_find_config_rejects_bad_names(name: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        find_config(name)  # type: ignore[arg-type]


def test_ambiguous_bare_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for folder in ('a', 'b'):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / 'x.yaml').write_text('seed_everything: 0\n')
    monkeypatch.setattr(configs_cli, 'config_dir', lambda: tmp_path)
    with pytest.raises(ValueError, match=r"'x' is ambiguous: \['a/x', 'b/x'\]"):
        find_config('x')
    assert find_config('b/x') == tmp_path / 'b' / 'x.yaml'


def test_copy_into_folder_and_to_file(tmp_path: Path) -> None:
    source = CONFIGS / 'pretrain' / 'quickstart.yaml'
    written = copy_config('quickstart', tmp_path)
    assert written == tmp_path / 'quickstart.yaml'
    assert written.read_bytes() == source.read_bytes()
    other = copy_config('eval/knn_folder', tmp_path / 'mine.yaml')
    assert other.read_bytes() == (CONFIGS / 'eval' / 'knn_folder.yaml').read_bytes()


def test_copy_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / 'quickstart.yaml'
    target.write_text('mine\n')
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        copy_config('quickstart', tmp_path)
    assert target.read_text() == 'mine\n'
    copy_config('quickstart', tmp_path, overwrite=True)
    assert target.read_text().startswith('# Scale-MAE quickstart')


@pytest.mark.parametrize('dest', [None, '', 3])
def test_copy_rejects_bad_dest(dest: object) -> None:
    with pytest.raises(TypeError, match='dest must be'):
        copy_config('quickstart', dest)  # type: ignore[arg-type]


def test_copy_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='does not exist'):
        copy_config('quickstart', tmp_path / 'no' / 'such.yaml')


def test_main_list_show_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(['list']) == 0
    assert capsys.readouterr().out.split() == REPO_NAMES
    assert main(['show', 'pretrain/geotiff_template']) == 0
    assert capsys.readouterr().out == (
        (CONFIGS / 'pretrain' / 'geotiff_template.yaml').read_text()
    )
    assert main(['copy', 'knn_eurosat', str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / 'knn_eurosat.yaml')
    assert main(['copy', 'knn_eurosat', str(tmp_path)]) == 2  # exists
    assert '--force' in capsys.readouterr().err
    assert main(['copy', 'knn_eurosat', str(tmp_path), '--force']) == 0
    assert main(['show', 'nope']) == 2
    assert "no bundled config named 'nope'" in capsys.readouterr().err


def _installed_copy(site: Path) -> ModuleType:
    """configs_cli loaded from a wheel-like layout: site/torchgeo_scalemae/..."""
    package = site / 'torchgeo_scalemae'
    shutil.copytree(CONFIGS, package / 'configs')
    shutil.copy(Path(configs_cli.__file__), package / 'configs_cli.py')
    spec = importlib.util.spec_from_file_location(
        'installed_configs_cli', package / 'configs_cli.py'
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_layout_reads_package_data(tmp_path: Path) -> None:
    installed = _installed_copy(tmp_path / 'site')
    assert installed.config_dir() == tmp_path / 'site' / 'torchgeo_scalemae' / 'configs'
    assert installed.list_configs() == REPO_NAMES


def test_wheel_ships_the_configs_folder() -> None:
    # hatchling's force-include maps the repository's configs/ (the single source,
    # not duplicated in git) to torchgeo_scalemae/configs in the wheel
    pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    wheel = pyproject['tool']['hatch']['build']['targets']['wheel']
    assert wheel['force-include']['configs'] == 'torchgeo_scalemae/configs'
    assert not (ROOT / 'torchgeo_scalemae' / 'configs').exists()
    scripts = pyproject['project']['scripts']
    assert scripts['torchgeo-scalemae-config'] == 'torchgeo_scalemae.configs_cli:main'


@pytest.mark.slow
def test_built_wheel_contains_the_configs(tmp_path: Path) -> None:
    wheel_module = pytest.importorskip(
        'hatchling.builders.wheel', reason='building the wheel needs hatchling'
    )
    import zipfile

    builder = wheel_module.WheelBuilder(str(ROOT))
    (wheel,) = builder.build(directory=str(tmp_path), versions=['standard'])
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in REPO_NAMES:
        assert f'torchgeo_scalemae/configs/{name}.yaml' in names
    assert 'torchgeo_scalemae/configs_cli.py' in names


# ------------------------------------------------------------- the templates
def _documented_overrides(text: str) -> list[str]:
    """The overrides the template's comments give for the bundled raster."""
    block = text.split('use exactly these overrides', 1)[1].split('# (add', 1)[0]
    return re.findall(r'(--\S+=\S+)', block)


def test_geotiff_template_runs_on_the_bundled_raster(tmp_path: Path) -> None:
    from torchgeo.main import main as torchgeo_main

    config = CONFIGS / 'pretrain' / 'geotiff_template.yaml'
    overrides = _documented_overrides(config.read_text())
    assert overrides == [
        '--data.init_args.paths=null',
        '--data.init_args.patch_size=256',
        '--model.init_args.input_size=128',
    ]
    torchgeo_main(
        [
            'fit',
            f'--config={config}',
            *overrides,
            # tiny and quick: one step, no validation, float32 on the CPU
            '--model.init_args.model=scalemae_pretrain_vit_tiny_patch16',
            '--trainer.accelerator=cpu',
            '--trainer.devices=1',
            '--trainer.precision=32-true',
            '--trainer.max_steps=1',
            '--trainer.limit_val_batches=0',
            '--trainer.enable_model_summary=false',
            f'--trainer.default_root_dir={tmp_path}',
            f'--trainer.logger.init_args.save_dir={tmp_path}',
            '--data.init_args.batch_size=1',
            '--data.init_args.length=1',
            '--data.init_args.num_workers=0',
        ]
    )
    (ckpt,) = tmp_path.rglob('*.ckpt')
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert state['global_step'] == 1
    assert state['hyper_parameters']['input_size'] == 128
    assert state['hyper_parameters']['in_channels'] == 3  # the template's own setting


@pytest.mark.parametrize('overwrite', ['yes', None, 1])
def test_copy_overwrite_must_be_a_bool(overwrite: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='overwrite must be True or False, got'):
        copy_config('quickstart', tmp_path, overwrite=overwrite)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
