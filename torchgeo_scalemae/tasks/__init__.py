# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""torchgeo_scalemae.tasks."""

from ._checkpoint import AtomicCheckpointIO
from .classification import ScaleMAEClassification
from .knn import MultiScaleKNN
from .pretrain import NonFiniteLossError, ScaleMAEPretraining
from .segmentation import ScaleMAESegmentation

__all__: tuple[str, ...] = (
    'AtomicCheckpointIO',
    'MultiScaleKNN',
    'NonFiniteLossError',
    'ScaleMAEClassification',
    'ScaleMAEPretraining',
    'ScaleMAESegmentation',
)
