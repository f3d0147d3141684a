# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from PIL import Image
from torch import Tensor
from torchgeo.main import main

from torchgeo_scalemae.datamodules import SegmentationFolderGSDDataModule
from torchgeo_scalemae.evaluation.backbone import build_encoder
from torchgeo_scalemae.evaluation.report import (
    SEGMENTATION_CSV_FIELDS,
    ScaleResult,
    SegmentationScaleResult,
    format_segmentation_table,
    write_segmentation_csv,
)
from torchgeo_scalemae.models import ScaleMAEUPerNet
from torchgeo_scalemae.tasks import ScaleMAESegmentation
from torchgeo_scalemae.tasks.segmentation import iou_from_confusion, mean_iou

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'segment'
TINY = 'scalemae_vit_tiny_patch16'


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when pytest's own argv is present besides args=[...].
    monkeypatch.setattr('sys.argv', ['torchgeo'])


def make_folder(root: Path, n: int = 8, size: int = 64, classes: int = 3) -> Path:
    """Images whose red band encodes a blocky mask of *classes* classes."""
    (root / 'images').mkdir(parents=True)
    (root / 'masks').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        blocks = rng.integers(0, classes, (size // 16, size // 16))
        mask = np.kron(blocks, np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        image[..., 0] = mask * 80
        Image.fromarray(image).save(root / 'images' / f'tile_{i}.png')
        Image.fromarray(mask).save(root / 'masks' / f'tile_{i}.png')
    return root


def folder_datamodule(root: Path, **kwargs: Any) -> SegmentationFolderGSDDataModule:
    args: dict[str, Any] = {
        'gsd': 0.5,
        'num_classes': 3,
        'patch_size': 32,
        'batch_size': 2,
        'val_split_pct': 0.25,
        'test_split_pct': 0.25,
    }
    args.update(kwargs)
    return SegmentationFolderGSDDataModule(str(make_folder(root)), **args)


def make_task(**kwargs: Any) -> ScaleMAESegmentation:
    defaults: dict[str, Any] = {
        'backbone': TINY,
        'num_classes': 3,
        'decoder_channels': 16,
    }
    defaults.update(kwargs)
    return ScaleMAESegmentation(**defaults)


def trainer(tmp_path: Path, **kwargs: Any) -> Trainer:
    args: dict[str, Any] = {
        'accelerator': 'cpu',
        'logger': False,
        'enable_progress_bar': False,
        'enable_checkpointing': False,
        'max_epochs': 1,
        'limit_train_batches': 1,
        'limit_val_batches': 1,
        'num_sanity_val_steps': 0,
        'default_root_dir': str(tmp_path),
    }
    args.update(kwargs)
    return Trainer(**args)


def spy(model: ScaleMAEUPerNet) -> list[tuple[tuple[int, int], Tensor]]:
    """Record ((H, W), res) of every encoder call."""
    calls: list[tuple[tuple[int, int], Tensor]] = []
    original = model.encoder.forward_intermediates

    def wrapper(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(((int(x.shape[-2]), int(x.shape[-1])), kwargs['res']))
        return original(x, *args, **kwargs)

    model.encoder.forward_intermediates = wrapper  # type: ignore[method-assign]
    return calls


def test_training_step_passes_gsd() -> None:
    task = make_task(reference_gsd=0.5)
    calls = spy(task.model)
    batch = {
        'image': torch.rand(2, 3, 32, 48),
        'mask': torch.randint(0, 3, (2, 32, 48)),
        'gsd': torch.tensor([0.5, 2.0]),
    }
    loss = task.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    [(size, res)] = calls
    assert size == (32, 48)
    torch.testing.assert_close(res, torch.tensor([1.0, 4.0]))
    grad = task.model.encoder.patch_embed.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_fit_and_multiscale_test_pass_gsd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datamodule = folder_datamodule(tmp_path / 'data')
    task = make_task(reference_gsd=0.25, ignore_index=0)
    calls = spy(task.model)
    fit = trainer(tmp_path)
    fit.fit(task, datamodule=datamodule)
    assert calls, 'the encoder was never called'
    # training crops of 32 px from 16-64 px squares: gsd 0.25-1.0 m, res x 4
    train_res = calls[0][1]
    assert calls[0][0] == (32, 32)
    assert bool(((train_res >= 0.25 / 0.25 - 1e-4) & (train_res <= 4 + 1e-4)).all())
    # validation: whole 64 px images at the native 0.5 m
    assert calls[-1][0] == (64, 64)
    torch.testing.assert_close(calls[-1][1], torch.full((2,), 2.0))
    calls.clear()
    with pytest.warns(UserWarning, match='randomly initialised encoder'):
        fit.test(task, datamodule=datamodule)
    by_size = {size: res for size, res in calls}
    assert set(by_size) == {(64, 64), (48, 48), (32, 32)}
    # one test batch: native, 48 and 32 px; scale 1.0 reuses the native logits
    assert len(calls) == 3
    torch.testing.assert_close(
        by_size[(48, 48)], torch.full((2,), 0.5 * 64 / 48 / 0.25)
    )
    torch.testing.assert_close(by_size[(32, 32)], torch.full((2,), 4.0))
    results = task.scale_results
    assert [r.scale.height for r in results] == [64, 48, 32]
    assert [r.scale.gsd for r in results] == pytest.approx([0.5, 0.5 * 64 / 48, 1.0])
    # class 0 is ignored: classes 1 and 2 are reported
    assert [[name for name, _ in r.class_iou] for r in results] == [['1', '2']] * 3
    for r in results:
        assert r.miou == pytest.approx(mean_iou([iou for _, iou in r.class_iou]))
    out = capsys.readouterr().out
    assert 'Multi-scale segmentation test (fine-tuned)' in out
    assert 'mIoU' in out
    csv_path = tmp_path / 'segmentation_test_results.csv'
    plot_path = tmp_path / 'segmentation_test_miou_vs_gsd.png'
    assert f'Results written to {csv_path} and {plot_path}' in out
    assert plot_path.stat().st_size > 0
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    header = csv_path.read_text().splitlines()[0].split(',')
    assert header[:6] == ['scale', 'height', 'width', 'gsd', 'class', 'iou']
    assert header[6:] == ['model', 'weights', 'checkpoint']
    assert len(rows) == 3 * 3  # 3 scales x (2 classes + mean)
    assert [r['class'] for r in rows[:3]] == ['1', '2', 'mean']
    assert [float(r['scale']) for r in rows[::3]] == [1.0, 0.75, 0.5]
    for r, result in zip(rows[2::3], results, strict=True):
        assert float(r['iou']) == pytest.approx(result.miou)
        assert float(r['gsd']) == pytest.approx(result.scale.gsd)
        assert int(r['height']) == int(r['width']) == result.scale.height
        assert r['weights'] == 'random'
    logged = fit.callback_metrics
    assert 'test_miou_64px_gsd0.5m' in logged
    assert 'test_iou_2_32px_gsd1m' in logged
    assert 'test_OverallJaccardIndex' in logged  # TorchGeo's metrics stay
    assert 'test_OverallAccuracy' in logged


def test_test_of_a_checkpoint_records_it(tmp_path: Path) -> None:
    datamodule = folder_datamodule(tmp_path / 'data')
    task = make_task(test_scales=[1.0, 0.5])
    fit = trainer(tmp_path)
    fit.fit(task, datamodule=datamodule)
    ckpt = tmp_path / 'fine_tuned.ckpt'
    fit.save_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        fit.test(task, datamodule=datamodule, ckpt_path=str(ckpt))
    rows = list(
        csv.DictReader(
            (tmp_path / 'segmentation_test_results.csv').read_text().splitlines()
        )
    )
    assert {r['checkpoint'] for r in rows} == {str(ckpt)}
    # 2 scales x (3 classes + mean)
    assert [r['class'] for r in rows] == ['0', '1', '2', 'mean'] * 2


def test_no_test_scales_is_torchgeo_test(tmp_path: Path) -> None:
    datamodule = folder_datamodule(tmp_path / 'data')
    task = make_task(test_scales=None)
    calls = spy(task.model)
    fit = trainer(tmp_path)
    fit.test(task, datamodule=datamodule)
    assert {size for size, _ in calls} == {(64, 64)}
    assert not (tmp_path / 'segmentation_test_results.csv').exists()
    assert 'test_OverallJaccardIndex' in fit.callback_metrics


def test_default_gsd_and_other_res_modes() -> None:
    batch = {'image': torch.rand(2, 3, 32, 32), 'mask': torch.zeros(2, 32, 32).long()}
    task = make_task(default_gsd=2.0, reference_gsd=0.5)
    calls = spy(task.model)
    task.training_step(batch, 0)
    torch.testing.assert_close(calls[0][1], torch.full((2,), 4.0))
    task = make_task(res_mode='constant', base_res=3.0)
    calls = spy(task.model)
    task.training_step({**batch, 'gsd': torch.tensor([9.0, 9.0])}, 0)
    torch.testing.assert_close(calls[0][1], torch.full((2,), 3.0))
    task = make_task()
    with pytest.raises(ValueError, match="no 'gsd' entry"):
        task.training_step(batch, 0)


def test_images_of_any_size_are_padded() -> None:
    task = make_task()
    task.eval()
    calls = spy(task.model)
    with torch.no_grad():
        logits = task(torch.rand(1, 3, 50, 37), torch.ones(1))
    assert logits.shape == (1, 3, 50, 37)
    assert calls[0][0] == (64, 48)


def test_binary_task() -> None:
    task = make_task(task='binary', num_classes=None, loss='bce')
    batch = {
        'image': torch.rand(2, 3, 32, 32),
        'mask': torch.randint(0, 2, (2, 32, 32)),
        'gsd': torch.ones(2),
    }
    assert torch.isfinite(task.training_step(batch, 0))
    assert task.model.num_classes == 1
    task.eval()
    task.test_step(batch, 0)
    assert task._scale_metric(0).confmat.sum() == 2 * 32 * 32


def test_freezing_and_layer_decay() -> None:
    task = make_task(freeze_backbone=True)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith('model.encoder.') for n in trainable)
    task = make_task(freeze_backbone=True, freeze_decoder=True)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {'model.head.weight', 'model.head.bias'}
    task = make_task(layer_decay=0.5, lr=1.0, weight_decay=0.05)
    optimizer = task.configure_optimizers()['optimizer']
    names = {id(p): n for n, p in task.named_parameters()}
    lr_of = {names[id(p)]: g['lr'] for g in optimizer.param_groups for p in g['params']}
    # depth 2: embeddings 0.5^3, block 0 0.5^2, block 1 0.5, neck/decoder/head 1
    assert lr_of['model.encoder.patch_embed.proj.weight'] == pytest.approx(0.125)
    assert lr_of['model.encoder.blocks.0.attn.qkv.weight'] == pytest.approx(0.25)
    assert lr_of['model.encoder.blocks.1.attn.qkv.weight'] == pytest.approx(0.5)
    assert lr_of['model.decoder.fusion_block.0.weight'] == pytest.approx(1.0)
    assert lr_of['model.head.weight'] == pytest.approx(1.0)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert set(lr_of) == trainable
    for group in optimizer.param_groups:
        if group['weight_decay'] > 0:
            assert all(p.ndim > 1 for p in group['params'])
    assert 'model.encoder.cls_token' in {
        names[id(p)]
        for g in optimizer.param_groups
        if g['weight_decay'] == 0
        for p in g['params']
    }
    task = make_task(lr=0.1)
    optimizer = task.configure_optimizers()['optimizer']
    assert {g['lr'] for g in optimizer.param_groups} == {0.1}


def test_loads_pretraining_checkpoint_and_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    encoder = build_encoder(TINY)
    state = {f'model.encoder.{k}': v for k, v in encoder.state_dict().items()}
    state['model.decoder.decoder_embed.weight'] = torch.zeros(4, 4)
    path = tmp_path / 'pretrain.ckpt'
    torch.save({'state_dict': state}, path)
    task = make_task(weights=str(path))
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(task.model.encoder.state_dict()[key], value)
    exported = tmp_path / 'encoder.safetensors'
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, exported)
    task = make_task(weights=str(exported))
    torch.testing.assert_close(
        task.model.encoder.patch_embed.proj.weight, encoder.patch_embed.proj.weight
    )
    with pytest.raises(FileNotFoundError, match=r'missing\.ckpt'):
        make_task(weights=str(tmp_path / 'missing.ckpt'))


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'layer_decay': 0.0}, ValueError, 'layer_decay must be in'),
        ({'weights': True}, ValueError, 'weights=True'),
        ({'num_classes': 1}, ValueError, 'num_classes >= 2, got 1'),
        ({'labels': ['a', 'b']}, ValueError, 'labels must name the 3 classes'),
        ({'res_mode': 'metres'}, ValueError, 'res_mode'),
        ({'test_scales': [0.0]}, ValueError, 'scales must be positive'),
        (
            {'task': 'multilabel', 'num_labels': 3, 'num_classes': None},
            ValueError,
            'test_scales needs',
        ),
        ({'backbone': 'resnet18'}, TypeError, 'backbone must name a Scale-MAE'),
        ({'indices': [0, 1, 1, 9]}, ValueError, 'block index 9'),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_task(**kwargs)


def test_iou_from_confusion() -> None:
    # rows targets, columns predictions
    confusion = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
    ious = iou_from_confusion(confusion, None)
    assert ious[0] == pytest.approx(5 / (5 + 1 + 2))
    assert ious[1] == pytest.approx(3 / (3 + 2 + 1 + 1))
    assert ious[2] == pytest.approx(0.0)  # predicted once, never true
    confusion[1, 2] = 0
    assert math.isnan(iou_from_confusion(confusion, None)[2])  # absent class
    assert mean_iou([0.5, math.nan, 1.0]) == pytest.approx(0.75)
    assert math.isnan(mean_iou([math.nan]))
    without = iou_from_confusion(confusion, 0)
    assert without == pytest.approx([3 / 3, math.nan], nan_ok=True)


def test_segmentation_report_functions(tmp_path: Path) -> None:
    scale = ScaleResult(0.5, 32, 48, 1.0, 2.0, 0.6, 4)
    result = SegmentationScaleResult(scale, (('road', 0.5), ('water', 0.7)))
    table = format_segmentation_table([result], 'title')
    assert table.splitlines()[0] == 'title'
    assert 'road' in table and '32x48px' in table and '60.00' in table
    path = tmp_path / 'out.csv'
    write_segmentation_csv([result], path, {'model': 'm'})
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert tuple(rows[0])[:6] == SEGMENTATION_CSV_FIELDS
    assert [(r['class'], float(r['iou'])) for r in rows] == [
        ('road', 0.5),
        ('water', 0.7),
        ('mean', 0.6),
    ]
    with pytest.raises(ValueError, match='result columns'):
        write_segmentation_csv([result], path, {'iou': 1})
    with pytest.raises(TypeError, match='SegmentationScaleResult'):
        write_segmentation_csv([scale], path)  # type: ignore[list-item]
    with pytest.raises(TypeError, match='SegmentationScaleResult'):
        format_segmentation_table(result)  # type: ignore[arg-type]


# ------------------------------------------------------------------ configs / CLI
def flags(prefix: str, **values: object) -> list[str]:
    """Command-line flags ``--<prefix>.<name> <value>``."""
    return [arg for name, v in values.items() for arg in (f'--{prefix}.{name}', str(v))]


def cpu_args(tmp_path: Path) -> list[str]:
    return [
        *flags(
            'trainer',
            accelerator='cpu',
            precision='32-true',
            default_root_dir=tmp_path / 'logs',
            max_steps=1,
            limit_val_batches=1,
            limit_test_batches=1,
        ),
        *flags('model.init_args', backbone=TINY, decoder_channels=16),
    ]


def fit_then_test(tmp_path: Path, args: list[str]) -> tuple[Path, list[dict[str, str]]]:
    """``torchgeo fit``, then ``torchgeo test`` of its last checkpoint.

    Returns:
        The checkpoint and the rows of the test's results CSV.
    """
    main(['fit', *args])
    [last] = (tmp_path / 'logs').rglob('last.ckpt')
    main(['test', *args, '--ckpt_path', str(last)])
    [csv_path] = (tmp_path / 'logs').rglob('segmentation_test_results.csv')
    return last, list(csv.DictReader(csv_path.read_text().splitlines()))


def test_configs_parse() -> None:
    for name in ('folder_upernet', 'spacenet1_upernet'):
        config = yaml.safe_load((CONFIGS / f'{name}.yaml').read_text())
        assert config['model']['class_path'] == (
            'torchgeo_scalemae.tasks.ScaleMAESegmentation'
        )
        # every init arg is a keyword of the task
        task_args = ScaleMAESegmentation.__init__.__code__.co_varnames
        assert set(config['model']['init_args']) <= set(task_args)
    spacenet = yaml.safe_load((CONFIGS / 'spacenet1_upernet.yaml').read_text())
    init = spacenet['model']['init_args']
    assert init['backbone'] == 'scalemae_vit_large_patch16'
    assert init['indices'] == [7, 11, 15, 23]
    assert init['test_scales'] == [1.0, 0.75, 0.5]
    assert spacenet['data']['init_args']['datamodule'] == 'SpaceNet1DataModule'


def test_folder_config_fit_then_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_folder(tmp_path / 'data')
    last, rows = fit_then_test(
        tmp_path,
        [
            '--config',
            str(CONFIGS / 'folder_upernet.yaml'),
            *cpu_args(tmp_path),
            *flags('model.init_args', num_classes=3, neck_channels='[8, 8, 16, 16]'),
            *flags(
                'data.init_args',
                root=root,
                num_classes=3,
                patch_size=32,
                batch_size=2,
                val_split_pct=0.25,
                test_split_pct=0.25,
            ),
        ],
    )
    assert last.parent.name == 'checkpoints'
    out = capsys.readouterr().out
    assert 'Multi-scale segmentation test' in out
    assert f'checkpoint={last}' in out
    assert list((tmp_path / 'logs').rglob('segmentation_test_miou_vs_gsd.png'))
    assert len(rows) == 3 * 4
    assert {r['checkpoint'] for r in rows} == {str(last)}
    # every output stays under trainer.default_root_dir
    assert not list(tmp_path.glob('lightning_logs'))


def make_spacenet1(root: Path, n: int = 10) -> Path:
    """A fake SpaceNet 1 tree: tiny EPSG:4326 GeoTIFFs and one building each."""
    import rasterio
    from rasterio.transform import from_origin

    base = root / 'SN1_buildings' / 'train'
    (base / '3band').mkdir(parents=True)
    (base / 'geojson').mkdir(parents=True)
    rng = np.random.default_rng(0)
    step = 1e-5
    for i in range(1, n + 1):
        west, north = -43.0 + i * 0.01, -22.0
        with rasterio.open(
            base / '3band' / f'3band_AOI_1_RIO_img{i}.tif',
            'w',
            driver='GTiff',
            width=22,
            height=20,
            count=3,
            dtype='uint8',
            crs='EPSG:4326',
            transform=from_origin(west, north, step, step),
        ) as dst:
            dst.write(rng.integers(0, 255, (3, 20, 22)).astype(np.uint8))
        ring = [
            [west + 5 * step, north - 5 * step],
            [west + 15 * step, north - 5 * step],
            [west + 15 * step, north - 12 * step],
            [west + 5 * step, north - 12 * step],
            [west + 5 * step, north - 5 * step],
        ]
        collection = {
            'type': 'FeatureCollection',
            'features': [
                {
                    'type': 'Feature',
                    'properties': {},
                    'geometry': {'type': 'Polygon', 'coordinates': [ring]},
                }
            ],
        }
        path = base / 'geojson' / f'Geo_AOI_1_RIO_img{i}.geojson'
        path.write_text(json.dumps(collection))
    return root


def test_spacenet1_config_fit_then_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_spacenet1(tmp_path / 'spacenet1')
    _, rows = fit_then_test(
        tmp_path,
        [
            '--config',
            str(CONFIGS / 'spacenet1_upernet.yaml'),
            *cpu_args(tmp_path),
            *flags('model.init_args', weights='null', indices='null'),
            *flags('data.dict_kwargs', root=root, batch_size=2, num_workers=0),
            # no TensorBoard figures of 448 px chips: a faster test
            *flags('trainer', logger='false'),
        ],
    )
    out = capsys.readouterr().out
    # SpaceNet 1 chips padded to 448 px at 0.5 m; 75 % and 50 %: 336 and 224 px
    assert 'test_miou_448px_gsd0.5m' in out
    assert 'test_miou_336px_gsd0.667m' in out
    assert 'test_iou_building_224px_gsd1m' in out
    assert [r['class'] for r in rows[:3]] == ['background', 'building', 'mean']


def test_validation_logs_torchgeo_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    tags: list[str] = []
    datamodule = folder_datamodule(tmp_path / 'data')
    logger = TensorBoardLogger(str(tmp_path / 'tb'))
    monkeypatch.setattr(
        logger.experiment, 'add_figure', lambda tag, *a, **k: tags.append(tag)
    )
    task = make_task()
    trainer(tmp_path, logger=logger).fit(task, datamodule=datamodule)
    assert tags == ['image/0']


def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_gsd import python_blocks

    page = Path(__file__).resolve().parents[2] / 'docs' / 'user' / 'segmentation.rst'
    [block] = python_blocks(page.read_text())
    exec(compile(block, str(page), 'exec'), {})  # noqa: S102
    # the output the page shows in its comment
    assert 'torch.Size([2, 6, 64, 96]) [24, 12, 6, 3]' in capsys.readouterr().out
