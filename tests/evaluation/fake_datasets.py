# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Tiny synthetic dataset trees in the layouts TorchGeo's datasets expect (no download).

Each class gets a distinct mean colour so a kNN on any reasonable feature can separate
them; images are tiny (32 px by default) to keep tests fast.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ('alpha', 'beta', 'gamma')
SPLITS = ('train', 'val', 'test')


def _pixels(rng: np.random.Generator, label: int, size: int, bands: int) -> np.ndarray:
    base = 40 + 80 * label
    noise = rng.integers(0, 40, (size, size, bands))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_tree(
    root: Path,
    folder: Path,
    split_name: str,
    ext: str,
    per_split: int,
    size: int,
    list_ext: str | None = None,
) -> Path:
    rng = np.random.default_rng(0)
    for split in SPLITS:
        names = []
        for label, cls in enumerate(CLASSES):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_split):
                name = f'{cls}_{split}{i:02d}'
                Image.fromarray(_pixels(rng, label, size, 3)).save(
                    folder / cls / f'{name}{ext}'
                )
                names.append(name + (list_ext or ext))
        (root / split_name.format(split=split)).write_text('\n'.join(names) + '\n')
    return root


def make_ucmerced(root: Path, per_split: int = 3, size: int = 32) -> Path:
    """UC Merced: ``UCMerced_LandUse/Images/<class>/*.tif`` + ``uc_merced-<split>.txt``."""
    folder = root / 'UCMerced_LandUse' / 'Images'
    return _write_tree(root, folder, 'uc_merced-{split}.txt', '.tif', per_split, size)


def make_resisc45(root: Path, per_split: int = 3, size: int = 32) -> Path:
    """RESISC45: ``NWPU-RESISC45/<class>/*.jpg`` + ``resisc45-<split>.txt``."""
    folder = root / 'NWPU-RESISC45'
    return _write_tree(root, folder, 'resisc45-{split}.txt', '.jpg', per_split, size)


def make_eurosat(root: Path, per_split: int = 3, size: int = 32) -> Path:
    """EuroSAT: 13-band GeoTIFFs under ``ds/.../tif/<class>/`` + ``eurosat-<split>.txt``."""
    import rasterio
    from rasterio.transform import from_origin

    folder = root.joinpath(
        'ds', 'images', 'remote_sensing', 'otherDatasets', 'sentinel_2', 'tif'
    )
    rng = np.random.default_rng(0)
    for split in SPLITS:
        names = []
        for label, cls in enumerate(CLASSES):
            os.makedirs(folder / cls, exist_ok=True)
            for i in range(per_split):
                name = f'{cls}_{split}{i:02d}'
                data = (
                    _pixels(rng, label, size, 13).transpose(2, 0, 1).astype(np.uint16)
                )
                with rasterio.open(
                    folder / cls / f'{name}.tif',
                    'w',
                    driver='GTiff',
                    height=size,
                    width=size,
                    count=13,
                    dtype='uint16',
                    crs='EPSG:32632',
                    transform=from_origin(500000, 5000000, 10, 10),
                ) as dst:
                    dst.write(data * 10)
                names.append(f'{name}.jpg')
        (root / f'eurosat-{split}.txt').write_text('\n'.join(names) + '\n')
    return root


def make_image_folder(root: Path, per_class: int = 4, size: int = 32) -> Path:
    """A plain ImageFolder tree ``<class>/<name>.png`` (all splits from one tree)."""
    rng = np.random.default_rng(0)
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_pixels(rng, label, size, 3)).save(root / cls / f'{i}.png')
    return root
