# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Per-scale evaluation results: metric names, a text table, a CSV file and a plot.

.. versionadded:: 0.1
"""

import csv
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = (
    'SEGMENTATION_CSV_FIELDS',
    'ScaleResult',
    'SegmentationScaleResult',
    'format_gsd',
    'format_segmentation_table',
    'format_table',
    'metric_name',
    'plot_accuracy_vs_gsd',
    'plot_miou_vs_gsd',
    'report_scale_results',
    'report_segmentation_results',
    'weights_label',
    'write_csv',
    'write_segmentation_csv',
)


@dataclass(frozen=True)
class ScaleResult:
    """Accuracy at one evaluation scale.

    Attributes:
        scale: The requested scale (fraction of native size ``<= 1`` or pixels ``> 1``).
        height: Image height fed to the encoder, pixels.
        width: Image width fed to the encoder, pixels.
        gsd: Median GSD of the evaluated images at this scale, metres per pixel
            (NaN when the data carry no GSD).
        res: Median ``res`` fed to the encoder.
        accuracy: Top-1 accuracy in [0, 1].
        num_queries: Number of evaluated samples.
        num_bank: Number of bank samples (kNN; 0 for classification).
    """

    scale: float
    height: int
    width: int
    gsd: float
    res: float
    accuracy: float
    num_queries: int
    num_bank: int = 0

    @property
    def size(self) -> str:
        """The image size as text: ``'112px'`` or ``'112x96px'``."""
        if self.height == self.width:
            return f'{self.height}px'
        return f'{self.height}x{self.width}px'


def _check_results(results: object, kind: type, name: str = 'results') -> None:
    """Raise a TypeError naming the value unless it is a sequence of ``kind``."""
    if isinstance(results, str | bytes) or not isinstance(results, Sequence):
        raise TypeError(
            f'{name} must be a sequence of {kind.__name__}, got '
            f'{type(results).__name__}: {results!r:.80}'
        )
    bad = [r for r in results if not isinstance(r, kind)]
    if bad:
        raise TypeError(
            f'{name} must hold {kind.__name__} items, got {type(bad[0]).__name__}: '
            f'{bad[0]!r:.80}'
        )


def _check_metadata(metadata: object) -> dict[str, object]:
    """``metadata`` as a dict, or a TypeError naming it."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f'metadata must be a mapping or None, got {metadata!r:.80}')
    return dict(metadata or {})


def _csv_columns(
    metadata: object, fields: Sequence[str], what: str
) -> dict[str, object]:
    """*metadata* as constant CSV columns, or an error if one clashes with *fields*."""
    extra = _check_metadata(metadata)
    clash = sorted(set(extra) & set(fields))
    if clash:
        raise ValueError(f'metadata names {clash} are result {what}')
    return extra


def _write_rows(
    path: str | os.PathLike[str],
    fieldnames: Sequence[str],
    rows: Iterable[Mapping[str, object]],
) -> None:
    """Write a CSV with one header row; parent folders are created."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


#: Leading columns of the per-scale tables: scale, size, GSD (m) and ``res``.
_TABLE_HEADER = f'{"scale":>8} {"size":>10} {"GSD (m)":>9} {"res":>8}'


def _table_row(r: ScaleResult) -> str:
    """The leading cells of a table row (see :data:`_TABLE_HEADER`)."""
    return f'{r.scale:>8g} {r.size:>10} {format_gsd(r.gsd):>9} {r.res:>8.4g}'


def _table(title: str, header: str, rows: Iterable[str]) -> str:
    """Title (if any), header, rule and rows, one per line."""
    lines = [title] if title else []
    lines += [header, '-' * len(header), *rows]
    return '\n'.join(lines)


def _label(metadata: Mapping[str, Any]) -> str:
    """The curve name of a report's plot: ``metadata['model']``."""
    return str(metadata.get('model', 'model'))


def _report(
    table: str,
    *,
    folder: str | os.PathLike[str] | None,
    stem: str,
    plot_suffix: str,
    random_init: bool,
    write: Callable[[str], object],
    plot: Callable[[str], object],
) -> tuple[str, str] | None:
    """Print *table*, warn on *random_init*, then *write* the CSV and *plot*.

    The files are ``<folder>/<stem>_results.csv`` and
    ``<folder>/<stem>_<plot_suffix>.png``; without a folder nothing is written.
    """
    print(table, flush=True)
    if random_init:
        warnings.warn(
            f'the {stem} results are for a randomly initialised encoder '
            '(weights=None), not for pretrained weights: pass '
            '--model.init_args.weights (a checkpoint path or a weight enum) to '
            'evaluate a pretrained encoder',
            UserWarning,
            stacklevel=4,  # as stacklevel=3 in the public report functions
        )
    if folder is None:
        return None
    csv_path = os.path.join(os.fspath(folder), f'{stem}_results.csv')
    plot_path = os.path.join(os.fspath(folder), f'{stem}_{plot_suffix}.png')
    write(csv_path)
    plot(plot_path)
    print(f'Results written to {csv_path} and {plot_path}', flush=True)
    return csv_path, plot_path


def format_gsd(gsd: float) -> str:
    """Format a GSD in metres with 3 significant digits and no exponent.

    Args:
        gsd: GSD in metres per pixel (NaN for unknown).

    Returns:
        e.g. ``'0.61'``, ``'12.5'``, ``'1000'``, or ``'nan'``.
    """
    if not math.isfinite(gsd):
        return 'nan'
    digits = max(0, 2 - math.floor(math.log10(abs(gsd)))) if gsd else 0
    text = f'{gsd:.{digits}f}'
    return text.rstrip('0').rstrip('.') if '.' in text else text


def metric_name(prefix: str, result: ScaleResult) -> str:
    """Logged metric name of a scale: ``<prefix>_<size>px_gsd<gsd>m``.

    Args:
        prefix: e.g. ``'test_knn_acc'``.
        result: The scale's result.

    Returns:
        e.g. ``'test_knn_acc_112px_gsd0.61m'`` (no GSD part when it is unknown).
    """
    name = f'{prefix}_{result.size}'
    if math.isfinite(result.gsd):
        name += f'_gsd{format_gsd(result.gsd)}m'
    return name


def format_table(results: Sequence[ScaleResult], title: str = '') -> str:
    """A plain-text table of per-scale results, one row per scale.

    Args:
        results: Per-scale results.
        title: Optional first line.

    Returns:
        The table as a string (no trailing newline).

    Raises:
        TypeError: If *results* is not a sequence of :class:`ScaleResult`.
    """
    _check_results(results, ScaleResult)
    rows = (
        f'{_table_row(r)} {100 * r.accuracy:>6.2f}% {r.num_queries:>7d}'
        for r in results
    )
    return _table(title, f'{_TABLE_HEADER} {"top-1":>7} {"n":>7}', rows)


def write_csv(
    results: Sequence[ScaleResult],
    path: str | os.PathLike[str],
    metadata: Mapping[str, object] | None = None,
) -> None:
    """Write per-scale results to a CSV file (one row per scale).

    A plain CSV with one header row, readable by :mod:`csv` and pandas: the
    :class:`ScaleResult` fields, then one column per *metadata* entry with the same
    value on every row (e.g. ``model`` and ``weights``).

    Args:
        results: Per-scale results.
        path: Output file; parent folders are created.
        metadata: Constant columns describing the run.

    Raises:
        TypeError: If *results* is not a sequence of :class:`ScaleResult` or
            *metadata* not a mapping.
        ValueError: If a metadata name is also a result field.
    """
    _check_results(results, ScaleResult)
    fields = [*ScaleResult.__dataclass_fields__]
    extra = _csv_columns(metadata, fields, 'fields')
    _write_rows(path, [*fields, *extra], ({**asdict(r), **extra} for r in results))


def plot_accuracy_vs_gsd(
    curves: dict[str, Sequence[ScaleResult]],
    path: str | os.PathLike[str],
    title: str = 'Accuracy vs GSD',
    chance: float | None = None,
) -> 'Figure':
    """Save a plot of top-1 accuracy against GSD (or image size when GSD is unknown).

    Uses matplotlib's non-interactive Agg canvas (no display needed). The accuracy
    axis starts at 0 %.

    Args:
        curves: One labelled curve per model or method.
        path: Output image (``.png``, ``.pdf``...); parent folders are created.
        title: Plot title.
        chance: Accuracy of guessing, in ``[0, 1]`` (e.g. ``1 / num_classes``),
            drawn as a dashed horizontal line; None draws none.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: If *chance* is not in ``[0, 1]``.
    """
    if chance is not None and not 0.0 <= chance <= 1.0:
        raise ValueError(f'chance must be in [0, 1], got {chance!r}')
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_gsd = all(math.isfinite(r.gsd) for rs in curves.values() for r in rs)
    for label, results in curves.items():
        xs = [r.gsd if by_gsd else r.height for r in results]
        ys = [100 * r.accuracy for r in results]
        order = sorted(range(len(xs)), key=xs.__getitem__)
        ax.plot([xs[i] for i in order], [ys[i] for i in order], 'o-', label=label)
    ax.set_xscale('log')
    ticks = sorted(
        {r.gsd if by_gsd else r.height for rs in curves.values() for r in rs}
    )
    ax.set_xticks(ticks, [format_gsd(float(t)) for t in ticks])
    ax.minorticks_off()
    if chance is not None:
        ax.axhline(
            100 * chance,
            linestyle='--',
            color='grey',
            linewidth=1,
            label=f'chance ({100 * chance:.3g}%)',
        )
    ax.set_ylim(bottom=0)
    ax.set_xlabel('GSD (m / pixel)' if by_gsd else 'image size (pixels)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
    if len(curves) > 1 or chance is not None:
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return fig


def weights_label(weights: object) -> str:
    """Name the weights of an evaluation run for its reports.

    Args:
        weights: The task's ``weights``: None or False (random initialisation),
            True (timm's pretrained weights), a weight enum member, a name or a
            path.

    Returns:
        ``'random'``, ``'timm pretrained'``, ``'EnumClass.MEMBER'`` or the text of
        the name or path.
    """
    import enum

    if weights is None or weights is False:
        return 'random'
    if weights is True:
        return 'timm pretrained'
    if isinstance(weights, enum.Enum):
        return f'{type(weights).__name__}.{weights.name}'
    return os.fspath(weights) if isinstance(weights, os.PathLike) else str(weights)


def report_scale_results(
    results: Sequence[ScaleResult],
    title: str,
    *,
    folder: str | os.PathLike[str] | None,
    stem: str,
    metadata: Mapping[str, Any],
    chance: float | None = None,
    plot_title: str | None = None,
    random_init: bool = False,
) -> tuple[str, str] | None:
    """Print the per-scale table, save the CSV and the plot, and say where they are.

    Prints :func:`format_table`. With a *folder*, writes
    ``<folder>/<stem>_results.csv`` (:func:`write_csv` with *metadata* as
    columns, e.g. ``model`` and ``weights``) and
    ``<folder>/<stem>_accuracy_vs_gsd.png`` (:func:`plot_accuracy_vs_gsd`, one
    curve named ``metadata['model']``, the *chance* line) and prints both paths.
    With *random_init*, warns that the results are those of a random
    initialisation.

    Args:
        results: Per-scale results.
        title: Table title.
        folder: Output folder, or None to print only.
        stem: File name stem, e.g. ``'knn_test'``.
        metadata: Constant CSV columns.
        chance: Accuracy of guessing (e.g. ``1 / num_classes``).
        plot_title: Plot title (default: *title*).
        random_init: The encoder's weights were a random initialisation.

    Returns:
        The CSV and plot paths, or None without a folder.
    """
    return _report(
        format_table(results, title),
        folder=folder,
        stem=stem,
        plot_suffix='accuracy_vs_gsd',
        random_init=random_init,
        write=lambda path: write_csv(results, path, metadata),
        plot=lambda path: plot_accuracy_vs_gsd(
            {_label(metadata): results}, path, title=plot_title or title, chance=chance
        ),
    )


# ---------------------------------------------------------------------- segmentation

#: Leading columns of a segmentation results CSV (:func:`write_segmentation_csv`).
SEGMENTATION_CSV_FIELDS: tuple[str, ...] = (
    'scale',
    'height',
    'width',
    'gsd',
    'class',
    'iou',
)


@dataclass(frozen=True)
class SegmentationScaleResult:
    """Per-class IoU and mIoU at one evaluation scale.

    Attributes:
        scale: The scale's :class:`ScaleResult` (size, median GSD in metres per
            pixel, median ``res``, number of images) whose ``accuracy`` is the mIoU
            in [0, 1].
        class_iou: ``(class name, IoU in [0, 1])`` of every evaluated class (the
            ignored class left out), NaN for a class absent from both targets and
            predictions.
    """

    scale: ScaleResult
    class_iou: tuple[tuple[str, float], ...]

    @property
    def miou(self) -> float:
        """Mean IoU over the classes (NaN entries left out), in [0, 1]."""
        return self.scale.accuracy


def format_segmentation_table(
    results: Sequence[SegmentationScaleResult], title: str = ''
) -> str:
    """A plain-text table: one row per scale, mIoU and the IoU of every class.

    Args:
        results: Per-scale results.
        title: Optional first line.

    Returns:
        The table as a string (no trailing newline); IoUs in percent.

    Raises:
        TypeError: If *results* is not a sequence of
            :class:`SegmentationScaleResult`.
    """
    _check_results(results, SegmentationScaleResult)
    names = [name for name, _ in results[0].class_iou] if results else []
    width = max([7, *(len(n) for n in names)])
    header = f'{_TABLE_HEADER} {"mIoU":>{width}}'
    header += ''.join(f' {n:>{width}}' for n in names) + f' {"n":>7}'
    rows = []
    for item in results:
        r = item.scale
        row = f'{_table_row(r)} {100 * r.accuracy:>{width}.2f}'
        row += ''.join(f' {100 * iou:>{width}.2f}' for _, iou in item.class_iou)
        rows.append(row + f' {r.num_queries:>7d}')
    return _table(title, header, rows)


def write_segmentation_csv(
    results: Sequence[SegmentationScaleResult],
    path: str | os.PathLike[str],
    metadata: Mapping[str, object] | None = None,
) -> None:
    """Write per-scale, per-class IoUs to a CSV file.

    Columns :data:`SEGMENTATION_CSV_FIELDS` (``scale,height,width,gsd,class,iou``;
    GSD in metres per pixel, IoU in [0, 1]), then one column per *metadata* entry
    with the same value on every row. Each scale has one row per class and one row
    whose ``class`` is ``mean`` (the mIoU).

    Args:
        results: Per-scale results.
        path: Output file; parent folders are created.
        metadata: Constant columns describing the run (e.g. ``model``).

    Raises:
        TypeError: If *results* is not a sequence of
            :class:`SegmentationScaleResult` or *metadata* not a mapping.
        ValueError: If a metadata name is also a result column.
    """
    _check_results(results, SegmentationScaleResult)
    extra = _csv_columns(metadata, SEGMENTATION_CSV_FIELDS, 'columns')
    rows = []
    for item in results:
        r = item.scale
        common = {'scale': r.scale, 'height': r.height, 'width': r.width, 'gsd': r.gsd}
        for name, iou in (*item.class_iou, ('mean', r.accuracy)):
            rows.append({**common, 'class': name, 'iou': iou, **extra})
    _write_rows(path, [*SEGMENTATION_CSV_FIELDS, *extra], rows)


def plot_miou_vs_gsd(
    curves: dict[str, Sequence[ScaleResult]],
    path: str | os.PathLike[str],
    title: str = 'mIoU vs GSD',
) -> 'Figure':
    """Save a plot of mIoU against GSD (or image size when GSD is unknown).

    :func:`plot_accuracy_vs_gsd` with the mIoU (each result's ``accuracy``) on the
    vertical axis.

    Args:
        curves: One labelled curve per model or method.
        path: Output image (``.png``...); parent folders are created.
        title: Plot title.

    Returns:
        The matplotlib figure.
    """
    fig = plot_accuracy_vs_gsd(curves, path, title=title)
    fig.axes[0].set_ylabel('mIoU (%)')
    fig.savefig(path, dpi=120)
    return fig


def report_segmentation_results(
    results: Sequence[SegmentationScaleResult],
    title: str,
    *,
    folder: str | os.PathLike[str] | None,
    stem: str,
    metadata: Mapping[str, Any],
    plot_title: str | None = None,
    random_init: bool = False,
) -> tuple[str, str] | None:
    """Print the per-scale IoU table, save the CSV and the mIoU plot, say where.

    Prints :func:`format_segmentation_table`. With a *folder*, writes
    ``<folder>/<stem>_results.csv`` (:func:`write_segmentation_csv`) and
    ``<folder>/<stem>_miou_vs_gsd.png`` (:func:`plot_miou_vs_gsd`, one curve named
    ``metadata['model']``) and prints both paths. With *random_init*, warns that
    the results are those of a random initialisation.

    Args:
        results: Per-scale results.
        title: Table title.
        folder: Output folder, or None to print only.
        stem: File name stem, e.g. ``'segmentation_test'``.
        metadata: Constant CSV columns.
        plot_title: Plot title (default: *title*).
        random_init: The encoder's weights were a random initialisation.

    Returns:
        The CSV and plot paths, or None without a folder.
    """
    return _report(
        format_segmentation_table(results, title),
        folder=folder,
        stem=stem,
        plot_suffix='miou_vs_gsd',
        random_init=random_init,
        write=lambda path: write_segmentation_csv(results, path, metadata),
        plot=lambda path: plot_miou_vs_gsd(
            {_label(metadata): [r.scale for r in results]},
            path,
            title=plot_title or title,
        ),
    )
