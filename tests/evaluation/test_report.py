# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import csv
import math
from pathlib import Path

import pytest

from torchgeo_scalemae.evaluation.report import (
    ScaleResult,
    format_gsd,
    format_table,
    metric_name,
    plot_accuracy_vs_gsd,
    write_csv,
)


def result(height: int = 128, gsd: float = 0.6096, acc: float = 0.5) -> ScaleResult:
    return ScaleResult(0.5, height, height, gsd, gsd, acc, 10, 20)


@pytest.mark.parametrize(
    ('gsd', 'text'),
    [
        (0.3048, '0.305'),
        (0.6096, '0.61'),
        (12.5, '12.5'),
        (37.5, '37.5'),
        (1000.0, '1000'),
        (8.0, '8'),
        (math.nan, 'nan'),
    ],
)
def test_format_gsd(gsd: float, text: str) -> None:
    assert format_gsd(gsd) == text


def test_metric_name() -> None:
    assert metric_name('test_knn_acc', result()) == 'test_knn_acc_128px_gsd0.61m'
    assert metric_name('val', result(gsd=math.nan)) == 'val_128px'
    wide = ScaleResult(1.0, 64, 96, 1.0, 1.0, 0.1, 1)
    assert metric_name('t', wide) == 't_64x96px_gsd1m'


def test_table_csv_plot(tmp_path: Path) -> None:
    results = [result(), result(64, 1.2192, 0.25)]
    table = format_table(results, 'title')
    assert table.splitlines()[0] == 'title'
    assert '50.00%' in table
    assert '25.00%' in table
    write_csv(results, tmp_path / 'sub' / 'r.csv')
    text = (tmp_path / 'sub' / 'r.csv').read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert [float(r['accuracy']) for r in rows] == [0.5, 0.25]
    plot_accuracy_vs_gsd({'a': results, 'b': results}, tmp_path / 'p.png')
    assert (tmp_path / 'p.png').read_bytes()[:4] == b'\x89PNG'
    # unknown GSD: plotted against the image size
    plot_accuracy_vs_gsd({'a': [result(gsd=math.nan)]}, tmp_path / 'q.png')
    assert (tmp_path / 'q.png').stat().st_size > 0
