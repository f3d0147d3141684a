# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""torchgeo_scalemae.datamodules."""

__all__: tuple[str, ...] = ()
