# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Datamodules whose batches carry ``gsd`` (metres per pixel, ``(B,)``).

* :data:`KNOWN_GSD`: nominal GSDs of TorchGeo datasets, with sources.
* :class:`AttachGSD`, :class:`GSDDataModule`, :func:`with_gsd`: add ``gsd`` to any
  TorchGeo datamodule without copying it.
* :class:`ImageFolderGSDDataModule`: a folder of images, GSD constant or per file.
* :class:`GeoTIFFGSDDataModule`: GeoTIFFs through TorchGeo samplers, GSD from the
  raster resolution, optionally the same places at several resolutions.
* :func:`default_raster_path`: the small real raster bundled with the package.

.. versionadded:: 0.1
"""

from .attach import AttachGSD, GSDDataModule, with_gsd
from .geotiff import (
    CompleteTileSampler,
    GeoTIFFGSDDataModule,
    GSDRasterDataset,
    MultiResolutionPatchSampler,
    default_raster_path,
    metres_per_crs_unit,
)
from .image_folder import ImageFolderGSD, ImageFolderGSDDataModule, read_gsd_csv
from .known_gsd import KNOWN_GSD, KNOWN_GSD_RANGE, KNOWN_GSD_SOURCE, lookup_gsd

__all__ = (
    'KNOWN_GSD',
    'KNOWN_GSD_RANGE',
    'KNOWN_GSD_SOURCE',
    'AttachGSD',
    'CompleteTileSampler',
    'GSDDataModule',
    'GSDRasterDataset',
    'GeoTIFFGSDDataModule',
    'ImageFolderGSD',
    'ImageFolderGSDDataModule',
    'MultiResolutionPatchSampler',
    'default_raster_path',
    'lookup_gsd',
    'metres_per_crs_unit',
    'read_gsd_csv',
    'with_gsd',
)
