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
    report_scale_results,
    weights_label,
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


def test_csv_metadata_columns_parse_with_csv_and_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip('pandas')
    path = tmp_path / 'r.csv'
    results = [result(), result(64, 1.2192, 0.25)]
    write_csv(results, path, {'model': 'tiny', 'weights': 'run/last.ckpt'})
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [r['weights'] for r in rows] == ['run/last.ckpt'] * 2
    frame = pd.read_csv(path)
    assert list(frame.columns)[-2:] == ['model', 'weights']
    assert frame['accuracy'].tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match='result fields'):
        write_csv(results, path, {'accuracy': 1})


def test_plot_starts_at_zero_and_draws_chance(tmp_path: Path) -> None:
    fig = plot_accuracy_vs_gsd(
        {'a': [result(acc=0.9), result(64, 1.2, 0.8)]}, tmp_path / 'p.png', chance=0.25
    )
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    chance = [line for line in ax.get_lines() if 'chance' in str(line.get_label())]
    assert len(chance) == 1
    assert list(chance[0].get_ydata()) == [25.0, 25.0]
    # without a chance line the axis still starts at 0
    fig = plot_accuracy_vs_gsd({'a': [result(acc=0.9)]}, tmp_path / 'q.png')
    assert fig.axes[0].get_ylim()[0] == 0
    assert not [ln for ln in fig.axes[0].get_lines() if 'chance' in str(ln.get_label())]
    with pytest.raises(ValueError, match='chance'):
        plot_accuracy_vs_gsd({'a': [result()]}, tmp_path / 'r.png', chance=1.5)


def test_weights_label() -> None:
    from torchgeo_scalemae.models.weights import ScaleMAEEncoderLarge16_Weights

    assert weights_label(None) == 'random'
    assert weights_label(False) == 'random'
    assert weights_label(True) == 'timm pretrained'
    assert weights_label(Path('a/b.ckpt')) == 'a/b.ckpt'
    member = ScaleMAEEncoderLarge16_Weights.FMOW_RGB
    assert weights_label(member) == 'ScaleMAEEncoderLarge16_Weights.FMOW_RGB'


def test_report_prints_paths_and_warns_for_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = [result()]
    with pytest.warns(UserWarning, match='randomly initialised encoder'):
        paths = report_scale_results(
            results,
            'title',
            folder=tmp_path,
            stem='knn_test',
            metadata={'model': 'tiny', 'weights': 'random'},
            chance=0.5,
            random_init=True,
        )
    assert paths is not None
    out = capsys.readouterr().out
    assert out.startswith('title\n')
    assert f'Results written to {paths[0]} and {paths[1]}' in out
    assert Path(paths[0]).name == 'knn_test_results.csv'
    assert Path(paths[1]).name == 'knn_test_accuracy_vs_gsd.png'
    assert all(Path(p).is_file() for p in paths)
    # printing only: no files, no paths
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert (
            report_scale_results(
                results, 't', folder=None, stem='x', metadata={'model': 'm'}
            )
            is None
        )


@pytest.mark.parametrize(
    ('results', 'match'),
    [
        (None, 'results must be a sequence of ScaleResult, got NoneType'),
        ('abc', "got str: 'abc'"),
        (3, 'got int: 3'),
        ([1], 'results must hold ScaleResult items, got int: 1'),
    ],
)
def test_tables_and_csv_name_bad_results(
    results: object, match: str, tmp_path: Path
) -> None:
    from torchgeo_scalemae.evaluation.report import (
        format_segmentation_table,
        write_segmentation_csv,
    )

    with pytest.raises(TypeError, match=match):
        format_table(results)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=match):
        write_csv(results, tmp_path / 'r.csv')  # type: ignore[arg-type]
    seg = match.replace('ScaleResult', 'SegmentationScaleResult')
    with pytest.raises(TypeError, match=seg):
        format_segmentation_table(results)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=seg):
        write_segmentation_csv(results, tmp_path / 's.csv')  # type: ignore[arg-type]
    assert not (tmp_path / 'r.csv').exists()


@pytest.mark.parametrize('metadata', ['abc', [1]])
def test_csv_metadata_must_be_a_mapping(metadata: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='metadata must be a mapping or None, got'):
        write_csv([], tmp_path / 'r.csv', metadata)  # type: ignore[arg-type]
