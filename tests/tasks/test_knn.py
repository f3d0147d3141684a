# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torchgeo.datamodules import UCMercedDataModule
from torchgeo.main import main

from tests.evaluation.fake_datasets import (
    make_eurosat,
    make_image_folder,
    make_resisc45,
    make_ucmerced,
)
from torchgeo_scalemae.evaluation.backbone import build_encoder
from torchgeo_scalemae.evaluation.knn import knn_predict
from torchgeo_scalemae.tasks import MultiScaleKNN

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'eval'
TINY = 'scalemae_vit_tiny_patch16'
MAKERS = {
    'ucmerced': make_ucmerced,
    'resisc45': make_resisc45,
    'eurosat': make_eurosat,
    'folder': make_image_folder,
}


def data_args(name: str, root: Path) -> list[str]:
    MAKERS[name](root)
    args = ['--data.init_args.batch_size', '4', '--data.init_args.num_workers', '0']
    if name == 'folder':
        return [*args, '--data.init_args.root', str(root)]
    return [
        *args,
        '--data.dict_kwargs.root',
        str(root),
        '--data.dict_kwargs.download',
        'false',
    ]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when pytest's own argv is present besides args=[...].
    monkeypatch.setattr('sys.argv', ['torchgeo'])


def cpu_args(tmp_path: Path) -> list[str]:
    return [
        '--trainer.accelerator',
        'cpu',
        '--trainer.default_root_dir',
        str(tmp_path / 'logs'),
    ]


@pytest.mark.parametrize('name', sorted(MAKERS))
def test_knn_config_runs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        'test',
        '--config',
        str(CONFIGS / f'knn_{name}.yaml'),
        '--model.init_args.model',
        TINY,
        '--model.init_args.k',
        '3',
        *data_args(name, tmp_path / 'data'),
        *cpu_args(tmp_path),
        '--trainer.limit_test_batches',
        '1',
    ]
    main(args)
    out = capsys.readouterr().out
    assert 'Multi-scale kNN (test)' in out
    assert 'test_knn_acc_' in out
    assert list((tmp_path / 'logs').rglob('knn_test_accuracy_vs_gsd.png'))
    assert list((tmp_path / 'logs').rglob('knn_test_results.csv'))


def test_validate_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            'validate',
            '--config',
            str(CONFIGS / 'knn_ucmerced.yaml'),
            '--model.init_args.model',
            TINY,
            '--model.init_args.scales',
            '[1.0, 48]',
            *data_args('ucmerced', tmp_path / 'data'),
            *cpu_args(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert 'Multi-scale kNN (val)' in out
    # 256 px native (UCMerced resizes to 256) at 0.3048 m; 48 px -> 1.6256 m
    assert 'val_knn_acc_256px_gsd0.305m' in out
    assert 'val_knn_acc_48px_gsd1.63m' in out


def spy_on(encoder: torch.nn.Module) -> list[tuple[int, Any]]:
    """Record the (size, res) of every forward_features call of an encoder."""
    calls: list[tuple[int, Any]] = []
    original = encoder.forward_features

    def spy(x: torch.Tensor, res: Any = None, **kwargs: Any) -> torch.Tensor:
        calls.append((x.shape[-1], res))
        return original(x, res=res, **kwargs)

    encoder.forward_features = spy  # type: ignore[method-assign]
    return calls


def fit_knn(tmp_path: Path, **kwargs: Any) -> tuple[MultiScaleKNN, Trainer]:
    make_ucmerced(tmp_path / 'data', per_split=5)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=4)
    task = MultiScaleKNN(model=TINY, default_gsd=0.3048, k=3, **kwargs)
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    trainer.test(task, datamodule=datamodule)
    return task, trainer


def test_gsd_and_res_per_scale(tmp_path: Path) -> None:
    # 15 train / 15 test images, batch 4: the last batch (3) is partial.
    task, _ = fit_knn(tmp_path, scales=[1.0, 0.5, 150, 32])
    results = task.results
    assert [r.height for r in results] == [256, 128, 144, 32]  # 150 -> 144 (9 patches)
    for r in results:
        assert r.num_bank == 15
        assert r.num_queries == 15
        assert r.gsd == pytest.approx(0.3048 * 256 / r.height, rel=1e-5)
        assert r.res == pytest.approx(r.gsd, rel=1e-5)  # reference_gsd = 1 m


def test_encoder_receives_res(tmp_path: Path) -> None:
    make_ucmerced(tmp_path / 'data', per_split=2)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=4)
    task = MultiScaleKNN(
        model=TINY, default_gsd=0.5, scales=[1.0, 64], reference_gsd=2.0, k=3
    )
    calls = spy_on(task.model)
    Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    ).test(task, datamodule=datamodule)
    sizes = {size for size, _ in calls}
    assert sizes == {256, 64}
    for size, res in calls:
        # res = gsd / reference_gsd with gsd = 0.5 m * 256 / size
        expected = 0.5 * 256 / size / 2.0
        torch.testing.assert_close(res, torch.full_like(res, expected))


def test_reference_and_constant_res_modes(tmp_path: Path) -> None:
    task, _ = fit_knn(tmp_path, scales=[1.0, 64], res_mode='reference', base_res=2.5)
    assert [r.res for r in task.results] == pytest.approx([2.5, 2.5 * 256 / 64])
    task, _ = fit_knn(tmp_path / 'c', scales=[1.0, 64], res_mode='constant')
    assert [r.res for r in task.results] == pytest.approx([1.0, 1.0])


def test_matches_direct_knn_on_features(tmp_path: Path) -> None:
    # The task's accuracy equals knn_predict on features computed by hand.
    make_ucmerced(tmp_path / 'data', per_split=5)
    task, _ = fit_knn(tmp_path, scales=[64], vote='majority')
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=100)
    datamodule.setup('fit')
    datamodule.setup('test')
    encoder = task.model

    def feats(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=100)))
        x = datamodule.aug(batch)['image']
        x = torch.nn.functional.interpolate(x, size=64, mode='bilinear', antialias=True)
        gsd = torch.full((x.shape[0],), 0.3048 * 256 / 64)
        with torch.no_grad():
            f = encoder.forward_features(x, res=gsd)[:, 0]
        return f, batch['label']

    bank, bank_y = feats(datamodule.train_dataset)
    query, query_y = feats(datamodule.test_dataset)
    pred = knn_predict(query, bank, bank_y, 3, k=3, vote='majority')
    expected = float((pred == query_y).float().mean())
    assert task.results[0].accuracy == pytest.approx(expected)


def test_loads_lightning_checkpoint_weights(tmp_path: Path) -> None:
    # A Lightning-style checkpoint holding the encoder under 'model.encoder.'.
    encoder = build_encoder(TINY)
    state = {f'model.encoder.{k}': v for k, v in encoder.state_dict().items()}
    state['model.decoder.blocks.0.norm1.weight'] = torch.zeros(64)
    path = tmp_path / 'pretrain.ckpt'
    torch.save({'state_dict': state, 'hyper_parameters': {'model': 'x'}}, path)
    task = MultiScaleKNN(model=TINY, weights=str(path))
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(task.model.state_dict()[key], value)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match='scales'):
        MultiScaleKNN(model=TINY, scales=[])
    with pytest.raises(ValueError, match='k must be'):
        MultiScaleKNN(model=TINY, k=0)
    with pytest.raises(ValueError, match='res_mode'):
        MultiScaleKNN(model=TINY, res_mode='metres')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='default_gsd'):
        MultiScaleKNN(model=TINY, default_gsd=-1.0)
    with pytest.raises(FileNotFoundError, match=r'missing\.ckpt'):
        MultiScaleKNN(model=TINY, weights='missing.ckpt')


def test_missing_gsd_is_a_clear_error(tmp_path: Path) -> None:
    make_ucmerced(tmp_path / 'data', per_split=1)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=4)
    task = MultiScaleKNN(model=TINY, scales=[1.0])
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    with pytest.raises(ValueError, match='default_gsd'):
        trainer.test(task, datamodule=datamodule)


def test_fit_is_refused() -> None:
    task = MultiScaleKNN(model=TINY)
    with pytest.raises(RuntimeError, match='trains nothing'):
        task.configure_optimizers()
    assert math.isfinite(task.hparams['temperature'])


def test_cli_with_pretraining_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real ScaleMAEPretraining checkpoint -> `torchgeo test --config knn_*.yaml`.
    from torchgeo_scalemae.tasks import ScaleMAEPretraining

    make_ucmerced(tmp_path / 'data', per_split=2)
    datamodule = UCMercedDataModule(root=str(tmp_path / 'data'), batch_size=2)
    pretrain = ScaleMAEPretraining(
        model='scalemae_pretrain_vit_tiny_patch16',
        input_size=32,
        default_gsd=0.3048,
        warmup_steps=1,
        image_log_interval=0,
    )
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        max_steps=1,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(pretrain, datamodule=datamodule)
    ckpt = tmp_path / 'pretrain.ckpt'
    trainer.save_checkpoint(ckpt)

    task = MultiScaleKNN(model=TINY, weights=str(ckpt))
    encoder_state = pretrain.model.encoder.state_dict()
    for key, value in task.model.state_dict().items():
        torch.testing.assert_close(value, encoder_state[key])

    main(
        [
            'test',
            '--config',
            str(CONFIGS / 'knn_ucmerced.yaml'),
            '--model.init_args.model',
            TINY,
            '--model.init_args.weights',
            str(ckpt),
            '--model.init_args.k',
            '3',
            *data_args('ucmerced', tmp_path / 'data'),
            *cpu_args(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    for name in (
        'test_knn_acc_256px_gsd0.305m',
        'test_knn_acc_128px_gsd0.61m',
        'test_knn_acc_64px_gsd1.22m',
        'test_knn_acc_32px_gsd2.44m',
    ):
        assert name in out


def test_gsd_from_wrapped_datamodule(tmp_path: Path) -> None:
    # GSDDataModule attaches gsd (KNOWN_GSD: 0.3048 m per pixel of the 256-px images
    # the UCMerced dataset returns; it resizes the 32-px fake files itself).
    from torchgeo_scalemae.datamodules import GSDDataModule

    make_ucmerced(tmp_path / 'data', per_split=2)
    datamodule = GSDDataModule(
        'UCMercedDataModule', root=str(tmp_path / 'data'), batch_size=4
    )
    task = MultiScaleKNN(model=TINY, scales=[1.0, 64], k=3)
    Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    ).test(task, datamodule=datamodule)
    assert [r.gsd for r in task.results] == pytest.approx([0.3048, 0.3048 * 4])
    assert task.results[0].num_bank == 6


def test_per_sample_gsd_from_folder(tmp_path: Path) -> None:
    from torchgeo_scalemae.datamodules import ImageFolderGSDDataModule

    root = make_image_folder(tmp_path / 'images', per_class=4)
    rows = ['path,gsd'] + [
        f'{p.relative_to(root)},{0.5 if p.parent.name == "alpha" else 2.0}'
        for p in sorted(root.rglob('*.png'))
    ]
    (tmp_path / 'gsd.csv').write_text('\n'.join(rows) + '\n')
    datamodule = ImageFolderGSDDataModule(
        str(root), gsd_csv=str(tmp_path / 'gsd.csv'), batch_size=5, test_split_pct=0.5
    )
    task = MultiScaleKNN(model=TINY, scales=[16], k=3)
    calls = spy_on(task.model)
    Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    ).test(task, datamodule=datamodule)
    values = torch.cat([res for _, res in calls]).unique().tolist()
    # 32 px -> 16 px doubles each image's own GSD: res = 1 m or 4 m
    assert values == pytest.approx([1.0, 4.0])


def test_report_records_weights_and_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    with pytest.warns(UserWarning, match='randomly initialised encoder'):
        fit_knn(tmp_path / 'random', scales=[1.0, 64])
    out = capsys.readouterr().out
    csv_path = tmp_path / 'random' / 'knn_test_results.csv'
    plot_path = tmp_path / 'random' / 'knn_test_accuracy_vs_gsd.png'
    assert f'Results written to {csv_path} and {plot_path}' in out
    assert 'weights=random' in out
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [r['weights'] for r in rows] == ['random', 'random']
    assert [r['model'] for r in rows] == [TINY, TINY]
    assert plot_path.read_bytes()[:4] == b'\x89PNG'
    # with weights: their path is recorded and nothing is said about random weights
    encoder = build_encoder(TINY)
    weights = tmp_path / 'encoder.pth'
    torch.save(encoder.state_dict(), weights)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        fit_knn(tmp_path / 'trained', scales=[64], weights=str(weights))
    rows = list(
        csv.DictReader(
            (tmp_path / 'trained' / 'knn_test_results.csv').read_text().splitlines()
        )
    )
    assert [r['weights'] for r in rows] == [str(weights)]


def test_plot_draws_chance_for_the_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo_scalemae.evaluation import report

    chances: list[float | None] = []
    real = report.plot_accuracy_vs_gsd

    def spy(*args: Any, chance: float | None = None, **kwargs: Any) -> Any:
        chances.append(chance)
        return real(*args, chance=chance, **kwargs)

    monkeypatch.setattr(report, 'plot_accuracy_vs_gsd', spy)
    with pytest.warns(UserWarning, match='randomly initialised'):
        fit_knn(tmp_path, scales=[64])  # 3 classes, inferred from the labels
    assert chances == [pytest.approx(1 / 3)]


def test_cli_ckpt_path_of_a_pretraining_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ckpt_path`` makes LightningCLI rebuild the pretraining task: refuse."""
    from PIL import Image

    images = tmp_path / 'images'
    images.mkdir()
    for i in range(2):
        Image.new('RGB', (64, 64), (40 * i, 80, 120)).save(images / f'{i}.png')
    out = tmp_path / 'pretrain'
    main(
        [
            'fit',
            '--config',
            str(CONFIGS.parent.parent / 'tests' / 'conf' / 'pretrain_tiny.yaml'),
            f'--data.init_args.root={images}',
            f'--trainer.logger.init_args.save_dir={out}',
            f'--trainer.default_root_dir={out}',
            '--trainer.max_steps=1',
        ]
    )
    [ckpt] = out.rglob('last.ckpt')
    with pytest.raises(RuntimeError, match=r'--model\.init_args\.weights') as info:
        main(
            [
                'test',
                '--config',
                str(CONFIGS / 'knn_ucmerced.yaml'),
                '--model.init_args.model',
                TINY,
                *data_args('ucmerced', tmp_path / 'data'),
                *cpu_args(tmp_path),
                '--ckpt_path',
                str(ckpt),
            ]
        )
    assert str(ckpt) in str(info.value)
    assert 'Multi-scale kNN' not in capsys.readouterr().out
