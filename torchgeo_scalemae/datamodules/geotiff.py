# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GeoTIFFs through TorchGeo's RasterDataset and samplers, with ``gsd`` per sample.

.. versionadded:: 0.1
"""

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
import torch
from geopandas import GeoSeries
from lightning.pytorch.utilities.model_helpers import is_overridden
from rasterio.errors import RasterioError
from shapely import Polygon
from torch.utils.data import DataLoader
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import DatasetNotFoundError, GeoDataset, RasterDataset
from torchgeo.samplers import (
    GriddedPatchSampler,
    RandomPatchSampler,
    SpatialSampler,
    Units,
)

from .._sizes import to_size
from ..gsd import GSD_KEY
from ._checks import (
    check_bands,
    check_flag,
    check_int,
    check_norm,
    check_pair,
    check_resolutions,
    positive_number,
)

__all__ = (
    'CompleteTileSampler',
    'GSDRasterDataset',
    'GeoTIFFGSDDataModule',
    'MultiResolutionPatchSampler',
    'default_raster_path',
    'metres_per_crs_unit',
)

DEFAULT_RASTER = 'neon_osbs_rgb_0.1m.tif'
_WEB_MERCATOR_RADIUS = 6378137.0


def _pixels(height: float, width: float) -> str:
    return f'{round(height)} x {round(width)} pixels'


def _raster_sizes(dataset: GeoDataset, split: str) -> tuple[str, int]:
    """Describe the rasters' sizes in pixels; also return the largest one's short side.

    Returns ``('the val raster is 400 x 400 pixels', 400)`` for one raster and
    ``('the largest of the 3 val rasters is 400 x 400 pixels', 400)`` for several
    (height x width, at the dataset resolution).
    """
    xres, yres = (abs(float(r)) for r in dataset.res)
    sizes = []
    for geometry in dataset.index.geometry:
        xmin, ymin, xmax, ymax = geometry.bounds
        sizes.append(((ymax - ymin) / yres, (xmax - xmin) / xres))
    if not sizes:  # pragma: no cover - a RasterDataset always has a file
        return f'the {split} rasters are empty', 0
    height, width = max(sizes, key=lambda hw: hw[0] * hw[1])
    which = (
        f'the {split} raster'
        if len(sizes) == 1
        else f'the largest of the {len(sizes)} {split} rasters'
    )
    return f'{which} is {_pixels(height, width)}', round(min(height, width))


def default_raster_path() -> Path:
    """Return the path of the small real raster bundled with the package.

    A 400 x 400 px RGB (uint8) Cloud-Optimised GeoTIFF at 0.1 m GSD in EPSG:32617
    (UTM 17N): NEON airborne camera imagery of the Ordway-Swisher Biological Station,
    Florida (public domain, CC0 1.0; credit NEON). See :doc:`/user/data`.

    Returns:
        Path to the GeoTIFF inside the installed package.
    """
    return Path(str(resources.files('torchgeo_scalemae') / 'data' / DEFAULT_RASTER))


def metres_per_crs_unit(crs: Any, raise_error: bool = True) -> float | None:
    """Return how many metres one horizontal unit of a projected CRS is.

    Args:
        crs: Anything :meth:`pyproj.CRS.from_user_input` accepts (a pyproj or
            rasterio CRS, ``'EPSG:32633'``, WKT).
        raise_error: Raise for a geographic or unit-less CRS (else return None).

    Returns:
        Metres per CRS unit (1 for metres, 0.3048006 for US survey feet), or None.

    Raises:
        ValueError: If ``crs`` is geographic (degrees) or has no linear unit and
            ``raise_error`` is set; the message says how to proceed.
        TypeError: If ``raise_error`` is not a bool.
    """
    check_flag(raise_error, 'raise_error')
    try:
        parsed = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as error:
        if raise_error:
            raise ValueError(f'cannot read the CRS {crs!r}: {error}') from None
        return None
    axis = parsed.axis_info[0] if parsed.axis_info else None
    unit = axis.unit_name if axis is not None else 'unknown'
    linear = (
        not parsed.is_geographic
        and axis is not None
        and axis.unit_conversion_factor > 0
        and unit not in ('degree', 'radian', 'grad', 'arc-second', 'unknown')
    )
    if not linear:
        if raise_error:
            raise ValueError(
                f'the CRS {parsed.name!r} ({parsed.to_string()}) is not projected in '
                f'a linear unit (its unit is {unit!r}), so a GSD in metres cannot be '
                'derived from the raster resolution. Pass crs= a projected CRS '
                "(e.g. the UTM zone, 'EPSG:326xx') to reproject, or gsd= the GSD in "
                'metres per native pixel'
            )
        return None
    assert axis is not None
    return float(axis.unit_conversion_factor)


class GSDRasterDataset(RasterDataset):
    """A :class:`~torchgeo.datasets.RasterDataset` whose samples carry ``gsd``.

    Reads any GeoTIFFs (``filename_glob``) from files or folders. Every sample gets
    ``gsd``: the resolution the sample was read at (the GeoSlice step, or the
    dataset resolution), converted from CRS units to metres (for Web Mercator,
    times the cosine of the latitude of the sample centre). A geographic CRS
    (degrees) is refused unless ``gsd`` (metres per native pixel) is given, in
    which case ``gsd`` is scaled by ``step / native resolution``.

    Samples: ``image`` float32 ``(C, H, W)`` raw values, ``gsd`` 0-d float32
    metres per pixel, ``bounds`` and ``transform`` (TorchGeo).

    Args:
        paths: Files or folders of GeoTIFFs.
        crs: CRS to warp to (defaults to the first file's).
        res: Resolution in CRS units to read at (defaults to the first file's).
        gsd: GSD in metres per native pixel, required for non-metric CRSs.
        bands: 1-based band indexes to read (defaults to all).
        filename_glob: Glob of the files in folders.
        transforms: Transform of each sample (applied after ``gsd`` is set).
        cache: Cache file handles.

    Raises:
        ValueError: If a file matching ``filename_glob`` is not a raster rasterio
            can read (TorchGeo would skip it silently), if the CRS is not metric
            and no ``gsd`` is given, or if ``gsd``, ``res`` or ``bands`` is invalid;
            the message names the file or value.
        DatasetNotFoundError: If no file matches ``filename_glob`` in ``paths``.
    """

    filename_glob = '*.tif'

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] = 'data',
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        gsd: float | None = None,
        bands: Sequence[int] | None = None,
        filename_glob: str | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        """Initialize a new GSDRasterDataset."""
        if filename_glob is not None:
            if not isinstance(filename_glob, str) or not filename_glob:
                raise ValueError(
                    f'filename_glob must be a glob such as "*.tif", got '
                    f'{filename_glob!r}'
                )
            self.filename_glob = filename_glob
        if isinstance(paths, str | os.PathLike):
            paths = str(paths)
        elif isinstance(paths, Iterable):
            paths = [str(p) for p in paths]
        else:
            raise TypeError(
                f'paths must be a path or a list of paths, got {type(paths).__name__}'
            )
        if res is not None:
            check_pair(res, 'res (CRS units per pixel)')
        if gsd is not None:
            gsd = positive_number(gsd, 'gsd')
        band_indexes = None if bands is None else check_bands(bands)
        try:
            super().__init__(paths, crs=crs, res=res, transforms=None, cache=cache)
        except DatasetNotFoundError:
            self._check_readable(set())
            raise
        self._check_readable(set(self.index['filepath']))
        self.gsd_transforms = transforms
        if band_indexes is not None:
            self.band_indexes = band_indexes
        self.user_gsd = None
        self.native_res = float(self.res[0])
        if gsd is not None:
            self.user_gsd = float(gsd)
            self.metres_per_unit = None
        else:
            self.metres_per_unit = metres_per_crs_unit(self.crs)
        operation = pyproj.CRS.from_user_input(self.crs).coordinate_operation
        self.web_mercator = operation is not None and 'Pseudo Mercator' in (
            operation.method_name
        )

    def _check_readable(self, indexed: set[str]) -> None:
        """Raise for files matching ``filename_glob`` that TorchGeo skipped.

        TorchGeo's RasterDataset skips, without a word, every file that rasterio
        cannot open; a non-raster file named ``.tif`` would then vanish from the data
        (or, when it is the only one, give a bare "dataset not found").
        """
        skipped = [f for f in self.files if f not in indexed]
        if not skipped:
            return
        reason = 'TorchGeo could not load it'
        try:
            with rasterio.open(skipped[0]):
                pass
        except RasterioError as error:
            reason = str(error)
        others = f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''
        raise ValueError(
            f'{skipped[0]!r}{others} matches filename_glob {self.filename_glob!r} but '
            f'is not a raster: {reason}. Remove it, or pass a narrower filename_glob'
        )

    def gsd_for_step(self, step: float, y: float | None = None) -> float:
        """Return the GSD (metres per pixel) of a sample read at ``step`` CRS units.

        For Web Mercator (EPSG:3857), whose metres are true only at the equator, the
        ground GSD at northing ``y`` is ``step * cos(latitude)``.

        Args:
            step: Pixel size of the sample in CRS units.
            y: Northing of the sample centre (used for Web Mercator only).

        Returns:
            The GSD in metres per pixel.

        Raises:
            ValueError: If ``step`` is not a finite positive number.
        """
        if not step > 0 or not math.isfinite(step):
            raise ValueError(
                f'step (pixel size in CRS units) must be finite and positive, got '
                f'{step!r}'
            )
        if self.user_gsd is not None:
            return self.user_gsd * step / self.native_res
        assert self.metres_per_unit is not None
        gsd = step * self.metres_per_unit
        if self.web_mercator and y is not None:
            latitude = 2 * math.atan(math.exp(y / _WEB_MERCATOR_RADIUS)) - math.pi / 2
            gsd *= math.cos(latitude)
        return gsd

    def __getitem__(self, index: Any) -> dict[str, Any]:
        """Read a sample and attach its ``gsd``.

        Args:
            index: GeoSlice ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``.

        Returns:
            Sample with ``image``, ``gsd``, ``bounds``, ``transform``.
        """
        sample = dict(super().__getitem__(index))
        x, y, _ = self._disambiguate_slice(index)
        centre = (float(y.start) + float(y.stop)) / 2
        sample[GSD_KEY] = torch.tensor(
            self.gsd_for_step(float(x.step), centre), dtype=torch.float32
        )
        if self.gsd_transforms is not None:
            sample = self.gsd_transforms(sample)
        return sample


class MultiResolutionPatchSampler(SpatialSampler):
    """Sample random places and read each at several resolutions (GeoSlice steps).

    Each yielded GeoSlice is ``[x0:x0 + size * r : r, y0:y0 + size * r : r]``: a
    patch of ``size`` pixels at resolution ``r`` (CRS units per pixel), centred on a
    random point. Every patch has the same pixel size, so samples stack into
    batches, and the resolution travels in the sample's ``bounds``/``gsd``.

    With ``mode='all'`` every place is read at every resolution, one after the other
    (``len(resolutions)`` consecutive samples share a centre: the same place at
    several scales); with ``mode='random'`` each place gets one resolution drawn
    uniformly from ``resolutions``.

    Args:
        dataset: Dataset to sample from.
        size: Patch size in pixels (``size`` or ``(height, width)``).
        resolutions: Resolutions in CRS units per pixel (e.g. ``[0.1, 0.2, 0.4]``).
        length: Number of places per epoch, ``>= 1`` (default, ``None``: the
            patches of the coarsest resolution that fit without overlap, at least 1).
        mode: ``'all'`` or ``'random'``.
        roi: Region of interest (defaults to the dataset bounds).
        generator: Seed or NumPy generator.

    Raises:
        ValueError: If ``size``, ``resolutions``, ``length`` or ``mode`` is invalid,
            or no patch at the coarsest resolution fits in the region (the message
            gives both sizes in pixels).
    """

    strategy = 'random'

    def __init__(
        self,
        dataset: GeoDataset,
        *,
        size: int | tuple[int, int],
        resolutions: Sequence[float],
        length: int | None = None,
        mode: str = 'all',
        roi: Polygon | None = None,
        generator: int | np.random.Generator | None = None,
    ) -> None:
        """Initialize a new MultiResolutionPatchSampler."""
        super().__init__(dataset, roi=roi)
        size_hw = to_size(size)
        checked = check_resolutions(resolutions)
        length = check_int(length, 'length', 1, none=True)
        if mode not in ('all', 'random'):
            raise ValueError(f"mode must be 'all' or 'random', got {mode!r}")
        self.size = size_hw
        self.resolutions = checked
        self.mode = mode
        self.generator = np.random.default_rng(generator)
        coarsest = max(self.resolutions)
        height, width = size_hw[0] * coarsest, size_hw[1] * coarsest
        distance = math.sqrt((height / 2) ** 2 + (width / 2) ** 2)
        self.series = GeoSeries([shapely.buffer(self.geometry, -distance)])
        if self.series.is_empty.all():
            xmin, ymin, xmax, ymax = self.geometry.bounds
            xres, yres = (abs(float(r)) for r in dataset.res)
            region = _pixels((ymax - ymin) / yres, (xmax - xmin) / xres)
            patch = _pixels(height / yres, width / xres)
            raise ValueError(
                f'the region is {region} at the native resolution ({xres:g} CRS '
                f'units), too small for {size_hw[0]} x {size_hw[1]}-pixel patches at '
                f'the coarsest resolution {coarsest:g}, which cover {patch} of it: '
                'each patch centre is kept half a patch diagonal inside the region. '
                'Lower size or the coarsest resolution'
            )
        places = (
            length
            if length is not None
            else max(1, int(shapely.area(self.geometry) // (height * width)))
        )
        self.places = int(places)
        per_place = len(self.resolutions) if mode == 'all' else 1
        self._length = self.places * per_place

    def __iter__(self) -> Iterator[tuple[slice, slice]]:
        """Yield GeoSlices ``(x slice, y slice)`` with the resolution as step.

        Yields:
            ``[xmin:xmax:res, ymin:ymax:res]`` to index a dataset.
        """
        points = self.series.sample_points(size=self.places, rng=self.generator)
        points = points.explode()
        height, width = self.size
        for point in points:
            if self.mode == 'all':
                chosen = self.resolutions
            else:
                chosen = [
                    self.resolutions[self.generator.integers(len(self.resolutions))]
                ]
            for res in chosen:
                half_w = width * res / 2
                half_h = height * res / 2
                yield (
                    slice(point.x - half_w, point.x + half_w, res),
                    slice(point.y - half_h, point.y + half_h, res),
                )


class CompleteTileSampler(GriddedPatchSampler):
    """A gridded sampler that yields only tiles lying wholly inside the data.

    TorchGeo's ``GriddedPatchSampler`` centres a grid that covers the whole region, so
    when the region is not a whole number of tiles the edge tiles reach past it and are
    read zero-padded; averaged into a validation loss, those padded pixels make the
    loss look worse than it is. This sampler lays as many complete tiles as fit
    (``floor((extent - size) / stride) + 1`` per axis), centres them, snaps them to the
    pixel grid and keeps those contained in the data's footprint, so no padded pixel
    is ever evaluated; the price is an unevaluated margin of less than one stride.

    Args:
        dataset: Dataset to sample from.
        size: Tile size ``size`` or ``(height, width)`` (pixels, or CRS units with
            ``units=Units.CRS``).
        stride: Distance between tiles (defaults to ``size``).
        roi: Region of interest (defaults to the dataset bounds).
        units: Units of ``size`` and ``stride``.

    Raises:
        ValueError: If ``size`` or ``stride`` is not finite and positive.
    """

    def __init__(
        self,
        dataset: GeoDataset,
        *,
        size: tuple[float, float] | float,
        stride: tuple[float, float] | float | None = None,
        roi: Polygon | None = None,
        units: Units = Units.PIXELS,
    ) -> None:
        """Initialize a new CompleteTileSampler."""
        check_pair(size, 'size')
        if stride is not None:
            check_pair(stride, 'stride')
        super().__init__(dataset, size=size, stride=stride, roi=roi, units=units)

    def __iter__(self) -> Iterator[tuple[slice, slice]]:
        """Yield the ``[xmin:xmax, ymin:ymax]`` slices of the complete tiles.

        Yields:
            Coordinates (CRS units) of each tile that lies inside the data.
        """
        xmin, ymin, xmax, ymax = self.geometry.bounds
        tile_h, tile_w = self.size
        stride_h, stride_w = self.stride
        tolerance = 1e-3 * min(abs(r) for r in self.res)
        rows = math.floor((ymax - ymin - tile_h + tolerance) / stride_h) + 1
        cols = math.floor((xmax - xmin - tile_w + tolerance) / stride_w) + 1
        if rows <= 0 or cols <= 0:
            return
        x0 = xmin + (xmax - xmin - (stride_w * (cols - 1) + tile_w)) / 2
        y0 = ymin + (ymax - ymin - (stride_h * (rows - 1) + tile_h)) / 2
        # snap the origin to the pixel grid of the data (up, so tiles stay inside)
        x0 = (
            self.bounds[0]
            + math.ceil((x0 - self.bounds[0]) / self.res[0] - 1e-6) * (self.res[0])
        )
        y0 = (
            self.bounds[1]
            + math.ceil((y0 - self.bounds[1]) / self.res[1] - 1e-6) * (self.res[1])
        )
        region = self.geometry.buffer(tolerance)
        for i in range(rows):
            y = y0 + i * stride_h
            for j in range(cols):
                x = x0 + j * stride_w
                if region.contains(shapely.box(x, y, x + tile_w, y + tile_h)):
                    yield slice(x, x + tile_w), slice(y, y + tile_h)


class GeoTIFFGSDDataModule(GeoDataModule):
    """Datamodule for your own GeoTIFFs; every batch carries ``gsd`` per sample.

    Training samples random patches (``RandomPatchSampler``, or
    :class:`MultiResolutionPatchSampler` when ``resolutions`` is given: the same
    places at several resolutions); validation and testing tile the rasters with
    :class:`CompleteTileSampler` (complete tiles only, so no zero-padded edge tile
    enters a metric; ``complete_tiles=False`` uses TorchGeo's padded grid), prediction
    with TorchGeo's ``GriddedPatchSampler`` (full coverage). Without ``val_paths``/``test_paths`` the same
    rasters are used for every split (fine for self-supervised pretraining and
    feature extraction; give separate rasters to measure generalisation).

    ``gsd`` comes from the resolution each patch is read at, in metres
    (CRS units converted; a geographic CRS is refused unless ``gsd`` is given).
    Batches: ``image`` float32 ``(B, C, H, W)`` normalised by ``(x - mean) / std``
    (default 0 and 255: 0-1 for 8-bit rasters), ``gsd`` float32 ``(B,)``,
    ``bounds`` and ``transform`` ``(B, 9)``.

    **Raster size.** A raster too small for the samplers is an error at
    :meth:`setup`, not an epoch without batches: TorchGeo's ``RandomPatchSampler``
    (and :class:`MultiResolutionPatchSampler`) keep every patch centre half a patch
    diagonal inside the data, so a square ``patch_size`` must be below
    ``side / sqrt(2)`` of the raster (e.g. at most 45 px on a 64-px raster), and a
    validation or test tile must fit completely (with ``complete_tiles``). The
    validation rasters are checked only when validation runs: at
    ``setup('validate')``, at ``setup('fit')`` when the attached trainer will
    validate (not with ``limit_val_batches=0`` or a model without
    ``validation_step``), and in :meth:`val_dataloader`.

    Example::

        from torchgeo_scalemae.datamodules import default_raster_path

        dm = GeoTIFFGSDDataModule(
            default_raster_path(), patch_size=64, resolutions=[0.1, 0.2, 0.4]
        )
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        batch['gsd']  # tensor([0.1, 0.2, 0.4, 0.1, ...])

    Args:
        paths: GeoTIFF files or folders (default: :func:`default_raster_path`).
        patch_size: Patch size in pixels (``size`` or ``(height, width)``, ``>= 1``).
        batch_size: Mini-batch size, ``>= 1``.
        length: Training samples per epoch (places, for ``resolutions``), ``>= 1``;
            ``None`` (the default) lets the sampler choose (about the number of
            non-overlapping patches).
        num_workers: Data loader workers, ``>= 0``.
        resolutions: Resolutions (CRS units per pixel) to sample the same places at
            (a non-empty list), or ``None`` for the native resolution only.
        resolution_mode: ``'all'`` or ``'random'`` (see
            :class:`MultiResolutionPatchSampler`).
        val_paths: Validation rasters (default: ``paths``).
        test_paths: Test rasters (default: ``paths``).
        mean: Normalisation mean.
        std: Normalisation standard deviation.
        seed: Seed of the training sampler.
        complete_tiles: Validate and test on complete tiles only (see above).
        **kwargs: Further :class:`GSDRasterDataset` arguments (``crs``, ``res``,
            ``gsd``, ``bands``, ``filename_glob``, ``cache``).

    Raises:
        ValueError: If an argument is out of range (the message names it and its
            value); see also :meth:`setup`.
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        paths: str | list[str] | Path | None = None,
        patch_size: int | tuple[int, int] = 224,
        batch_size: int = 8,
        length: int | None = None,
        num_workers: int = 0,
        resolutions: list[float] | None = None,
        resolution_mode: str = 'all',
        val_paths: str | list[str] | None = None,
        test_paths: str | list[str] | None = None,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        seed: int | None = 0,
        complete_tiles: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new GeoTIFFGSDDataModule."""
        self.mean = check_norm(mean, 'mean', positive=False)
        self.std = check_norm(std, 'std', positive=True)
        if resolution_mode not in ('all', 'random'):
            raise ValueError(
                f"resolution_mode must be 'all' or 'random', got {resolution_mode!r}"
            )
        self._patch_hw = to_size(patch_size, 'patch_size')
        check_int(batch_size, 'batch_size', 1)
        check_int(num_workers, 'num_workers', 0)
        check_int(length, 'length', 1, none=True)
        check_int(seed, 'seed', 0, none=True)
        check_flag(complete_tiles, 'complete_tiles')
        if resolutions is not None:
            check_resolutions(resolutions, 'resolutions (or None)')
        paths = str(default_raster_path()) if paths is None else paths
        super().__init__(
            GSDRasterDataset,
            batch_size=batch_size,
            patch_size=patch_size,
            length=length,
            num_workers=num_workers,
            paths=paths,
            **kwargs,
        )
        self.resolutions = resolutions
        self.resolution_mode = resolution_mode
        self.val_paths = val_paths
        self.test_paths = test_paths
        self.seed = seed
        self.complete_tiles = complete_tiles

    def _dataset(self, paths: Any = None) -> GSDRasterDataset:
        kwargs = dict(self.kwargs)
        if paths is not None:
            kwargs['paths'] = paths
        return GSDRasterDataset(**kwargs)

    def _gridded(
        self, dataset: GSDRasterDataset, split: str | None = None
    ) -> GriddedPatchSampler:
        """Tile ``dataset``; ``split`` ('val'/'test') asks for complete tiles."""
        if split is None or not self.complete_tiles:
            return GriddedPatchSampler(
                dataset, size=self.patch_size, stride=self.patch_size
            )
        return CompleteTileSampler(
            dataset, size=self.patch_size, stride=self.patch_size
        )

    def _patch_text(self) -> str:
        height, width = self._patch_hw
        return f'{height}-pixel' if height == width else f'{height} x {width}-pixel'

    def _check_train_sampler(self) -> None:
        """Raise if the training sampler would yield nothing (an endless empty fit)."""
        sampler = self.train_sampler
        if isinstance(sampler, MultiResolutionPatchSampler):
            return  # it checks itself at construction
        series = getattr(sampler, 'series', None)
        if series is None or not bool(series.is_empty.all()):
            return
        assert isinstance(self.train_dataset, GeoDataset)
        rasters, side = _raster_sizes(self.train_dataset, 'training')
        height, width = self._patch_hw
        need = math.floor(math.hypot(height, width)) + 1
        largest = math.ceil(side / math.sqrt(2)) - 1
        advice = (
            f'use patch_size <= {largest} or larger rasters'
            if largest >= 1
            else 'use larger rasters'
        )
        raise ValueError(
            f'{rasters}, too small for random {self._patch_text()} training patches '
            f"(patch_size={self.patch_size!r}): TorchGeo's RandomPatchSampler keeps "
            'every patch centre half a patch diagonal inside the data, so these '
            f'patches need at least {need} x {need} pixels, and every epoch would be '
            f'empty; {advice}'
        )

    def _check_tiles(self, split: str) -> None:
        """Raise if the ``split`` ('val'/'test') sampler has no complete tile."""
        sampler = getattr(self, f'{split}_sampler', None)
        if not isinstance(sampler, CompleteTileSampler) or len(sampler) > 0:
            return
        dataset = getattr(self, f'{split}_dataset')
        name = 'validation' if split == 'val' else split
        rasters, side = _raster_sizes(dataset, name)
        raise ValueError(
            f'{rasters}, smaller than one complete {self._patch_text()} {name} '
            f'tile (patch_size={self.patch_size!r}): use patch_size <= {side}, or '
            'complete_tiles=False to tile with zero-padded edge tiles'
        )

    def _will_validate(self) -> bool | None:
        """Whether the attached trainer will run validation (None without one)."""
        trainer = self.trainer
        if trainer is None:
            return None
        if getattr(trainer, 'limit_val_batches', 1) == 0:
            return False
        model = getattr(trainer, 'lightning_module', None)
        return model is None or is_overridden('validation_step', model)

    def _setup_val(self) -> None:
        self.val_dataset = self._dataset(self.val_paths)
        self.val_sampler = self._gridded(self.val_dataset, 'val')

    def setup(self, stage: str) -> None:
        """Build datasets and samplers.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.

        Raises:
            ValueError: If a raster's CRS is not metric and no ``gsd`` was given,
                or the rasters are too small for the training patches or (when
                they are used, see the class docstring) for one complete
                validation or test tile; the message gives the raster and patch
                sizes in pixels.
        """
        if stage == 'fit':
            self.train_dataset = self._dataset()
            if self.resolutions:
                self.train_sampler = MultiResolutionPatchSampler(
                    self.train_dataset,
                    size=self.patch_size,
                    resolutions=self.resolutions,
                    length=self.length,
                    mode=self.resolution_mode,
                    generator=self.seed,
                )
            else:
                self.train_sampler = RandomPatchSampler(
                    self.train_dataset,
                    size=self.patch_size,
                    length=self.length,
                    generator=self.seed,
                )
            self._check_train_sampler()
            validate = self._will_validate()
            if validate is not False:
                self._setup_val()
            if validate:
                self._check_tiles('val')
        if stage == 'validate':
            self._setup_val()
            self._check_tiles('val')
        if stage == 'test':
            self.test_dataset = self._dataset(self.test_paths)
            self.test_sampler = self._gridded(self.test_dataset, 'test')
            self._check_tiles('test')
        if stage == 'predict':
            self.predict_dataset = self._dataset()
            self.predict_sampler = self._gridded(self.predict_dataset)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Return the validation loader over complete tiles of the validation rasters.

        The validation rasters are read here when :meth:`setup` skipped them
        (``setup('fit')`` with a trainer that does not validate).

        Returns:
            The validation data loader.

        Raises:
            ValueError: If no complete validation tile fits (see :meth:`setup`).
        """
        if self.val_sampler is None:
            self._setup_val()
        self._check_tiles('val')
        return super().val_dataloader()

    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Return the test loader over complete tiles of the test rasters.

        Returns:
            The test data loader.

        Raises:
            ValueError: If no complete test tile fits (see :meth:`setup`).
        """
        self._check_tiles('test')
        return super().test_dataloader()
