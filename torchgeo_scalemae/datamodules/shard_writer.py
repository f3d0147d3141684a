# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

r"""Write WebDataset tar shards with a GSD per sample: ``torchgeo-scalemae-shards``.

Three commands::

    torchgeo-scalemae-shards folder IMAGES --gsd 0.5 --out shards/
    torchgeo-scalemae-shards geotiff RASTERS... --patch-size 224 \
        --resolutions 0.5 1 2 --length 10000 --out shards/
    torchgeo-scalemae-shards index 'shards/shard-{000000..000099}.tar' --out shards/

``folder`` reads the images as :class:`~torchgeo_scalemae.datamodules.ImageFolderGSD`
does (GSD from ``--gsd``, a ``path,gsd`` CSV or the GeoTIFF's georeferencing; class
subfolders give labels) and stores every PNG/JPEG/WebP/BMP file's bytes unchanged
(GeoTIFFs as ``.npy`` arrays); ``geotiff`` samples patches as
:class:`~torchgeo_scalemae.datamodules.GeoTIFFGSDDataModule` does (the same places at
several resolutions, GSD from the resolution read at); ``index`` writes a manifest
for existing shards. Each sample is ``<key>.json`` (``gsd`` in metres per pixel,
``index``, and ``source``, ``label``, ``class`` or ``bounds`` where known) beside its
image; the manifest (``manifest.json``) lists the shards with their sample counts and
sizes and gives GSD statistics. :class:`~torchgeo_scalemae.datamodules.ShardedGSDDataModule`
reads them.
"""

import argparse
import io
import json
import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # type: ignore[import-untyped]

from .. import __version__
from ..gsd import GSD_KEY
from ._checks import check_flag, check_int, positive_number
from ._images import load_image
from .image_folder import IMAGE_EXTENSIONS, ImageFolderGSD
from .shards import (
    _DECODE_ERRORS,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    _CorruptSample,
    _decode_image,
    _local_path,
    _open,
)

__all__ = (
    'ShardSink',
    'gsd_statistics',
    'index_shards',
    'main',
    'write_folder_shards',
    'write_geotiff_shards',
)

#: Name pattern of the shards (``shard-000000.tar``, ...).
SHARD_PATTERN = 'shard-{:06d}.tar'
_SHARD_RE = re.compile(r'^shard-\d{6}\.tar$')
_STORED_AS_IS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')


def gsd_statistics(values: Sequence[float]) -> dict[str, Any]:
    """Summarise GSDs (metres per pixel) for a manifest.

    Args:
        values: The GSD of every sample.

    Returns:
        ``min``, ``max``, ``mean``, ``median``, ``p05``, ``p95`` and ``counts``
        (samples per distinct GSD, rounded to 6 significant digits, the 20 most
        common).

    Raises:
        ValueError: If ``values`` is empty.
    """
    if not values:
        raise ValueError('no GSD to summarise: the shards hold no sample')
    array = np.asarray(values, dtype=np.float64)
    counts = Counter(f'{v:.6g}' for v in values).most_common(20)
    return {
        'min': float(array.min()),
        'max': float(array.max()),
        'mean': float(array.mean()),
        'median': float(statistics.median(values)),
        'p05': float(np.quantile(array, 0.05)),
        'p95': float(np.quantile(array, 0.95)),
        'counts': dict(counts),
    }


def _prepare_out(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out``; refuse (or, with ``overwrite``, delete) earlier shards there."""
    if not isinstance(out, str | os.PathLike) or not str(out):
        raise TypeError(f'out must be a folder path, got {out!r}')
    path = Path(_local_path(str(out)))
    if path.exists() and not path.is_dir():
        raise ValueError(f'out {str(out)!r} exists and is not a folder')
    path.mkdir(parents=True, exist_ok=True)
    old = [p for p in path.iterdir() if _SHARD_RE.match(p.name)]
    if (path / MANIFEST_NAME).exists():
        old.append(path / MANIFEST_NAME)
    if old and not overwrite:
        raise ValueError(
            f'out {str(out)!r} already holds shards or a manifest ({old[0].name}, '
            f'{len(old)} files): choose an empty folder or pass --overwrite'
        )
    for file in old:
        file.unlink()
    return path


class ShardSink:
    """Write samples into numbered tar shards with webdataset's ``TarWriter``.

    A shard is closed when it holds ``samples_per_shard`` samples or reaches
    ``max_shard_bytes`` (whichever comes first); the counts go to the manifest.

    Args:
        out: Output folder (created; must hold no earlier shards unless
            ``overwrite``).
        samples_per_shard: Most samples per shard (``>= 1``).
        max_shard_bytes: Most bytes per shard (``None``: no limit); a shard holds
            at least one sample.
        overwrite: Delete earlier shards and manifest in ``out``.

    Raises:
        ValueError: If an argument is out of range or ``out`` holds shards.
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        samples_per_shard: int = 1000,
        max_shard_bytes: int | None = None,
        overwrite: bool = False,
    ) -> None:
        """Initialize a new ShardSink."""
        self.samples_per_shard = int(
            check_int(samples_per_shard, 'samples_per_shard', 1)  # type: ignore[arg-type]
        )
        self.max_shard_bytes = check_int(
            max_shard_bytes, 'max_shard_bytes', 1, none=True
        )
        self.out = _prepare_out(out, overwrite)
        self.shards: list[dict[str, Any]] = []
        self.gsds: list[float] = []
        self._writer: Any = None
        self._count = 0
        self._bytes = 0

    def _close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        name = SHARD_PATTERN.format(len(self.shards))
        size = (self.out / name).stat().st_size
        self.shards.append({'url': name, 'count': self._count, 'bytes': size})
        self._writer = None

    def write(
        self, key: str, image_suffix: str, image: bytes, info: dict[str, Any]
    ) -> None:
        """Write one sample.

        Args:
            key: Sample key (no dot, unique).
            image_suffix: Suffix of the image file (``'png'``, ``'npy'``, ...).
            image: The image file's bytes.
            info: JSON metadata; must hold ``gsd`` (metres per pixel).
        """
        from webdataset import TarWriter  # type: ignore[import-untyped]

        full = self._writer is not None and (
            self._count >= self.samples_per_shard
            or (
                self.max_shard_bytes is not None and self._bytes >= self.max_shard_bytes
            )
        )
        if full:
            self._close()
        if self._writer is None:
            name = SHARD_PATTERN.format(len(self.shards))
            # a fixed mtime: reproducible shards, and no pax header per member
            self._writer = TarWriter(str(self.out / name), mtime=0)
            self._count = 0
            self._bytes = 0
        sample = {
            '__key__': key,
            'json': json.dumps(info).encode(),
            image_suffix: image,
        }
        self._bytes += int(self._writer.write(sample))
        self._count += 1
        self.gsds.append(float(info[GSD_KEY]))

    def finish(self, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Close the last shard and write the manifest.

        Args:
            source: How the samples were made (written to the manifest).
            **extra: Further manifest fields (e.g. ``classes``).

        Returns:
            The manifest.

        Raises:
            ValueError: If no sample was written.
        """
        self._close()
        manifest = {
            'format': MANIFEST_FORMAT,
            'version': 1,
            'created_by': f'torchgeo-scalemae {__version__}',
            'count': sum(s['count'] for s in self.shards),
            'gsd': gsd_statistics(self.gsds),
            'source': source,
            **extra,
            'shards': self.shards,
        }
        (self.out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + '\n')
        return manifest


def _per_shard(samples_per_shard: int, num_shards: int | None, total: int) -> int:
    """Samples per shard: ``ceil(total / num_shards)`` when ``num_shards`` is given."""
    check_int(samples_per_shard, 'samples_per_shard', 1)
    if check_int(num_shards, 'num_shards', 1, none=True) is None:
        return samples_per_shard
    assert num_shards is not None
    if num_shards > total:
        raise ValueError(
            f'num_shards {num_shards} is more than the {total} samples: lower it'
        )
    return -(-total // num_shards)


def _npy_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """Store an array compactly: uint8/uint16 when its values are such integers."""
    if array.size and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 255:
            array = array.astype(np.uint8)
        elif low >= 0 and high <= 65535:
            array = array.astype(np.uint16)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_folder_shards(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    gsd: float | None = None,
    gsd_csv: str | os.PathLike[str] | None = None,
    labelled: bool | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    max_per_class: int | None = None,
    samples_per_shard: int = 1000,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_shards: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Convert a folder of images into shards (see the module docstring).

    The files, their GSDs and labels are read exactly as
    :class:`~torchgeo_scalemae.datamodules.ImageFolderGSD` reads them (``mode=None``).
    PNG/JPEG/WebP/BMP bytes are stored unchanged after a test decode; GeoTIFFs are
    stored as ``.npy`` arrays (uint8/uint16 when their values fit). The files are
    written in a seeded random order (``shuffle``), so that every shard mixes
    classes and GSDs; ``index`` in each sample's JSON is the file's position in
    sorted order.

    Args:
        root: Folder of images (``root/<class>/<image>`` or flat).
        out: Output folder of the shards and ``manifest.json``.
        gsd: GSD in metres per pixel for files without a CSV row.
        gsd_csv: CSV with columns ``path,gsd`` (per-file GSDs).
        labelled: Class subfolders give labels (``None``: detect).
        extensions: File extensions to include.
        max_per_class: Keep at most this many files per class.
        samples_per_shard: Most samples per shard.
        max_shard_bytes: Most bytes per shard (``None``: no limit).
        overwrite: Replace earlier shards in ``out``.
        progress: Show a progress bar (tqdm) on stderr.
        num_shards: Split the samples into this many shards of equal size (the last
            one smaller), overriding ``samples_per_shard``.
        shuffle: Write the files in a random order (seeded by ``seed``).
        seed: Seed of that order.

    Returns:
        The manifest written to ``out/manifest.json``.

    Raises:
        ValueError: If the folder, the CSV or an argument is invalid, a file has
            no GSD, or a file is not a readable image (the message names it).
        TypeError: If an argument has the wrong type.
    """
    dataset = ImageFolderGSD(
        root,
        gsd=gsd,
        gsd_csv=gsd_csv,
        labelled=labelled,
        mode=None,
        extensions=extensions,
        max_per_class=max_per_class,
    )
    check_flag(shuffle, 'shuffle')
    check_int(seed, 'seed', 0)
    samples_per_shard = _per_shard(samples_per_shard, num_shards, len(dataset))
    sink = ShardSink(out, samples_per_shard, max_shard_bytes, overwrite)
    base = dataset.root
    order = np.arange(len(dataset.files))
    if shuffle:
        order = np.random.default_rng(seed).permutation(order)
    files = tqdm(
        enumerate(order.tolist()),
        total=len(order),
        desc='shards',
        unit='image',
        disable=not progress,
    )
    for position, index in files:
        path = dataset.files[index]
        suffix = path.suffix.lower()
        try:
            if suffix in _STORED_AS_IS:
                data = path.read_bytes()
                _decode_image(suffix[1:], data, None)  # refuse a broken file now
                file_gsd = None
                stored = suffix[1:]
            else:
                image, file_gsd = load_image(path, None)
                data = _npy_bytes(image.numpy())
                stored = 'npy'
        except (*_DECODE_ERRORS, _CorruptSample) as error:
            raise ValueError(f'cannot read the image {str(path)!r}: {error}') from None
        info: dict[str, Any] = {
            GSD_KEY: dataset.gsd_of(index, file_gsd),
            'index': index,
            'source': path.relative_to(base).as_posix(),
        }
        if dataset.labelled:
            info['label'] = dataset.targets[index]
            info['class'] = dataset.classes[dataset.targets[index]]
        sink.write(f'{position:09d}', stored, data, info)
    source = {
        'kind': 'folder',
        'root': str(root),
        'gsd': gsd,
        'gsd_csv': None if gsd_csv is None else str(gsd_csv),
        'labelled': dataset.labelled,
        'shuffle': shuffle,
        'seed': seed,
    }
    extra = {'classes': dataset.classes} if dataset.labelled else {}
    return sink.finish(source, **extra)


def write_geotiff_shards(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    patch_size: int = 224,
    resolutions: Sequence[float] | None = None,
    resolution_mode: str = 'all',
    length: int | None = None,
    seed: int = 0,
    samples_per_shard: int = 1000,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_shards: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Sample GeoTIFF patches into shards as the GeoTIFF datamodule's training does.

    The patches are those of
    :class:`~torchgeo_scalemae.datamodules.GeoTIFFGSDDataModule`'s training sampler
    with the same arguments: with ``resolutions`` the same random places read at
    each resolution (:class:`~torchgeo_scalemae.datamodules.MultiResolutionPatchSampler`),
    else TorchGeo's ``RandomPatchSampler`` at the native resolution. Each patch is
    stored as a ``.npy`` array (uint8/uint16 when its values fit) with its ``gsd``
    and ``bounds`` (CRS units, TorchGeo's order).

    Args:
        paths: GeoTIFF files or folders.
        out: Output folder of the shards and ``manifest.json``.
        patch_size: Patch size in pixels.
        resolutions: Resolutions in CRS units per pixel (``None``: native only).
        resolution_mode: ``'all'`` or ``'random'``.
        length: Places to sample (``None``: the sampler's default).
        seed: Seed of the sampler.
        samples_per_shard: Most samples per shard.
        max_shard_bytes: Most bytes per shard (``None``: no limit).
        overwrite: Replace earlier shards in ``out``.
        progress: Show a progress bar (tqdm) on stderr.
        num_shards: Split the samples into this many shards of equal size (the last
            one smaller), overriding ``samples_per_shard``.
        **kwargs: Further :class:`~torchgeo_scalemae.datamodules.GSDRasterDataset`
            arguments (``crs``, ``res``, ``gsd``, ``bands``, ``filename_glob``).

    Returns:
        The manifest written to ``out/manifest.json``.

    Raises:
        ValueError: If an argument or a raster is invalid (see
            :class:`~torchgeo_scalemae.datamodules.GeoTIFFGSDDataModule`).
    """
    from .geotiff import GeoTIFFGSDDataModule

    listed = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    datamodule = GeoTIFFGSDDataModule(
        [str(p) for p in listed],
        patch_size=patch_size,
        batch_size=1,
        length=length,
        resolutions=None if resolutions is None else list(resolutions),
        resolution_mode=resolution_mode,
        seed=seed,
        **kwargs,
    )
    check_int(samples_per_shard, 'samples_per_shard', 1)
    check_int(num_shards, 'num_shards', 1, none=True)
    datamodule.setup('fit')
    dataset = datamodule.train_dataset
    sampler = datamodule.train_sampler
    assert dataset is not None and sampler is not None
    samples_per_shard = _per_shard(samples_per_shard, num_shards, len(sampler))
    sink = ShardSink(out, samples_per_shard, max_shard_bytes, overwrite)
    indexes = tqdm(
        sampler, total=len(sampler), desc='shards', unit='patch', disable=not progress
    )
    for index, query in enumerate(indexes):
        sample = dataset[query]
        info: dict[str, Any] = {GSD_KEY: float(sample[GSD_KEY]), 'index': index}
        bounds = sample.get('bounds')
        if bounds is not None:
            info['bounds'] = [float(b) for b in np.asarray(bounds).ravel()]
        sink.write(f'{index:09d}', 'npy', _npy_bytes(sample['image'].numpy()), info)
    source = {
        'kind': 'geotiff',
        'paths': [str(p) for p in listed],
        'patch_size': patch_size,
        'resolutions': None if resolutions is None else list(resolutions),
        'resolution_mode': resolution_mode,
        'length': length,
        'seed': seed,
        'crs': str(getattr(dataset, 'crs', '')),
    }
    return sink.finish(source)


def _expand(shards: Iterable[str]) -> list[str]:
    from webdataset.shardlists import expand_urls  # type: ignore[import-untyped]

    found: list[str] = []
    for pattern in shards:
        found.extend(expand_urls(pattern))
    return found


def _scan(url: str) -> Iterator[dict[str, Any]]:
    from webdataset import tariterators

    with _open(url) as stream:
        files = tariterators.tar_file_iterator(stream)
        grouped = tariterators.group_by_keys({**f, '__url__': url} for f in files)
        yield from grouped


def index_shards(
    shards: Sequence[str],
    out: str | os.PathLike[str],
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a manifest for existing shards (counting their samples and GSDs).

    Args:
        shards: Shard paths or URLs; brace patterns (``shard-{000..099}.tar``)
            are expanded.
        out: Folder of the manifest (shards under it are listed relative to it).
        progress: Show a progress bar (tqdm) on stderr.
        overwrite: Replace an existing manifest.

    Returns:
        The manifest written to ``out/manifest.json``.

    Raises:
        ValueError: If no shard is given, a shard cannot be read, or a sample has
            no valid ``gsd`` in its JSON (the message names it).
    """
    urls = _expand(shards)
    if not urls:
        raise ValueError(f'no shard in {list(shards)!r}')
    folder = Path(_local_path(str(out)))
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        raise ValueError(
            f'{str(manifest_path)!r} exists: pass --overwrite to replace it'
        )
    entries = []
    gsds: list[float] = []
    for url in tqdm(urls, desc='index', unit='shard', disable=not progress):
        count = 0
        try:
            for sample in _scan(url):
                try:
                    info = json.loads(sample['json'])
                    gsds.append(positive_number(info[GSD_KEY], 'gsd'))
                except (KeyError, TypeError, ValueError) as error:
                    raise ValueError(
                        f'sample {sample.get("__key__")!r} of {url!r} has no valid '
                        f'gsd in its .json: {error}'
                    ) from None
                count += 1
        except OSError as error:
            raise ValueError(f'cannot read the shard {url!r}: {error}') from None
        local = Path(_local_path(url)).resolve()
        try:
            name = local.relative_to(folder.resolve()).as_posix()
        except ValueError:
            name = url
        entry: dict[str, Any] = {'url': name, 'count': count}
        if local.is_file():
            entry['bytes'] = local.stat().st_size
        entries.append(entry)
    manifest = {
        'format': MANIFEST_FORMAT,
        'version': 1,
        'created_by': f'torchgeo-scalemae {__version__}',
        'count': sum(e['count'] for e in entries),
        'gsd': gsd_statistics(gsds),
        'source': {'kind': 'index', 'shards': list(shards)},
        'shards': entries,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='torchgeo-scalemae-shards',
        description='Write WebDataset tar shards with a GSD (metres per pixel) per '
        'sample, and their manifest, for ShardedGSDDataModule.',
    )
    commands = parser.add_subparsers(dest='command', required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument('--out', required=True, help='output folder')
        sub.add_argument(
            '--samples-per-shard', type=int, default=1000, help='(default 1000)'
        )
        sub.add_argument(
            '--max-shard-bytes', type=int, default=None, help='(default: no limit)'
        )
        sub.add_argument(
            '--num-shards',
            type=int,
            default=None,
            help='this many equal shards (overrides --samples-per-shard)',
        )
        sub.add_argument('--overwrite', action='store_true')
        sub.add_argument('--quiet', action='store_true', help='no progress bar')

    folder = commands.add_parser('folder', help='a folder of images')
    folder.add_argument('root', help='folder of images (class subfolders optional)')
    gsd = folder.add_mutually_exclusive_group()
    gsd.add_argument('--gsd', type=float, help='GSD of every image (m/pixel)')
    gsd.add_argument('--gsd-csv', help='CSV with columns path,gsd')
    folder.add_argument(
        '--labelled',
        choices=('auto', 'yes', 'no'),
        default='auto',
        help='class subfolders give labels (default: auto)',
    )
    folder.add_argument('--extensions', nargs='+', default=list(IMAGE_EXTENSIONS))
    folder.add_argument('--max-per-class', type=int, default=None)
    folder.add_argument(
        '--no-shuffle', action='store_true', help='keep the sorted file order'
    )
    folder.add_argument('--seed', type=int, default=0, help='seed of the order')
    common(folder)

    geotiff = commands.add_parser('geotiff', help='patches of GeoTIFFs')
    geotiff.add_argument('paths', nargs='+', help='GeoTIFF files or folders')
    geotiff.add_argument('--patch-size', type=int, default=224)
    geotiff.add_argument(
        '--resolutions', type=float, nargs='+', help='CRS units per pixel'
    )
    geotiff.add_argument('--resolution-mode', choices=('all', 'random'), default='all')
    geotiff.add_argument('--length', type=int, default=None, help='places to sample')
    geotiff.add_argument('--seed', type=int, default=0)
    geotiff.add_argument('--gsd', type=float, help='GSD per native pixel (m)')
    geotiff.add_argument('--crs', help='CRS to warp to, e.g. EPSG:32617')
    geotiff.add_argument('--bands', type=int, nargs='+', help='1-based bands')
    geotiff.add_argument('--filename-glob', default=None)
    common(geotiff)

    index = commands.add_parser('index', help='a manifest for existing shards')
    index.add_argument('shards', nargs='+', help='shards (brace patterns expanded)')
    index.add_argument('--out', required=True, help='folder of the manifest')
    index.add_argument('--overwrite', action='store_true')
    index.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``torchgeo-scalemae-shards``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for invalid inputs (the message is
        printed on stderr).
    """
    args = _parser().parse_args(argv)
    common: dict[str, Any] = {
        'samples_per_shard': args.samples_per_shard,
        'max_shard_bytes': args.max_shard_bytes,
        'overwrite': args.overwrite,
        'progress': not args.quiet,
        'num_shards': args.num_shards,
    }
    try:
        if args.command == 'folder':
            labelled = {'auto': None, 'yes': True, 'no': False}[args.labelled]
            manifest = write_folder_shards(
                args.root,
                args.out,
                gsd=args.gsd,
                gsd_csv=args.gsd_csv,
                labelled=labelled,
                extensions=args.extensions,
                max_per_class=args.max_per_class,
                shuffle=not args.no_shuffle,
                seed=args.seed,
                **common,
            )
        elif args.command == 'geotiff':
            kwargs = {
                name: getattr(args, name)
                for name in ('gsd', 'crs', 'bands', 'filename_glob')
                if getattr(args, name) is not None
            }
            manifest = write_geotiff_shards(
                args.paths,
                args.out,
                patch_size=args.patch_size,
                resolutions=args.resolutions,
                resolution_mode=args.resolution_mode,
                length=args.length,
                seed=args.seed,
                **common,
                **kwargs,
            )
        else:
            manifest = index_shards(
                args.shards, args.out, progress=not args.quiet, overwrite=args.overwrite
            )
    except (ValueError, TypeError) as error:
        print(f'torchgeo-scalemae-shards: error: {error}', file=sys.stderr)
        return 2
    stats = manifest['gsd']
    print(
        f'{manifest["count"]} samples in {len(manifest["shards"])} shards; GSD '
        f'{stats["min"]:g}-{stats["max"]:g} m/pixel (median {stats["median"]:g}); '
        f'manifest: {Path(_local_path(str(args.out))) / MANIFEST_NAME}'
    )
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
