# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Attach a GSD to the batches of any TorchGeo datamodule without copying it.

.. versionadded:: 0.1
"""

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchgeo.datamodules import BaseDataModule

from ..gsd import GSD_KEY, check_gsd
from ._checks import check_flag
from .known_gsd import lookup_gsd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ('AttachGSD', 'GSDDataModule', 'with_gsd')


class AttachGSD(nn.Module):
    """Add a constant ``gsd`` (metres per pixel) to a sample or batch dict.

    Works on single samples (``image`` ``(C, H, W)`` gets a 0-d ``gsd``, so
    ``default_collate``/``stack_samples`` make it ``(B,)``) and on batches
    (``image`` ``(B, C, H, W)`` gets ``(B,)`` on the image's device). Usable as a
    TorchGeo dataset ``transforms`` or a datamodule ``aug``.

    Args:
        gsd: GSD in metres per pixel of the images as they arrive.
        key: Batch key to write.
        overwrite: Replace an existing ``gsd`` entry (default: keep it, so per-sample
            values already present win).

    Raises:
        ValueError: If ``gsd`` is not a finite positive number or ``key`` is empty.
        TypeError: If ``gsd`` is not a number, ``key`` not a string or
            ``overwrite`` not a bool.
    """

    def __init__(self, gsd: float, key: str = GSD_KEY, overwrite: bool = False) -> None:
        """Initialize a new AttachGSD."""
        super().__init__()
        check_gsd(gsd)  # validates: finite, positive
        if not isinstance(key, str) or not key:
            raise (ValueError if isinstance(key, str) else TypeError)(
                f'key must be a non-empty string, got {key!r}'
            )
        self.gsd = float(gsd)
        self.key = key
        self.overwrite = check_flag(overwrite, 'overwrite')

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of ``batch`` with ``gsd`` set.

        Args:
            batch: Sample ``{'image': (C, H, W), ...}`` or batch
                ``{'image': (B, C, H, W), ...}``.

        Returns:
            The dict with ``gsd``: a 0-d ``float32`` tensor for a sample, ``(B,)`` for
            a batch.

        Raises:
            TypeError: If ``batch`` is not a dict or has no ``image`` (or ``mask``)
                tensor.
        """
        if not isinstance(batch, Mapping):
            raise TypeError(
                f'AttachGSD expects a sample or batch dict, got {type(batch).__name__}'
            )
        out = dict(batch)
        if not self.overwrite and out.get(self.key) is not None:
            return out
        ref = out.get('image', out.get('mask'))
        if not isinstance(ref, Tensor):
            raise TypeError(
                f'AttachGSD needs an image or mask tensor, got keys {sorted(out)}'
            )
        batched = ref.ndim >= 4 if 'image' in out else ref.ndim >= 3
        shape = (ref.shape[0],) if batched else ()
        out[self.key] = torch.full(
            shape, self.gsd, dtype=torch.float32, device=ref.device
        )
        return out

    def extra_repr(self) -> str:
        """Return the settings for ``repr``."""
        return f'gsd={self.gsd}, key={self.key!r}, overwrite={self.overwrite}'


def _image_width(batch: Any) -> int | None:
    if isinstance(batch, Mapping):
        image = batch.get('image')
        if isinstance(image, Tensor) and image.ndim >= 3:
            return int(image.shape[-1])
    return None


def _attach_and_augment(
    attach: AttachGSD, follow_resize: bool, batch: Any, augment: Callable[[Any], Any]
) -> Any:
    """Attach the native GSD, run the datamodule's augmentation, follow its resize."""
    if not isinstance(batch, Mapping):
        return augment(batch)
    batch = attach(batch)
    before = _image_width(batch)
    batch = augment(batch)
    after = _image_width(batch)
    if follow_resize and before and after and before != after:
        batch = dict(batch)
        batch[attach.key] = batch[attach.key] * (before / after)
    return batch


def _resolve_class(name: str) -> type[LightningDataModule]:
    if '.' in name:
        module_name, _, attr = name.rpartition('.')
        module = importlib.import_module(module_name)
    else:
        module = importlib.import_module('torchgeo.datamodules')
        attr = name
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, LightningDataModule)):
        raise TypeError(
            f'{name!r} is not a LightningDataModule class (looked in '
            f'{module.__name__}); give a TorchGeo datamodule name such as '
            "'UCMercedDataModule' or a full path 'package.module.Class'"
        )
    return cls


class GSDDataModule(BaseDataModule):
    """Wrap any TorchGeo datamodule so that its batches carry ``gsd``.

    The wrapped datamodule does all the work (datasets, splits, loaders, its own
    augmentation); this wrapper adds ``gsd`` (metres per *native* pixel) to every
    batch after it is moved to the device, **before** the wrapped datamodule's
    augmentation, and, with ``follow_resize``, multiplies it by
    ``width_before / width_after`` when that augmentation resizes the images (as
    ``UCMercedDataModule`` and ``PatternNetDataModule`` do with ``K.Resize``).
    Random crops inside the wrapped augmentation are not followed: use the
    transforms of :mod:`torchgeo_scalemae.transforms` (in the task, or as this
    wrapper's ``train_aug``) for those.

    From a LightningCLI / ``torchgeo fit --config`` YAML (keyword arguments of the
    wrapped datamodule go in ``dict_kwargs``):

    .. code-block:: yaml

        data:
          class_path: torchgeo_scalemae.datamodules.GSDDataModule
          init_args:
            datamodule: UCMercedDataModule   # or a full 'package.module.Class'
            gsd: null                        # null: look it up in KNOWN_GSD
          dict_kwargs:
            root: data/ucmerced
            batch_size: 32
            download: true

    In Python, ``datamodule`` may also be a class or an instance.

    TorchGeo *GeoDataModules* need no wrapper: their batches carry ``bounds``, from
    which :func:`torchgeo_scalemae.gsd.gsd_from_batch` (used by the tasks) derives
    the GSD per sample, provided the CRS is in metres. For your own rasters use
    :class:`~torchgeo_scalemae.datamodules.GeoTIFFGSDDataModule`, which checks that.

    Args:
        datamodule: Name (``'UCMercedDataModule'``, looked up in
            :mod:`torchgeo.datamodules`, or ``'package.module.Class'``), class or
            instance of the datamodule to wrap.
        gsd: GSD in metres per native pixel; ``None`` looks the dataset up in
            :data:`~torchgeo_scalemae.datamodules.KNOWN_GSD`.
        follow_resize: Rescale ``gsd`` when the wrapped augmentation resizes.
        train_aug: Optional extra batch transform applied after the wrapped
            augmentation during training (e.g. a
            :class:`~torchgeo_scalemae.transforms.GSDRandomResizedCrop`).
        **kwargs: Keyword arguments of the wrapped datamodule class (not allowed
            with an instance).

    Raises:
        TypeError: If ``datamodule`` is not a LightningDataModule name, class or
            instance, ``follow_resize`` is not a bool or ``train_aug`` is not
            callable.
        ValueError: If ``gsd`` is not a finite positive number, or keyword
            arguments come with an instance.
        KeyError: If ``gsd`` is None and the dataset is not in ``KNOWN_GSD``.
    """

    def __init__(
        self,
        datamodule: str | type[LightningDataModule] | LightningDataModule,
        gsd: float | None = None,
        follow_resize: bool = True,
        train_aug: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialize a new GSDDataModule."""
        check_flag(follow_resize, 'follow_resize')
        if train_aug is not None and not callable(train_aug):
            raise TypeError(f'train_aug must be callable or None, got {train_aug!r}')
        if isinstance(datamodule, LightningDataModule):
            if kwargs:
                raise ValueError(
                    'keyword arguments are only allowed with a datamodule name or '
                    f'class, got an instance and {sorted(kwargs)}'
                )
            inner = datamodule
        else:
            cls = (
                _resolve_class(datamodule)
                if isinstance(datamodule, str)
                else datamodule
            )
            if not (isinstance(cls, type) and issubclass(cls, LightningDataModule)):
                raise TypeError(
                    'datamodule must be a LightningDataModule name, class or '
                    f'instance, got {datamodule!r}'
                )
            inner = cls(**kwargs)
        name = type(inner).__name__
        value = lookup_gsd(name) if gsd is None else gsd
        super().__init__(
            dataset_class=getattr(inner, 'dataset_class', Dataset),
            batch_size=int(getattr(inner, 'batch_size', 1)),
            num_workers=int(getattr(inner, 'num_workers', 0)),
        )
        self.datamodule = inner
        self.attach = AttachGSD(value)
        self.gsd = self.attach.gsd
        self.follow_resize = bool(follow_resize)
        self.gsd_train_aug = train_aug

    def _sync(self) -> None:
        trainer = getattr(self, '_trainer', None) or self.trainer
        self.datamodule.trainer = trainer
        for split in ('', 'train_', 'val_', 'test_', 'predict_'):
            name = f'{split}dataset'
            if hasattr(self.datamodule, name):
                setattr(self, name, getattr(self.datamodule, name))

    def prepare_data(self) -> None:
        """Delegate to the wrapped datamodule."""
        self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        """Delegate to the wrapped datamodule.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        self.datamodule.trainer = self.trainer
        self.datamodule.setup(stage)
        self._sync()

    def teardown(self, stage: str) -> None:
        """Delegate to the wrapped datamodule.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        self.datamodule.teardown(stage)

    def train_dataloader(self) -> DataLoader[Any]:
        """Return the wrapped training loader."""
        return cast(DataLoader[Any], self.datamodule.train_dataloader())

    def val_dataloader(self) -> DataLoader[Any]:
        """Return the wrapped validation loader."""
        return cast(DataLoader[Any], self.datamodule.val_dataloader())

    def test_dataloader(self) -> DataLoader[Any]:
        """Return the wrapped test loader."""
        return cast(DataLoader[Any], self.datamodule.test_dataloader())

    def predict_dataloader(self) -> DataLoader[Any]:
        """Return the wrapped prediction loader."""
        return cast(DataLoader[Any], self.datamodule.predict_dataloader())

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Attach ``gsd``, run the wrapped augmentation, then ``train_aug``.

        Args:
            batch: Batch dict on the device.
            dataloader_idx: Index of the loader.

        Returns:
            The batch with ``gsd`` ``(B,)`` in metres per pixel.
        """
        self.datamodule.trainer = self.trainer

        def augment(b: Any) -> Any:
            return self.datamodule.on_after_batch_transfer(b, dataloader_idx)

        batch = _attach_and_augment(self.attach, self.follow_resize, batch, augment)
        if self.gsd_train_aug is not None and self.trainer and self.trainer.training:
            batch = self.gsd_train_aug(batch)
        return batch

    def plot(self, *args: Any, **kwargs: Any) -> 'Figure | None':
        """Delegate plotting to the wrapped datamodule."""
        plot = getattr(self.datamodule, 'plot', None)
        return plot(*args, **kwargs) if plot is not None else None

    def state_dict(self) -> dict[str, Any]:
        """Return the wrapped datamodule's state."""
        return self.datamodule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the wrapped datamodule's state.

        Args:
            state_dict: State from :meth:`state_dict`.
        """
        self.datamodule.load_state_dict(state_dict)


def with_gsd[T: LightningDataModule](
    datamodule_class: type[T], gsd: float | None = None, follow_resize: bool = True
) -> type[T]:
    """Return a subclass of ``datamodule_class`` whose batches carry ``gsd``.

    The subclass behaves exactly like the original (same constructor) and attaches
    ``gsd`` in ``on_after_batch_transfer`` before the original augmentation, like
    :class:`GSDDataModule`. Example::

        from torchgeo.datamodules import EuroSATDataModule

        EuroSATGSD = with_gsd(EuroSATDataModule)  # 10 m from KNOWN_GSD
        dm = EuroSATGSD(root='data/eurosat', batch_size=32)

    Args:
        datamodule_class: A LightningDataModule (e.g. TorchGeo) class.
        gsd: GSD in metres per native pixel; ``None`` looks it up in
            :data:`~torchgeo_scalemae.datamodules.KNOWN_GSD`.
        follow_resize: Rescale ``gsd`` when the class's augmentation resizes.

    Returns:
        The subclass, named ``<Name>WithGSD``, with a ``gsd`` class attribute.

    Raises:
        TypeError: If ``datamodule_class`` is not a LightningDataModule class or
            ``follow_resize`` not a bool.
        ValueError: If ``gsd`` is not a finite positive number.
        KeyError: If ``gsd`` is None and the dataset is not in ``KNOWN_GSD``.
    """
    if not (
        isinstance(datamodule_class, type)
        and issubclass(datamodule_class, LightningDataModule)
    ):
        raise TypeError(
            f'datamodule_class must be a LightningDataModule class, got '
            f'{datamodule_class!r}'
        )
    check_flag(follow_resize, 'follow_resize')
    value = lookup_gsd(datamodule_class.__name__) if gsd is None else gsd
    attach = AttachGSD(value)
    parent = datamodule_class

    def on_after_batch_transfer(self: T, batch: Any, dataloader_idx: int) -> Any:
        def augment(b: Any) -> Any:
            return parent.on_after_batch_transfer(self, b, dataloader_idx)

        return _attach_and_augment(attach, follow_resize, batch, augment)

    namespace = {
        'on_after_batch_transfer': on_after_batch_transfer,
        'gsd': attach.gsd,
        '__doc__': f'{parent.__name__} whose batches carry gsd = {attach.gsd} m '
        '(see torchgeo_scalemae.datamodules.with_gsd).',
        '__module__': __name__,
    }
    return cast(type[T], type(f'{parent.__name__}WithGSD', (parent,), namespace))
