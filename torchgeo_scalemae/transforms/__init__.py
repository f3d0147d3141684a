# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""torchgeo_scalemae.transforms."""

__all__: tuple[str, ...] = ()
