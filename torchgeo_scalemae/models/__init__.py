# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""torchgeo_scalemae.models."""

__all__: tuple[str, ...] = ()
