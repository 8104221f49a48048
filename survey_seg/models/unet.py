"""The screening network: a U-Net with several heads.

Encoder: blocks of two 3x3 convolutions (batch norm, ReLU) and 2x2 max pooling.
Decoder: 2x2 transposed convolutions that double the size (the slides' "going
backward of convolution"), concatenated with the encoder's skip connection,
then two 3x3 convolutions. One 1x1 convolution gives every pixel head at once
(and, optionally, the offset head: each pixel's vector to its object's centre); an
optional 1x1 convolution of its own, the boundary head, says whether a pixel lies
on the border between two objects, after them; a stamp head on the bottleneck
gives per-stamp quality logits (the Euclid data-quality CNN of the slides, sharing
the encoder).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from survey_seg.masks import ARTEFACT_CLASSES

__all__ = [
    "BOUNDARY_CHANNELS",
    "HEADS",
    "INPUT_CHANNELS",
    "OFFSET_SCALE",
    "QUALITY_CLASSES",
    "ScreeningUNet",
    "UNetConfig",
    "layout_of_channels",
    "load_growing_heads",
    "optional_head_layout",
    "split_heads",
]

INPUT_CHANNELS = ("asinh_snr", "saturation_fraction", "valid")
"""What the network sees at each pixel (see :func:`survey_seg.inference.network_input`)."""

HEADS: dict[str, int] = {
    "segmentation": 3,  # background, single object, overlap of two or more objects
    "centre": 1,  # heatmap peaked on object centres
    "clump": 1,  # heatmap peaked on clumps
    "artefact": 5,  # CR, STREAK, GHOST, BAD, SAT pixel probabilities
}
"""Pixel heads and their channel counts, in output order."""

OFFSET_CHANNELS = 2
"""Channels of the optional ``offset`` head, after those of :data:`HEADS`: ``(dy, dx)``."""
BOUNDARY_CHANNELS = 1
"""Channels of the optional ``boundary`` head, after those of the offset head (if any)."""
BOUNDARY_PRIOR_LOGIT = -3.0
"""Initial logit of the boundary head: a few per cent of an object's pixels border another's."""
OFFSET_SCALE = 16.0
"""Pixels per unit of the offset head's output (keeps its targets near unit size)."""

QUALITY_CLASSES = (*ARTEFACT_CLASSES, "flagged")
"""Per-stamp quality outputs: the probability that each of six artefact classes is
present, then ``flagged``, the estimated fraction of the stamp's pixels that carry
one of them (a tile's is the mean of its stamps')."""


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`ScreeningUNet`."""

    width: int = 16
    """Channels of the first encoder level; each level doubles them."""
    depth: int = 3
    """Number of pooling steps; inputs are padded to a multiple of ``2**depth``."""
    stamp_size: int = 64
    """Side of the stamps that the quality head classifies (a multiple of ``2**depth``)."""
    offset_head: bool = False
    """Add the ``offset`` pixel head: for each pixel of an object, the vector from it
    to the object's centre (in units of :data:`OFFSET_SCALE` pixels), so that all the
    pixels of one object, however large, point at one place (Panoptic-DeepLab's
    centre regression)."""
    boundary_head: bool = False
    """Add the ``boundary`` pixel head: the probability that a pixel of an object
    borders a pixel of another object, so that two touching sources with no
    boundary between them can be told to be one object, whatever their size
    (the contour channel of DCAN, Chen et al. 2016)."""

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"width and depth must be positive, got {self.width}, {self.depth}")
        if self.stamp_size % (2**self.depth):
            raise ValueError(
                f"stamp_size {self.stamp_size} must be a multiple of 2**depth = {2**self.depth}"
            )

    def to_dict(self) -> dict[str, int | bool]:
        """Plain dict, for config files (an optional head's flag only when it is there)."""
        values = asdict(self)
        for flag in ("offset_head", "boundary_head"):
            if not values[flag]:
                del values[flag]
        return values


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ScreeningUNet(nn.Module):
    """U-Net with pixel heads (:data:`HEADS`) and a stamp quality head.

    Parameters
    ----------
    config : UNetConfig
        Width, depth and stamp size.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        width, depth = self.config.width, self.config.depth
        channels = [width * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = len(INPUT_CHANNELS)
        for level in range(depth):
            self.encoders.append(_block(previous, channels[level]))
            previous = channels[level]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(channels[depth - 1], channels[depth])
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(
                nn.ConvTranspose2d(channels[level + 1], channels[level], kernel_size=2, stride=2)
            )
            self.decoders.append(_block(2 * channels[level], channels[level]))
        n_pixel = sum(HEADS.values()) + (OFFSET_CHANNELS if self.config.offset_head else 0)
        self.pixel_head = nn.Conv2d(channels[0], n_pixel, 1)
        with torch.no_grad():  # rare positives: start the sigmoid heads near p = 0.01
            start, stop = HEADS["segmentation"], sum(HEADS.values())
            self.pixel_head.bias[start:stop] = -4.6
            self.pixel_head.weight[stop:] = 0.0  # the offset head starts at "no offset"
            self.pixel_head.bias[stop:] = 0.0
        self.boundary_head: nn.Conv2d | None = None
        if self.config.boundary_head:  # a module of its own: it may learn at its own rate
            self.boundary_head = nn.Conv2d(channels[0], BOUNDARY_CHANNELS, 1)
            with torch.no_grad():
                self.boundary_head.bias.fill_(BOUNDARY_PRIOR_LOGIT)
        cells = self.config.stamp_size // 2**depth
        self.stamp_head = nn.Sequential(
            nn.AvgPool2d(cells, ceil_mode=True),
            nn.Conv2d(channels[depth], 64, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, len(QUALITY_CLASSES), 1),
        )

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(pixel_logits, stamp_logits)``.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, len(INPUT_CHANNELS), H, W)`` with ``H`` and ``W`` multiples of
            :attr:`multiple`.

        Returns
        -------
        pixel_logits : torch.Tensor
            ``(batch, sum(HEADS.values()), H, W)``, two channels more with the
            offset head and one more with the boundary head.
        stamp_logits : torch.Tensor
            ``(batch, len(QUALITY_CLASSES), ceil(H / stamp), ceil(W / stamp))``.
        """
        skips: list[torch.Tensor] = []
        bottom = self._encode(x, skips)
        x = bottom
        for upsample, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips), strict=True
        ):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        pixel_logits = self.pixel_head(x)
        if self.boundary_head is not None:
            pixel_logits = torch.cat([pixel_logits, self.boundary_head(x)], dim=1)
        return pixel_logits, self.stamp_head(bottom)

    def stamp_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the stamp head's last two layers see: the bottleneck averaged per stamp.

        Returns
        -------
        torch.Tensor
            ``(batch, channels, ceil(H / stamp), ceil(W / stamp))``.
        """
        return self.stamp_head[0](self._encode(x, []))

    def _encode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The bottleneck of ``x``; each encoder level's output is appended to ``skips``."""
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        return self.bottleneck(x)


def optional_head_layout(offset: bool, boundary: bool) -> dict[str, int]:
    """The optional pixel heads a network has, in output order, with their channels."""
    layout = {"offset": OFFSET_CHANNELS} if offset else {}
    if boundary:
        layout["boundary"] = BOUNDARY_CHANNELS
    return layout


def layout_of_channels(n_channels: int) -> dict[str, int]:
    """The optional heads of a pixel head with ``n_channels`` outputs.

    Each layout has its own count: 0, 1, 2 or 3 channels past :data:`HEADS`.

    Raises
    ------
    ValueError
        If no layout has that many channels.
    """
    for offset in (False, True):
        for boundary in (False, True):
            layout = optional_head_layout(offset, boundary)
            if sum(HEADS.values()) + sum(layout.values()) == n_channels:
                return layout
    raise ValueError(f"a pixel head of {n_channels} channels is no ScreeningUNet's")


def split_heads(pixel_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split the pixel logits into the named heads of :data:`HEADS` (and the optional ones)."""
    sizes = {**HEADS, **layout_of_channels(pixel_logits.shape[1])}
    parts = torch.split(pixel_logits, list(sizes.values()), dim=1)
    return dict(zip(sizes, parts, strict=True))


def load_growing_heads(model: ScreeningUNet, state: dict[str, torch.Tensor]) -> None:
    """Load weights into ``model``; a pixel head that ``model`` has grown starts anew.

    Fine-tuning a network with the offset head (or the boundary head) from
    weights without it: every tensor loads as it is, except the pixel head's,
    whose first channels load and whose new channels keep the model's initial
    values (no offset, no boundary). The loaded heads must be a leading part of
    the model's (:func:`optional_head_layout`'s order).

    Raises
    ------
    ValueError
        If the weights have an optional head the model has not, or one the model
        puts elsewhere.
    """
    own = model.state_dict()
    old_heads, new_heads = (list(layout_of_channels(_pixel_channels(s))) for s in (state, own))
    if new_heads[: len(old_heads)] != old_heads:
        raise ValueError(
            f"weights with heads {old_heads or 'none'} past the standard ones cannot grow "
            f"into a network with {new_heads or 'none'}; give matching architecture flags"
        )
    grown = dict(state)
    for name in ("boundary_head.weight", "boundary_head.bias"):
        if name in own and name not in state:
            grown[name] = own[name]
    for name in ("pixel_head.weight", "pixel_head.bias"):
        old, new = state[name], own[name]
        if old.shape[0] < new.shape[0] and old.shape[1:] == new.shape[1:]:
            grown[name] = torch.cat([old, new[old.shape[0] :].to(old.dtype)])
    model.load_state_dict(grown)


def _pixel_channels(state: dict[str, torch.Tensor]) -> int:
    """Channels of the pixel logits of the network whose weights are ``state``."""
    boundary = state.get("boundary_head.weight")
    return state["pixel_head.weight"].shape[0] + (0 if boundary is None else boundary.shape[0])
