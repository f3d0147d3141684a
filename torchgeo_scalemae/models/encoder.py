# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""The Scale-MAE encoder: a timm VisionTransformer with the GSD positional encoding.

.. versionadded:: 0.1
"""

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from timm.layers.norm import LayerNorm
from timm.models import checkpoint, checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .._sizes import to_size
from .pos_embed import GSDPositionalEmbedding, check_res

__all__ = ('EncoderOutput', 'ScaleMAEEncoder')


@dataclass
class EncoderOutput:
    """Result of :meth:`ScaleMAEEncoder.forward_masked`.

    Attributes:
        latent: (B, 1 + K, D) class token and the K kept patch tokens (in the order
            of the shuffle), after the final norm.
        mask: (B, N) float, 1 = removed, 0 = kept, in the original patch order.
        ids_restore: (B, N) int64, the permutation that un-shuffles the tokens.
        grid_size: the patch grid (h, w).
    """

    latent: Tensor
    mask: Tensor
    ids_restore: Tensor
    grid_size: tuple[int, int]


def _drop_fixed_pos_embed(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Load-state-dict pre-hook: discard the fixed, unused ``pos_embed`` table.

    The released Scale-MAE checkpoint and TorchGeo's ``FMOW_RGB`` encoder weights carry
    a fixed sine-cosine ``pos_embed`` (1, 197, D) that the model never uses (the
    reference ``mae/models_mae.py`` computes the GSD encoding instead). Dropping it here lets those state dicts load with ``strict=True`` at
    any image size.
    """
    state_dict.pop(prefix + 'pos_embed', None)


def check_mask_ratio(mask_ratio: float, num_patches: int | None = None) -> float:
    """Validate a mask ratio; with *num_patches*, check that a patch stays visible.

    Args:
        mask_ratio: fraction of patches removed, in [0, 1).
        num_patches: patches per image N; ``int(N * (1 - mask_ratio))`` must be >= 1.

    Returns:
        The ratio as a float.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is outside [0, 1) or removes every patch, or if
            ``num_patches`` is not a positive int.
    """
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, int | float):
        raise TypeError(
            f'mask_ratio must be a number in [0, 1), got {type(mask_ratio).__name__} '
            f'{mask_ratio!r}'
        )
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
    if num_patches is not None and (
        isinstance(num_patches, bool)
        or not isinstance(num_patches, int)
        or num_patches < 1
    ):
        raise ValueError(
            f'num_patches must be a positive int (patches per image), got '
            f'{num_patches!r}'
        )
    if num_patches is not None and int(num_patches * (1 - mask_ratio)) < 1:
        raise ValueError(
            f'mask_ratio={mask_ratio} keeps no visible patch of the {num_patches} '
            'patches per image; use a lower mask_ratio or larger images'
        )
    return float(mask_ratio)


def _block_indices(depth: int, indices: int | list[int] | None) -> list[int]:
    """Absolute block indices, as timm's ``forward_intermediates`` takes them.

    All blocks for None, the last n for an int, else these (negatives from the end).
    """
    if indices is None:
        indices = depth
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= depth:
            raise ValueError(
                f'indices={indices} (the last n blocks) must be in 1..{depth}'
            )
        return list(range(depth - indices, depth))
    if not isinstance(indices, list | tuple) or not indices:
        raise ValueError(
            f'indices must be None, an int or a non-empty list of ints, got {indices!r}'
        )
    taken = []
    for index in indices:
        absolute = depth + index if index < 0 else index
        if not 0 <= absolute < depth:
            raise ValueError(f'block index {index} is out of range for {depth} blocks')
        taken.append(absolute)
    return taken


def _check_sizes(kwargs: dict[str, Any]) -> None:
    """Reject bad sizes before timm builds layers from them."""
    img = to_size(kwargs.get('img_size', 224), 'img_size')
    patch = to_size(kwargs.get('patch_size', 16), 'patch_size')
    if img[0] % patch[0] or img[1] % patch[1]:
        raise ValueError(
            f'img_size {kwargs.get("img_size", 224)!r} must be a multiple of the '
            f'patch size {kwargs.get("patch_size", 16)!r}'
        )
    for key, default in (('in_chans', 3), ('embed_dim', 768), ('num_heads', 12)):
        value = kwargs.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{key} must be a positive int, got {value!r}')
    depth = kwargs.get('depth', 12)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f'depth must be a positive int, got {depth!r}')
    embed_dim, heads = kwargs.get('embed_dim', 768), kwargs.get('num_heads', 12)
    if embed_dim % heads:
        raise ValueError(f'embed_dim {embed_dim} is not divisible by num_heads {heads}')


class ScaleMAEEncoder(VisionTransformer):
    """Vision Transformer encoder of Scale-MAE with per-sample GSD encoding.

    A subclass of :class:`timm.models.vision_transformer.VisionTransformer` that keeps
    timm's parameter names (so the encoder part of the released checkpoint and
    TorchGeo's ``ScaleMAELarge16_Weights.FMOW_RGB`` load with ``strict=True``), replaces
    the learned position table with :class:`GSDPositionalEmbedding`, accepts any input
    height and width that are multiples of the patch size (non-square too), any
    number of input channels, and uses fused attention
    (:func:`torch.nn.functional.scaled_dot_product_attention`).

    ``res`` is the per-sample scale ``gsd / reference_gsd`` (dimensionless; GSD in
    metres per pixel): a float or a (B,) tensor. Every forward method takes ``res`` as
    an argument; when it is omitted (including when timm's own helpers such as
    ``features_only`` wrappers or :meth:`get_intermediate_layers` call in), the
    attribute :attr:`res` is used. ``res`` is passed down as an argument, never stored
    on the module during a call, so concurrent calls do not interfere.

    The model has no learned ``pos_embed`` parameter; a ``pos_embed`` entry of any
    shape in a loaded state dict is discarded. ``pos_embed`` is instead a fixed,
    non-persistent buffer (1, 1 + N, D) holding the GSD encoding at the default
    :attr:`res` on the ``img_size`` grid, for code that reads ``vit.pos_embed``
    directly (lightly's ``MaskedVisionTransformerTIMM`` inside TorchGeo's ``MAE``
    task, which re-initialises it to the standard sine-cosine table, i.e. ``res = 1``).
    This model's own forward methods never read it.

    If you use this model in your research, please cite https://arxiv.org/abs/2212.14532
    """

    def __init__(self, res: float = 1.0, **kwargs: Any) -> None:
        """Initialise the encoder.

        Args:
            res: default scale used when a forward call passes no ``res``.
            **kwargs: keyword arguments of
                :class:`~timm.models.vision_transformer.VisionTransformer` (for
                example ``img_size``, ``patch_size``, ``in_chans``, ``embed_dim``,
                ``depth``, ``num_heads``, ``num_classes``, ``global_pool``).
                ``img_size`` only sets the default size reported to timm; inputs of
                other sizes are accepted. The norm layer defaults to LayerNorm with
                eps 1e-6 as in the reference.

        Raises:
            TypeError: for a boolean ``img_size`` or ``patch_size``.
            ValueError: for a bad ``res``, ``img_size``, ``patch_size`` or
                ``in_chans``, or an unsupported option (register tokens, no class
                token, a learned position table, ``no_embed_class``).
        """
        check_res(res, 1)
        _check_sizes(kwargs)
        for key, allowed in (
            ('class_token', True),
            ('reg_tokens', 0),
            ('no_embed_class', False),
            ('dynamic_img_size', True),
        ):
            if key in kwargs and kwargs[key] != allowed:
                raise ValueError(
                    f'ScaleMAEEncoder requires {key}={allowed!r}, got {kwargs[key]!r}'
                )
        if kwargs.get('pos_embed', 'none') not in ('', 'none'):
            raise ValueError(
                'ScaleMAEEncoder computes its position encoding from res; '
                f"pos_embed must be 'none', got {kwargs['pos_embed']!r}"
            )
        kwargs['pos_embed'] = 'none'
        kwargs['dynamic_img_size'] = True
        kwargs.setdefault('norm_layer', partial(LayerNorm, eps=1e-6))
        super().__init__(**kwargs)
        self.res = float(res)
        # registered before ``head`` so that the classifier stays the last child
        # module, which TorchGeo's ``tasks.utils.load_state_dict`` relies on
        head = self.head
        del self.head
        self.pos_encoder = GSDPositionalEmbedding(self.embed_dim)
        self.head = head
        self.patch_size: tuple[int, int] = tuple(self.patch_embed.patch_size)
        for module in self.modules():
            if hasattr(module, 'fused_attn'):
                # timm reads TIMM_FUSED_ATTN; Scale-MAE always wants SDPA
                setattr(module, 'fused_attn', True)  # noqa: B010
        self.register_load_state_dict_pre_hook(_drop_fixed_pos_embed)  # type: ignore[no-untyped-call]
        # timm set ``self.pos_embed = None``; expose a fixed table for code that reads
        # it directly (see the class docstring). Non-persistent: never in state dicts.
        del self.pos_embed
        fixed_table = self.pos_encoder(self.res, tuple(self.patch_embed.grid_size))
        self.register_buffer('pos_embed', fixed_table, persistent=False)

    # ------------------------------------------------------------------ helpers
    def _check_input(self, x: Tensor) -> tuple[int, int]:
        """Validate an image batch and return its patch grid (h, w)."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'expected images of shape (B, C, H, W), got {shape}')
        if not x.is_floating_point():
            raise ValueError(
                f'images must be a floating-point tensor (normalised pixels), got '
                f'dtype {x.dtype}'
            )
        if x.shape[0] == 0:
            raise ValueError(f'the batch is empty: images of shape {tuple(x.shape)}')
        _, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(
                f'expected {self.in_chans} input channels, got {c} '
                f'(images of shape {tuple(x.shape)})'
            )
        ph, pw = self.patch_size
        if h % ph != 0 or w % pw != 0 or h == 0 or w == 0:
            raise ValueError(
                f'image height and width must be positive multiples of the patch '
                f'size {ph}x{pw}, got {h}x{w}'
            )
        return h // ph, w // pw

    def _resolve_res(self, res: Tensor | float | None, batch_size: int) -> Tensor:
        """Return ``res`` (or the default :attr:`res`) as float32 (B,)."""
        return check_res(
            self.res if res is None else res, batch_size, self.pos_encoder.omega.device
        )

    def _pos_embed(
        self,
        x: Tensor,
        res: Tensor | float | None = None,
        grid_size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Prepend the class token and add the GSD encoding (zero for the class token).

        This overrides timm's hook, so timm code that calls ``self._pos_embed(x)``
        gets the encoding for the default :attr:`res`.

        Args:
            x: (B, h, w, D) patch tokens (timm's dynamic-size NHWC layout) or
                (B, h*w, D) tokens.
            res: per-sample scale, (B,) or a float; None uses :attr:`res`.
            grid_size: (h, w) for (B, h*w, D) tokens; None means a square grid.

        Returns:
            (B, 1 + h*w, D) tokens.
        """
        if x.ndim == 4:
            b, h, w, _ = x.shape
            x = x.flatten(1, 2)
        else:
            b, n, _ = x.shape
            if grid_size is None:
                side = round(n**0.5)
                grid_size = (side, side)
            h, w = grid_size
            if h * w != n:
                raise ValueError(f'{n} tokens do not fill a {h}x{w} grid')
        pe = self.pos_encoder(self._resolve_res(res, b), (h, w), b)
        assert self.cls_token is not None
        # concatenate first, then one addition: the fewest full-size temporaries
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + pe.to(x.dtype)
        out: Tensor = self.pos_drop(x)
        return out

    def _embed(
        self, x: Tensor, res: Tensor | float | None, grid: tuple[int, int]
    ) -> Tensor:
        """Patch-embed, add the encoding, apply patch dropout and the pre-norm.

        *x* has been checked (:meth:`_check_input`, which gave *grid*).
        """
        weight = self.patch_embed.proj.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            # float64 or float16 images into a float32 model: compute in its dtype
            x = x.to(weight.dtype)
        # timm's PatchEmbed in dynamic mode returns a permuted NHWC view whose
        # flattening copies; flatten the convolution output directly instead
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = self.patch_embed.norm(tokens)
        x = self._pos_embed(tokens, res, grid)
        x = self.patch_drop(x)
        out: Tensor = self.norm_pre(x)
        return out

    # ------------------------------------------------------------------ forwards
    def forward_features(  # type: ignore[override]
        self,
        x: Tensor,
        res: Tensor | float | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Encode all patches (no masking).

        Args:
            x: (B, C, H, W) images; H and W multiples of the patch size.
            res: per-sample scale ``gsd / reference_gsd``, (B,) or a float;
                None uses :attr:`res`.
            attn_mask: optional attention mask passed to every block (timm).
            is_causal: causal attention (timm).

        Returns:
            (B, 1 + N, D) tokens after the final norm; ``[:, 0]`` is the class token.

        Raises:
            ValueError: for a wrong channel count or dtype, a size that is not a
                multiple of the patch size, or a bad ``res``.
        """
        x = self._embed(x, res, self._check_input(x))
        if attn_mask is not None or is_causal:
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing:
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        out: Tensor = self.norm(x)
        return out

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        res: Tensor | float | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Features and classifier head (timm semantics).

        Args:
            x: (B, C, H, W) images.
            res: per-sample scale, (B,) or a float; None uses :attr:`res`.
            attn_mask: optional attention mask (timm).
            is_causal: causal attention (timm).

        Returns:
            (B, num_classes) logits, or (B, D) pooled features when
            ``num_classes == 0``.
        """
        x = self.forward_features(x, res, attn_mask=attn_mask, is_causal=is_causal)
        out: Tensor = self.forward_head(x)
        return out

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = 'NCHW',
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        res: Tensor | float | None = None,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]] | dict[str, Any]:
        """Run timm's ``forward_intermediates`` with a ``res`` argument.

        Args:
            x: (B, C, H, W) images.
            indices: take the last n blocks if an int, all if None, else these indices.
            return_prefix_tokens: also return the class token of each intermediate.
            norm: apply the final norm to every intermediate.
            stop_early: stop after the last requested block.
            output_fmt: ``'NCHW'`` (B, D, h, w) or ``'NLC'`` (B, h*w, D).
            intermediates_only: return only the intermediates.
            output_dict: return a dict with ``image_features`` and
                ``image_intermediates`` (and ``image_intermediates_prefix``).
            attn_mask: optional attention mask (timm).
            is_causal: causal attention (timm).
            res: per-sample scale, (B,) or a float; None uses :attr:`res`.

        Returns:
            As timm: ``(final_features, intermediates)``, the intermediates alone,
            or a dict.

        Raises:
            ValueError: for images that are not a non-empty floating-point
                ``(B, C, H, W)`` tensor of the encoder's channels and patch multiples,
                a bad ``output_fmt``, block index or ``res``.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        h, w = self._check_input(x)
        take_indices = _block_indices(len(self.blocks), indices)
        max_index = max(take_indices)
        b = x.shape[0]
        x = self._embed(x, res, (h, w))
        blocks = self.blocks if not stop_early else self.blocks[: max_index + 1]
        intermediates: list[Tensor] = []
        for i, blk in enumerate(blocks):
            if attn_mask is not None or is_causal:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
            elif self.grad_checkpointing:
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        n_prefix = self.num_prefix_tokens
        prefix_tokens = [y[:, :n_prefix] for y in intermediates]
        intermediates = [y[:, n_prefix:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [
                y.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
                for y in intermediates
            ]
        if output_dict:
            result: dict[str, Any] = {'image_intermediates': intermediates}
            if return_prefix_tokens:
                result['image_intermediates_prefix'] = prefix_tokens
            if not intermediates_only:
                result['image_features'] = self.norm(x)
            return result
        out: list[Any] = intermediates
        if return_prefix_tokens:
            out = list(zip(intermediates, prefix_tokens, strict=True))
        if intermediates_only:
            return out
        return self.norm(x), out

    def random_masking(
        self, x: Tensor, mask_ratio: float, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """MAE per-sample random masking (reference ``mae/models_mae.py``).

        Keeps the ``int(N * (1 - mask_ratio))`` tokens with the smallest noise.
        At ``mask_ratio == 0`` nothing is shuffled.

        Args:
            x: (B, N, D) patch tokens (without the class token).
            mask_ratio: fraction of tokens to remove, in [0, 1).
            noise: optional (B, N) noise; drawn uniformly when None.

        Returns:
            ``(kept, mask, ids_restore)``: (B, K, D) kept tokens in shuffled order,
            (B, N) mask (1 = removed) and (B, N) the un-shuffling permutation.

        Raises:
            TypeError: for a ratio that is not a number or noise that is no tensor.
            ValueError: for ``x`` that is not a non-empty floating-point (B, N, D)
                tensor, a ratio outside [0, 1) or that keeps no patch, or noise
                of the wrong shape or not finite (checked on the CPU only).
        """
        if not isinstance(x, Tensor) or x.ndim != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'x must be (B, N, D) patch tokens, got {shape}')
        if not x.is_floating_point() or x.numel() == 0:
            raise ValueError(
                f'x must be non-empty floating-point tokens, got {x.dtype} of shape '
                f'{tuple(x.shape)}'
            )
        b, n, d = x.shape
        check_mask_ratio(mask_ratio, n)
        if noise is not None:
            if not isinstance(noise, Tensor):
                raise TypeError(
                    f'noise must be a ({b}, {n}) tensor, got {type(noise).__name__}'
                )
            if tuple(noise.shape) != (b, n):
                raise ValueError(
                    f'noise must have shape ({b}, {n}), got {tuple(noise.shape)}'
                )
            if (
                noise.device.type == 'cpu'
                and not torch.compiler.is_compiling()
                and not bool(torch.isfinite(noise).all())
            ):
                raise ValueError('noise must be finite, got NaN or inf values')
        if mask_ratio == 0.0:
            ids = torch.arange(n, device=x.device).expand(b, n)
            return x, x.new_zeros(b, n), ids
        len_keep = int(n * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(b, len_keep, d))
        mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return kept, mask, ids_restore

    def forward_masked(
        self,
        x: Tensor,
        res: Tensor | float | None = None,
        mask_ratio: float = 0.75,
        noise: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode a random subset of patches, as in MAE pretraining.

        Order of operations as in the reference: patch embedding, + GSD encoding,
        masking, prepend the class token, blocks, final norm.

        Args:
            x: (B, C, H, W) images; H and W multiples of the patch size.
            res: per-sample scale ``gsd / reference_gsd``, (B,) or a float;
                None uses :attr:`res`.
            mask_ratio: fraction of patches removed, in [0, 1).
            noise: optional (B, N) noise; the tokens with the smallest noise are kept.

        Returns:
            An :class:`EncoderOutput`.

        Raises:
            ValueError: for bad images, ``res``, ``mask_ratio`` or ``noise``.
        """
        grid = self._check_input(x)
        return self._forward_masked(x, grid, res, mask_ratio, noise)

    def _forward_masked(
        self,
        x: Tensor,
        grid: tuple[int, int],
        res: Tensor | float | None,
        mask_ratio: float,
        noise: Tensor | None,
    ) -> EncoderOutput:
        """:meth:`forward_masked` for images already checked (*grid* given)."""
        tokens = self._embed(x, res, grid)
        n_prefix = self.num_prefix_tokens
        kept, mask, ids_restore = self.random_masking(
            tokens[:, n_prefix:], mask_ratio, noise
        )
        tokens = torch.cat([tokens[:, :n_prefix], kept], dim=1)
        if self.grad_checkpointing:
            tokens = checkpoint_seq(self.blocks, tokens)
        else:
            tokens = self.blocks(tokens)
        return EncoderOutput(self.norm(tokens), mask, ids_restore, grid)
