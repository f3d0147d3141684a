# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Multi-scale test plumbing shared by the fine-tuning tasks (private).

:class:`~torchgeo_scalemae.tasks.ScaleMAEClassification` and
:class:`~torchgeo_scalemae.tasks.ScaleMAESegmentation` keep one metric per test
scale, compute them at the end of the test epoch and report them with the same
run labels (mode, model, weights, checkpoint).
"""

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor, nn
from torchmetrics import Metric

from ..evaluation.report import weights_label


def scale_metrics(
    scales: Sequence[float] | None, make: Callable[[], Metric]
) -> nn.ModuleDict:
    """One fresh metric per test scale, keyed ``'0'``, ``'1'``...

    Args:
        scales: The task's test scales, or None (no multi-scale test).
        make: Builds one metric.

    Returns:
        The metrics (empty without scales).
    """
    return nn.ModuleDict({str(i): make() for i in range(len(scales or ()))})


def compute_scale_metrics(metrics: nn.ModuleDict) -> list[Tensor]:
    """Compute, then reset, the metric of every scale, in scale order.

    Args:
        metrics: As built by :func:`scale_metrics`.

    Returns:
        One computed value per scale.
    """
    values = []
    for index in range(len(metrics)):
        metric = cast(Metric, metrics[str(index)])
        values.append(metric.compute())
        metric.reset()
    return values


@dataclass(frozen=True)
class RunLabels:
    """What a multi-scale test report says about the run.

    Attributes:
        title: ``'(<mode>): <model>, weights=<weights>'``, then
            ``', checkpoint=<path>'`` for a test of a checkpoint of the task.
        plot_note: ``'(<mode>; weights: <file name of the weights>)'``.
        folder: The trainer's log directory (else its default root directory).
        metadata: The CSV columns ``model``, ``weights`` and ``checkpoint``.
        random_init: The encoder started from a random initialisation (no
            weights and no checkpoint).
    """

    title: str
    plot_note: str
    folder: str
    metadata: dict[str, Any]
    random_init: bool


def run_labels(trainer: Any, weights: object, model: str, mode: str) -> RunLabels:
    """Label the multi-scale test of a fine-tuning task.

    Args:
        trainer: The Lightning trainer running the test (``ckpt_path``,
            ``log_dir`` and ``default_root_dir`` are read).
        weights: The task's ``weights``.
        model: The encoder's name.
        mode: ``'linear probe'``, ``'fine-tuned'``...

    Returns:
        The run's labels.
    """
    label = weights_label(weights)
    # a test restored from a checkpoint of the task evaluates that checkpoint
    checkpoint = trainer.ckpt_path
    title = f'({mode}): {model}, weights={label}'
    if checkpoint:
        title += f', checkpoint={checkpoint}'
    return RunLabels(
        title=title,
        plot_note=f'({mode}; weights: {os.path.basename(label) or label})',
        folder=trainer.log_dir or trainer.default_root_dir,
        metadata={'model': model, 'weights': label, 'checkpoint': checkpoint or ''},
        random_init=(weights is None or weights is False) and not checkpoint,
    )
