# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Lightning callbacks for Scale-MAE pretraining and evaluation.

* :class:`MultiScaleKNNMonitor`: multi-scale kNN accuracy of the encoder on a
  labelled image folder, every N steps or epochs (the reference code ran a kNN monitor
  every 5 epochs, ``mae/main_pretrain.py``).
* :class:`BandCollapseWarning`: warns once when a band's prediction stops varying
  (its standard deviation stays below a fraction of its target's).
* :class:`ReconstructionSummary`: at the end of a fit, both bands' PSNR against their
  trivial predictors.
* :class:`ReconstructionImages`: a grid of reconstructions of the same samples every
  N steps, for every logger.
* :class:`NonFiniteLossGuard`: stops training (:class:`NonFiniteLossError`) on a NaN
  or infinite loss before the optimiser step and before any checkpoint is written.
* :class:`RemoveEmptyLogDir`: a failed run leaves no empty ``version_N`` folder.

:class:`~torchgeo_scalemae.tasks.ScaleMAEPretraining` installs all but the kNN
monitor by default; the evaluation tasks install :class:`RemoveEmptyLogDir`. Each is
usable from a ``torchgeo fit`` YAML file under ``trainer.callbacks``, where it
replaces the task's default of its type.
"""

from .collapse import BandCollapseWarning
from .images import ReconstructionImages, reconstruction_grid
from .knn_monitor import MultiScaleKNNMonitor
from .logdir import RemoveEmptyLogDir
from .nan_guard import NonFiniteLossError, NonFiniteLossGuard
from .summary import ReconstructionSummary

__all__ = (
    'BandCollapseWarning',
    'MultiScaleKNNMonitor',
    'NonFiniteLossError',
    'NonFiniteLossGuard',
    'ReconstructionImages',
    'ReconstructionSummary',
    'RemoveEmptyLogDir',
    'reconstruction_grid',
)
