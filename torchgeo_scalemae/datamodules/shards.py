# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Sharded streaming pretraining data: WebDataset tar shards with a GSD per sample.

The shards are plain WebDataset tar files (read with the ``webdataset`` package's tar
iterators and shuffle buffer): each sample is a ``<key>.json`` with its ``gsd`` in
metres per pixel (and optional metadata) beside one image file ``<key>.<ext>``
(``png``, ``jpg``, ``webp``, ``bmp``, ``tif`` or ``npy``). A ``manifest.json`` beside
the shards lists them with their sample counts; ``torchgeo-scalemae-shards`` (see
:mod:`torchgeo_scalemae.datamodules.shard_writer`) writes both, from a folder of images
or from GeoTIFFs. See :doc:`/user/shards` for the guarantees on splitting, shuffling
and resuming.
"""

import hashlib
import io
import json
import numbers
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchgeo.datamodules import BaseDataModule

from ..gsd import GSD_KEY
from ._checks import check_flag, check_int, check_loader, is_positive
from ._images import check_mode, collate_images, resize_square

__all__ = (
    'MANIFEST_NAME',
    'CorruptSampleWarning',
    'ResumeWarning',
    'ShardedGSDDataModule',
    'ShardedGSDDataset',
    'ShardedLoader',
    'read_manifest',
)

#: File name of the manifest written beside the shards.
MANIFEST_NAME = 'manifest.json'
#: ``format`` field of a manifest.
MANIFEST_FORMAT = 'torchgeo-scalemae-shards'
#: Image suffixes of a sample (one per sample), as written by the converter.
SAMPLE_IMAGE_SUFFIXES = ('png', 'jpg', 'jpeg', 'webp', 'bmp', 'tif', 'tiff', 'npy')
_POSITION_KEY = '_shard_position'
# What PIL, numpy and rasterio raise for bytes that are no valid image
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    TypeError,
    IndexError,
    Image.DecompressionBombError,
)
_WDS_SCHEMES = ('pipe', 'http', 'https', 'gs', 'hf', 'ais', 'sftp', 'scp', 'ftps')


class CorruptSampleWarning(UserWarning):
    """A sample or a shard could not be read and was skipped (the warning counts them)."""


class ResumeWarning(UserWarning):
    """A loader state could not be restored exactly (the warning says what changes)."""


class _CorruptSample(Exception):
    """A sample that fails validation; the message says why."""


# ----------------------------------------------------------------------- manifests


def _is_url(location: str) -> bool:
    scheme = urlparse(location).scheme
    return len(scheme) > 1 and scheme != 'file'  # 'C:\\...' has a 1-letter scheme


def _local_path(location: str) -> str:
    """Return the local path of ``location`` (``file://`` URLs and plain paths)."""
    if location.startswith('file://'):
        return url2pathname(urlparse(location).path)
    return location


def _open(location: str) -> IO[bytes]:
    """Open a shard or manifest for reading in binary mode.

    Local paths and ``file://`` URLs are opened directly; ``pipe:``, ``http(s)://``,
    ``gs://`` and ``hf://`` through webdataset's ``gopen``; any other scheme
    (``s3://``, ``az://``, ...) through fsspec (its backend, e.g. ``s3fs``, must be
    installed).
    """
    if not _is_url(location) and not location.startswith('pipe:'):
        return open(_local_path(location), 'rb')
    scheme = 'pipe' if location.startswith('pipe:') else urlparse(location).scheme
    if scheme in _WDS_SCHEMES:
        from webdataset import gopen  # type: ignore[import-untyped]

        return cast(IO[bytes], gopen.gopen(location, 'rb'))
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - fsspec ships with torchgeo's deps
        raise ValueError(
            f'cannot open {location!r}: the {scheme}:// scheme needs fsspec '
            '(pip install fsspec and its backend, e.g. s3fs for s3://)'
        ) from None
    try:
        return cast(IO[bytes], fsspec.open(location, 'rb').open())
    except ImportError as error:
        raise ValueError(
            f'cannot open {location!r}: {error} (fsspec needs the backend of '
            f'{scheme}://, e.g. pip install s3fs for s3://)'
        ) from None


def _join(base: str, name: str) -> str:
    """Resolve a shard ``name`` of a manifest against the manifest's folder ``base``."""
    if _is_url(name) or name.startswith(('pipe:', 'file://')) or os.path.isabs(name):
        return name
    if _is_url(base) or base.startswith('file://'):
        return base.rstrip('/') + '/' + name
    return str(Path(base) / name)


def read_manifest(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a shard manifest; shard locations become absolute.

    Args:
        location: The manifest (``.json``) or the folder or URL prefix holding
            ``manifest.json``; local paths, ``file://`` or any URL :func:`_open`
            accepts (``s3://`` through fsspec).

    Returns:
        The manifest dict: ``shards`` (list of ``{'url', 'count', ...}``, ``url``
        resolved against the manifest's folder), ``count`` (total samples) and the
        statistics the converter wrote (``gsd`` in metres per pixel).

    Raises:
        ValueError: If the manifest is missing, not JSON, not a shard manifest, or
            lists no shard or an invalid count (the message names the manifest).
        TypeError: If ``location`` is not a string or path.
    """
    if not isinstance(location, str | os.PathLike):
        raise TypeError(
            f'shards must be a manifest or its folder (a path or URL), got '
            f'{type(location).__name__}: {location!r}'
        )
    text = str(location)
    if not text.endswith('.json'):
        local = _local_path(text)
        if not _is_url(text) and os.path.isfile(local):
            raise ValueError(
                f'{text!r} is a file but not a manifest (.json): give the folder of '
                f'the shards or its {MANIFEST_NAME}'
            )
        text = _join(text, MANIFEST_NAME)
    if _is_url(text):
        base = text.rsplit('/', 1)[0]
    elif text.startswith('file://'):
        base = 'file://' + str(Path(_local_path(text)).parent)
    else:
        base = str(Path(text).parent)
    try:
        with _open(text) as f:
            manifest = json.loads(f.read().decode('utf-8'))
    except FileNotFoundError:
        raise ValueError(
            f'no shard manifest at {text!r}: write the shards with '
            'torchgeo-scalemae-shards (or index existing shards with '
            "'torchgeo-scalemae-shards index')"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'cannot read the shard manifest {text!r}: {error}') from None
    if not isinstance(manifest, dict) or manifest.get('format') != MANIFEST_FORMAT:
        raise ValueError(
            f'{text!r} is not a shard manifest (its "format" must be '
            f'{MANIFEST_FORMAT!r})'
        )
    shards = manifest.get('shards')
    if not isinstance(shards, list) or not shards:
        raise ValueError(f'the shard manifest {text!r} lists no shard')
    resolved = []
    for i, entry in enumerate(shards):
        name = entry.get('url') if isinstance(entry, dict) else None
        count = entry.get('count') if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or isinstance(count, bool)
            or not isinstance(count, int)
            or count < 0
        ):
            raise ValueError(
                f'the shard manifest {text!r}: shard {i} must be {{"url": str, '
                f'"count": int >= 0}}, got {entry!r}'
            )
        resolved.append({**entry, 'url': _join(base, name)})
    manifest = dict(manifest, shards=resolved, location=text)
    manifest['count'] = sum(s['count'] for s in resolved)
    return manifest


# ------------------------------------------------------------------------- samples


def _decode_image(suffix: str, data: bytes, mode: str | None) -> Tensor:
    """Decode image bytes into float32 ``(C, H, W)`` raw values."""
    if suffix == 'npy':
        array = np.load(io.BytesIO(data), allow_pickle=False)
    elif suffix in ('tif', 'tiff'):
        from rasterio.io import MemoryFile

        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # plain TIFFs are not georeferenced
            with MemoryFile(data) as memory, memory.open() as src:
                array = src.read()
    else:
        with Image.open(io.BytesIO(data)) as img:
            converted = img.convert(mode) if mode is not None else img
            array = np.asarray(converted)
        if array.ndim == 3:
            array = array.transpose(2, 0, 1)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise _CorruptSample(f'the image has shape {array.shape}, not (C, H, W)')
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise _CorruptSample(f'the image has dtype {array.dtype}, not a real number')
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise _CorruptSample('its image holds non-finite values')
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _check_gsd(value: object) -> float:
    if not is_positive(value):
        raise _CorruptSample(
            f'gsd {value!r} is not a finite positive number of metres per pixel'
        )
    return float(value)  # type: ignore[arg-type]  # a real number


@dataclass
class _Slot:
    """The stream of one worker of one rank: its shards and where it stands."""

    shards: list[str]
    raw: int = 0
    yielded: int = 0
    errors: list[str] = field(default_factory=list)


class ShardedGSDDataset(IterableDataset[dict[str, Any]]):
    """Samples of WebDataset tar shards, split over ranks and workers, resumable.

    **Split.** Each epoch the shards are permuted (seeded by ``seed`` and the epoch)
    and dealt round-robin to the ``world_size x num_workers`` streams ("slots"): slot
    ``rank * num_workers + worker`` reads shards ``order[slot::world_size *
    num_workers]``, so no two slots share a shard. Samples pass through a shuffle
    buffer of ``shuffle_buffer`` samples (webdataset's, with a seeded
    :class:`random.Random`), and each slot yields exactly :attr:`samples_per_slot`
    valid samples per epoch, the same number for every slot (a multiple of
    ``batch_size``), so every rank runs the same number of batches and DDP never
    waits on a rank that ran out. Slots holding more samples leave their surplus
    for that epoch (different samples each epoch, the shard order changing).

    **Validation.** A sample whose JSON, GSD or image cannot be read, or whose
    image holds non-finite values, is skipped and counted (the loader warns with
    :class:`CorruptSampleWarning`); so is a shard that cannot be opened or read to
    the end. The slot then reads on, and wraps around to its first shard if it
    runs out, so its count is kept; a slot with no readable sample raises.

    **Resume.** The stream of a slot is a pure function of ``seed``, the epoch,
    the slot and the files, so a slot resumes by re-reading (without decoding) the
    samples it had already read (``start``); see :class:`ShardedLoader`.

    Samples: ``image`` float32 ``(C, H, W)`` raw values, ``gsd`` 0-d float32 in
    metres per pixel (times ``W / image_size`` when resized), and one 0-d tensor
    per ``metadata`` field (int64 for integers, float32 otherwise).

    Args:
        shards: Shard locations (paths or URLs), in manifest order.
        counts: Samples in each shard (the manifest's counts).
        batch_size: Samples per batch; :attr:`samples_per_slot` is a multiple of it.
        num_workers: Data loader workers per rank (``0``: one stream).
        rank: Global rank of this process.
        world_size: Number of processes.
        seed: Seed of the shard permutation and the shuffle buffers.
        shuffle_buffer: Samples held in each shuffle buffer (``<= 1``: no shuffle).
        shuffle_shards: Permute the shards every epoch.
        image_size: Resize every image to this square size (pixels), scaling its
            GSD by ``W / image_size`` (geometric mean of both axes when not square).
        mode: PIL mode for PNG/JPEG/WebP/BMP images (``None``: the file's).
        gsd: GSD (metres per pixel) of samples whose JSON has none (shards written
            by other tools); ``None``: such samples are corrupt.
        metadata: Numeric JSON fields to add to every sample (``['label']``).

    Raises:
        ValueError: If an argument is out of range, there are fewer shards than
            ``world_size x max(1, num_workers)`` slots, or the smallest slot holds
            fewer than ``batch_size`` samples (the message gives the numbers).
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        shards: Sequence[str],
        counts: Sequence[int],
        batch_size: int,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        image_size: int | None = None,
        mode: str | None = 'RGB',
        gsd: float | None = None,
        metadata: Sequence[str] = (),
    ) -> None:
        """Initialize a new ShardedGSDDataset."""
        if isinstance(shards, str) or not all(isinstance(s, str) for s in shards):
            raise TypeError(f'shards must be a list of locations, got {shards!r}')
        if len(shards) != len(counts) or not shards:
            raise ValueError(
                f'need one count per shard and at least one shard, got {len(shards)} '
                f'shards and {len(counts)} counts'
            )
        for count in counts:
            check_int(count, 'a shard count', 0)
        self.batch_size = cast(int, check_int(batch_size, 'batch_size', 1))
        self.num_workers = cast(int, check_int(num_workers, 'num_workers', 0))
        self.world_size = cast(int, check_int(world_size, 'world_size', 1))
        self.rank = cast(int, check_int(rank, 'rank', 0))
        if self.rank >= self.world_size:
            raise ValueError(f'rank must be < world_size {world_size}, got {rank!r}')
        self.seed = cast(int, check_int(seed, 'seed', 0))
        self.shuffle_buffer = cast(int, check_int(shuffle_buffer, 'shuffle_buffer', 0))
        self.shuffle_shards = check_flag(shuffle_shards, 'shuffle_shards')
        self.image_size = check_int(image_size, 'image_size', 1, none=True)
        self.mode = check_mode(mode)
        self.gsd = None if gsd is None else _check_positive(gsd, 'gsd')
        _check_metadata(metadata)
        self.metadata = list(metadata)
        self.shards = list(shards)
        self.counts = [int(c) for c in counts]
        slots = self.world_size * self.slots_per_rank
        per_slot = len(self.shards) // slots
        if per_slot == 0:
            raise ValueError(
                f'{len(self.shards)} shards cannot feed {slots} streams (world_size '
                f'{self.world_size} x {self.slots_per_rank} workers): each needs at '
                'least one shard of its own; write smaller shards or use fewer '
                'workers'
            )
        floor = sum(sorted(self.counts)[:per_slot])
        #: Valid samples each slot yields per epoch (a multiple of ``batch_size``).
        self.samples_per_slot = floor // self.batch_size * self.batch_size
        if self.samples_per_slot == 0:
            raise ValueError(
                f'each of the {slots} streams (world_size {self.world_size} x '
                f'{self.slots_per_rank} workers) holds at least {per_slot} shard(s) '
                f'with {floor} samples in the worst case, fewer than batch_size '
                f'{self.batch_size}: lower batch_size or num_workers, or write more '
                'samples per shard'
            )
        #: Epoch of the next iteration (the loader sets it).
        self.epoch = 0
        #: ``(raw, yielded)`` per slot of this rank to resume from (the loader sets it).
        self.start: list[tuple[int, int]] = [(0, 0)] * self.slots_per_rank
        #: Physical worker ``w`` runs slot ``(w + rotation) % slots_per_rank``.
        self.rotation = 0
        #: Generation of the loader iteration (the loader sets it).
        self.generation = 0

    @property
    def slots_per_rank(self) -> int:
        """Streams per rank: ``max(1, num_workers)``."""
        return max(1, self.num_workers)

    @property
    def samples_used(self) -> int:
        """Samples all ranks read per epoch (``world_size x slots x per slot``)."""
        return self.world_size * self.slots_per_rank * self.samples_per_slot

    def fingerprint(self) -> str:
        """Return a hash of the shard list and counts (a resume checks it)."""
        text = json.dumps([self.shards, self.counts, self.metadata])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        """Return the samples this rank yields per epoch."""
        return self.slots_per_rank * self.samples_per_slot

    def slot_shards(self, epoch: int, slot: int) -> list[str]:
        """Return the shards of ``slot`` (``rank * slots_per_rank + worker``) in ``epoch``.

        Args:
            epoch: Epoch number (``>= 0``).
            slot: Global slot index.

        Returns:
            The shard locations, in reading order.
        """
        order = np.arange(len(self.shards))
        if self.shuffle_shards:
            order = np.random.default_rng([self.seed, epoch]).permutation(order)
        slots = self.world_size * self.slots_per_rank
        return [self.shards[i] for i in order[slot::slots]]

    def _slot_seed(self, epoch: int, slot: int, wrap: int) -> int:
        state = np.random.SeedSequence([self.seed, epoch, slot, wrap]).generate_state(2)
        return int(state[0]) << 32 | int(state[1])

    def _raw_samples(self, slot: _Slot) -> Iterator[dict[str, Any]]:
        """Yield the undecoded samples of the slot's shards (webdataset grouping)."""
        from webdataset import tariterators

        def handler(error: Exception) -> bool:
            slot.errors.append(f'{type(error).__name__}: {error}')
            return True

        def streams() -> Iterator[dict[str, Any]]:
            for url in slot.shards:
                try:
                    stream = _open(url)
                except (OSError, ValueError) as error:
                    slot.errors.append(f'cannot open the shard {url!r}: {error}')
                    continue
                try:
                    yield {'url': url, 'stream': stream}
                finally:
                    stream.close()

        expanded = tariterators.tar_file_expander(streams(), handler)
        yield from tariterators.group_by_keys(expanded, handler=handler)

    def _decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Decode and validate one raw sample; raise :class:`_CorruptSample`."""
        info: dict[str, Any] = {}
        if 'json' in raw:
            try:
                info = json.loads(raw['json'])
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise _CorruptSample(f'its JSON is invalid ({error})') from None
            if not isinstance(info, dict):
                raise _CorruptSample(
                    f'its JSON is {type(info).__name__}, not an object'
                )
        elif self.gsd is None:
            raise _CorruptSample('it has no .json (with its gsd)')
        if GSD_KEY in info:
            gsd = _check_gsd(info[GSD_KEY])
        elif self.gsd is not None:
            gsd = self.gsd
        else:
            raise _CorruptSample('its JSON has no gsd and no default gsd was given')
        suffixes = [s for s in SAMPLE_IMAGE_SUFFIXES if s in raw]
        if len(suffixes) != 1:
            found = sorted(k for k in raw if not k.startswith('__'))
            raise _CorruptSample(
                f'it needs exactly one image ({", ".join(SAMPLE_IMAGE_SUFFIXES)}), '
                f'found {found}'
            )
        try:
            image = _decode_image(suffixes[0], raw[suffixes[0]], self.mode)
        except _CorruptSample:
            raise
        except _DECODE_ERRORS as error:
            raise _CorruptSample(
                f'its .{suffixes[0]} image cannot be decoded ({error})'
            ) from None
        image, gsd = resize_square(image, gsd, self.image_size)
        sample: dict[str, Any] = {
            'image': image,
            GSD_KEY: torch.tensor(gsd, dtype=torch.float32),
        }
        for name in self.metadata:
            value = info.get(name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise _CorruptSample(
                    f'its JSON field {name!r} is {value!r}, not a number'
                )
            dtype = torch.long if isinstance(value, numbers.Integral) else torch.float32
            sample[name] = torch.tensor(value, dtype=dtype)
        return sample

    def _shuffled(
        self, slot: _Slot, epoch: int, index: int, wrap: int
    ) -> Iterator[Any]:
        samples = self._raw_samples(slot)
        if self.shuffle_buffer <= 1:
            return samples
        from webdataset import filters

        rng = random.Random(self._slot_seed(epoch, index, wrap))
        size = self.shuffle_buffer
        return cast(Iterator[Any], filters.shuffle(size, size, rng=rng)(samples))

    def iter_slot(
        self, epoch: int, index: int, raw: int = 0, yielded: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Yield the samples of global slot ``index`` in ``epoch`` from a position.

        Each sample carries its position under a private key (removed by the
        loader's collate function).

        Args:
            epoch: Epoch number.
            index: Global slot index (``rank * slots_per_rank + worker``).
            raw: Raw samples (valid or not) of this epoch's stream already read.
            yielded: Valid samples already yielded.

        Yields:
            Sample dicts (see the class docstring).

        Raises:
            RuntimeError: If a full pass over the slot's shards yields no valid
                sample (every shard unreadable or every sample corrupt).
        """
        slot = _Slot(self.slot_shards(epoch, index), 0, yielded)
        wrap = 0
        while slot.yielded < self.samples_per_slot:
            read = valid = 0
            for item in self._shuffled(slot, epoch, index, wrap):
                read += 1
                slot.raw += 1
                if slot.raw <= raw:
                    # read before the resume point: yielded or reported already
                    valid += 1
                    slot.errors.clear()
                    continue
                key = f'{item.get("__key__")!r} of shard {item.get("__url__")!r}'
                try:
                    sample = self._decode(item)
                except _CorruptSample as error:
                    slot.errors.append(f'sample {key}: {error}')
                    continue
                valid += 1
                slot.yielded += 1
                sample[_POSITION_KEY] = {
                    'slot': index,
                    'raw': slot.raw,
                    'yielded': slot.yielded,
                    'errors': list(slot.errors),
                    'generation': self.generation,
                }
                slot.errors.clear()
                yield sample
                if slot.yielded >= self.samples_per_slot:
                    return
            if valid == 0:
                problems = '; '.join(slot.errors[:3]) or 'the shards are empty'
                raise RuntimeError(
                    f'no valid sample in a full pass over the shards {slot.shards} '
                    f'({read} samples read): {problems}'
                )
            wrap += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's samples of the current epoch.

        Yields:
            Sample dicts (see the class docstring).

        Raises:
            RuntimeError: If the loader runs a different number of workers than
                this dataset was built for.
        """
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != self.slots_per_rank:
            raise RuntimeError(
                f'the dataset was built for {self.slots_per_rank} workers but runs '
                f'under {workers}: build it with num_workers={workers}'
            )
        local = (worker + self.rotation) % self.slots_per_rank
        raw, yielded = self.start[local]
        index = self.rank * self.slots_per_rank + local
        return self.iter_slot(self.epoch, index, raw, yielded)


def _check_metadata(metadata: object) -> None:
    if (
        isinstance(metadata, str)
        or not isinstance(metadata, Sequence)
        or not all(isinstance(m, str) and m and m != GSD_KEY for m in metadata)
    ):
        raise ValueError(
            f"metadata must be a list of JSON field names other than 'gsd', got "
            f'{metadata!r}'
        )


def _check_positive(value: object, name: str) -> float:
    try:
        return _check_gsd(value)
    except _CorruptSample:
        raise ValueError(
            f'{name} must be a finite positive number of metres per pixel, got '
            f'{value!r}'
        ) from None


def _collate_shards(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples and keep the position of the last one (private key)."""
    positions = [s.pop(_POSITION_KEY) for s in samples]
    batch = collate_images(samples)
    last = dict(positions[-1])
    last['errors'] = [e for p in positions for e in p['errors']]
    batch[_POSITION_KEY] = last
    return batch


def _distributed() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the default process group, or ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedLoader(DataLoader[dict[str, Any]]):
    """A :class:`~torch.utils.data.DataLoader` over shards with ``state_dict``.

    Lightning saves :meth:`state_dict` in every checkpoint (the fit loop's
    ``combined_loader`` state) and calls :meth:`load_state_dict` when resuming
    with ``ckpt_path``. The state holds the epoch, the batches consumed in it and,
    for every rank and slot, the raw samples read and the valid samples yielded
    (gathered from all ranks when :mod:`torch.distributed` is initialised, which
    is why Lightning must call :meth:`state_dict` on every rank: it does).

    With ``track='yield'`` a batch counts as consumed when it is yielded (plain
    iteration); with ``track='transfer'`` (what :class:`ShardedGSDDataModule`
    sets under a trainer) when :meth:`commit` is called with it, which the
    datamodule does in ``on_before_batch_transfer``: Lightning prefetches a batch
    ahead, and that batch must not count as trained. Until then the batch carries
    its position under a private key.

    Resuming is exact (the same samples in the same order, none repeated, none
    skipped) when the shards, ``world_size``, ``num_workers`` and ``batch_size``
    are unchanged; otherwise a :class:`ResumeWarning` says so and the epoch
    continues at the same batch index in the new layout. Every iteration that
    follows a finished epoch starts the next one; an iteration broken off
    (``break``) is continued by the next.

    Args:
        dataset: The shards.
        num_workers: Data loader workers (must match ``dataset.num_workers``).
        pin_memory: Pin batches in page-locked memory.
        track: ``'yield'`` or ``'transfer'`` (see above).

    Raises:
        ValueError: If ``num_workers`` differs from the dataset's or ``track`` is
            not ``'yield'`` or ``'transfer'``.
    """

    def __init__(
        self,
        dataset: ShardedGSDDataset,
        num_workers: int = 0,
        pin_memory: bool = False,
        track: str = 'yield',
    ) -> None:
        """Initialize a new ShardedLoader."""
        if not isinstance(dataset, ShardedGSDDataset):
            raise TypeError(f'dataset must be a ShardedGSDDataset, got {dataset!r}')
        if num_workers != dataset.num_workers:
            raise ValueError(
                f"num_workers {num_workers!r} differs from the dataset's "
                f'{dataset.num_workers}'
            )
        if track not in ('yield', 'transfer'):
            raise ValueError(f"track must be 'yield' or 'transfer', got {track!r}")
        super().__init__(
            dataset,
            batch_size=dataset.batch_size,
            num_workers=num_workers,
            collate_fn=_collate_shards,
            pin_memory=pin_memory,
            persistent_workers=False,  # each epoch's workers get the new epoch
        )
        self.shards = dataset
        self.track = track
        self.epoch = 0
        self.batches = 0
        self.positions = [(0, 0)] * dataset.slots_per_rank
        #: Samples and shards skipped as corrupt since this loader was built.
        self.skipped = 0
        self._generation = 0

    # DataLoader.__len__ reads len(dataset) // batch_size: every slot's count is a
    # multiple of batch_size, so that is exact.

    def _roll(self) -> None:
        self.epoch += 1
        self.batches = 0
        self.positions = [(0, 0)] * self.shards.slots_per_rank

    def commit(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Count ``batch`` as consumed and remove its position key.

        Warns (:class:`CorruptSampleWarning`) for every sample or shard skipped
        since the previous batch of its slot.

        Args:
            batch: A batch of this loader.

        Returns:
            The batch without its position key.
        """
        position = batch.pop(_POSITION_KEY, None)
        if position is None or position['generation'] != self._generation:
            return batch
        per_rank = self.shards.slots_per_rank
        local = position['slot'] - self.shards.rank * per_rank
        self.positions[local] = (position['raw'], position['yielded'])
        self.batches += 1
        for error in position['errors']:
            self.skipped += 1
            warnings.warn(
                f'skipped {error} ({self.skipped} skipped so far)',
                CorruptSampleWarning,
                stacklevel=2,
            )
        if self.batches >= len(self):
            self._roll()
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        """Iterate over the rest of the current epoch (or the next one).

        Returns:
            An iterator over batch dicts.
        """
        dataset = self.shards
        self._generation += 1
        dataset.generation = self._generation
        dataset.epoch = self.epoch
        dataset.start = list(self.positions)
        dataset.rotation = self.batches % dataset.slots_per_rank
        iterator = super().__iter__()
        return self._batches(iterator)

    def _batches(self, iterator: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in iterator:
            yield self.commit(batch) if self.track == 'yield' else batch

    def state_dict(self) -> dict[str, Any]:
        """Return the resumable state (gathered over ranks when distributed).

        Returns:
            A dict with ``version``, ``epoch``, ``batches`` (consumed in the epoch),
            ``positions`` (for every rank, for every slot, the raw samples read and
            the valid samples yielded), ``world_size``, ``num_workers``,
            ``batch_size``, ``fingerprint`` (of the shards) and ``skipped``.
        """
        dataset = self.shards
        mine = [list(p) for p in self.positions]
        _, world = _distributed()
        if world > 1 and world == dataset.world_size:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, (dataset.rank, mine))
            positions = [p for _, p in sorted(gathered, key=lambda item: item[0])]
        else:
            positions = [mine]
        return {
            'version': 1,
            'epoch': self.epoch,
            'batches': self.batches,
            'positions': positions,
            'world_size': dataset.world_size,
            'num_workers': dataset.num_workers,
            'batch_size': dataset.batch_size,
            'fingerprint': dataset.fingerprint(),
            'skipped': self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (this rank's positions).

        Args:
            state: A state dict of :meth:`state_dict`.

        Raises:
            ValueError: If ``state`` is not a state of this loader class.
        """
        if not isinstance(state, dict) or state.get('version') != 1:
            raise ValueError(f'not a ShardedLoader state: {state!r}')
        dataset = self.shards
        self.epoch = int(state['epoch'])
        self.skipped = int(state.get('skipped', 0))
        batches = int(state['batches'])
        positions = state['positions']
        same = (
            state['fingerprint'] == dataset.fingerprint()
            and state['world_size'] == dataset.world_size
            and state['num_workers'] == dataset.num_workers
            and state['batch_size'] == dataset.batch_size
            and len(positions) == dataset.world_size
        )
        if same:
            self.batches = batches
            self.positions = [(int(r), int(y)) for r, y in positions[dataset.rank]]
            return
        changed = [
            f'{name} {state[name]!r} -> {now!r}'
            for name, now in (
                ('world_size', dataset.world_size),
                ('num_workers', dataset.num_workers),
                ('batch_size', dataset.batch_size),
                ('fingerprint', dataset.fingerprint()),
            )
            if state[name] != now
        ]
        self.batches = min(batches, len(self))
        per_rank = dataset.slots_per_rank
        rounds, extra = divmod(self.batches, per_rank)
        self.positions = []
        for slot in range(per_rank):
            done = (rounds + (slot < extra)) * dataset.batch_size
            self.positions.append((done, done))
        warnings.warn(
            f'resuming epoch {self.epoch} at batch {self.batches} of a changed layout '
            f'({", ".join(changed)}): the rest of this epoch is read from the new '
            'layout, so some of its samples may repeat or be missed until it ends',
            ResumeWarning,
            stacklevel=2,
        )
        if self.batches >= len(self):
            self._roll()


class ShardedGSDDataModule(BaseDataModule):
    """Pretraining datamodule over WebDataset shards with a GSD per sample.

    Reads the shards listed in a manifest (written by ``torchgeo-scalemae-shards``)
    from a local folder, ``file://``, ``s3://`` (through fsspec; ``s3fs`` must be
    installed) or any URL webdataset opens (``http(s)://``, ``pipe:``). The
    training loader (a :class:`ShardedLoader`) splits the shards over ranks and
    workers, shuffles in a buffer, skips and counts corrupt samples, and resumes
    mid-epoch from Lightning checkpoints (see :class:`ShardedGSDDataset` and
    :doc:`/user/shards`).

    Batches (after :meth:`on_after_batch_transfer`), as the other datamodules':
    ``image`` float32 ``(B, C, H, W)`` **normalised** as ``(x - mean) / std``
    (default ``0`` and ``255``: 0-1 for 8-bit images), ``gsd`` float32 ``(B,)``
    metres per pixel, and the ``metadata`` fields ``(B,)``. The task applies the
    GSD-aware crops (:class:`~torchgeo_scalemae.transforms.ScaleMAEPair`).

    Example::

        dm = ShardedGSDDataModule('shards/', batch_size=16)
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))  # image, gsd

    Args:
        shards: The manifest, or the folder or URL prefix holding
            ``manifest.json``.
        batch_size: Samples per batch per rank.
        num_workers: Data loader workers per rank (each reads its own shards).
        shuffle_buffer: Samples per shuffle buffer (per worker; ``<= 1``: none).
        shuffle_shards: Permute the shards every epoch.
        seed: Seed of the shard order and the shuffle buffers.
        image_size: Resize every image to this square size, scaling its GSD.
        mode: PIL mode of PNG/JPEG images (``'RGB'``; ``None``: the file's).
        gsd: GSD (metres per pixel) of samples whose JSON has none.
        metadata: Numeric JSON fields added to the batches (e.g. ``['label']``).
        mean: Normalisation mean (per channel or one value).
        std: Normalisation standard deviation (per channel or one value).
        pin_memory: Pin batches in page-locked memory.

    Raises:
        ValueError: If an argument is out of range (the message names it and its
            value); see also :meth:`setup`.
        TypeError: If an argument has the wrong type.
    """

    def __init__(
        self,
        shards: str,
        batch_size: int = 32,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        seed: int = 0,
        image_size: int | None = None,
        mode: str | None = 'RGB',
        gsd: float | None = None,
        metadata: Sequence[str] = (),
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        pin_memory: bool = False,
    ) -> None:
        """Initialize a new ShardedGSDDataModule."""
        if not isinstance(shards, str | os.PathLike):
            raise TypeError(
                f'shards must be a manifest or its folder (a path or URL), got '
                f'{shards!r}'
            )
        self.mean, self.std = check_loader(mean, std, batch_size, num_workers)
        check_int(shuffle_buffer, 'shuffle_buffer', 0)
        check_int(seed, 'seed', 0)
        check_int(image_size, 'image_size', 1, none=True)
        check_flag(shuffle_shards, 'shuffle_shards')
        check_flag(pin_memory, 'pin_memory')
        if gsd is not None:
            _check_positive(gsd, 'gsd')
        check_mode(mode)
        _check_metadata(metadata)
        super().__init__(ShardedGSDDataset, batch_size, num_workers)
        self.shards = str(shards)
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.image_size = image_size
        self.mode = mode
        self.gsd = gsd
        self.metadata = list(metadata)
        self.pin_memory = pin_memory
        self.manifest: dict[str, Any] | None = None
        self._loader: ShardedLoader | None = None
        self._dataset: ShardedGSDDataset | None = None
        self._pending_state: dict[str, Any] | None = None

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return _distributed()

    def setup(self, stage: str) -> None:
        """Read the manifest and build the training dataset for this rank.

        Args:
            stage: ``'fit'`` (the other stages have no data: pretraining only).

        Raises:
            ValueError: If the manifest is invalid (see :func:`read_manifest`), a
                local shard is missing, or the shards are too few for the ranks
                and workers (see :class:`ShardedGSDDataset`).
        """
        if stage != 'fit':
            return
        manifest = read_manifest(self.shards)
        urls = [s['url'] for s in manifest['shards']]
        missing = [
            u
            for u in urls
            if not _is_url(u)
            and not u.startswith('pipe:')
            and not os.path.isfile(_local_path(u))
        ]
        if missing:
            others = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
            raise ValueError(
                f'the shard {missing[0]!r}{others} of the manifest '
                f'{manifest["location"]!r} does not exist'
            )
        rank, world = self._rank()
        dataset = ShardedGSDDataset(
            urls,
            [s['count'] for s in manifest['shards']],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            rank=rank,
            world_size=world,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            shuffle_shards=self.shuffle_shards,
            image_size=self.image_size,
            mode=self.mode,
            gsd=self.gsd,
            metadata=self.metadata,
        )
        used = dataset.samples_used / max(1, manifest['count'])
        if used < 0.9:
            warnings.warn(
                f'each epoch reads {dataset.samples_used} of the {manifest["count"]} '
                f'samples ({used:.0%}): every one of the {world} x '
                f'{dataset.slots_per_rank} streams yields the count of the smallest '
                'so that ranks stay in step; use a number of equal shards that is a '
                'multiple of world_size x num_workers',
                UserWarning,
                stacklevel=2,
            )
        self.manifest = manifest
        self.train_dataset = dataset
        self._dataset = dataset
        self._loader = None

    def train_dataloader(self) -> ShardedLoader:
        """Return the resumable training loader (one per datamodule).

        Returns:
            The :class:`ShardedLoader` of this rank.

        Raises:
            RuntimeError: If :meth:`setup` has not run.
        """
        dataset = self._dataset
        if dataset is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        if self._loader is None or self._loader.shards is not dataset:
            self._loader = ShardedLoader(
                dataset,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                track='transfer' if self.trainer is not None else 'yield',
            )
            if self._pending_state:
                self._loader.load_state_dict(self._pending_state)
                self._pending_state = None
        return self._loader

    def state_dict(self) -> dict[str, Any]:
        """Return the training loader's state (Lightning saves it in checkpoints).

        Lightning restores a datamodule's state before the model configures its
        optimisers, which may build the loader; the loader's own state (the fit
        loop's) is restored later. Both carry the same :class:`ShardedLoader`
        state, so either path resumes.

        Returns:
            ``{'loader': ShardedLoader.state_dict()}``, or ``{}`` before the loader
            exists.
        """
        if self._loader is not None:
            return {'loader': self._loader.state_dict()}
        if self._pending_state:
            return {'loader': self._pending_state}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training loader's state (now, or when it is built).

        Args:
            state_dict: A state of :meth:`state_dict`.
        """
        state = state_dict.get('loader') if isinstance(state_dict, dict) else None
        if not state:
            return
        if self._loader is not None:
            self._loader.load_state_dict(state)
        else:
            self._pending_state = state

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count a training batch as consumed (see :class:`ShardedLoader`).

        Args:
            batch: A batch of the training loader.
            dataloader_idx: Index of the dataloader.

        Returns:
            The batch without its position key.
        """
        if isinstance(batch, dict) and _POSITION_KEY in batch:
            if self._loader is not None:
                return self._loader.commit(batch)
            batch.pop(_POSITION_KEY)
        return batch

    @property
    def skipped(self) -> int:
        """Samples and shards skipped as corrupt by the training loader so far."""
        return 0 if self._loader is None else self._loader.skipped
