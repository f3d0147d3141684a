# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""A folder of images (optionally one subfolder per class) with per-file GSDs.

.. versionadded:: 0.1
"""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Generator
from torch.utils.data import random_split
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset

from ..gsd import GSD_KEY
from ._checks import check_flag, check_int, check_loader
from ._images import (
    check_mode,
    check_split_pcts,
    check_transforms,
    collate_images,
    csv_rows,
    load_image,
    pick_gsd,
    positive_gsd,
    resize_square,
    row_gsd,
    split_counts,
)

__all__ = ('IMAGE_EXTENSIONS', 'ImageFolderGSD', 'ImageFolderGSDDataModule')

#: File extensions read by :class:`ImageFolderGSD` (case-insensitive).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def read_gsd_csv(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, float]:
    """Read a ``path,gsd`` CSV into ``{resolved file path: gsd}``.

    ``path`` is relative to ``root`` (or absolute); ``gsd`` is in metres per pixel.
    Every row must name an existing file, and no file may be listed twice, so a
    typo in the CSV is an error rather than a file that silently falls back to
    another GSD.

    Args:
        path: UTF-8 CSV file with a header row containing ``path`` and ``gsd``.
        root: Folder that relative paths refer to, or several folders (a relative
            path must then exist in at least one of them, and counts for each one
            it exists in).

    Returns:
        Mapping from the resolved file path (``str``) to its GSD.

    Raises:
        ValueError: If the file is not text, the columns are missing, a GSD is not
            a finite positive number, a row names no existing file, or a file is
            listed twice (the message names the row).
    """
    roots = (
        [Path(root)] if isinstance(root, str | os.PathLike) else [Path(r) for r in root]
    )
    if not roots:
        raise ValueError('read_gsd_csv needs at least one root folder')
    table: dict[str, float] = {}
    first_line: dict[str, int] = {}

    def check_fields(fields: list[str]) -> None:
        if 'path' not in fields or 'gsd' not in fields:
            raise ValueError(
                f'{path}: the GSD CSV needs the columns path,gsd; found {fields}'
            )

    _, rows = csv_rows(path, check_fields)
    for line, row in rows:
        name = (row.get('path') or '').strip()
        where = f'{path}, line {line} ({name!r})'
        value = row_gsd(row, where)
        if not name:
            raise ValueError(f'{where}: the path is empty')
        file = Path(name)
        candidates = [file] if file.is_absolute() else [r / file for r in roots]
        found = [c for c in candidates if c.is_file()]
        if not found:
            places = ', '.join(repr(str(r)) for r in roots)
            raise ValueError(
                f'{where}: no such file (relative paths are looked up under {places})'
            )
        for candidate in found:
            key = str(candidate.resolve())
            if key in first_line:
                raise ValueError(
                    f'{where}: {key!r} is listed twice (first on line '
                    f'{first_line[key]}); give each file one row'
                )
            first_line[key] = line
            table[key] = value
    return table


class ImageFolderGSD(NonGeoDataset):
    """Images in a folder, with a GSD per file and optional class labels.

    Layouts: ``root/<class>/<image>`` (labelled; classes sorted by name, as
    torchvision's ``ImageFolder``) or images anywhere under ``root`` without class
    subfolders (unlabelled; ``labelled=False`` forces this for any layout).

    Each file's GSD, in order of precedence: its row in ``gsd_csv`` (columns
    ``path,gsd``, paths relative to ``root``); the constant ``gsd``; the pixel size
    of a GeoTIFF in a projected CRS (converted to metres). A file with none of these
    raises a :class:`ValueError` naming it. Every CSV row must name an existing
    file, once (see :func:`read_gsd_csv`).

    A file that cannot be read (truncated, not an image, a ``.tif`` that is no
    raster) raises an :class:`OSError` naming it when its sample is loaded. Images
    of different sizes can only be batched with ``image_size``.

    Samples: ``image`` float32 ``(C, H, W)`` with the raw pixel values (0-255 for
    8-bit images), ``gsd`` 0-d float32 in metres per pixel, ``label`` (int64) when
    labelled; ``files[i]`` is the path of sample ``i``. With ``image_size``
    every image is resized (antialiased bilinear) to ``image_size`` and its GSD
    scaled by ``W / image_size`` (geometric mean of both axes when not square), so
    images of different sizes can be batched.

    Args:
        root: Folder of images.
        gsd: GSD in metres per pixel for every file without a CSV row.
        gsd_csv: CSV with columns ``path,gsd`` (per-file GSDs).
        labelled: Class subfolders give labels; ``None`` detects it (any
            subfolder that holds images).
        image_size: Resize every image to this square size (pixels, ``>= 1``).
        mode: PIL mode to convert to (``'RGB'``; one of ``PIL.Image.MODES``);
            ``None`` keeps the file's mode. GeoTIFFs are read with rasterio (all
            bands) whatever the mode.
        extensions: File extensions to include (``'.png'`` or a list of them).
        max_per_class: Keep at most this many files per class (sorted by name),
            for quick experiments.
        transforms: Transform applied to each sample dict.
        csv_roots: Further folders that relative paths in ``gsd_csv`` may refer to
            (the datamodule passes its train, validation and test roots, so that
            one CSV serves all three).

    Raises:
        ValueError: If ``root`` is not a folder or holds no images, the CSV is
            invalid (see :func:`read_gsd_csv`), or an argument is out of range
            (the message names it and its value).
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        gsd: float | None = None,
        gsd_csv: str | os.PathLike[str] | None = None,
        labelled: bool | None = None,
        image_size: int | None = None,
        mode: str | None = 'RGB',
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        max_per_class: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        csv_roots: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        """Initialize a new ImageFolderGSD dataset."""
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f'root must be a folder path, got {type(root).__name__}')
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f'root {str(root)!r} is not a folder')
        self.gsd = None if gsd is None else positive_gsd(gsd, 'gsd')
        if image_size is not None and (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size < 1
        ):
            raise ValueError(f'image_size must be a positive int, got {image_size!r}')
        check_int(max_per_class, 'max_per_class', 1, none=True)
        if labelled is not None:
            check_flag(labelled, 'labelled')
        check_mode(mode)
        check_transforms(transforms)
        if isinstance(extensions, str):
            extensions = (extensions,)
        if not extensions or not all(
            isinstance(e, str) and e.startswith('.') and len(e) > 1 for e in extensions
        ):
            raise ValueError(
                "extensions must be file suffixes such as ['.png', '.tif'], got "
                f'{extensions!r}'
            )
        roots = [self.root, *(Path(r) for r in csv_roots)]
        unique_roots = list({str(r.resolve()): r for r in roots}.values())
        self.gsd_table = read_gsd_csv(gsd_csv, unique_roots) if gsd_csv else {}
        self.image_size = image_size
        self.mode = mode
        self.transforms = transforms
        exts = tuple(e.lower() for e in extensions)

        def images_in(folder: Path) -> list[Path]:
            return sorted(
                p for p in folder.rglob('*') if p.is_file() and p.suffix.lower() in exts
            )

        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        if labelled is None:
            labelled = any(images_in(d) for d in subdirs)
        self.labelled = labelled
        files: list[Path] = []
        labels: list[int] = []
        if labelled:
            self.classes = [d.name for d in subdirs if images_in(d)]
            for index, name in enumerate(self.classes):
                found = images_in(self.root / name)[:max_per_class]
                files.extend(found)
                labels.extend([index] * len(found))
        else:
            self.classes = []
            files = images_in(self.root)[:max_per_class]
        if not files:
            raise ValueError(f'no images with extensions {exts} under {str(root)!r}')
        self.files = files
        self.targets = labels

    def __len__(self) -> int:
        """Return the number of images."""
        return len(self.files)

    def gsd_of(self, index: int, file_gsd: float | None = None) -> float:
        """Return the native GSD of file ``index`` (metres per pixel).

        Args:
            index: File index.
            file_gsd: GSD read from the file's georeferencing, if any.

        Returns:
            The GSD by the precedence CSV, ``gsd``, file metadata.

        Raises:
            ValueError: If no GSD is known for the file.
        """
        path = self.files[index]
        return pick_gsd(
            self.gsd_table.get(str(path.resolve())),
            self.gsd,
            file_gsd,
            path,
            'a gsd_csv row for it, or a GeoTIFF in a projected CRS',
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return the sample at ``index``.

        Args:
            index: Sample index.

        Returns:
            ``{'image': (C, H, W) float32, 'gsd': () float32, 'label'?: () int64}``.
        """
        image, file_gsd = load_image(self.files[index], self.mode)
        image, gsd = resize_square(image, self.gsd_of(index, file_gsd), self.image_size)
        sample: dict[str, Any] = {
            'image': image,
            GSD_KEY: torch.tensor(gsd, dtype=torch.float32),
        }
        if self.labelled:
            sample['label'] = torch.tensor(self.targets[index], dtype=torch.long)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class ImageFolderGSDDataModule(NonGeoDataModule):
    """Datamodule for a folder of images with known GSDs (see :class:`ImageFolderGSD`).

    Batches (after :meth:`on_after_batch_transfer`): ``image`` float32
    ``(B, C, H, W)`` **normalised** as ``(x - mean) / std`` with TorchGeo's default
    ``mean = 0``, ``std = 255``, i.e. scaled to 0-1 for 8-bit images; ``gsd``
    float32 ``(B,)`` metres per pixel; ``label`` int64 ``(B,)`` when labelled.
    Images of different sizes need ``image_size`` (or equal sizes) to be batched;
    the collate error says so.

    The files are split at random (seeded) into train/val/test by
    ``val_split_pct`` and ``test_split_pct``; ``val_root``/``test_root`` give
    separate folders instead.

    Example::

        dm = ImageFolderGSDDataModule('my_images/', gsd=0.5, batch_size=16)
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))  # image, gsd, label

    Args:
        root: Folder of images (``root/<class>/<image>`` or flat).
        gsd: GSD in metres per pixel for files without a CSV row.
        gsd_csv: CSV with columns ``path,gsd`` (per-file GSD).
        batch_size: Mini-batch size.
        num_workers: Data loader workers.
        val_split_pct: Fraction of files for validation.
        test_split_pct: Fraction of files for testing.
        val_root: Separate validation folder (overrides ``val_split_pct``).
        test_root: Separate test folder (overrides ``test_split_pct``). Relative
            paths in ``gsd_csv`` may refer to any of ``root``, ``val_root`` and
            ``test_root``.
        seed: Seed of the random split.
        mean: Normalisation mean (per channel or one value).
        std: Normalisation standard deviation (per channel or one value).
        **kwargs: Further :class:`ImageFolderGSD` arguments (``labelled``,
            ``image_size``, ``mode``, ``extensions``, ``max_per_class``,
            ``transforms``).

    Raises:
        ValueError: If an argument is out of range (the message names it and its
            value), or (at :meth:`setup`) the split leaves no training image.
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        root: str,
        gsd: float | None = None,
        gsd_csv: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        val_split_pct: float = 0.1,
        test_split_pct: float = 0.1,
        val_root: str | None = None,
        test_root: str | None = None,
        seed: int = 0,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        **kwargs: Any,
    ) -> None:
        """Initialize a new ImageFolderGSDDataModule."""
        check_split_pcts(val_split_pct, test_split_pct)
        self.mean, self.std = check_loader(mean, std, batch_size, num_workers)
        check_int(seed, 'seed', 0)
        super().__init__(
            ImageFolderGSD,
            batch_size,
            num_workers,
            root=root,
            gsd=gsd,
            gsd_csv=gsd_csv,
            **kwargs,
        )
        self.val_split_pct = val_split_pct
        self.test_split_pct = test_split_pct
        self.val_root = val_root
        self.test_root = test_root
        self.seed = seed
        self.collate_fn = collate_images

    def _dataset(self, root: str | None = None) -> ImageFolderGSD:
        kwargs = dict(self.kwargs)
        if root is not None:
            kwargs['root'] = root
        kwargs['csv_roots'] = [
            r for r in (self.kwargs['root'], self.val_root, self.test_root) if r
        ]
        return ImageFolderGSD(**kwargs)

    def setup(self, stage: str) -> None:
        """Build the datasets and the random split.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.

        Raises:
            ValueError: If the folder or the CSV is invalid (see
                :class:`ImageFolderGSD`), or the split leaves no training image.
        """
        dataset = self._dataset()
        val_pct = 0.0 if self.val_root else self.val_split_pct
        test_pct = 0.0 if self.test_root else self.test_split_pct
        n = len(dataset)
        n_val, n_test = split_counts(
            n,
            dataset.root,
            val_pct,
            test_pct,
            shown=(self.val_split_pct, self.test_split_pct),
        )
        generator = Generator().manual_seed(self.seed)
        train, val, test = random_split(
            dataset, [n - n_val - n_test, n_val, n_test], generator=generator
        )
        self.dataset = dataset
        self.train_dataset = train
        self.val_dataset = self._dataset(self.val_root) if self.val_root else val
        self.test_dataset = self._dataset(self.test_root) if self.test_root else test
        self.predict_dataset = dataset
