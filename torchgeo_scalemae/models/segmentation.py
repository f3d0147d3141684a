# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Semantic segmentation with a Scale-MAE encoder: a feature-pyramid neck and UPerNet.

A plain Vision Transformer has one feature map at stride ``p`` (the patch size), but
UPerNet (Xiao et al., ECCV 2018) fuses a pyramid at strides 4, 8, 16 and 32. As in the
ViT segmentation set-ups of BEiT and MAE (mmsegmentation), which the Scale-MAE
authors used for SpaceNet (paper Sec. 4.2, Table 4, Fig. 6; the code was not
released), :class:`ViTPyramidNeck` takes the patch tokens of four encoder blocks,
reshapes them to maps and rescales them by 4, 2, 1 and 0.5 (two transposed
convolutions, one transposed convolution, identity, max-pooling): strides ``p/4``,
``p/2``, ``p`` and ``2p`` pixels, i.e. 4, 8, 16 and 32 for 16-pixel patches.
:class:`ScaleMAEUPerNet` feeds that pyramid to the UPerNet decoder of
segmentation_models_pytorch (``UPerNetDecoder``: pyramid pooling and FPN fusion at
stride 4) and a 1x1 classifier, and resizes the logits to the input size. The
encoder gets each sample's ``res = gsd / reference_gsd`` (paper Sec. 3), so the
GSD positional encoding sees the ground distance of every image.

Which blocks feed UPerNet is not documented for Scale-MAE; the default,
:func:`default_pyramid_indices`, is the BEiT/MAE choice: blocks ``[3, 5, 7, 11]``
of a 12-block ViT-B and ``[7, 11, 15, 23]`` of a 24-block ViT-L.
"""

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from segmentation_models_pytorch.base.initialization import (
    initialize_decoder,
    initialize_head,
)
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn

from .encoder import ScaleMAEEncoder

__all__ = (
    'PYRAMID_SCALES',
    'ScaleMAEUPerNet',
    'ViTPyramidNeck',
    'default_pyramid_indices',
)

#: Rescaling of each pyramid level relative to the patch grid (4x, 2x, 1x, 0.5x):
#: strides of patch/4, patch/2, patch and 2 x patch pixels.
PYRAMID_SCALES: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)

#: Normalisations of the UPerNet decoder's convolutions (smp's ``use_norm``).
DECODER_NORMS: tuple[str, ...] = ('batchnorm', 'identity', 'layernorm', 'instancenorm')


def default_pyramid_indices(depth: int) -> list[int]:
    """The encoder blocks that feed the pyramid by default.

    ``round(depth * k / 6) - 1`` for ``k = 2, 3, 4, 6`` (at least block 0): the
    blocks BEiT and MAE use for UPerNet, ``[3, 5, 7, 11]`` for 12 blocks and
    ``[7, 11, 15, 23]`` for 24, ending at the last block. Shallow encoders repeat
    blocks (``[0, 0, 0, 1]`` for 2 blocks).

    Args:
        depth: Number of encoder blocks, ``>= 1``.

    Returns:
        Four block indices (0-based), non-decreasing, the last one ``depth - 1``.

    Raises:
        ValueError: If *depth* is not a positive int.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f'depth must be a positive int, got {depth!r}')
    return [max(0, round(depth * k / 6) - 1) for k in (2, 3, 4, 6)]


def _check_indices(indices: Any, depth: int) -> list[int]:
    """Four absolute block indices (negatives count from the end)."""
    if indices is None:
        return default_pyramid_indices(depth)
    if isinstance(indices, str) or not isinstance(indices, Sequence):
        raise TypeError(
            f'indices must be a sequence of 4 block indices, got {indices!r}'
        )
    if len(indices) != len(PYRAMID_SCALES):
        raise ValueError(
            f'indices must name {len(PYRAMID_SCALES)} blocks (one per pyramid '
            f'level, strides patch/4 to 2 x patch), got {list(indices)!r}'
        )
    out = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f'block indices must be ints, got {index!r}')
        absolute = depth + index if index < 0 else index
        if not 0 <= absolute < depth:
            raise ValueError(
                f'block index {index} is out of range for an encoder of {depth} blocks'
            )
        out.append(absolute)
    return out


def _check_channels(channels: Any, embed_dim: int) -> tuple[int, ...]:
    """Output channels of the four levels (the encoder width by default)."""
    if channels is None:
        channels = embed_dim
    if isinstance(channels, int) and not isinstance(channels, bool):
        channels = [channels] * len(PYRAMID_SCALES)
    if isinstance(channels, str) or not isinstance(channels, Sequence):
        raise TypeError(f'neck_channels must be an int or 4 ints, got {channels!r}')
    if len(channels) != len(PYRAMID_SCALES) or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels
    ):
        raise ValueError(
            f'neck_channels must be an int or 4 positive ints, got {list(channels)!r}'
        )
    return tuple(int(c) for c in channels)


def _level(scale: float, in_channels: int, out_channels: int) -> nn.Module:
    """One pyramid level: rescale a (B, D, h, w) map by *scale*."""
    if scale == 4.0:
        # BEiT / MAE fpn1: ConvT 2x, BatchNorm, GELU, ConvT 2x
        return nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
            nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2),
        )
    if scale == 2.0:
        return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
    project: nn.Module = (
        nn.Identity()
        if in_channels == out_channels
        else nn.Conv2d(in_channels, out_channels, 1)
    )
    if scale == 1.0:
        return project
    # 0.5: ceil so that odd (and 1-patch) grids keep every patch
    return nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), project)


class ViTPyramidNeck(nn.Module):
    """Feature pyramid from the patch tokens of four ViT blocks.

    Level ``i`` reshapes the tokens of block ``indices[i]`` to a (B, D, h, w) map
    (``h = H / p``, ``w = W / p`` for patch size ``p``) and rescales it by
    :data:`PYRAMID_SCALES` ``[i]``: two 2x transposed convolutions (with BatchNorm
    and GELU between them), one 2x transposed convolution, identity, and a 2x2
    max-pool (BEiT / MAE ``fpn1`` to ``fpn4``). Output strides are ``p/4``, ``p/2``,
    ``p`` and ``2p`` pixels. Levels whose ``neck_channels`` differ from ``D`` get a
    projection (in the transposed convolution, or a 1x1 convolution).

    Args:
        embed_dim: Encoder width ``D``.
        neck_channels: Channels of each level (an int for all four); None keeps
            ``D`` everywhere (BEiT / MAE).

    Raises:
        TypeError: For *neck_channels* that are not ints.
        ValueError: For a bad *embed_dim* or *neck_channels*.
    """

    def __init__(
        self, embed_dim: int, neck_channels: Sequence[int] | int | None = None
    ) -> None:
        """Build the four levels; see the class docstring."""
        super().__init__()
        if (
            isinstance(embed_dim, bool)
            or not isinstance(embed_dim, int)
            or embed_dim < 1
        ):
            raise ValueError(f'embed_dim must be a positive int, got {embed_dim!r}')
        self.out_channels: tuple[int, ...] = _check_channels(neck_channels, embed_dim)
        self.levels = nn.ModuleList(
            _level(scale, embed_dim, channels)
            for scale, channels in zip(PYRAMID_SCALES, self.out_channels, strict=True)
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Rescale four (B, D, h, w) maps to the pyramid.

        Args:
            features: Four maps (B, D, h, w), one per level, all on the patch grid.

        Returns:
            Four maps (B, C_i, 4h, 4w), (B, C_i, 2h, 2w), (B, C_i, h, w) and
            (B, C_i, ceil(h/2), ceil(w/2)).

        Raises:
            ValueError: For a wrong number of maps or maps that are not 4-D.
        """
        if len(features) != len(self.levels):
            raise ValueError(
                f'expected {len(self.levels)} feature maps, got {len(features)}'
            )
        for feature in features:
            if not isinstance(feature, Tensor) or feature.ndim != 4:
                shape = (
                    tuple(feature.shape)
                    if isinstance(feature, Tensor)
                    else type(feature).__name__
                )
                raise ValueError(f'feature maps must be (B, D, h, w), got {shape}')
        return [
            level(feature) for level, feature in zip(self.levels, features, strict=True)
        ]


class ScaleMAEUPerNet(nn.Module):
    """UPerNet on a Scale-MAE encoder, with each sample's ``res``.

    ``encoder`` tokens of four blocks (``indices``) go through
    :class:`ViTPyramidNeck` (strides ``p/4`` to ``2p``), smp's ``UPerNetDecoder``
    (pyramid pooling on the coarsest level, FPN fusion, ``decoder_channels`` at
    stride ``p/4``) and a 1x1 convolution to ``num_classes`` logits, resized
    bilinearly to the input size. Inputs may have any number of channels (the
    encoder's ``in_chans``) and any height and width that are multiples of the
    patch size, square or not.

    Args:
        encoder: The encoder (its classifier head is not used).
        num_classes: Number of output channels (classes, or 1 for binary).
        indices: Four encoder blocks feeding the pyramid levels, finest level
            first (negatives count from the end); None uses
            :func:`default_pyramid_indices`.
        decoder_channels: Width of the UPerNet decoder (smp's default 256).
        neck_channels: Channels of the pyramid levels (:class:`ViTPyramidNeck`);
            None keeps the encoder width.
        norm: Apply the encoder's final LayerNorm to every block output taken
            (the decoder applies its own LayerNorm to each level anyway). When
            False the final LayerNorm is unused and its parameters are frozen
            (``requires_grad=False``, so that distributed training finds no
            unused trainable parameters; so are the blocks after the last one
            in *indices*, which never run).
        decoder_norm: Normalisation of the decoder's convolutions:
            ``'batchnorm'`` (smp's and mmsegmentation's UPerNet; training needs
            batches of 2 or more images, because the pyramid pooling's 1x1 cell
            has one value per image), ``'identity'``, ``'layernorm'`` or
            ``'instancenorm'``. smp's pyramid-pooling output convolution always
            uses BatchNorm, so training on one image at a time also needs a
            coarsest level of more than one cell (images over ``2p`` pixels).

    Raises:
        TypeError: If *encoder* is not a :class:`~.encoder.ScaleMAEEncoder`, or
            *indices*, *neck_channels* or *norm* have the wrong type.
        ValueError: For a bad *num_classes*, *indices*, *decoder_channels*,
            *neck_channels* or *decoder_norm*.
    """

    def __init__(
        self,
        encoder: ScaleMAEEncoder,
        num_classes: int,
        indices: Sequence[int] | None = None,
        decoder_channels: int = 256,
        neck_channels: Sequence[int] | int | None = None,
        norm: bool = False,
        decoder_norm: str = 'batchnorm',
    ) -> None:
        """Build the neck, decoder and head; see the class docstring."""
        super().__init__()
        if not isinstance(encoder, ScaleMAEEncoder):
            raise TypeError(
                f'encoder must be a ScaleMAEEncoder, got {type(encoder).__name__}'
            )
        for name, value in (
            ('num_classes', num_classes),
            ('decoder_channels', decoder_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if not isinstance(norm, bool):
            raise TypeError(f'norm must be a bool, got {norm!r}')
        if decoder_norm not in DECODER_NORMS:
            raise ValueError(
                f'decoder_norm must be one of {list(DECODER_NORMS)}, got '
                f'{decoder_norm!r}'
            )
        depth = len(encoder.blocks)
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.indices: list[int] = _check_indices(indices, depth)
        self.norm = norm
        if not norm:
            encoder.norm.requires_grad_(False)
        for block in encoder.blocks[max(self.indices) + 1 :]:
            block.requires_grad_(False)  # never run (stop_early)
        self.neck = ViTPyramidNeck(int(encoder.embed_dim), neck_channels)
        channels = self.neck.out_channels
        # smp's decoder takes encoder features at strides [1, 2, 4, 8, 16, 32] and
        # uses the last four: the two leading entries are placeholders
        self.decoder = UPerNetDecoder(
            encoder_channels=(encoder.in_chans, channels[0], *channels),
            encoder_depth=5,
            decoder_channels=decoder_channels,
            use_norm=decoder_norm,
        )
        self.head = nn.Conv2d(decoder_channels, self.num_classes, kernel_size=1)
        initialize_decoder(self.neck)
        initialize_decoder(self.decoder)
        initialize_head(self.head)

    @property
    def patch_size(self) -> tuple[int, int]:
        """The encoder's patch size (height, width) in pixels."""
        return self.encoder.patch_size

    def pyramid(
        self, images: Tensor, res: Tensor | float | None = None
    ) -> list[Tensor]:
        """The four pyramid levels of a batch.

        Args:
            images: (B, C, H, W) images; H and W multiples of the patch size ``p``.
            res: Per-sample scale ``gsd / reference_gsd`` (dimensionless), (B,) or a
                float; None uses the encoder's default :attr:`~.ScaleMAEEncoder.res`.

        Returns:
            Four maps at strides ``p/4``, ``p/2``, ``p`` and ``2p`` pixels:
            (B, C_0, 4h, 4w), (B, C_1, 2h, 2w), (B, C_2, h, w) and
            (B, C_3, ceil(h/2), ceil(w/2)) with ``h = H / p``, ``w = W / p``.

        Raises:
            ValueError: For images of the wrong shape, dtype or channel count, or
                a bad ``res`` (checked by the encoder).
        """
        unique = sorted(set(self.indices))
        taken: Any = self.encoder.forward_intermediates(
            images,
            indices=unique,
            norm=self.norm,
            stop_early=True,
            output_fmt='NCHW',
            intermediates_only=True,
            res=res,
        )
        by_block = dict(zip(unique, taken, strict=True))
        pyramid: list[Tensor] = self.neck([by_block[i] for i in self.indices])
        return pyramid

    def forward(self, images: Tensor, res: Tensor | float | None = None) -> Tensor:
        """Per-pixel class logits.

        Args:
            images: (B, C, H, W) float images; H and W multiples of the patch size.
            res: Per-sample scale ``gsd / reference_gsd`` with the GSD in metres per
                pixel (dimensionless), (B,) or a float; None uses the encoder's
                default.

        Returns:
            (B, num_classes, H, W) logits.

        Raises:
            ValueError: For images of the wrong shape, dtype or channel count, or
                a bad ``res``.
        """
        features = self.pyramid(images, res)
        # the decoder reads entries 2: (strides p/4 to 2p) and writes into the list
        fused = self.decoder([images, features[0], *features])
        logits: Tensor = self.head(fused)
        size = images.shape[-2:]
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(
                logits, size=size, mode='bilinear', align_corners=False
            )
        return logits

    def output_strides(self) -> tuple[float, ...]:
        """Strides of the pyramid levels in input pixels (along the height).

        Returns:
            ``(p/4, p/2, p, 2p)`` for patch height ``p``.
        """
        patch = self.patch_size[0]
        return tuple(patch / scale for scale in PYRAMID_SCALES)
