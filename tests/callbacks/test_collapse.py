# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import warnings
from typing import Any

import pytest

from torchgeo_scalemae.callbacks import BandCollapseWarning


def test_warns_once_after_patience() -> None:
    callback = BandCollapseWarning(ratio=0.1, patience=3)
    collapsed_high = [0.2, 0.2, 0.001, 0.12]  # low fine, high at 1/120 of its target
    assert callback.update(collapsed_high, 10) == []
    assert callback.update(collapsed_high, 20) == []
    with pytest.warns(
        RuntimeWarning, match=r'high-band prediction has collapsed.*0\.001'
    ):
        assert callback.update(collapsed_high, 30) == ['high']
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once
        assert callback.update(collapsed_high, 40) == []
    assert callback.warned == {'high'}


def test_recovery_resets_the_count() -> None:
    callback = BandCollapseWarning(ratio=0.1, patience=2)
    callback.update([0.001, 0.2, 0.1, 0.1], 1)
    callback.update([0.1, 0.2, 0.1, 0.1], 2)  # recovered
    assert callback.below['low'] == 0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        callback.update([0.001, 0.2, 0.1, 0.1], 3)


def test_state_round_trip() -> None:
    callback = BandCollapseWarning(patience=2)
    callback.update([0.001, 0.2, 0.1, 0.1], 1)
    restored = BandCollapseWarning(patience=2)
    restored.load_state_dict(callback.state_dict())
    assert restored.below == callback.below


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'ratio': 0.0}, 'ratio must be in'),
        ({'ratio': 1.5}, 'ratio must be in'),
        ({'ratio': float('nan')}, 'ratio must be in'),
        ({'patience': 0}, 'patience must be a positive int, got 0'),
        ({'patience': True}, 'patience'),
        ({'check_every_n_steps': 0}, 'check_every_n_steps'),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BandCollapseWarning(**kwargs)


def test_ratio_type() -> None:
    with pytest.raises(TypeError, match=r"ratio must be a number, got '0\.1'"):
        BandCollapseWarning(ratio='0.1')  # type: ignore[arg-type]
