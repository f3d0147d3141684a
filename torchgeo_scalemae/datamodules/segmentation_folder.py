# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Folders of ``images/`` and ``masks/`` for semantic segmentation, with GSDs.

A segmentation folder holds two flat subfolders whose files share their stems::

    root/images/<stem>.<png|jpg|jpeg|tif|tiff>
    root/masks/<stem>.<png|jpg|jpeg|tif|tiff>   (one band of class indices)

:class:`SegmentationFolderGSD` reads the pairs; :class:`SegmentationFolderGSDDataModule`
splits them (split files or seeded percentages), crops training patches with a
GSD-aware random resized crop that keeps the mask aligned, and yields batches
``{'image': (B, C, H, W) float32, 'mask': (B, H, W) int64, 'gsd': (B,) float32}``
for TorchGeo's :class:`~torchgeo.tasks.SemanticSegmentation` (which reads
``image`` and ``mask``) and the GSD-aware tasks of this package (which also read
``gsd``, metres per pixel).

The training crops are done here, per sample and before collation, because images
of different sizes (and different GSDs) can only be batched once they are cut to one
size; ``datamodules/`` never imports ``transforms/``, so the few lines of cropping are
written out below. Their GSD bookkeeping is that of
:class:`~torchgeo_scalemae.transforms.GSDRandomResizedCrop` (half-pixel grid): a crop
of ``s`` pixels resized to ``S`` pixels has ``gsd_new = gsd * s / S``.
"""

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch import Generator, Tensor
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset

from ..gsd import GSD_KEY
from ._checks import check_flag, check_int, check_loader, check_pair, is_number
from ._images import (
    RASTERIO_EXTENSIONS,
    READ_ERRORS,
    check_mode,
    check_split_pcts,
    check_transforms,
    collate_images,
    csv_rows,
    load_image,
    pick_gsd,
    positive_gsd,
    row_gsd,
    split_counts,
)
from .image_folder import read_gsd_csv

__all__ = (
    'SEGMENTATION_EXTENSIONS',
    'SegmentationFolderGSD',
    'SegmentationFolderGSDDataModule',
    'read_split_file',
    'read_stem_gsd_csv',
)

#: File extensions of images and masks (case-insensitive): PNG, JPEG, GeoTIFF.
SEGMENTATION_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff')
# PIL modes that hold one band of integers (class indices)
_MASK_MODES = ('1', 'L', 'P', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N')


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ', '.join(repr(i) for i in items[:n])
    more = f' and {len(items) - n} more' if len(items) > n else ''
    return f'{shown}{more}'


def _list_pairs(
    root: str | os.PathLike[str],
) -> tuple[dict[str, Path], dict[str, Path]]:
    """List the image and mask files of a segmentation folder by stem.

    Args:
        root: Folder with the subfolders ``images/`` and ``masks/``.

    Returns:
        ``(images, masks)``: two mappings from file stem to path, with the same
        stems, sorted by stem.

    Raises:
        ValueError: If ``root``, ``images/`` or ``masks/`` is not a folder,
            ``images/`` is empty, a file has an extension other than
            :data:`SEGMENTATION_EXTENSIONS`, two files of a folder share a stem, or
            an image has no mask or a mask no image (the message names the stems).
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f'root {str(root)!r} is not a folder')
    found: list[dict[str, Path]] = []
    for what in ('images', 'masks'):
        folder = base / what
        if not folder.is_dir():
            raise ValueError(
                f'{str(root)!r} has no {what}/ folder: a segmentation folder holds '
                'images/ and masks/ whose files share their stems'
            )
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and not p.name.startswith('.')
        )
        unknown = [
            p.name for p in files if p.suffix.lower() not in SEGMENTATION_EXTENSIONS
        ]
        if unknown:
            raise ValueError(
                f'{str(folder)!r}: unsupported file extension in {_first(unknown)}; '
                f'images and masks must be one of {SEGMENTATION_EXTENSIONS}'
            )
        by_stem: dict[str, Path] = {}
        for path in files:
            if path.stem in by_stem:
                raise ValueError(
                    f'{str(folder)!r}: {by_stem[path.stem].name!r} and {path.name!r} '
                    f'share the stem {path.stem!r}; keep one file per stem'
                )
            by_stem[path.stem] = path
        found.append(by_stem)
    images, masks = found
    if not images:
        raise ValueError(
            f'no images in {str(base / "images")!r} (extensions '
            f'{SEGMENTATION_EXTENSIONS})'
        )
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise ValueError(
            f'{str(base / "masks")!r} has no mask for the image stems '
            f'{_first(no_mask)}: every images/<stem>.* needs a masks/<stem>.*'
        )
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise ValueError(
            f'{str(base / "images")!r} has no image for the mask stems '
            f'{_first(no_image)}: every masks/<stem>.* needs an images/<stem>.*'
        )
    return images, masks


def read_stem_gsd_csv(
    path: str | os.PathLike[str], images: Mapping[str, Path]
) -> dict[str, float]:
    """Read a GSD CSV of a segmentation folder into ``{stem: gsd}``.

    The CSV has a header row with the columns ``stem,gsd`` (file stems), or
    ``path,gsd`` with paths relative to the folder's ``images/`` or its root, as
    read by :func:`~torchgeo_scalemae.datamodules.read_gsd_csv`. ``gsd`` is in
    metres per pixel. Every row must name an image of the folder, once.

    Args:
        path: UTF-8 CSV file.
        images: The folder's images by stem (from ``images/``).

    Returns:
        Mapping from stem to GSD (metres per pixel).

    Raises:
        ValueError: If the file is not text, the columns are missing, a GSD is not
            a finite positive number, a row names no image, or an image is listed
            twice (the message names the row).
    """
    fields, rows = csv_rows(path)
    if 'gsd' in fields and 'path' in fields and 'stem' not in fields:
        folder = next(iter(images.values())).parent
        by_path = {str(p.resolve()): stem for stem, p in images.items()}
        table = read_gsd_csv(path, [folder, folder.parent])
        out: dict[str, float] = {}
        for file, value in table.items():
            if file not in by_path:
                raise ValueError(
                    f'{path}: {file!r} is not an image of {str(folder)!r}; the GSD '
                    'CSV names images'
                )
            out[by_path[file]] = value
        return out
    if 'stem' not in fields or 'gsd' not in fields:
        raise ValueError(
            f'{path}: the GSD CSV needs the columns stem,gsd (or path,gsd); found '
            f'{fields}'
        )
    table = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        stem = (row.get('stem') or '').strip()
        where = f'{path}, line {line} ({stem!r})'
        value = row_gsd(row, where)
        if stem not in images:
            raise ValueError(
                f'{where}: no image with the stem {stem!r} in '
                f'{str(next(iter(images.values())).parent)!r}'
            )
        if stem in first_line:
            raise ValueError(
                f'{where}: the stem {stem!r} is listed twice (first on line '
                f'{first_line[stem]}); give each image one row'
            )
        first_line[stem] = line
        table[stem] = value
    return table


def read_split_file(
    path: str | os.PathLike[str],
    stems: Sequence[str] | Mapping[str, Any],
    root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Read a split file: one file stem a line (blank lines and ``#`` comments skipped).

    Args:
        path: Text file; a relative path is looked up under ``root`` first, then
            in the working directory.
        stems: The stems of the folder; every listed stem must be one of them.
        root: The segmentation folder.

    Returns:
        The listed stems, in the file's order.

    Raises:
        ValueError: If the file does not exist, lists a stem twice, lists a stem
            that is not in the folder (the message names the stem and the line),
            or lists none.
    """
    file = Path(path)
    if not file.is_absolute() and root is not None and (Path(root) / file).is_file():
        file = Path(root) / file
    if not file.is_file():
        raise ValueError(f'split file {str(path)!r} does not exist')
    known = set(stems)
    out: list[str] = []
    first_line: dict[str, int] = {}
    try:
        lines = file.read_text(encoding='utf-8-sig').splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(
            f'split file {str(file)!r} is not UTF-8 text ({error})'
        ) from None
    for number, raw in enumerate(lines, start=1):
        stem = raw.strip()
        if not stem or stem.startswith('#'):
            continue
        where = f'split file {str(file)!r}, line {number}'
        if stem not in known:
            hint = ''
            if Path(stem).stem in known:
                hint = f' (give the stem {Path(stem).stem!r}, without the extension)'
            raise ValueError(f'{where}: stem {stem!r} not found in the folder{hint}')
        if stem in first_line:
            raise ValueError(
                f'{where}: stem {stem!r} is listed twice (first on line '
                f'{first_line[stem]})'
            )
        first_line[stem] = number
        out.append(stem)
    if not out:
        raise ValueError(f'split file {str(file)!r} lists no stem')
    return out


class _MaskBandsError(Exception):
    """A mask with more than one band (re-raised as a ValueError)."""


def _read_mask(path: Path) -> Tensor:
    """Read a one-band mask as int64 ``(H, W)`` class indices.

    Raises:
        OSError: If the file cannot be read (the message names it).
        ValueError: If it has more than one band or non-integer values.
    """
    try:
        if path.suffix.lower() in RASTERIO_EXTENSIONS:
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning

            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    if src.count != 1:
                        raise _MaskBandsError(
                            f'the mask {str(path)!r} has {src.count} bands; a mask '
                            'is one band of class indices'
                        )
                    array = src.read(1)
        else:
            with Image.open(path) as img:
                if img.mode not in _MASK_MODES:
                    raise _MaskBandsError(
                        f'the mask {str(path)!r} is a {img.mode} image; a mask is '
                        f'one band of class indices (PIL modes {_MASK_MODES}), not '
                        'a colour image'
                    )
                array = np.asarray(img)
    except _MaskBandsError as error:
        raise ValueError(str(error)) from None
    except READ_ERRORS as error:
        raise OSError(f'cannot read the mask {str(path)!r}: {error}') from error
    if array.dtype.kind == 'f':
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise ValueError(
                f'the mask {str(path)!r} holds non-integer values; a mask holds '
                'class indices'
            )
    elif array.dtype.kind == 'b':
        array = array.astype(np.uint8)
    return torch.from_numpy(array.astype(np.int64))


def _check_classes(
    mask: Tensor, path: Path, num_classes: int | None, ignore_index: int | None
) -> None:
    """Raise if ``mask`` holds values outside ``[0, num_classes)`` and ``ignore_index``."""
    bad = mask < 0
    if num_classes is not None:
        bad |= mask >= num_classes
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bool(bad.any()):
        values = torch.unique(mask[bad]).tolist()
        allowed = f'0..{num_classes - 1}' if num_classes is not None else 'non-negative'
        extra = f' or ignore_index {ignore_index}' if ignore_index is not None else ''
        raise ValueError(
            f'the mask {str(path)!r} holds class values {values[:10]} outside '
            f'{allowed}{extra} (num_classes={num_classes})'
        )


def _resize_pair(
    image: Tensor, mask: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Resize image (antialiased bilinear) and mask (nearest) to ``size``."""
    if tuple(image.shape[-2:]) == size:
        return image, mask
    image = F.interpolate(
        image[None], size=size, mode='bilinear', align_corners=False, antialias=True
    )[0]
    resized = F.interpolate(mask[None, None].double(), size=size, mode='nearest-exact')
    return image, resized[0, 0].to(mask.dtype)


def _plot_segmentation(
    sample: Mapping[str, Any],
    num_classes: int | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """The figure of :meth:`SegmentationFolderGSD.plot` (raw or normalised images).

    The masks' colour scale covers ``0..num_classes - 1``.
    """
    image = sample.get('image')
    mask = sample.get('mask')
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(
            "plot needs sample['image'] as a (C, H, W) tensor, got "
            f'{getattr(image, "shape", type(image).__name__)}'
        )
    if not isinstance(mask, Tensor) or mask.ndim not in (2, 3):
        raise ValueError(
            "plot needs sample['mask'] as an (H, W) tensor, got "
            f'{getattr(mask, "shape", type(mask).__name__)}'
        )
    bands = image.detach().float().cpu()
    bands = bands[:3] if bands.shape[0] >= 3 else bands[:1].expand(3, -1, -1)
    low, high = bands.min(), bands.max()
    rgb = ((bands - low) / (high - low).clamp_min(1e-12)).permute(1, 2, 0).numpy()
    maps: list[tuple[str, Tensor]] = [('Mask', mask)]
    prediction = sample.get('prediction')
    if isinstance(prediction, Tensor):
        maps.append(('Prediction', prediction))
    top = max(int(t.max()) for _, t in maps)
    vmax = max(top, (num_classes or 1) - 1, 1)
    figure = Figure(figsize=(4 * (1 + len(maps)), 4))
    axes = figure.subplots(1, 1 + len(maps), squeeze=False)[0]
    axes[0].imshow(rgb)
    for ax, (_, data) in zip(axes[1:], maps, strict=True):
        values = data.detach().cpu().squeeze().numpy()
        ax.imshow(values, cmap='tab20', vmin=0, vmax=vmax, interpolation='none')
    for ax, name in zip(axes, ['Image', *(name for name, _ in maps)], strict=True):
        ax.axis('off')
        if show_titles:
            ax.set_title(name)
    gsd = sample.get(GSD_KEY)
    if suptitle is None and isinstance(gsd, Tensor) and gsd.numel() == 1:
        suptitle = f'GSD {float(gsd):.3g} m/px'
    if suptitle is not None:
        figure.suptitle(suptitle)
    return figure


def _check_gsd_arg(value: object, name: str) -> float | Path | None:
    """Return a GSD argument as a float, a CSV path, or None."""
    if value is None:
        return None
    if is_number(value):
        return positive_gsd(value, name)
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise ValueError(
                f'{name} {str(value)!r} is neither a number (metres per pixel) nor an '
                'existing CSV file'
            )
        return path
    raise TypeError(
        f'{name} must be None, a number of metres per pixel or a CSV path, got '
        f'{type(value).__name__}: {value!r}'
    )


def _check_options(
    num_classes: object,
    ignore_index: object,
    patch_size: object,
    image_size: object,
    scale_range: object,
) -> tuple[int | None, int | None, int | None, int | None, tuple[float, float]]:
    """Validate the options shared by the dataset and the datamodule."""
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise TypeError(f'ignore_index must be None or an int, got {ignore_index!r}')
    low, high = check_pair(scale_range, 'scale_range')
    if low > high:
        raise ValueError(
            f'scale_range must be (min, max) with min <= max, got {scale_range!r}'
        )
    return (
        check_int(num_classes, 'num_classes', 1, none=True),
        ignore_index,
        check_int(patch_size, 'patch_size', 1, none=True),
        check_int(image_size, 'image_size', 1, none=True),
        (low, high),
    )


class SegmentationFolderGSD(NonGeoDataset):
    """Image and mask pairs of a segmentation folder, with a GSD per image.

    Layout: ``root/images/<stem>.<ext>`` and ``root/masks/<stem>.<ext>`` (flat
    folders; PNG, JPEG or GeoTIFF; hidden files skipped). Every image needs a mask
    of the same stem and every mask an image; any other extension, or two files of
    one stem, is an error. Images are read as ``mode`` (PIL) or, for GeoTIFFs, with
    rasterio (all bands). Masks are one band of integer class indices (PNG modes
    ``L``/``P``/``I;16``/``I``, one-band GeoTIFFs); palette PNGs give their palette
    indices. JPEG masks are accepted but lossy compression changes class values at
    edges: prefer PNG.

    Each image's GSD (metres per pixel), in order of precedence: its row in the
    ``gsd`` CSV (see :func:`read_stem_gsd_csv`); the constant ``gsd``; the pixel
    size of a GeoTIFF image in a projected CRS, converted to metres. An image with
    none of these raises a :class:`ValueError` naming it when it is loaded.

    Processing of a sample, in this order:

    * ``patch_size`` set (training): a random square crop of ``s`` pixels,
      ``s = round(f * patch_size)`` with ``f`` drawn log-uniformly from
      ``scale_range`` and clipped to the image's shorter side, resized to
      ``patch_size`` (image: antialiased bilinear; mask: nearest neighbour, so
      class values are never mixed); ``gsd`` becomes ``gsd * s / patch_size``.
      ``scale_range=(1, 1)`` gives plain random crops at the native GSD.
    * otherwise, ``image_size`` set: ``center_crop=False`` resizes the whole image
      to ``image_size`` square (image bilinear, mask nearest) and scales ``gsd``
      by ``sqrt(H * W) / image_size`` (as :class:`ImageFolderGSD`);
      ``center_crop=True`` cuts the centre ``image_size`` square at the native GSD
      (an image smaller than that raises, naming it).
    * otherwise the whole image at its native GSD.
    * ``flips``: random horizontal and vertical flips (each with probability
      0.5) of image and mask together.
    * ``transforms``: applied last to the sample dict.

    Random draws use torch's global generator (seeded per worker by the data
    loader, so ``lightning.seed_everything`` makes them reproducible).

    Samples: ``image`` float32 ``(C, H, W)`` raw pixel values (0-255 for 8-bit
    images), ``mask`` int64 ``(H, W)``, ``gsd`` 0-d float32 metres per pixel;
    ``stems[i]``, ``images[i]`` and ``masks[i]`` name sample ``i``.

    Args:
        root: Segmentation folder (``images/`` and ``masks/``).
        gsd: GSD in metres per pixel of every image, or a CSV path of per-image
            GSDs (columns ``stem,gsd``); ``None`` reads GeoTIFF resolutions.
        stems: Use only these stems (in this order); default all, sorted.
        num_classes: Number of classes: mask values must be in
            ``[0, num_classes)`` or equal ``ignore_index`` (checked per sample;
            the error names the file and the values).
        ignore_index: Mask value that marks unlabelled pixels.
        patch_size: Side of the random training crops (pixels).
        scale_range: Range of ``crop side / patch_size`` (``0 < min <= max``).
        flips: Random horizontal and vertical flips.
        image_size: Side of the evaluation images (pixels), see above.
        center_crop: Cut the centre ``image_size`` square instead of resizing.
        mode: PIL mode of PNG/JPEG images (``'RGB'``); ``None`` keeps the file's.
        transforms: Transform applied last to each sample dict.

    Raises:
        ValueError: If the folder is invalid (no ``images/`` or ``masks/``, no
            image, an unsupported extension, an image without a mask or a mask
            without an image: the message names the stems), the CSV is
            invalid (see :func:`read_stem_gsd_csv`), a PNG/JPEG image has no GSD
            from ``gsd``, a stem is unknown, or an argument is out of range (the
            message names it and its value).
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        gsd: float | str | os.PathLike[str] | None = None,
        stems: Sequence[str] | None = None,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        patch_size: int | None = None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flips: bool = False,
        image_size: int | None = None,
        center_crop: bool = False,
        mode: str | None = 'RGB',
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Initialize a new SegmentationFolderGSD dataset."""
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f'root must be a folder path, got {type(root).__name__}')
        self.root = Path(root)
        (
            self.num_classes,
            self.ignore_index,
            self.patch_size,
            self.image_size,
            self.scale_range,
        ) = _check_options(
            num_classes, ignore_index, patch_size, image_size, scale_range
        )
        self.flips = check_flag(flips, 'flips')
        self.center_crop = check_flag(center_crop, 'center_crop')
        if self.center_crop and self.image_size is None:
            raise ValueError('center_crop=True needs image_size (the crop side)')
        check_mode(mode)
        self.mode = mode
        check_transforms(transforms)
        self.transforms = transforms
        gsd_arg = _check_gsd_arg(gsd, 'gsd')
        images, masks = _list_pairs(self.root)
        self.gsd = gsd_arg if isinstance(gsd_arg, float) else None
        self.gsd_table = (
            read_stem_gsd_csv(gsd_arg, images) if isinstance(gsd_arg, Path) else {}
        )
        if stems is None:
            chosen = sorted(images)
        else:
            if isinstance(stems, str) or not all(isinstance(s, str) for s in stems):
                raise TypeError(f'stems must be a list of file stems, got {stems!r}')
            chosen = list(stems)
            unknown = [s for s in chosen if s not in images]
            if unknown:
                raise ValueError(
                    f'stems {_first(unknown)} not found in {str(self.root)!r}'
                )
        if self.gsd is None:
            missing = [
                s
                for s in chosen
                if s not in self.gsd_table
                and images[s].suffix.lower() not in RASTERIO_EXTENSIONS
            ]
            if missing:
                how = 'has no row for' if self.gsd_table else 'gsd is None for'
                raise ValueError(
                    f'no GSD for the images {_first(missing)} of {str(self.root)!r}: '
                    f'the gsd CSV {how} them and only GeoTIFFs carry their own; '
                    'give gsd=<metres per pixel> or a CSV row for each'
                )
        self.stems = chosen
        self.images = [images[s] for s in chosen]
        self.masks = [masks[s] for s in chosen]

    def __len__(self) -> int:
        """Return the number of image and mask pairs."""
        return len(self.stems)

    def gsd_of(self, index: int, file_gsd: float | None = None) -> float:
        """Return the native GSD of image ``index`` (metres per pixel).

        Args:
            index: Sample index.
            file_gsd: GSD read from the image's georeferencing, if any.

        Returns:
            The GSD by the precedence CSV, ``gsd``, GeoTIFF resolution.

        Raises:
            ValueError: If no GSD is known for the image.
        """
        return pick_gsd(
            self.gsd_table.get(self.stems[index]),
            self.gsd,
            file_gsd,
            self.images[index],
            'a gsd CSV row for it, or a GeoTIFF in a projected CRS in metres',
        )

    def load(self, index: int) -> tuple[Tensor, Tensor, float]:
        """Read pair ``index`` unprocessed, with all checks.

        Args:
            index: Sample index.

        Returns:
            ``image`` float32 ``(C, H, W)``, ``mask`` int64 ``(H, W)``, GSD in
            metres per pixel.

        Raises:
            OSError: If the image or the mask cannot be read (truncated, not an
                image); the message names the file.
            ValueError: If the mask is not one band, its size differs from the
                image's, it holds class values outside ``[0, num_classes)`` other
                than ``ignore_index``, or no GSD is known (the message names the
                file).
        """
        image, file_gsd = load_image(self.images[index], self.mode)
        mask = _read_mask(self.masks[index])
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f'the mask {str(self.masks[index])!r} is {mask.shape[0]} x '
                f'{mask.shape[1]} px but its image {str(self.images[index])!r} is '
                f'{image.shape[-2]} x {image.shape[-1]} px (H x W): they must match '
                'pixel for pixel'
            )
        _check_classes(mask, self.masks[index], self.num_classes, self.ignore_index)
        return image, mask, self.gsd_of(index, file_gsd)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return the processed sample at ``index`` (see the class docstring).

        Args:
            index: Sample index.

        Returns:
            ``{'image': (C, H, W) float32, 'mask': (H, W) int64, 'gsd': () float32}``.
        """
        image, mask, gsd = self.load(index)
        height, width = image.shape[-2:]
        if self.patch_size is not None:
            low, high = self.scale_range
            u = float(torch.rand(()))
            factor = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            side = max(1, min(round(factor * self.patch_size), height, width))
            top = int(torch.randint(0, height - side + 1, ()))
            left = int(torch.randint(0, width - side + 1, ()))
            image = image[:, top : top + side, left : left + side]
            mask = mask[top : top + side, left : left + side]
            size = (self.patch_size, self.patch_size)
            image, mask = _resize_pair(image, mask, size)
            gsd *= side / self.patch_size
        elif self.image_size is not None:
            size = (self.image_size, self.image_size)
            if self.center_crop:
                if height < self.image_size or width < self.image_size:
                    raise ValueError(
                        f'the image {str(self.images[index])!r} is {height} x {width} '
                        f'px, smaller than the centre crop image_size='
                        f'{self.image_size}'
                    )
                top = (height - self.image_size) // 2
                left = (width - self.image_size) // 2
                image = image[:, top : top + size[0], left : left + size[1]]
                mask = mask[top : top + size[0], left : left + size[1]]
            elif (height, width) != size:
                image, mask = _resize_pair(image, mask, size)
                gsd *= math.sqrt(height * width) / self.image_size
        if self.flips:
            if bool(torch.rand(()) < 0.5):
                image, mask = image.flip(-1), mask.flip(-1)
            if bool(torch.rand(()) < 0.5):
                image, mask = image.flip(-2), mask.flip(-2)
        sample: dict[str, Any] = {
            'image': image.contiguous(),
            'mask': mask.contiguous(),
            GSD_KEY: torch.tensor(gsd, dtype=torch.float32),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self,
        sample: Mapping[str, Any],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample's image, mask and (if present) prediction side by side.

        TorchGeo's segmentation task calls this (through
        :meth:`~torchgeo.datamodules.BaseDataModule.plot`) in validation, with the
        image denormalised.

        Args:
            sample: ``image`` ``(C, H, W)`` (the first three bands are shown,
                min-max stretched), ``mask`` ``(H, W)``, optionally
                ``prediction`` ``(H, W)`` and a 0-d ``gsd`` (metres per pixel).
            show_titles: Title each panel.
            suptitle: Figure title (default: the GSD, when known).

        Returns:
            A matplotlib figure (not registered with pyplot).

        Raises:
            ValueError: If ``image`` or ``mask`` is missing or has the wrong shape.
        """
        return _plot_segmentation(sample, self.num_classes, show_titles, suptitle)


class SegmentationFolderGSDDataModule(NonGeoDataModule):
    """Datamodule for segmentation folders (see :class:`SegmentationFolderGSD`).

    Batches (after :meth:`on_after_batch_transfer`): ``image`` float32
    ``(B, C, H, W)`` **normalised** as ``(x - mean) / std`` (TorchGeo's defaults
    ``mean = 0``, ``std = 255``: 0-1 for 8-bit images, as
    :class:`ImageFolderGSDDataModule`); ``mask`` int64 ``(B, H, W)``; ``gsd``
    float32 ``(B,)`` metres per pixel of the batch's pixels.

    **Training** samples are random crops of ``patch_size`` pixels whose side
    before resizing is ``f * patch_size``, ``f`` log-uniform in ``scale_range``
    (default ``(0.5, 2.0)``, the ``ratio_range`` of the usual mmsegmentation
    recipes), with random flips; ``gsd`` is multiplied by ``crop side /
    patch_size``. Without ``patch_size`` training uses the evaluation processing
    (plus flips), so images must then have one size or ``image_size`` be set.

    **Validation and test** (and predict) samples are whole images at their
    native GSD, so that metrics are computed on the full, unresampled masks. To
    batch images of different sizes give ``image_size``: each image is resized to
    ``image_size`` square (``gsd`` rescaled, as in
    :class:`ImageFolderGSDDataModule`), or, with ``center_crop=True``, its centre
    ``image_size`` square is cut at the native GSD. Without it, images of
    different sizes need ``batch_size=1`` for evaluation (``eval_batch_size``).

    **Splits**: ``train_split`` (with optional ``val_split``/``test_split``) names
    text files of stems, one a line (relative to ``root`` or the working
    directory); stems in no file are unused and a split without a file is empty.
    Otherwise the stems are shuffled with ``seed`` and cut by ``val_split_pct``
    and ``test_split_pct`` (deterministic: the same folder and seed give the same
    split). ``test_root`` (with ``test_gsd``) is a separate folder used whole as
    the test split; the test split of ``root`` is then empty.

    Example::

        dm = SegmentationFolderGSDDataModule(
            'xiamen_buildings/',
            gsd=0.54,
            num_classes=2,
            patch_size=224,
            train_split='training.txt',
            val_split='validation.txt',
            test_split='evaluation.txt',
        )
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))  # image, mask, gsd

    Args:
        root: Segmentation folder (``images/`` and ``masks/``).
        gsd: GSD in metres per pixel, or a CSV of per-image GSDs (``stem,gsd``);
            ``None``: the resolution of GeoTIFF images in a projected CRS.
        num_classes: Number of classes (mask values are checked against it).
        ignore_index: Mask value of unlabelled pixels (allowed in any mask).
        patch_size: Side of the training crops in pixels (``None``: no crops).
        scale_range: Range of ``crop side / patch_size``.
        flips: Random horizontal and vertical flips of training samples.
        image_size: Side of validation/test images (resize or centre crop).
        center_crop: Centre-crop instead of resizing to ``image_size``.
        train_split: File of training stems.
        val_split: File of validation stems (needs ``train_split``).
        test_split: File of test stems (needs ``train_split``).
        val_split_pct: Fraction of stems for validation (without split files).
        test_split_pct: Fraction of stems for testing (without split files and
            ``test_root``).
        seed: Seed of the percentage split.
        test_root: Separate segmentation folder used whole as the test split.
        test_gsd: GSD of ``test_root`` (number or CSV); default ``gsd`` when that
            is a number, else the GeoTIFF resolutions.
        batch_size: Training mini-batch size.
        eval_batch_size: Validation/test/predict mini-batch size (default
            ``batch_size``).
        num_workers: Data loader workers.
        mean: Normalisation mean (one value or one per band).
        std: Normalisation standard deviation (one value or one per band).
        mode: PIL mode of PNG/JPEG images (``None`` keeps the file's).

    Raises:
        ValueError: If an argument is out of range (the message names it and its
            value); at :meth:`setup`, if a folder, CSV or split file is invalid,
            split files overlap, or the split leaves no training image.
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        root: str,
        gsd: float | str | None = None,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        patch_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flips: bool = True,
        image_size: int | None = None,
        center_crop: bool = False,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        val_split_pct: float = 0.1,
        test_split_pct: float = 0.1,
        seed: int = 0,
        test_root: str | None = None,
        test_gsd: float | str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        mode: str | None = 'RGB',
    ) -> None:
        """Initialize a new SegmentationFolderGSDDataModule."""
        check_split_pcts(val_split_pct, test_split_pct)
        for name, value in (
            ('train_split', train_split),
            ('val_split', val_split),
            ('test_split', test_split),
            ('test_root', test_root),
        ):
            if value is not None and not isinstance(value, str | os.PathLike):
                raise TypeError(f'{name} must be None or a path, got {value!r}')
        if train_split is None and (val_split is not None or test_split is not None):
            raise ValueError(
                f'val_split={val_split!r} / test_split={test_split!r} need '
                'train_split (the split files replace the percentages)'
            )
        if test_root is not None and test_split is not None:
            raise ValueError(
                f'give test_root={test_root!r} or test_split={test_split!r}, not both'
            )
        if test_gsd is not None and test_root is None:
            raise ValueError(f'test_gsd={test_gsd!r} needs test_root')
        self.mean, self.std = check_loader(mean, std, batch_size, num_workers)
        check_int(eval_batch_size, 'eval_batch_size', 1, none=True)
        check_int(seed, 'seed', 0)
        _check_gsd_arg(gsd, 'gsd')
        _check_gsd_arg(test_gsd, 'test_gsd')
        super().__init__(
            SegmentationFolderGSD,
            batch_size,
            num_workers,
            root=root,
            gsd=gsd,
            num_classes=num_classes,
            ignore_index=ignore_index,
            image_size=image_size,
            center_crop=center_crop,
            mode=mode,
        )
        # the dataset checks these again at setup; fail at construction instead
        _check_options(num_classes, ignore_index, patch_size, image_size, scale_range)
        check_flag(flips, 'flips')
        check_flag(center_crop, 'center_crop')
        if center_crop and image_size is None:
            raise ValueError('center_crop=True needs image_size (the crop side)')
        self.train_kwargs: dict[str, Any] = {
            'patch_size': patch_size,
            'scale_range': scale_range,
            'flips': flips,
        }
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.val_split_pct = val_split_pct
        self.test_split_pct = test_split_pct
        self.seed = seed
        self.test_root = test_root
        if test_gsd is None and is_number(gsd):
            test_gsd = gsd
        self.test_gsd = test_gsd
        self.eval_batch_size = eval_batch_size
        if eval_batch_size is not None:
            self.val_batch_size = eval_batch_size
            self.test_batch_size = eval_batch_size
            self.predict_batch_size = eval_batch_size
        self.collate_fn = collate_images

    def _split_stems(self, stems: list[str]) -> tuple[list[str], list[str], list[str]]:
        root = self.kwargs['root']
        if self.train_split is not None:
            named = {'train_split': self.train_split}
            if self.val_split is not None:
                named['val_split'] = self.val_split
            if self.test_split is not None:
                named['test_split'] = self.test_split
            lists = {k: read_split_file(v, stems, root) for k, v in named.items()}
            owner: dict[str, str] = {}
            for name, listed in lists.items():
                for stem in listed:
                    if stem in owner:
                        raise ValueError(
                            f'stem {stem!r} is in both {owner[stem]}='
                            f'{named[owner[stem]]!r} and {name}={named[name]!r}: '
                            'the splits must be disjoint'
                        )
                    owner[stem] = name
            return (
                lists['train_split'],
                lists.get('val_split', []),
                lists.get('test_split', []),
            )
        test_pct = 0.0 if self.test_root is not None else self.test_split_pct
        n = len(stems)
        n_val, n_test = split_counts(n, root, self.val_split_pct, test_pct)
        order = torch.randperm(n, generator=Generator().manual_seed(self.seed))
        shuffled = [stems[i] for i in order.tolist()]
        val = sorted(shuffled[:n_val])
        test = sorted(shuffled[n_val : n_val + n_test])
        train = sorted(shuffled[n_val + n_test :])
        return train, val, test

    def setup(self, stage: str) -> None:
        """List the folders, check them and build the train/val/test datasets.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.

        Raises:
            ValueError: If a folder, the GSD CSV or a split file is invalid (see
                :class:`SegmentationFolderGSD` and :func:`read_split_file`), the
                split files overlap, or the split leaves no training image.
        """
        dataset = SegmentationFolderGSD(**self.kwargs)
        train, val, test = self._split_stems(dataset.stems)
        self.dataset = dataset
        self.train_dataset = SegmentationFolderGSD(
            **{**self.kwargs, **self.train_kwargs, 'stems': train}
        )
        # an empty split is an empty dataset: its data loader then raises TorchGeo's
        # MisconfigurationException ('... has length 0') instead of another split
        self.val_dataset = SegmentationFolderGSD(**self.kwargs, stems=val)
        if self.test_root is not None:
            kwargs = {**self.kwargs, 'root': self.test_root, 'gsd': self.test_gsd}
            self.test_dataset = SegmentationFolderGSD(**kwargs)
        else:
            self.test_dataset = SegmentationFolderGSD(**self.kwargs, stems=test)
        self.predict_dataset = self.test_dataset if len(self.test_dataset) else dataset
