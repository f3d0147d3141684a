# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The exact CPU fast path of the bandpass decoder.

Switched on per decoder with ``fast_path=True`` (:class:`~torchgeo_scalemae.models.
BandpassDecoder`, :class:`~torchgeo_scalemae.models.ScaleMAE`) or
:func:`~torchgeo_scalemae.models.set_fast_path`; the pretraining task turns it on by
default. It computes what the decoder's plain modules compute, from the same
parameters (results equal to float rounding, same state dict), with fewer passes
over the full-resolution maps; see the performance page of the documentation for
what it saves. Nothing here is public API: the modules may change without notice.
"""

from .heads import decode_branches

__all__ = ('decode_branches',)
