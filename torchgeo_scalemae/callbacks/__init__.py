# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Lightning callbacks that show whether pretraining learns.

* :class:`MultiScaleKNNMonitor`: multi-scale kNN accuracy of the encoder on a
  labelled image folder, every N steps or epochs (the reference code ran a kNN monitor
  every 5 epochs, ``mae/main_pretrain.py``).
* :class:`BandCollapseWarning`: warns once when a band's prediction stops varying
  (its standard deviation stays below a fraction of its target's).
* :class:`ReconstructionSummary`: at the end of a fit, both bands' PSNR against their
  trivial predictors.

Both are usable from a ``torchgeo fit`` YAML file under ``trainer.callbacks``.
"""

from .collapse import BandCollapseWarning
from .knn_monitor import MultiScaleKNNMonitor
from .summary import ReconstructionSummary

__all__ = ('BandCollapseWarning', 'MultiScaleKNNMonitor', 'ReconstructionSummary')
