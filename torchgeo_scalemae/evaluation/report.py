# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Per-scale evaluation results: metric names, a text table, a CSV file and a plot.

.. versionadded:: 0.1
"""

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = (
    'ScaleResult',
    'format_gsd',
    'format_table',
    'metric_name',
    'plot_accuracy_vs_gsd',
    'write_csv',
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

    .. versionadded:: 0.1
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


def format_gsd(gsd: float) -> str:
    """Format a GSD in metres with 3 significant digits and no exponent.

    Args:
        gsd: GSD in metres per pixel (NaN for unknown).

    Returns:
        e.g. ``'0.61'``, ``'12.5'``, ``'1000'``, or ``'nan'``.

    .. versionadded:: 0.1
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

    .. versionadded:: 0.1
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

    .. versionadded:: 0.1
    """
    header = (
        f'{"scale":>8} {"size":>10} {"GSD (m)":>9} {"res":>8} {"top-1":>7} {"n":>7}'
    )
    lines = [title] if title else []
    lines += [header, '-' * len(header)]
    for r in results:
        lines.append(
            f'{r.scale:>8g} {r.size:>10} {format_gsd(r.gsd):>9} {r.res:>8.4g} '
            f'{100 * r.accuracy:>6.2f}% {r.num_queries:>7d}'
        )
    return '\n'.join(lines)


def write_csv(results: Sequence[ScaleResult], path: str | os.PathLike[str]) -> None:
    """Write per-scale results to a CSV file (one row per scale).

    Args:
        results: Per-scale results.
        path: Output file; parent folders are created.

    .. versionadded:: 0.1
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fields = [*ScaleResult.__dataclass_fields__]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))


def plot_accuracy_vs_gsd(
    curves: dict[str, Sequence[ScaleResult]],
    path: str | os.PathLike[str],
    title: str = 'Accuracy vs GSD',
) -> None:
    """Save a plot of top-1 accuracy against GSD (or image size when GSD is unknown).

    Uses matplotlib's non-interactive Agg canvas (no display needed).

    Args:
        curves: One labelled curve per model or method.
        path: Output image (``.png``, ``.pdf``...); parent folders are created.
        title: Plot title.

    .. versionadded:: 0.1
    """
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
    ax.set_xlabel('GSD (m / pixel)' if by_gsd else 'image size (pixels)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_title(title)
    ax.grid(True, which='both', alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
