# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""GSD-aware 2-D sine-cosine positional encoding (Scale-MAE paper Sec. 3, eq. 4).

The channel layout is the reference code's (``mae/util/pos_embed.py``), which the
released weights were trained with.

.. versionadded:: 0.1
"""

import math

import torch
from torch import Tensor, nn

__all__ = ('GSDPositionalEmbedding', 'check_res')


def check_res(
    res: Tensor | float, batch_size: int, device: torch.device | None = None
) -> Tensor:
    """Validate ``res`` and return it as a float32 tensor of shape (B,).

    ``res`` is the ground sample distance of the input relative to the reference GSD
    (``gsd / reference_gsd``, dimensionless; the paper's ``g / G``, Sec. 3). Python floats and
    tensors on the CPU are checked for non-positive, NaN and infinite values. Tensors
    on an accelerator are only checked for their shape: a value check there would need
    a host-device synchronisation on every forward, which this function never does.
    Value checks are also skipped while :func:`torch.compile` traces.

    Args:
        res: a float, a 0-d tensor, or a tensor of shape (B,) or (1,).
        batch_size: the batch size B.
        device: the device of the returned tensor (default: that of ``res``, or CPU).

    Returns:
        float32 tensor of shape (B,) on ``device``.

    Raises:
        TypeError: if ``res`` is neither a float nor a tensor.
        ValueError: if ``res`` has the wrong shape or a non-positive, NaN or inf value.
    """
    if isinstance(res, bool) or not isinstance(res, (int, float, Tensor)):
        raise TypeError(f'res must be a float or a tensor, got {type(res).__name__}')
    if not isinstance(res, Tensor):
        value = float(res)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f'res must be a finite positive number, got {value}')
        return torch.full((batch_size,), value, dtype=torch.float32, device=device)
    if res.ndim > 1 or (res.ndim == 1 and res.shape[0] not in (1, batch_size)):
        raise ValueError(
            f'res must be a float or a tensor of shape ({batch_size},), '
            f'got shape {tuple(res.shape)}'
        )
    if res.dtype == torch.bool or res.is_complex():
        raise ValueError(f'res must be a real-valued tensor, got dtype {res.dtype}')
    if res.device.type == 'cpu' and not torch.compiler.is_compiling():
        bad = ~(torch.isfinite(res) & (res > 0))
        if bool(bad.any()):
            raise ValueError(
                'res must be finite and positive, got '
                f'{res.detach().reshape(-1)[bad.reshape(-1)].tolist()} '
                f'in {res.detach().reshape(-1).tolist()}'
            )
    res = res.to(device=device or res.device, dtype=torch.float32)
    return res.reshape(-1).expand(batch_size)


def _grid_size(grid_size: tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` as ints; any integer-like sizes (symbolic ones under compile)."""
    message = f'grid_size must be a pair (H, W) of positive ints, got {grid_size!r}'
    if not isinstance(grid_size, tuple | list) or len(grid_size) != 2:
        raise ValueError(message)
    if any(isinstance(v, bool | float) for v in grid_size):
        raise ValueError(message)
    try:
        h, w = int(grid_size[0]), int(grid_size[1])
    except (TypeError, ValueError) as error:
        raise ValueError(message) from error
    if h <= 0 or w <= 0:
        raise ValueError(message)
    return h, w


def _frequencies(embed_dim: int, device: torch.device | None = None) -> Tensor:
    """The D/4 float32 frequencies ``10000 ** (-k / (D/4))``, as the released code."""
    k = torch.arange(embed_dim // 4, dtype=torch.float32, device=device)
    return 1.0 / 10000 ** (k / (embed_dim / 4.0))


class GSDPositionalEmbedding(nn.Module):
    """The GSD positional encoding of Scale-MAE, laid out as the released code does.

    For a patch at row ``i`` and column ``j`` of a grid and a per-sample scale
    ``r = gsd / reference_gsd`` the encoding is
    ``[sin(r j w), cos(r j w), sin(r i w), cos(r i w)]`` with the ``D/4`` frequencies
    ``w_k = 10000 ** (-k / (D/4))``: all sines before all cosines, the column (x) half
    before the row (y) half, patches flattened row-major, and an all-zero row for the
    class token in front. With ``r = 1`` it is the standard MAE 2-D sine-cosine table;
    ``PE(r=2)[i, j] == PE(r=1)[2i, 2j]``.

    The encoding is always computed in float32 (autocast is disabled locally) and
    returned as float32; callers cast it to their activation dtype. The frequency table
    is a non-persistent buffer and the position grid of each grid size is cached, so a
    forward pass costs two outer products, a sine and a cosine, with no host-device
    synchronisation.

    If you use this model in your research, please cite https://arxiv.org/abs/2212.14532
    """

    omega: Tensor

    def __init__(self, embed_dim: int) -> None:
        """Initialise the encoding.

        Args:
            embed_dim: the encoding width D; must be a positive multiple of 4.

        Raises:
            ValueError: if ``embed_dim`` is not a positive multiple of 4.
        """
        super().__init__()
        if embed_dim <= 0 or embed_dim % 4 != 0:
            raise ValueError(
                f'embed_dim must be a positive multiple of 4, got {embed_dim}'
            )
        self.embed_dim = embed_dim
        self.register_buffer('omega', _frequencies(embed_dim), persistent=False)
        self._grids: dict[tuple[int, int, torch.device], Tensor] = {}

    def extra_repr(self) -> str:
        """Return the width for ``repr``."""
        return f'embed_dim={self.embed_dim}'

    def _grid(self, grid_size: tuple[int, int], device: torch.device) -> Tensor:
        """Return the cached (2, H*W) float32 column and row positions."""
        key = (grid_size[0], grid_size[1], device)
        grid = self._grids.get(key)
        if grid is None:
            h, w = grid_size
            rows = torch.arange(h, dtype=torch.float32, device=device)
            cols = torch.arange(w, dtype=torch.float32, device=device)
            yy, xx = torch.meshgrid(rows, cols, indexing='ij')
            grid = torch.stack([xx.reshape(-1), yy.reshape(-1)])
            if device.type != 'meta':
                self._grids[key] = grid
        return grid

    def forward(
        self,
        res: Tensor | float,
        grid_size: tuple[int, int],
        batch_size: int | None = None,
    ) -> Tensor:
        """Compute the encoding.

        Args:
            res: per-sample scale ``gsd / reference_gsd`` (dimensionless), a tensor of
                shape (B,) or a float (then ``batch_size`` gives B, default 1).
            grid_size: the patch grid (H, W), rows by columns; any positive sizes.
            batch_size: B; required to match ``res`` when ``res`` is a tensor.

        Returns:
            float32 tensor of shape (B, 1 + H*W, D); row 0 (the class token) is zero.

        Raises:
            TypeError: for a ``res`` that is neither a float nor a tensor.
            ValueError: for a bad ``res`` (see :func:`check_res`), or a ``grid_size``
                that is not a pair of positive ints.
        """
        h, w = _grid_size(grid_size)
        if batch_size is None:
            batch_size = res.numel() if isinstance(res, Tensor) else 1
        omega = self.omega
        if omega.dtype != torch.float32:
            # the module was cast (e.g. ``model.bfloat16()``): the rounded table
            # would shift every frequency, so rebuild it in float32
            omega = _frequencies(self.embed_dim, omega.device)
        r = check_res(res, batch_size, device=omega.device)
        grid = self._grid((h, w), omega.device)
        device_type = omega.device.type
        if not torch.amp.is_autocast_available(device_type):
            device_type = 'cpu'
        with torch.autocast(device_type=device_type, enabled=False):
            # (res * position) * omega: the reference's order of float32 products
            pos = r[:, None, None] * grid.t()  # (B, H*W, 2): x then y
            angles = pos[..., None] * omega  # (B, H*W, 2, D/4)
            # write sin/cos straight into the output: [sin x, cos x, sin y, cos y]
            emb = torch.empty(
                batch_size, 1 + h * w, self.embed_dim, device=omega.device
            )
            emb[:, 0] = 0
            parts = emb[:, 1:].view(batch_size, h * w, 2, 2, self.embed_dim // 4)
            torch.sin(angles, out=parts[:, :, :, 0])
            torch.cos(angles, out=parts[:, :, :, 1])
            return emb
