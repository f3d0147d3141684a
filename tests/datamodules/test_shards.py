# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import io
import json
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from torchgeo_scalemae.datamodules import (
    CorruptSampleWarning,
    ImageFolderGSDDataModule,
    ResumeWarning,
    ShardedGSDDataModule,
    ShardedGSDDataset,
    ShardedLoader,
    default_raster_path,
    read_manifest,
)
from torchgeo_scalemae.datamodules.shard_writer import (
    ShardSink,
    index_shards,
    main,
    write_folder_shards,
    write_geotiff_shards,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'pretrain'
TINY = 'scalemae_pretrain_vit_tiny_patch16'


def _images(root: Path, n: int = 24, size: int = 16, classes: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f'class{i % classes}' if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f'img{i:03d}.png')
    return root


def _shards(tmp_path: Path, n: int = 24, per_shard: int = 3, **kwargs: Any) -> Path:
    out = tmp_path / 'shards'
    write_folder_shards(
        _images(tmp_path / 'images', n),
        out,
        gsd=0.5,
        samples_per_shard=per_shard,
        progress=False,
        **kwargs,
    )
    return out


def _dataset(shards: Path, **kwargs: Any) -> ShardedGSDDataset:
    manifest = read_manifest(shards)
    kwargs.setdefault('batch_size', 2)
    kwargs.setdefault('metadata', ['index'])
    return ShardedGSDDataset(
        [s['url'] for s in manifest['shards']],
        [s['count'] for s in manifest['shards']],
        **kwargs,
    )


def _indexes(batches: Any) -> list[list[int]]:
    return [b['index'].tolist() for b in batches]


# ----------------------------------------------------------------------- converter


def test_folder_shards_manifest_counts_and_gsd(tmp_path: Path) -> None:
    images = _images(tmp_path / 'images', 10, classes=2)
    (tmp_path / 'gsd.csv').write_text('path,gsd\nclass0/img000.png,2.0\n')
    manifest = write_folder_shards(
        images,
        tmp_path / 'out',
        gsd=0.5,
        gsd_csv=tmp_path / 'gsd.csv',
        samples_per_shard=4,
        progress=False,
    )
    assert [s['count'] for s in manifest['shards']] == [4, 4, 2]
    assert manifest['count'] == 10
    assert manifest['classes'] == ['class0', 'class1']
    assert manifest['gsd']['min'] == 0.5 and manifest['gsd']['max'] == 2.0
    assert manifest['gsd']['counts'] == {'0.5': 9, '2': 1}
    on_disk = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
    assert on_disk['shards'] == manifest['shards']
    with tarfile.open(tmp_path / 'out' / 'shard-000000.tar') as tar:
        names = tar.getnames()
        info = json.loads(tar.extractfile(names[0]).read())  # type: ignore[union-attr]
    assert names[0].endswith('.json') and names[1].endswith('.png')
    assert set(info) == {'gsd', 'index', 'source', 'label', 'class'}
    # the PNG bytes are stored unchanged
    with tarfile.open(tmp_path / 'out' / 'shard-000000.tar') as tar:
        stored = tar.extractfile(names[1]).read()  # type: ignore[union-attr]
    assert stored == (images / info['source']).read_bytes()


def test_folder_shards_num_shards_and_order(tmp_path: Path) -> None:
    images = _images(tmp_path / 'images', 10)
    manifest = write_folder_shards(
        images, tmp_path / 'a', gsd=1.0, num_shards=3, progress=False
    )
    assert [s['count'] for s in manifest['shards']] == [4, 4, 2]
    ordered = write_folder_shards(
        images, tmp_path / 'b', gsd=1.0, num_shards=1, shuffle=False, progress=False
    )
    assert ordered['count'] == 10
    dataset = _dataset(tmp_path / 'b', batch_size=1, shuffle_buffer=0)
    assert [int(s['index']) for s in dataset.iter_slot(0, 0)] == list(range(10))


def test_folder_shards_refuse_bad_inputs(tmp_path: Path) -> None:
    images = _images(tmp_path / 'images', 4)
    out = tmp_path / 'out'
    write_folder_shards(images, out, gsd=1.0, progress=False)
    with pytest.raises(ValueError, match='already holds shards'):
        write_folder_shards(images, out, gsd=1.0, progress=False)
    write_folder_shards(images, out, gsd=2.0, overwrite=True, progress=False)
    assert read_manifest(out)['gsd']['min'] == 2.0
    with pytest.raises(ValueError, match='no GSD for'):
        write_folder_shards(images, tmp_path / 'x', progress=False)
    with pytest.raises(ValueError, match='GSD must be a finite positive'):
        write_folder_shards(images, tmp_path / 'x', gsd=-1.0, progress=False)
    with pytest.raises(ValueError, match='samples_per_shard must be >= 1'):
        write_folder_shards(
            images, tmp_path / 'x', gsd=1.0, samples_per_shard=0, progress=False
        )
    with pytest.raises(ValueError, match='num_shards 9 is more than the 4'):
        write_folder_shards(images, tmp_path / 'x', gsd=1.0, num_shards=9)
    (images / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r'broken\.png'):
        write_folder_shards(images, tmp_path / 'y', gsd=1.0, progress=False)


def test_cli_converter_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _images(tmp_path / 'images', 6)
    out = tmp_path / 'out'
    assert main(['folder', str(images), '--gsd', '0.3', '--out', str(out)]) == 0
    assert '6 samples in 1 shards; GSD 0.3-0.3' in capsys.readouterr().out
    assert main(['folder', str(images), '--gsd', '0.3', '--out', str(out)]) == 2
    assert 'already holds shards' in capsys.readouterr().err
    assert main(['folder', str(tmp_path / 'nope'), '--gsd', '1', '--out', 'x']) == 2
    assert 'is not a folder' in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --gsd and --gsd-csv exclude each other
        main(['folder', str(images), '--gsd', '1', '--gsd-csv', 'a.csv', '--out', 'x'])


def test_geotiff_shards_sample_several_resolutions(tmp_path: Path) -> None:
    manifest = write_geotiff_shards(
        default_raster_path(),
        tmp_path / 'out',
        patch_size=32,
        resolutions=[0.1, 0.2],
        length=3,
        samples_per_shard=4,
        progress=False,
    )
    assert manifest['count'] == 6 and [s['count'] for s in manifest['shards']] == [4, 2]
    assert manifest['gsd']['counts'] == {'0.1': 3, '0.2': 3}
    dataset = _dataset(tmp_path / 'out', batch_size=1, shuffle_buffer=0, mode=None)
    samples = list(dataset.iter_slot(0, 0))
    assert all(s['image'].shape == (3, 32, 32) for s in samples)
    assert all(s['image'].max() > 1 for s in samples)  # raw 0-255 values (uint8 npy)
    assert sorted(round(float(s['gsd']), 3) for s in samples) == [0.1] * 3 + [0.2] * 3


def test_index_existing_shards(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=7, per_shard=3)
    (shards / 'manifest.json').unlink()
    manifest = index_shards(
        [str(shards / 'shard-{000000..000002}.tar')], shards, progress=False
    )
    assert [s['count'] for s in manifest['shards']] == [3, 3, 1]
    assert manifest['shards'][0]['url'] == 'shard-000000.tar'
    assert read_manifest(shards)['count'] == 7
    with pytest.raises(ValueError, match='exists'):
        index_shards([str(shards / 'shard-000000.tar')], shards, progress=False)


# ------------------------------------------------------------------------ manifest


def test_read_manifest_locations_and_errors(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=4, per_shard=2)
    by_folder = read_manifest(shards)
    assert by_folder['shards'][0]['url'] == str(shards / 'shard-000000.tar')
    assert read_manifest(shards / 'manifest.json')['count'] == 4
    url = read_manifest(f'file://{shards}')
    assert url['shards'][1]['url'] == f'file://{shards}/shard-000001.tar'
    with pytest.raises(ValueError, match='no shard manifest at'):
        read_manifest(tmp_path / 'nothing')
    with pytest.raises(ValueError, match='is a file but not a manifest'):
        read_manifest(shards / 'shard-000000.tar')
    (tmp_path / 'other.json').write_text('{"format": "something"}')
    with pytest.raises(ValueError, match='is not a shard manifest'):
        read_manifest(tmp_path / 'other.json')
    with pytest.raises(TypeError, match='shards must be a manifest'):
        read_manifest(3)  # type: ignore[arg-type]


# ---------------------------------------------------------- split, shuffle, batches


def test_slots_split_shards_disjointly_and_evenly(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=24, per_shard=3)  # 8 shards
    seen: list[set[int]] = []
    for rank in range(2):
        dataset = _dataset(shards, rank=rank, world_size=2, num_workers=2)
        assert dataset.samples_per_slot == 6 and len(dataset) == 12
        for worker in range(2):
            slot = rank * 2 + worker
            seen.append({int(s['index']) for s in dataset.iter_slot(0, slot)})
    assert all(len(s) == 6 for s in seen)
    assert set().union(*seen) == set(range(24))  # disjoint and complete
    # another epoch permutes the shards over the slots
    dataset = _dataset(shards, world_size=2, num_workers=2)
    assert dataset.slot_shards(0, 0) != dataset.slot_shards(1, 0)


def test_shuffle_is_seeded(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=12, per_shard=12)
    order = [int(s['index']) for s in _dataset(shards, seed=0).iter_slot(0, 0)]
    again = [int(s['index']) for s in _dataset(shards, seed=0).iter_slot(0, 0)]
    other = [int(s['index']) for s in _dataset(shards, seed=1).iter_slot(0, 0)]
    assert order == again and order != other and sorted(order) == sorted(other)


def test_too_few_shards_or_samples_are_errors(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=6, per_shard=3)  # 2 shards
    with pytest.raises(ValueError, match='2 shards cannot feed 4 streams'):
        _dataset(shards, world_size=2, num_workers=2)
    with pytest.raises(ValueError, match='fewer than batch_size 4'):
        _dataset(shards, world_size=2, batch_size=4)
    with pytest.raises(ValueError, match='rank must be < world_size'):
        _dataset(shards, rank=2, world_size=2)
    with pytest.raises(ValueError, match='metadata must be a list'):
        _dataset(shards, metadata='index')


def test_datamodule_batches_like_the_folder_datamodule(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=8, per_shard=4)
    dm = ShardedGSDDataModule(
        str(shards), batch_size=4, image_size=8, mean=0.0, std=255.0
    )
    dm.setup('fit')
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 == len(dm.train_dataloader())
    batch = batches[0]
    assert set(batch) == {'image', 'gsd'}
    assert (
        batch['image'].shape == (4, 3, 8, 8) and batch['image'].dtype == torch.float32
    )
    assert torch.allclose(batch['gsd'], torch.full((4,), 1.0))  # 0.5 x 16 / 8
    normalised = dm.aug(dict(batch))
    assert float(normalised['image'].max()) <= 1.0
    folder = ImageFolderGSDDataModule(
        str(tmp_path / 'images'), gsd=0.5, batch_size=4, image_size=8
    )
    folder.setup('fit')
    reference = next(iter(folder.train_dataloader()))
    assert set(reference) == set(batch)
    assert reference['image'].shape == batch['image'].shape


def test_datamodule_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='batch_size must be >= 1'):
        ShardedGSDDataModule('x', batch_size=0)
    with pytest.raises(ValueError, match='gsd must be a finite positive'):
        ShardedGSDDataModule('x', gsd=0.0)
    with pytest.raises(ValueError, match='mode must be None or a PIL mode'):
        ShardedGSDDataModule('x', mode='XYZ')
    with pytest.raises(TypeError, match='shards must be a manifest'):
        ShardedGSDDataModule(None)  # type: ignore[arg-type]
    shards = _shards(tmp_path, n=4, per_shard=2)
    (shards / 'shard-000001.tar').unlink()
    dm = ShardedGSDDataModule(str(shards), batch_size=2)
    with pytest.raises(ValueError, match=r'shard-000001.tar.*does not exist'):
        dm.setup('fit')
    with pytest.raises(RuntimeError, match='call setup'):
        dm.train_dataloader()


def test_uneven_shards_warn_about_unused_samples(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=10, per_shard=4)  # 4, 4, 2
    dm = ShardedGSDDataModule(str(shards), batch_size=2, num_workers=2)
    with pytest.warns(UserWarning, match='each epoch reads 4 of the 10 samples'):
        dm.setup('fit')


# ----------------------------------------------------------------- corrupt samples


def _rewrite(shard: Path, change: dict[str, bytes | None]) -> None:
    """Replace (bytes) or drop (None) members of a tar shard."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(shard, 'w') as tar:
        for member, data in members:
            if member.name in change:
                if change[member.name] is None:
                    continue
                data = change[member.name]  # type: ignore[assignment]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_corrupt_samples_are_skipped_counted_and_replaced(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=8, per_shard=4, shuffle=False)
    shard = shards / 'shard-000000.tar'
    _rewrite(
        shard,
        {
            '000000001.png': b'garbage',
            '000000002.json': b'{"gsd": -1}',
            '000000003.json': None,  # no JSON: no GSD
        },
    )
    dm = ShardedGSDDataModule(
        str(shards),
        batch_size=2,
        shuffle_buffer=0,
        shuffle_shards=False,
        metadata=['index'],
    )
    dm.setup('fit')
    with pytest.warns(CorruptSampleWarning) as records:
        batches = list(dm.train_dataloader())
    messages = [str(r.message) for r in records]
    # the epoch keeps its length: the slot wraps around to replace the bad samples,
    # meeting them again (every skip is counted)
    assert len(messages) == 6 and dm.skipped == 6
    assert "sample '000000001' of shard" in messages[0]
    assert 'cannot be decoded' in messages[0] and '(1 skipped so far)' in messages[0]
    assert 'gsd -1 is not a finite positive' in messages[1]
    assert 'has no .json' in messages[2] and '(3 skipped so far)' in messages[2]
    assert len(batches) == 4
    indexes = [i for batch in _indexes(batches) for i in batch]
    assert 1 not in indexes and 2 not in indexes and 3 not in indexes
    assert indexes == [0, 4, 5, 6, 7, 0, 4, 5]


def test_truncated_shard_is_reported(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=8, per_shard=4, shuffle=False)
    shard = shards / 'shard-000001.tar'
    shard.write_bytes(shard.read_bytes()[:1500])  # cut in the second sample
    dataset = _dataset(shards, batch_size=2, shuffle_buffer=0)
    loader = ShardedLoader(dataset)
    with pytest.warns(CorruptSampleWarning) as records:
        batches = list(loader)
    assert len(batches) == 4 and loader.skipped >= 1
    assert any('shard-000001.tar' in str(r.message) for r in records)


def test_unreadable_everything_raises(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=2, per_shard=2)
    (shards / 'shard-000000.tar').write_bytes(b'\0' * 10)
    loader = ShardedLoader(_dataset(shards, batch_size=2))
    with pytest.raises(RuntimeError, match='no valid sample in a full pass'):
        list(loader)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_samples_default_gsd_and_metadata_checks(tmp_path: Path) -> None:
    sink = ShardSink(tmp_path / 'out', samples_per_shard=10)
    good = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
    bad = np.full((2, 4, 4), np.nan, dtype=np.float32)
    sink.write('a', 'npy', _npy(good), {'gsd': 10.0, 'label': 3})
    sink.write('b', 'npy', _npy(bad), {'gsd': 10.0, 'label': 1})
    sink.write('c', 'npy', _npy(good), {'gsd': 20.0})  # no label
    sink.write('d', 'npy', _npy(good[0]), {'gsd': 30.0, 'label': 2})
    manifest = sink.finish({'kind': 'test'})
    assert manifest['count'] == 4 and manifest['gsd']['max'] == 30.0
    loader = ShardedLoader(
        _dataset(tmp_path / 'out', batch_size=1, shuffle_buffer=0, metadata=['label'])
    )
    with pytest.warns(CorruptSampleWarning) as records:
        batches = list(loader)
    reasons = ' | '.join(str(r.message) for r in records)
    assert 'non-finite' in reasons and "field 'label' is None" in reasons
    first = batches[0]
    assert (
        first['image'].shape == (1, 2, 4, 4) and first['image'].dtype == torch.float32
    )
    assert first['label'].tolist() == [3] and first['label'].dtype == torch.long
    assert torch.equal(first['image'][0], torch.from_numpy(good.astype(np.float32)))
    assert any(b['image'].shape == (1, 1, 4, 4) for b in batches)  # (H, W) -> (1, H, W)


def test_samples_without_json_use_the_default_gsd(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=4, per_shard=4, shuffle=False)
    shard = shards / 'shard-000000.tar'
    _rewrite(shard, {f'00000000{i}.json': None for i in range(4)})
    strict = ShardedLoader(_dataset(shards, metadata=[], shuffle_buffer=0))
    with pytest.raises(RuntimeError, match=r'has no \.json'):
        list(strict)
    loader = ShardedLoader(_dataset(shards, metadata=[], gsd=2.0, shuffle_buffer=0))
    batch = next(iter(loader))
    assert batch['gsd'].tolist() == [2.0, 2.0]


def test_shards_through_an_fsspec_url(tmp_path: Path) -> None:
    fsspec = pytest.importorskip('fsspec')
    shards = _shards(tmp_path, n=8, per_shard=4)
    memory = fsspec.filesystem('memory')
    for file in shards.iterdir():
        memory.pipe(f'/bucket/shards/{file.name}', file.read_bytes())
    manifest = read_manifest('memory://bucket/shards')
    assert manifest['shards'][0]['url'] == 'memory://bucket/shards/shard-000000.tar'
    dm = ShardedGSDDataModule(
        'memory://bucket/shards', batch_size=2, metadata=['index']
    )
    dm.setup('fit')
    indexes = sorted(i for b in _indexes(dm.train_dataloader()) for i in b)
    assert indexes == list(range(8))
    with pytest.raises(ValueError, match='no shard manifest at'):
        read_manifest('memory://bucket/elsewhere')


# ------------------------------------------------------------------------- resume


@pytest.mark.parametrize('workers', [0, 2])
def test_loader_resumes_exactly(tmp_path: Path, workers: int) -> None:
    shards = _shards(tmp_path, n=24, per_shard=3)
    dataset = _dataset(shards, num_workers=workers, shuffle_buffer=4)
    reference = ShardedLoader(dataset, num_workers=workers)
    epochs = _indexes(reference) + _indexes(reference)  # two full epochs
    assert reference.epoch == 2
    assert sorted(i for b in epochs[: len(epochs) // 2] for i in b) == list(range(24))
    loader = ShardedLoader(
        _dataset(shards, num_workers=workers, shuffle_buffer=4), num_workers=workers
    )
    iterator = iter(loader)
    head = [next(iterator)['index'].tolist() for _ in range(5)]
    state = loader.state_dict()
    assert state['batches'] == 5 and state['epoch'] == 0
    resumed = ShardedLoader(
        _dataset(shards, num_workers=workers, shuffle_buffer=4), num_workers=workers
    )
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a checkpoint
    tail = _indexes(resumed) + _indexes(resumed)
    assert head + tail == epochs


def test_transfer_tracking_ignores_prefetched_batches(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=8, per_shard=4)
    dataset = _dataset(shards, shuffle_buffer=0)
    loader = ShardedLoader(dataset, track='transfer')
    iterator = iter(loader)
    first, second = next(iterator), next(iterator)  # one trained, one prefetched
    loader.commit(first)
    assert '_shard_position' not in first and '_shard_position' in second
    state = loader.state_dict()
    assert state['batches'] == 1
    resumed = ShardedLoader(_dataset(shards, shuffle_buffer=0))
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed))['index'], second['index'])


def test_changed_layout_warns_and_keeps_the_batch_index(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=24, per_shard=3)
    loader = ShardedLoader(_dataset(shards))
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    other = ShardedLoader(_dataset(shards, batch_size=3))
    with pytest.warns(ResumeWarning, match=r'batch_size 2 -> 3'):
        other.load_state_dict(state)
    assert other.batches == 3 and other.epoch == 0
    assert len(list(other)) == len(other) - 3
    with pytest.raises(ValueError, match='not a ShardedLoader state'):
        other.load_state_dict({'version': 7})


def test_datamodule_state_before_the_loader_exists(tmp_path: Path) -> None:
    shards = _shards(tmp_path, n=8, per_shard=2)
    dm = ShardedGSDDataModule(str(shards), batch_size=2, metadata=['index'])
    dm.setup('fit')
    iterator = iter(dm.train_dataloader())
    head = [next(iterator)['index'].tolist() for _ in range(2)]
    state = dm.state_dict()
    again = ShardedGSDDataModule(str(shards), batch_size=2, metadata=['index'])
    assert again.state_dict() == {}
    again.load_state_dict(state)  # Lightning restores before the loader is built
    assert again.state_dict() == state
    again.setup('fit')
    full = ShardedGSDDataModule(str(shards), batch_size=2, metadata=['index'])
    full.setup('fit')
    assert head + _indexes(again.train_dataloader()) == _indexes(
        full.train_dataloader()
    )


# ------------------------------------------------------------ the docs' commands


def test_docs_commands_convert_fit_and_resume(tmp_path: Path) -> None:
    """Convert a folder, fit a few steps with the small config, resume with ckpt_path."""
    from torchgeo.main import main as torchgeo_main

    images = _images(tmp_path / 'images', 12, size=32)
    shards = tmp_path / 'shards'
    assert main(['folder', str(images), '--gsd', '8.0', '--out', str(shards),
                 '--samples-per-shard', '4', '--quiet']) == 0  # fmt: skip
    out = tmp_path / 'outputs'
    common = [
        'fit',
        f'--config={CONFIGS / "shards_small_cpu.yaml"}',
        f'--data.init_args.shards={shards}',
        f'--trainer.default_root_dir={out}',
        '--trainer.enable_model_summary=false',
        '--trainer.enable_progress_bar=false',
        '--trainer.callbacks.init_args.every_n_train_steps=1',
        f'--model.init_args.model={TINY}',
        '--model.init_args.input_size=32',
        '--model.init_args.warmup_steps=1',
        '--model.init_args.image_log_interval=0',
        '--data.init_args.batch_size=2',
        '--data.init_args.image_size=64',
    ]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torchgeo_main([*common, '--trainer.max_steps=2'])
    last = out / 'lightning_logs' / 'version_0' / 'checkpoints' / 'last.ckpt'
    state = torch.load(last, map_location='cpu', weights_only=False)
    assert state['global_step'] == 2
    loader_state = state['ShardedGSDDataModule']['loader']
    assert loader_state['batches'] == 2 and loader_state['epoch'] == 0
    fit_loop = state['loops']['fit_loop']['state_dict']
    assert fit_loop['combined_loader'] == [loader_state]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torchgeo_main([*common, '--trainer.max_steps=8', f'--ckpt_path={last}'])
    resumed = out / 'lightning_logs' / 'version_1' / 'checkpoints' / 'last.ckpt'
    state = torch.load(resumed, map_location='cpu', weights_only=False)
    assert state['global_step'] == 8
    # 12 samples, batch 2: 6 batches per epoch; 8 steps end 2 batches into epoch 1
    assert state['ShardedGSDDataModule']['loader']['epoch'] == 1
    assert state['ShardedGSDDataModule']['loader']['batches'] == 2


def test_fmow_shards_config_parses_and_runs_one_step(tmp_path: Path) -> None:
    from torchgeo.main import main as torchgeo_main

    shards = _shards(tmp_path, n=8, per_shard=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torchgeo_main(
            [
                'fit',
                f'--config={CONFIGS / "shards_fmow_vit_large.yaml"}',
                '--trainer.accelerator=cpu',
                '--trainer.devices=1',
                '--trainer.num_nodes=1',
                '--trainer.strategy=auto',
                '--trainer.precision=32-true',
                '--trainer.max_steps=1',
                f'--trainer.logger.init_args.save_dir={tmp_path}',
                f'--trainer.default_root_dir={tmp_path}',
                '--trainer.enable_model_summary=false',
                f'--model.init_args.model={TINY}',
                '--model.init_args.input_size=32',
                '--model.init_args.image_log_interval=0',
                f'--data.init_args.shards={shards}',
                '--data.init_args.batch_size=2',
                '--data.init_args.num_workers=0',
                '--data.init_args.image_size=64',
                '--data.init_args.pin_memory=false',
            ]
        )
    ckpts = list(tmp_path.rglob('*.ckpt'))
    assert ckpts
    state = torch.load(ckpts[0], map_location='cpu', weights_only=False)
    assert state['global_step'] == 1
    assert state['hyper_parameters']['warmup_epochs'] == 20


@pytest.mark.shared
def test_real_images_round_trip(tmp_path: Path) -> None:
    root = shared_path('data', 'aid150')
    manifest = write_folder_shards(
        root, tmp_path / 'aid', gsd=0.5, max_per_class=2, num_shards=4, progress=False
    )
    assert manifest['count'] == 2 * len(manifest['classes'])
    dataset = _dataset(tmp_path / 'aid', batch_size=1, metadata=['label'])
    sample = next(iter(dataset.iter_slot(0, 0)))
    assert sample['image'].shape[0] == 3 and float(sample['gsd']) == 0.5
