# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Nominal ground sample distances of TorchGeo (and Scale-MAE evaluation) datasets.

.. versionadded:: 0.1
"""

import re

__all__ = ('KNOWN_GSD', 'KNOWN_GSD_RANGE', 'KNOWN_GSD_SOURCE', 'lookup_gsd')

#: Nominal GSD in metres per *native* pixel, keyed by TorchGeo dataset class name
#: (``UCMerced``; the datamodule name without ``DataModule`` also resolves, see
#: :func:`lookup_gsd`). Where a dataset's GSD varies from image to image (see
#: :data:`KNOWN_GSD_RANGE`) the value is the geometric mid-point
#: ``sqrt(min * max)`` of the documented range, rounded, and only nominal: the true
#: per-image GSD is unknown. Sources are in :data:`KNOWN_GSD_SOURCE`.
KNOWN_GSD: dict[str, float] = {
    # fixed GSD
    'UCMerced': 0.3048,
    'EuroSAT': 10.0,
    'EuroSATSpatial': 10.0,
    'EuroSAT100': 10.0,
    'So2Sat': 10.0,
    'BigEarthNet': 10.0,
    'SSL4EOS12': 10.0,
    'SSL4EOL': 30.0,
    'SpaceNet1': 0.5,
    'SpaceNet6': 0.5,
    'Inria': 0.3,
    'LoveDA': 0.3,
    'WHURS19': 0.5,
    # varying GSD: geometric mid-point of the documented range (nominal only)
    'RESISC45': 2.45,
    'PatternNet': 0.54,
    'MillionAID': 8.8,
    'AID': 2.0,
    'Optimal31': 2.0,
    'MLRSNet': 1.0,
    'LandCoverAI': 0.35,
}

#: Documented ``(min, max)`` GSD in metres per pixel of the datasets whose GSD
#: varies per image (the value in :data:`KNOWN_GSD` is only nominal for these).
KNOWN_GSD_RANGE: dict[str, tuple[float, float]] = {
    'RESISC45': (0.2, 30.0),
    'PatternNet': (0.062, 4.693),
    'MillionAID': (0.5, 153.0),
    'AID': (0.5, 8.0),
    'Optimal31': (0.5, 8.0),
    'MLRSNet': (0.1, 10.0),
    'LandCoverAI': (0.25, 0.5),
}

#: Where each value of :data:`KNOWN_GSD` comes from.
KNOWN_GSD_SOURCE: dict[str, str] = {
    'UCMerced': '1 ft (0.3048 m) USGS orthoimagery: Yang & Newsam, ACM GIS 2010; '
    'TorchGeo UCMerced docstring; Scale-MAE paper Table 10 (0.3 m)',
    'EuroSAT': 'Sentinel-2, 10 m bands (20/60 m bands resampled to 10 m): Helber '
    'et al., IEEE JSTARS 2019; Scale-MAE paper Table 10',
    'EuroSATSpatial': 'as EuroSAT (spatial split of the same images)',
    'EuroSAT100': 'as EuroSAT (100-image subset)',
    'So2Sat': 'Sentinel-1/2 patches resampled to 10 m: Zhu et al., IEEE GRSM 2020',
    'BigEarthNet': 'Sentinel-2 10 m bands (finest band): Sumbul et al., IGARSS 2019',
    'SSL4EOS12': 'Sentinel-2 resampled to 10 m: TorchGeo SSL4EOS12 docstring',
    'SSL4EOL': 'Landsat resampled to 30 m: TorchGeo SSL4EOL docstring',
    'SpaceNet1': '50 cm pan-sharpened RGB (1 m 8-band): TorchGeo SpaceNet1 '
    'docstring; Scale-MAE paper Table 10',
    'SpaceNet6': '0.5 m SAR and optical: Shermeyer et al., CVPRW 2020',
    'Inria': '0.3 m aerial orthoimagery: TorchGeo InriaAerialImageLabeling docstring',
    'LoveDA': '0.3 m: TorchGeo LoveDA docstring (Wang et al., NeurIPS 2021 D&B)',
    'WHURS19': 'up to 0.5 m Google Earth: Scale-MAE paper Table 10',
    'RESISC45': '0.2-30 m per image: Cheng et al., Proc. IEEE 2017; TorchGeo '
    'RESISC45 docstring; Scale-MAE paper Table 10',
    'PatternNet': '0.062-4.693 m per image: Zhou et al., ISPRS J. 2018 (the '
    'TorchGeo docstring says 6-50 cm)',
    'MillionAID': '0.5-153 m per image: TorchGeo MillionAID docstring (Long et al., '
    'IEEE JSTARS 2021)',
    'AID': 'about 0.5-8 m per image (600 px Google Earth scenes): Xia et al., '
    'IEEE TGRS 2017',
    'Optimal31': '0.5-8 m: Scale-MAE paper Table 10 (Wang et al., IEEE TGRS 2019)',
    'MLRSNet': '0.1-10 m: Scale-MAE paper Table 10 (Qi et al., ISPRS J. 2020)',
    'LandCoverAI': '33 orthophotos at 25 cm and 8 at 50 cm: TorchGeo LandCoverAI '
    'docstring',
}


def _normalise(name: str) -> str:
    name = name.rsplit('.', 1)[-1]
    name = re.sub(r'DataModule$', '', name)
    return re.sub(r'[^0-9a-z]', '', name.lower())


_INDEX = {_normalise(key): key for key in KNOWN_GSD}
_ALIASES = {'inriaaerialimagelabeling': 'Inria', 'ucm': 'UCMerced'}


def lookup_gsd(name: str) -> float:
    """Return the nominal GSD (metres per native pixel) of a dataset or datamodule.

    Matching ignores case, punctuation, a module path and a ``DataModule`` suffix, so
    ``'UCMerced'``, ``'ucmerced'``, ``'UCMercedDataModule'`` and
    ``'torchgeo.datamodules.UCMercedDataModule'`` all give 0.3048.

    Args:
        name: Dataset or datamodule (class) name.

    Returns:
        The nominal GSD from :data:`KNOWN_GSD`.

    Raises:
        KeyError: If the dataset has no known GSD (the message lists the known
            names; pass ``gsd=...`` explicitly instead).
        TypeError: If ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(
            f'name must be a dataset or datamodule name (str), got '
            f'{type(name).__name__}: {name!r}'
        )
    key = _normalise(name)
    found = _INDEX.get(key) or _ALIASES.get(key)
    if found is None:
        raise KeyError(
            f'no known GSD for {name!r}; known: {sorted(KNOWN_GSD)}. Pass the GSD in '
            'metres per pixel explicitly (gsd=...)'
        )
    return KNOWN_GSD[found]
