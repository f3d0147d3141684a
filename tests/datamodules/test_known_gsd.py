# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import math

import pytest

from torchgeo_scalemae.datamodules import (
    KNOWN_GSD,
    KNOWN_GSD_RANGE,
    KNOWN_GSD_SOURCE,
    lookup_gsd,
)


def test_table_consistent() -> None:
    assert KNOWN_GSD['UCMerced'] == 0.3048
    assert KNOWN_GSD['EuroSAT'] == 10.0
    assert KNOWN_GSD['SpaceNet1'] == 0.5
    for name, value in KNOWN_GSD.items():
        assert math.isfinite(value) and value > 0, name
        assert KNOWN_GSD_SOURCE[name], name
    for name, (lo, hi) in KNOWN_GSD_RANGE.items():
        # nominal value inside the documented range, near its geometric mid-point
        assert lo <= KNOWN_GSD[name] <= hi, name
        assert KNOWN_GSD[name] == pytest.approx(math.sqrt(lo * hi), rel=0.15), name
    assert set(KNOWN_GSD_SOURCE) == set(KNOWN_GSD)


@pytest.mark.parametrize(
    'name',
    [
        'UCMerced',
        'ucmerced',
        'UCMercedDataModule',
        'torchgeo.datamodules.UCMercedDataModule',
    ],
)
def test_lookup(name: str) -> None:
    assert lookup_gsd(name) == 0.3048


def test_lookup_torchgeo_names() -> None:
    assert lookup_gsd('RESISC45DataModule') == KNOWN_GSD['RESISC45']
    assert lookup_gsd('EuroSATSpatialDataModule') == 10.0
    assert lookup_gsd('InriaAerialImageLabeling') == 0.3


def test_lookup_unknown() -> None:
    with pytest.raises(KeyError, match=r'no known GSD for .*NAIP.*gsd='):
        lookup_gsd('NAIPDataModule')


def test_lookup_needs_a_name() -> None:
    with pytest.raises(TypeError, match=r'name must be a dataset .*got int: 3'):
        lookup_gsd(3)  # type: ignore[arg-type]
