# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Image files, GSD CSVs and per-sample processing shared by the datamodules (private).

:mod:`~torchgeo_scalemae.datamodules.image_folder`,
:mod:`~torchgeo_scalemae.datamodules.segmentation_folder`,
:mod:`~torchgeo_scalemae.datamodules.shards` and
:mod:`~torchgeo_scalemae.datamodules.shard_writer` read images, GSDs and options the
same way; the errors name the file, the row or the argument and its bad value.
"""

import csv
import io
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rasterio.errors import RasterioError
from torch import Tensor
from torch.utils.data import default_collate

from ._checks import check_fraction, is_positive
from .geotiff import metres_per_crs_unit

#: Image suffixes read with rasterio (all bands, GSD from the georeferencing).
RASTERIO_EXTENSIONS = ('.tif', '.tiff')
#: What PIL and rasterio raise for a file that is no readable image.
READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    RasterioError,
    Image.DecompressionBombError,
)


def positive_gsd(value: object, what: str) -> float:
    """Return a GSD as a float, or raise naming *what* and the value.

    Args:
        value: GSD in metres per pixel.
        what: The argument or the CSV row it comes from.

    Returns:
        The GSD.

    Raises:
        ValueError: If it is not a finite positive number.
    """
    if not is_positive(value):
        raise ValueError(
            f'{what}: GSD must be a finite positive number of metres per pixel, '
            f'got {value!r}'
        )
    return float(value)  # type: ignore[arg-type]  # a real number


def csv_text(path: str | os.PathLike[str]) -> str:
    """Return the text of a CSV file, refusing binary files with a clear message."""
    with open(path, 'rb') as f:
        data = f.read()
    if b'\x00' in data:
        raise ValueError(
            f'{path}: the GSD CSV is not a text file (it contains NUL bytes); give '
            'a UTF-8 CSV with the columns path,gsd'
        )
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as error:
        raise ValueError(
            f'{path}: the GSD CSV is not UTF-8 text ({error}); give a UTF-8 CSV with '
            'the columns path,gsd'
        ) from None


def csv_rows(
    path: str | os.PathLike[str],
    check_fields: Callable[[list[str]], None] | None = None,
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """Read a GSD CSV: its column names (stripped) and its rows with line numbers.

    Args:
        path: UTF-8 CSV file with a header row.
        check_fields: Called with the column names before the rows are read.

    Returns:
        ``(fields, [(line number, row dict), ...])``, the first row on line 2.

    Raises:
        ValueError: If the file is not text or not a valid CSV (or as
            *check_fields* raises).
    """
    try:
        reader = csv.DictReader(io.StringIO(csv_text(path), newline=''))
        fields = [name.strip() for name in reader.fieldnames or []]
        if check_fields is not None:
            check_fields(fields)
        reader.fieldnames = fields
        rows = list(enumerate(reader, start=2))
    except csv.Error as error:
        raise ValueError(f'{path}: not a valid CSV file ({error})') from None
    return fields, rows


def row_gsd(row: dict[str, Any], where: str) -> float:
    """The ``gsd`` of a CSV row, in metres per pixel.

    Raises:
        ValueError: If it is not a finite positive number (naming *where*).
    """
    try:
        value = float(row['gsd'])
    except (TypeError, ValueError):
        raise ValueError(f'{where}: gsd {row["gsd"]!r} is not a number') from None
    return positive_gsd(value, where)


def pick_gsd(
    listed: float | None,
    constant: float | None,
    file_gsd: float | None,
    path: Path,
    sources: str,
) -> float:
    """The native GSD of a file by the precedence CSV row, constant, file metadata.

    Args:
        listed: The file's GSD CSV value, if any.
        constant: The dataset's constant ``gsd``, if any.
        file_gsd: GSD read from the file's georeferencing, if any.
        path: The file (for the error).
        sources: The other ways to give a GSD, ending the error message.

    Returns:
        The GSD in metres per pixel.

    Raises:
        ValueError: If none is known.
    """
    value = listed
    if value is None:
        value = constant if constant is not None else file_gsd
    if value is None:
        raise ValueError(f'no GSD for {str(path)!r}: give gsd=..., {sources}')
    return value


def load_image(path: Path, mode: str | None) -> tuple[Tensor, float | None]:
    """Read an image as float32 ``(C, H, W)`` raw values and its GSD if georeferenced.

    Raises:
        OSError: If the file cannot be read (truncated, not an image, not a
            raster); the message names the file.
    """
    try:
        return _read_image(path, mode)
    except READ_ERRORS as error:
        raise OSError(f'cannot read the image {str(path)!r}: {error}') from error


def _read_image(path: Path, mode: str | None) -> tuple[Tensor, float | None]:
    if path.suffix.lower() in RASTERIO_EXTENSIONS:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        gsd = None
        with warnings.catch_warnings():
            # plain TIFFs are fine: their GSD comes from gsd or gsd_csv
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                array = src.read()
                if src.crs is not None and not src.transform.is_identity:
                    factor = metres_per_crs_unit(src.crs, raise_error=False)
                    if factor is not None:
                        gsd = math.sqrt(abs(src.res[0] * src.res[1])) * factor
        return torch.from_numpy(array.astype(np.float32)), gsd
    with Image.open(path) as img:
        converted = img.convert(mode) if mode is not None else img
        array = np.asarray(converted, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)), None


def resize_square(image: Tensor, gsd: float, size: int | None) -> tuple[Tensor, float]:
    """Resize an image to *size* square (antialiased bilinear) and rescale its GSD.

    Args:
        image: ``(C, H, W)`` image.
        gsd: Its GSD in metres per pixel.
        size: Side in pixels, or None to keep the image.

    Returns:
        The image and its GSD times ``sqrt(H * W) / size`` (unchanged when the
        image already has that size).
    """
    if size is None:
        return image, gsd
    height, width = image.shape[-2:]
    if (height, width) != (size, size):
        image = F.interpolate(
            image[None], size=(size, size), mode='bilinear', antialias=True
        )[0]
        gsd *= math.sqrt(height * width) / size
    return image, gsd


def collate_images(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples with :func:`~torch.utils.data.default_collate`.

    Images of different sizes cannot be stacked; the error then says so and
    suggests ``image_size``.

    Args:
        samples: Sample dicts with an ``image`` ``(C, H, W)``.

    Returns:
        The batch dict.

    Raises:
        ValueError: If the images do not all have the same shape.
    """
    shapes = {
        tuple(sample['image'].shape)
        for sample in samples
        if isinstance(sample, dict) and isinstance(sample.get('image'), Tensor)
    }
    if len(shapes) > 1:
        raise ValueError(
            f'cannot batch images of different sizes {sorted(shapes)} (C, H, W): pass '
            'image_size=... to resize every image to one square size (its GSD is '
            'rescaled to match), or use batch_size=1'
        )
    batch: dict[str, Any] = default_collate(samples)
    return batch


def check_mode(mode: object) -> str | None:
    """Return a PIL mode (or None), or raise a ValueError naming it."""
    if mode is not None and mode not in Image.MODES:
        raise ValueError(
            f'mode must be None or a PIL mode, one of {sorted(Image.MODES)}; got '
            f'{mode!r}'
        )
    return mode if mode is None else str(mode)


def check_transforms(transforms: object) -> None:
    """Raise a TypeError unless *transforms* is None or callable."""
    if transforms is not None and not callable(transforms):
        raise TypeError(f'transforms must be callable, got {transforms!r}')


def check_split_pcts(val_split_pct: object, test_split_pct: object) -> None:
    """Raise unless both fractions are in ``[0, 1)`` and their sum is below 1."""
    val = check_fraction(val_split_pct, 'val_split_pct')
    test = check_fraction(test_split_pct, 'test_split_pct')
    if val + test >= 1:
        raise ValueError(
            'val_split_pct + test_split_pct must be < 1, got '
            f'{val_split_pct} + {test_split_pct}'
        )


def split_counts(
    n: int,
    root: str | os.PathLike[str],
    val_pct: float,
    test_pct: float,
    shown: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Numbers of validation and test images of a percentage split.

    Args:
        n: Number of images.
        root: Their folder (for the error).
        val_pct: Fraction for validation.
        test_pct: Fraction for testing.
        shown: ``val_split_pct`` and ``test_split_pct`` as the error shows them
            (default: *val_pct* and *test_pct*).

    Returns:
        ``(n_val, n_test)``, rounded.

    Raises:
        ValueError: If no training image is left.
    """
    n_val = round(n * val_pct)
    n_test = round(n * test_pct)
    val_shown, test_shown = shown if shown is not None else (val_pct, test_pct)
    if n - n_val - n_test < 1:
        raise ValueError(
            f'the {n} images under {str(root)!r} leave no training image after '
            f'val_split_pct={val_shown} ({n_val} images) and '
            f'test_split_pct={test_shown} ({n_test} images): lower them or add '
            'images'
        )
    return n_val, n_test
