# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Samples per second of the sharded loader against the folder datamodule.

Both read the same images (the first ``--per-class`` files of every class folder of
``--root``), decode them with PIL, resize them to ``--image-size`` (antialiased
bilinear, GSD rescaled) and batch them, for one epoch per measurement, with 0, 1
and 2 workers; the measurements alternate between the loaders in one process and
each is repeated ``--repeats`` times (the best is reported). The ratio is
shards / folder. With ``--litdata`` (and the ``litdata`` package importable) the
same JPEG bytes written with ``litdata.optimize`` and read with its
``StreamingDataset``/``StreamingDataLoader`` are measured too.

    nice -n 10 .venv/bin/python benchmarks/shard_throughput.py \
        --root ../shared/data/aid150 --per-class 67

Prints the command line, the machine and the versions, then a table.
"""

import argparse
import functools
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from torchgeo_scalemae.datamodules import (
    ImageFolderGSD,
    ImageFolderGSDDataModule,
    ShardedGSDDataModule,
)
from torchgeo_scalemae.datamodules.shard_writer import write_folder_shards
from torchgeo_scalemae.datamodules.shards import _decode_image


def _epoch(loader: Iterable[dict[str, Any]]) -> tuple[int, float]:
    start = time.perf_counter()
    samples = 0
    for batch in loader:
        samples += int(batch['image'].shape[0])
    return samples, time.perf_counter() - start


def _litdata_item(path: str, gsd: float) -> dict[str, Any]:
    return {'image': Path(path).read_bytes(), 'gsd': gsd}


def _litdata_write(files: list[Path], out: Path, gsd: float) -> Any:
    if litdata is None:
        raise ImportError('litdata')
    method = multiprocessing.get_start_method()
    litdata.optimize(
        fn=functools.partial(_litdata_item, gsd=gsd),
        inputs=[str(f) for f in files],
        output_dir=str(out),
        chunk_bytes='64MB',
        num_workers=1,
        verbose=False,
    )
    # optimize() switches the whole process to 'spawn': give every loader the same
    # (the platform's default) start method again
    multiprocessing.set_start_method(method, force=True)


try:  # optional: the LitData comparison (--litdata)
    import litdata
except ImportError:  # pragma: no cover - litdata is not a dependency
    litdata = None

if litdata is not None:

    class _Decoded(litdata.StreamingDataset):  # type: ignore[misc]
        """LitData items decoded and resized as the shard and folder loaders do."""

        def __init__(self, root: str, size: int) -> None:
            super().__init__(root, shuffle=True, seed=0)
            self.size = size

        def __getitem__(self, index: Any) -> dict[str, Any]:
            item = super().__getitem__(index)
            image = _decode_image('jpg', item['image'], 'RGB')
            height, width = image.shape[-2:]
            image = F.interpolate(
                image[None],
                size=(self.size, self.size),
                mode='bilinear',
                antialias=True,
            )[0]
            gsd = item['gsd'] * math.sqrt(height * width) / self.size
            return {'image': image, 'gsd': torch.tensor(gsd, dtype=torch.float32)}


def _litdata_loader(out: Path, args: argparse.Namespace, workers: int) -> Any:
    dataset = _Decoded(str(out), args.image_size)
    return litdata.StreamingDataLoader(
        dataset, batch_size=args.batch_size, num_workers=workers
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='../shared/data/aid150')
    parser.add_argument('--per-class', type=int, default=67)
    parser.add_argument('--gsd', type=float, default=0.5)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--num-shards', type=int, default=8)
    parser.add_argument('--shuffle-buffer', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--litdata', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(1)

    print('command:', ' '.join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f'machine: {platform.machine()}, {os.cpu_count()} CPUs '
        f'({len(os.sched_getaffinity(0))} usable), Python {platform.python_version()}'
    )
    versions = [f'torch {torch.__version__}']
    for name in ('webdataset', 'litdata', 'PIL'):
        try:
            module = __import__(name)
            versions.append(f'{name} {getattr(module, "__version__", "?")}')
        except ImportError:
            pass
    print('versions:', ', '.join(versions))

    dataset = ImageFolderGSD(
        args.root, gsd=args.gsd, mode=None, max_per_class=args.per_class
    )
    files = dataset.files
    temporary = tempfile.TemporaryDirectory(prefix='shard_throughput_')
    work = Path(temporary.name)
    start = time.perf_counter()
    manifest = write_folder_shards(
        args.root,
        work / 'shards',
        gsd=args.gsd,
        max_per_class=args.per_class,
        num_shards=args.num_shards,
        progress=False,
    )
    written = time.perf_counter() - start
    size = sum(s['bytes'] for s in manifest['shards']) / 2**20
    print(
        f'images: {len(files)} from {args.root} ({len(dataset.classes)} classes); '
        f'shards: {len(manifest["shards"])} ({size:.0f} MiB), written in '
        f'{written:.1f} s; resize to {args.image_size} px, batch {args.batch_size}'
    )
    litdata_ok = False
    if args.litdata:
        try:
            start = time.perf_counter()
            _litdata_write(files, work / 'litdata', args.gsd)
            print(f'litdata chunks written in {time.perf_counter() - start:.1f} s')
            litdata_ok = True
        except ImportError:
            print('litdata is not importable: its column is left out')

    def folder(workers: int) -> Any:
        dm = ImageFolderGSDDataModule(
            args.root,
            gsd=args.gsd,
            batch_size=args.batch_size,
            num_workers=workers,
            val_split_pct=0.0,
            test_split_pct=0.0,
            image_size=args.image_size,
            max_per_class=args.per_class,
        )
        dm.setup('fit')
        return dm.train_dataloader()

    def shards(workers: int) -> Any:
        dm = ShardedGSDDataModule(
            str(work / 'shards'),
            batch_size=args.batch_size,
            num_workers=workers,
            image_size=args.image_size,
            shuffle_buffer=args.shuffle_buffer,
        )
        dm.setup('fit')
        return dm.train_dataloader()

    loaders: dict[str, Any] = {'folder': folder, 'shards': shards}
    if litdata_ok:
        loaders['litdata'] = lambda w: _litdata_loader(work / 'litdata', args, w)
    rows = []
    for workers in args.workers:
        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, make in loaders.items():
                samples, seconds = _epoch(make(workers))
                rate = samples / seconds
                best[name] = max(best.get(name, 0.0), rate)
                counts[name] = samples
        rows.append((workers, best, counts))
        line = ', '.join(f'{n} {best[n]:.1f}/s ({counts[n]})' for n in best)
        print(f'  workers={workers}: {line}', flush=True)

    names = list(loaders)
    header = ['workers', *[f'{n} (samples/s)' for n in names], 'shards / folder']
    if litdata_ok:
        header.append('litdata / folder')
    print()
    print(' | '.join(header))
    for workers, best, _ in rows:
        cells = [str(workers), *[f'{best[n]:.1f}' for n in names]]
        cells.append(f'{best["shards"] / best["folder"]:.2f}')
        if litdata_ok:
            cells.append(f'{best["litdata"] / best["folder"]:.2f}')
        print(' | '.join(cells))
    temporary.cleanup()


if __name__ == '__main__':
    main()
