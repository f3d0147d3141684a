# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from torchgeo_scalemae.callbacks import (
    BandCollapseWarning,
    NonFiniteLossGuard,
    ReconstructionImages,
    ReconstructionSummary,
    RemoveEmptyLogDir,
)
from torchgeo_scalemae.callbacks.images import GRID_COLUMNS
from torchgeo_scalemae.tasks import (
    AtomicCheckpointIO,
    NonFiniteLossError,
    ScaleMAEPretraining,
)

# ----------------------------------------------------------------- the task

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'pretrain'
TINY = 'scalemae_pretrain_vit_tiny_patch16'


class _Images(Dataset[dict[str, torch.Tensor]]):
    """Deterministic random 64 px RGB images with a per-sample GSD."""

    def __init__(self, n: int = 16, nan_at: int | None = None) -> None:
        self.n = n
        self.nan_at = nan_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        image = torch.rand(3, 64, 64, generator=g)
        if i == self.nan_at:
            image[:] = float('nan')
        return {'image': image, 'gsd': torch.tensor(0.5 + 0.1 * i)}


def _task(**kwargs: Any) -> ScaleMAEPretraining:
    args: dict[str, Any] = {
        'model': TINY,
        'input_size': 32,
        'image_log_interval': 0,
        'warmup_steps': 1,
        'lr': 1e-3,
    }
    args.update(kwargs)
    return ScaleMAEPretraining(**args)


def _trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    args: dict[str, Any] = {
        'accelerator': 'cpu',
        'devices': 1,
        'logger': False,
        'enable_progress_bar': False,
        'enable_model_summary': False,
        'default_root_dir': str(tmp_path),
    }
    args.update(kwargs)
    return L.Trainer(**args)


def test_fit_to_max_time_ends_the_cosine(tmp_path: Path) -> None:
    records = _RecordLR()
    trainer = _trainer(
        tmp_path,
        max_time={'seconds': 4},
        max_steps=-1,
        max_epochs=-1,
        callbacks=[records],
        enable_checkpointing=False,
    )
    task = _task(warmup_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer.fit(task, DataLoader(_Images(8), batch_size=4))
    assert trainer.global_step >= 3
    lrs = [records.lrs[step] for step in sorted(records.lrs)]
    assert max(lrs) <= 1e-3 + 1e-12
    # the learning rate falls with the time spent, towards 0 at the budget
    assert lrs[-1] < 0.5 * max(lrs)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'mask_ratio': 1.0}, 'mask_ratio'),
        ({'loss': 'l1'}, 'loss'),
        ({'crop_scale': (0.5, 0.2)}, 'crop_scale'),
        ({'reference_gsd': 0.0}, 'reference_gsd'),
        ({'default_gsd': -1.0}, 'default_gsd'),
        ({'input_size': 40}, r'(input_size=|img_size )40'),
        ({'nan_check_interval': -1}, 'nan_check_interval'),
        ({'fused_adamw': 'yes'}, 'fused_adamw'),
        (
            {'mask_ratio': '0.75'},
            r"mask_ratio must be a number in \[0, 1\), got '0.75'",
        ),
        ({'hflip': 'no'}, "hflip must be True or False, got 'no'"),
        ({'compile': 1}, 'compile must be True or False, got 1'),
        ({'retain_cpu_memory': 'yes'}, 'retain_cpu_memory'),
        ({'decay_tokens': None}, 'decay_tokens'),
        ({'atomic_checkpoints': 'true'}, 'atomic_checkpoints'),
        ({'warmup_epochs': float('nan')}, 'warmup_epochs must be a finite number'),
        ({'warmup_epochs': float('inf')}, 'warmup_epochs'),
        ({'min_lr': float('nan')}, 'min_lr must be a finite number'),
        ({'crop_scale': 'abc'}, "crop_scale must be .*, got 'abc'"),
        ({'crop_scale': (0.2,)}, 'crop_scale'),
        ({'lr': '1e-3'}, "lr must be a finite positive number, got '1e-3'"),
        ({'betas': 0.9}, 'betas must be two numbers'),
        ({'warmup_steps': 2.5}, 'warmup_steps must be an int'),
        ({'batch_size': 'big'}, 'batch_size'),
    ],
)
def test_invalid_hparams(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _task(**kwargs)


def test_hparams_and_param_groups() -> None:
    task = _task()
    assert task.hparams['model'] == TINY
    assert task.hparams['input_size'] == 32
    assert task.model.loss.high_blur == 7  # reference preset
    paper = _task(loss='paper')
    assert paper.model.loss.use_l1_loss
    normalized = _task(loss='normalized')
    assert normalized.model.loss.normalize_targets
    assert not task.model.loss.normalize_targets
    with pytest.raises(ValueError, match='collapse_patience'):
        _task(collapse_patience=-1)


def test_default_callbacks_follow_the_hparams() -> None:
    task = _task(image_log_interval=7, nan_check_interval=3, collapse_patience=2)
    installed = {type(c): c for c in task.configure_callbacks()}
    assert set(installed) == {
        BandCollapseWarning,
        NonFiniteLossGuard,
        ReconstructionImages,
        ReconstructionSummary,
        RemoveEmptyLogDir,
    }
    assert installed[ReconstructionImages].every_n_steps == 7  # type: ignore[attr-defined]
    assert installed[NonFiniteLossGuard].check_every_n_steps == 3  # type: ignore[attr-defined]
    assert installed[BandCollapseWarning].patience == 2  # type: ignore[attr-defined]
    # 0 disables the image grid and the collapse warning, never the NaN guard
    kinds = {
        type(c)
        for c in _task(image_log_interval=0, collapse_patience=0).configure_callbacks()
    }
    assert kinds == {NonFiniteLossGuard, ReconstructionSummary, RemoveEmptyLogDir}


def test_a_configured_callback_replaces_the_default(tmp_path: Path) -> None:
    own = ReconstructionImages(every_n_steps=1, max_samples=1)
    trainer = _trainer(tmp_path, max_steps=1, callbacks=[own])
    task = _task(image_log_interval=50)
    trainer.fit(task, DataLoader(_Images(4), batch_size=2))
    images = [c for c in trainer.callbacks if isinstance(c, ReconstructionImages)]
    assert images == [own]
    guards = [c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard)]
    assert len(guards) == 1


def test_logged_metrics_are_the_documented_ones(tmp_path: Path) -> None:
    """The class docstring lists exactly the metrics the task logs."""
    trainer = _trainer(
        tmp_path,
        max_steps=1,
        log_every_n_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    task = _task()
    # one batch per epoch: the step ends the epoch, so validation runs too
    trainer.fit(
        task, DataLoader(_Images(2), batch_size=2), DataLoader(_Images(2), batch_size=2)
    )
    logged = set()
    for name in trainer.logged_metrics:
        for suffix in ('_step', '_epoch'):
            name = name.removesuffix(suffix)
        stage, _, rest = name.partition('_')
        logged.add(f'<stage>_{rest}' if stage in ('train', 'val') else name)
    doc = ScaleMAEPretraining.__doc__ or ''
    documented = set(re.findall(r'``(<stage>_\w+|lr)``', doc))
    assert logged == documented
    assert 'val_loss' in trainer.logged_metrics


def test_test_stage_is_refused_with_the_weights_option(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    with pytest.raises(RuntimeError, match=r'--model\.init_args\.weights PATH'):
        trainer.test(_task(), DataLoader(_Images(2), batch_size=2))


def test_failed_run_leaves_no_empty_log_folder(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    class Broken(L.LightningDataModule):
        def setup(self, stage: str) -> None:
            raise RuntimeError('no data here')

    logger = CSVLogger(str(tmp_path), name='logs')
    trainer = _trainer(tmp_path, max_steps=1, logger=logger)
    with pytest.raises(RuntimeError, match='no data here'):
        trainer.fit(_task(), datamodule=Broken())
    assert not (tmp_path / 'logs' / 'version_0').exists()
    # the next run is version_0, not version_1
    logger = CSVLogger(str(tmp_path), name='logs')
    assert logger.version == 0


@pytest.mark.parametrize('atomic', [True, False])
def test_setup_installs_atomic_checkpoint_io(atomic: bool, tmp_path: Path) -> None:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    trainer = _trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(_task(atomic_checkpoints=atomic), DataLoader(_Images(2), batch_size=2))
    expected = AtomicCheckpointIO if atomic else TorchCheckpointIO
    assert type(trainer.strategy.checkpoint_io) is expected


def test_moving_the_task_keeps_crop_sampling_on_the_cpu() -> None:
    """Lightning moves the task, and the pair transform inside it, to its device.

    kornia would then sample the crop boxes there and read them back to the host
    every step; they stay on the CPU, in float32.
    """
    task = _task()
    task.to('meta')
    task.to(torch.bfloat16)
    kornia_crop = task.pair.crop.crop
    assert kornia_crop.device == torch.device('cpu')
    assert kornia_crop.dtype == torch.float32
    assert next(task.model.parameters()).device.type == 'meta'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_training_step_never_synchronises() -> None:
    """A whole training step (pair transform, model, loss, metrics, backward)."""
    task = _task().cuda()  # as Lightning moves it, the pair transform with it
    batch = {
        'image': torch.rand(4, 3, 64, 64, device='cuda'),
        'gsd': torch.tensor([0.3, 1.0, 2.0, 5.0], device='cuda'),
    }
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # self.log without a trainer
        task.training_step(batch, 0).backward()  # warm-up: loading kernels may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            loss = task.training_step(batch, 1)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    assert loss.is_cuda and loss.ndim == 0


def test_loss_decreases_on_fixed_batch() -> None:
    task = _task(crop_scale=(1.0, 1.0), hflip=False)
    batch = {'image': torch.rand(4, 3, 64, 64), 'gsd': torch.tensor([0.3, 1.0, 2, 5])}
    optimizer = torch.optim.AdamW(task.parameters(), lr=2e-3)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # self.log without a trainer
        for step in range(40):
            torch.manual_seed(0)  # same mask every step
            loss = task.training_step(batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_fit_logs_metrics_image_and_gsd(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    task = _task(image_log_interval=2, base_lr=1e-3, lr=None)
    logger = CSVLogger(str(tmp_path), name='logs')
    trainer = _trainer(
        tmp_path,
        max_steps=3,
        logger=logger,
        log_every_n_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        task, DataLoader(_Images(8), batch_size=4), DataLoader(_Images(4), batch_size=4)
    )
    assert trainer.global_step == 3
    # validation: the reconstruction loss per epoch
    assert torch.isfinite(torch.as_tensor(trainer.logged_metrics['val_loss']))
    assert 'val_psnr_high' in trainer.logged_metrics
    # lr = base_lr * batch 4 * accumulate 1 * world 1 / 256
    assert task.peak_lr == pytest.approx(1e-3 * 4 / 256)
    metrics = trainer.logged_metrics
    for name in (
        'train_loss_step',
        'train_loss_low_step',
        'train_loss_high_step',
        'train_psnr_low_step',
        'train_psnr_high_step',
        'train_pred_std_low_step',
        'train_pred_std_high_step',
        'train_target_std_low_step',
        'train_target_std_high_step',
        'lr',
    ):
        assert torch.isfinite(torch.as_tensor(metrics[name])), name
    # GSD seen: the input GSD is 2x the target's, which is the crop's GSD
    gsd_min = float(metrics['train_gsd_min_epoch'])
    gsd_max = float(metrics['train_gsd_max_epoch'])
    assert 0 < gsd_min <= gsd_max
    images = sorted((Path(logger.log_dir) / 'images').glob('*.png'))
    assert [p.name for p in images] == [
        'reconstruction_step0000000.png',
        'reconstruction_step0000002.png',
    ]
    from PIL import Image

    with Image.open(images[0]) as im:
        width, height = im.size
    # 7 titled columns (input, masked, low, high, both, with visible, target) of
    # 64 px + padding, under a 14-px title row
    assert len(GRID_COLUMNS) == 7
    assert width == 7 * 64 + 8 * 2
    assert height == 14 + 4 * 64 + 5 * 2
    # the trivial predictors' PSNR is logged beside the model's
    for band in ('low', 'high'):
        assert torch.isfinite(
            torch.as_tensor(metrics[f'train_psnr_{band}_baseline_step'])
        )
    # the same samples are shown at every logged step: the target columns match
    with Image.open(images[0]) as first, Image.open(images[1]) as second:
        a = np.asarray(first.convert('RGB'), dtype=np.float32)
        b = np.asarray(second.convert('RGB'), dtype=np.float32)
    target_column = slice(14 + 2, None), slice(2 + 6 * 66, 2 + 6 * 66 + 64)
    np.testing.assert_array_equal(a[target_column], b[target_column])
    # the summary of both bands against their baselines is written
    summary = (Path(logger.log_dir) / 'reconstruction_summary.txt').read_text()
    assert 'low  band PSNR' in summary and 'high band PSNR' in summary


def test_tensorboard_image(tmp_path: Path) -> None:
    pytest.importorskip('tensorboard')
    from lightning.pytorch.loggers import TensorBoardLogger

    task = _task(image_log_interval=1)
    logger = TensorBoardLogger(str(tmp_path), name='tb')
    trainer = _trainer(tmp_path, max_steps=1, logger=logger)
    trainer.fit(task, DataLoader(_Images(4), batch_size=2))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    assert 'reconstruction' in acc.Tags()['images']


def _checkpoints_finite(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob('*.ckpt'))
    for name in names:
        state = torch.load(folder / name, map_location='cpu', weights_only=False)
        for key, value in state['state_dict'].items():
            assert torch.isfinite(value).all(), (name, key)
    return names


@pytest.mark.parametrize('accumulate', [1, 2])
def test_nan_loss_stops_before_step_and_checkpoint(
    tmp_path: Path, accumulate: int
) -> None:
    # batch size 2: sample 8 is in batch 4, i.e. optimiser step 4 // accumulate
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / 'ckpt', every_n_train_steps=1, save_top_k=-1
    )
    trainer = _trainer(
        tmp_path, max_steps=6, callbacks=[ckpt], accumulate_grad_batches=accumulate
    )
    task = _task()
    with pytest.raises(NonFiniteLossError, match='NaN or infinite'):
        trainer.fit(task, DataLoader(_Images(16, nan_at=8), batch_size=2))
    bad_step = 4 // accumulate
    assert trainer.global_step == bad_step
    names = _checkpoints_finite(tmp_path / 'ckpt')
    assert names == [f'epoch=0-step={s}.ckpt' for s in range(1, bad_step + 1)]


def test_nan_guard_without_periodic_check_blocks_checkpoint(tmp_path: Path) -> None:
    # nan_check_interval=0: no per-step synchronisation; the checkpoint hook checks
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / 'ckpt', every_n_train_steps=1, save_top_k=-1
    )
    trainer = _trainer(tmp_path, max_steps=6, callbacks=[ckpt])
    task = _task(nan_check_interval=0)
    with pytest.raises(NonFiniteLossError, match='before writing a checkpoint'):
        trainer.fit(task, DataLoader(_Images(16, nan_at=6), batch_size=2))
    assert _checkpoints_finite(tmp_path / 'ckpt') == [
        f'epoch=0-step={s}.ckpt' for s in range(1, 4)
    ]


class _RecordLR(Callback):
    def __init__(self, kill_at: int | None = None) -> None:
        self.lrs: dict[int, float] = {}
        self.kill_at = kill_at

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]['lr']
        if trainer.global_step == self.kill_at:
            raise RuntimeError('killed')


def test_resume_mid_epoch_continues_step_and_schedule(tmp_path: Path) -> None:
    def fit(folder: str, rec: _RecordLR, ckpt_path: str | None = None) -> L.Trainer:
        L.seed_everything(0)
        ckpt = ModelCheckpoint(
            dirpath=tmp_path / folder, every_n_train_steps=1, save_last=True
        )
        trainer = _trainer(tmp_path, max_steps=8, callbacks=[ckpt, rec])
        trainer.fit(
            _task(warmup_steps=3),
            DataLoader(_Images(12), batch_size=2),  # 6 steps per epoch
            ckpt_path=ckpt_path,
        )
        return trainer

    full = _RecordLR()
    fit('full', full)
    killed = _RecordLR(kill_at=4)  # mid-epoch
    with pytest.raises(RuntimeError, match='killed'):
        fit('killed', killed)
    last = tmp_path / 'killed' / 'last.ckpt'
    assert torch.load(last, weights_only=False)['global_step'] == 4
    resumed = _RecordLR()
    trainer = fit('killed', resumed, ckpt_path=str(last))
    assert trainer.global_step == 8
    assert sorted(resumed.lrs) == [4, 5, 6, 7]
    for step, lr in resumed.lrs.items():
        assert lr == pytest.approx(full.lrs[step]), step


def test_weights_full_and_encoder_only(tmp_path: Path) -> None:
    source = _task()
    full = tmp_path / 'full.pt'
    torch.save(source.model.state_dict(), full)
    task = _task(weights=str(full))
    for key, value in source.model.state_dict().items():
        assert torch.equal(task.model.state_dict()[key], value), key
    encoder = tmp_path / 'encoder.pt'
    torch.save(source.model.encoder.state_dict(), encoder)
    task = _task(weights=str(encoder))
    assert torch.equal(
        task.model.encoder.patch_embed.proj.weight,
        source.model.encoder.patch_embed.proj.weight,
    )
    # the decoder keeps its own (fresh) initialisation
    torch.manual_seed(123)
    fresh = _task(weights=str(encoder))
    assert not torch.equal(
        fresh.model.decoder.embed.weight, source.model.decoder.embed.weight
    )
    with pytest.raises(ValueError, match='neither an existing file'):
        _task(weights='NoSuchWeights.NOPE')


def test_weights_from_lightning_checkpoint(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / 'ckpt', save_last=True)
    trainer = _trainer(tmp_path, max_steps=1, callbacks=[ckpt])
    task = _task()
    trainer.fit(task, DataLoader(_Images(4), batch_size=2))
    again = _task(weights=str(tmp_path / 'ckpt' / 'last.ckpt'))
    for key, value in task.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key


# ----------------------------------------------------------------- CLI and configs


def _png_folder(root: Path, n: int = 6, size: int = 64) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f'img{i}.png')
    return root


def _geotiff_folder(root: Path, size: int = 96) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    profile = {
        'driver': 'GTiff',
        'height': size,
        'width': size,
        'count': 3,
        'dtype': 'uint8',
        'crs': 'EPSG:32617',
        'transform': from_origin(400000.0, 3300000.0, 0.5, 0.5),
    }
    with rasterio.open(root / 'tile.tif', 'w', **profile) as dst:
        dst.write(data)
    return root


def _fit_args(config: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        'fit',
        f'--config={config}',
        '--trainer.accelerator=cpu',
        '--trainer.devices=1',
        '--trainer.strategy=auto',
        '--trainer.precision=32-true',
        '--trainer.max_steps=1',
        '--trainer.limit_val_batches=0',
        f'--trainer.default_root_dir={tmp_path}',
        f'--trainer.logger.init_args.save_dir={tmp_path}',
        '--trainer.enable_model_summary=false',
        f'--model.init_args.model={TINY}',
        '--model.init_args.input_size=32',
        '--model.init_args.image_log_interval=1',
        *extra,
    ]


@pytest.mark.parametrize(
    'name',
    [
        'quickstart.yaml',
        'fmow_vit_large.yaml',
        'geotiff_template.yaml',
        'image_folder_template.yaml',
    ],
)
def test_config_parses_and_runs_one_step(name: str, tmp_path: Path) -> None:
    from torchgeo.main import main

    config = CONFIGS / name
    data: list[str] = []
    if name in ('fmow_vit_large.yaml', 'image_folder_template.yaml'):
        root = _png_folder(tmp_path / 'images')
        data = [
            f'--data.init_args.root={root}',
            '--data.init_args.batch_size=2',
            '--data.init_args.num_workers=0',
            '--data.dict_kwargs.image_size=64',
        ]
    elif name == 'geotiff_template.yaml':
        root = _geotiff_folder(tmp_path / 'geotiffs')
        data = [
            f'--data.init_args.paths={root}',
            '--data.init_args.patch_size=64',
            '--data.init_args.length=4',
            '--data.init_args.batch_size=2',
            '--data.init_args.num_workers=0',
        ]
    else:  # the quickstart's bundled raster
        data = ['--data.init_args.batch_size=2', '--data.init_args.length=4']
    main(_fit_args(config, tmp_path, *data))
    ckpts = list(tmp_path.rglob('*.ckpt'))
    assert ckpts, f'{name}: no checkpoint written'
    state = torch.load(ckpts[0], map_location='cpu', weights_only=False)
    assert state['global_step'] == 1
    assert state['hyper_parameters']['model'] == TINY
    # the config's own model settings survive the overrides
    config_text = config.read_text()
    if 'fmow' in name:
        assert 'scalemae_pretrain_vit_large_patch16' in config_text
        assert state['hyper_parameters']['decay_tokens'] is True
        assert state['hyper_parameters']['warmup_epochs'] == 20


@pytest.mark.xdist_group('pretrain_subprocess')
def test_small_cpu_recipe_runs_with_its_knn_monitor(tmp_path: Path) -> None:
    """The small-budget recipe from YAML: kNN monitor on, outputs under the root dir."""
    from PIL import Image
    from torchgeo.main import main

    rng = np.random.default_rng(0)
    for c in range(2):
        folder = tmp_path / 'scenes' / f'class{c}'
        folder.mkdir(parents=True)
        for i in range(4):
            array = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f'{i}.png')
    out = tmp_path / 'run'
    main(
        [
            'fit',
            f'--config={CONFIGS / "folder_small_cpu.yaml"}',
            '--trainer.max_steps=2',
            f'--trainer.default_root_dir={out}',
            '--trainer.enable_model_summary=false',
            '--model.init_args.input_size=32',
            '--model.init_args.warmup_steps=1',
            f'--data.init_args.root={tmp_path / "scenes"}',
            '--data.init_args.batch_size=4',
        ]
    )
    ckpts = list(out.rglob('last.ckpt'))
    assert len(ckpts) == 1, list(out.rglob('*'))
    state = torch.load(ckpts[0], map_location='cpu', weights_only=False)
    assert state['hyper_parameters']['loss'] == 'normalized'
    monitors = [v for k, v in state['callbacks'].items() if 'MultiScaleKNN' in k]
    assert monitors and monitors[0]['history'][0]['step'] == 0  # random init
    assert set(monitors[0]['history'][0]['accuracy']) == {'64px', '32px', '16px'}
    assert list(out.rglob('reconstruction_summary.txt'))
    assert all(str(p).startswith(str(out)) for p in out.rglob('*'))


def test_cli_fit_then_resume_continues_step(tmp_path: Path) -> None:
    images = _png_folder(tmp_path / 'images', n=8)
    out = tmp_path / 'out'
    base = [
        sys.executable,
        '-m',
        'torchgeo',
        'fit',
        f'--config={REPO / "tests" / "conf" / "pretrain_tiny.yaml"}',
        f'--data.init_args.root={images}',
        f'--trainer.logger.init_args.save_dir={out}',
        f'--trainer.default_root_dir={out}',
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    first = subprocess.run(
        [*base, '--trainer.max_steps=2'],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    run = out / 'logs' / 'version_0'
    last = run / 'checkpoints' / 'last.ckpt'
    assert torch.load(last, weights_only=False)['global_step'] == 2
    assert (run / 'metrics.csv').is_file()
    assert sorted(p.name for p in (run / 'images').glob('*.png'))
    second = subprocess.run(
        [*base, '--trainer.max_steps=4', f'--ckpt_path={last}'],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'Restored all states from the checkpoint' in second.stderr + second.stdout
    resumed = out / 'logs' / 'version_1' / 'checkpoints' / 'last.ckpt'
    state = torch.load(resumed, weights_only=False)
    assert state['global_step'] == 4
    # the optimiser continued: AdamW's step counter is 4, not 2
    steps = {float(s['step']) for s in state['optimizer_states'][0]['state'].values()}
    assert steps == {4.0}
    metrics = (out / 'logs' / 'version_1' / 'metrics.csv').read_text().splitlines()
    header = metrics[0].split(',')
    logged_steps = {int(row.split(',')[header.index('step')]) for row in metrics[1:]}
    assert min(logged_steps) >= 2


DDP_SCRIPT = textwrap.dedent(
    """
    import sys

    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from torchgeo_scalemae.tasks import ScaleMAEPretraining


    class Images(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {
                'image': torch.rand(3, 64, 64, generator=g),
                'gsd': torch.tensor(0.5 + i),
            }


    if __name__ == '__main__':
        torch.set_num_threads(1)
        task = ScaleMAEPretraining(
            model='scalemae_pretrain_vit_tiny_patch16',
            input_size=32,
            image_log_interval=0,
            warmup_steps=1,
            base_lr=1e-3,
        )
        trainer = L.Trainer(
            max_steps=2,
            accelerator='cpu',
            devices=2,
            strategy='ddp',  # find_unused_parameters=False
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(task, DataLoader(Images(), batch_size=2))
        weight = task.model.encoder.patch_embed.proj.weight
        print(
            'RESULT', trainer.global_rank, trainer.world_size, trainer.global_step,
            task.peak_lr, float(weight.double().sum()), flush=True,
        )
    """
)


@pytest.mark.xdist_group('pretrain_subprocess')
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / 'ddp_fit.py'
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two processes share one pipe: find the records wherever a line break fell
    rows = [
        list(match)
        for match in re.findall(
            r'RESULT (\d+) (\d+) (\d+) (\S+) (\S+?)(?=RESULT|\s|$)', proc.stdout
        )
    ]
    assert sorted(r[0] for r in rows) == ['0', '1'], proc.stdout[-2000:]
    for _, world, step, lr, _ in rows:
        assert (world, step) == ('2', '2')
        # lr = base_lr * batch 2 * accumulate 1 * world size 2 / 256
        assert float(lr) == pytest.approx(1e-3 * 2 * 2 / 256)
    # both replicas hold the same weights after the synchronised steps
    assert rows[0][4] == rows[1][4]


def test_bf16_mixed_and_accumulation(tmp_path: Path) -> None:
    trainer = _trainer(
        tmp_path, max_steps=2, precision='bf16-mixed', accumulate_grad_batches=2
    )
    task = _task(base_lr=1e-3, lr=None)
    before = task.model.encoder.patch_embed.proj.weight.detach().clone()
    trainer.fit(task, DataLoader(_Images(8), batch_size=2))
    assert trainer.global_step == 2
    # lr = base_lr * batch 2 * accumulate 2 * world 1 / 256
    assert task.peak_lr == pytest.approx(1e-3 * 2 * 2 / 256)
    after = task.model.encoder.patch_embed.proj.weight
    assert after.dtype == torch.float32  # master weights stay float32
    assert torch.isfinite(after).all()
    assert not torch.equal(before, after)


def test_compile_flag_keeps_state_dict_names() -> None:
    task = _task(compile=True)
    plain = _task()
    assert task.model._compiled_call_impl is not None
    assert set(task.state_dict()) == set(plain.state_dict())


def test_weights_enum_members_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchgeo_scalemae.models import weights as weights_module

    source = _task()
    full_state = source.model.state_dict()
    encoder_state = source.model.encoder.state_dict()
    # offline: the enums return the tiny model's weights instead of downloading
    monkeypatch.setattr(
        weights_module.ScaleMAEPretrainLarge16_Weights,
        'get_state_dict',
        lambda self, *args, **kwargs: dict(full_state),
    )
    monkeypatch.setattr(
        weights_module.ScaleMAEEncoderLarge16_Weights,
        'get_state_dict',
        lambda self, *args, **kwargs: dict(encoder_state),
    )
    by_name = _task(weights='ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP')
    for key, value in full_state.items():
        assert torch.equal(by_name.model.state_dict()[key], value), key
    member = weights_module.ScaleMAEEncoderLarge16_Weights.FMOW_RGB
    by_member = _task(weights=member)
    assert torch.equal(
        by_member.model.encoder.cls_token, source.model.encoder.cls_token
    )
    assert 'weights' not in by_member.hparams
    with pytest.raises(ValueError, match='do not fit model'):
        _task(weights='ScaleMAEPretrainLarge16_Weights.FMOW_RGB_800EP', in_channels=4)


@pytest.mark.parametrize('retain', [True, False, None])
def test_retain_cpu_memory_is_opt_in_and_reported_once(
    retain: bool | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo_scalemae.tasks import pretrain

    calls: list[int] = []
    messages: list[str] = []

    def record() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(pretrain, 'retain_freed_cpu_memory', record)
    monkeypatch.setattr(pretrain, 'rank_zero_info', messages.append)
    monkeypatch.setattr(pretrain, '_RETAIN_REPORTED', False)
    kwargs = {} if retain is None else {'retain_cpu_memory': retain}
    task = _task(**kwargs)
    assert task.hparams['retain_cpu_memory'] is bool(retain)  # default: off
    for _ in range(2):  # two fits in one process
        trainer = _trainer(tmp_path, max_steps=1)
        trainer.fit(task, DataLoader(_Images(4), batch_size=4))
    assert trainer.global_step == 1
    assert calls == ([1, 1] if retain else [])
    notices = [m for m in messages if 'freed CPU memory is kept' in m]
    assert len(notices) == (1 if retain else 0)
    if retain:
        assert 'whole process' in notices[0]


@pytest.mark.parametrize(
    ('requested', 'fused'), [(None, True), (True, True), (False, False)]
)
def test_fused_adamw_on_cpu(
    requested: bool | None, fused: bool, tmp_path: Path
) -> None:
    task = _task(fused_adamw=requested)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(task, DataLoader(_Images(8), batch_size=4))
    optimizer = trainer.optimizers[0]
    assert all(bool(g['fused']) is fused for g in optimizer.param_groups)
    # it stepped: every trainable parameter has AdamW state at step 2
    steps = {float(s['step']) for s in optimizer.state.values()}
    assert steps == {2.0}
    assert len(optimizer.state) == sum(p.requires_grad for p in task.parameters())
