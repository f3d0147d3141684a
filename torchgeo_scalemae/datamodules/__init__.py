# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Datamodules whose batches carry ``gsd`` (metres per pixel, ``(B,)``).

* :data:`KNOWN_GSD`: nominal GSDs of TorchGeo datasets, with sources.
* :class:`AttachGSD`, :class:`GSDDataModule`, :func:`with_gsd`: add ``gsd`` to any
  TorchGeo datamodule without copying it.
* :class:`ImageFolderGSDDataModule`: a folder of images, GSD constant or per file.
* :class:`GeoTIFFGSDDataModule`: GeoTIFFs through TorchGeo samplers, GSD from the
  raster resolution, optionally the same places at several resolutions.
* :class:`SegmentationFolderGSDDataModule`: folders of ``images/`` and ``masks/``
  for semantic segmentation, GSD constant, per file or from GeoTIFFs.
* :class:`ShardedGSDDataModule`: WebDataset tar shards (local or object storage)
  with a GSD per sample, split over ranks and workers, resumable mid-epoch.
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
from .segmentation_folder import (
    SegmentationFolderGSD,
    SegmentationFolderGSDDataModule,
    read_split_file,
    read_stem_gsd_csv,
)
from .shards import (
    CorruptSampleWarning,
    ResumeWarning,
    ShardedGSDDataModule,
    ShardedGSDDataset,
    ShardedLoader,
    read_manifest,
)

__all__ = (
    'KNOWN_GSD',
    'KNOWN_GSD_RANGE',
    'KNOWN_GSD_SOURCE',
    'AttachGSD',
    'CompleteTileSampler',
    'CorruptSampleWarning',
    'GSDDataModule',
    'GSDRasterDataset',
    'GeoTIFFGSDDataModule',
    'ImageFolderGSD',
    'ImageFolderGSDDataModule',
    'MultiResolutionPatchSampler',
    'ResumeWarning',
    'SegmentationFolderGSD',
    'SegmentationFolderGSDDataModule',
    'ShardedGSDDataModule',
    'ShardedGSDDataset',
    'ShardedLoader',
    'default_raster_path',
    'lookup_gsd',
    'metres_per_crs_unit',
    'read_gsd_csv',
    'read_manifest',
    'read_split_file',
    'read_stem_gsd_csv',
    'with_gsd',
)
