# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""torchgeo_scalemae.tasks."""

__all__: tuple[str, ...] = ()
