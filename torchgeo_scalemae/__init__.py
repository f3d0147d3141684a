# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Scale-MAE for TorchGeo: GSD-aware encoder, bandpass decoder, pretraining, evaluation.

.. versionadded:: 0.1
"""

__version__ = '0.1.0.dev0'

__all__ = ('__version__',)
