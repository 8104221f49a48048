import pytest
import torch

from survey_seg.models.unet import (
    BOUNDARY_CHANNELS,
    HEADS,
    OFFSET_SCALE,
    ScreeningUNet,
    UNetConfig,
    layout_of_channels,
    load_growing_heads,
    split_heads,
)

SMALL = UNetConfig(width=4, depth=2, stamp_size=16)


def test_the_offset_head_adds_two_channels_that_start_at_no_offset():
    torch.manual_seed(0)
    model = ScreeningUNet(UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True))
    pixel_logits, _ = model(torch.randn(2, 3, 32, 32))
    assert pixel_logits.shape[1] == sum(HEADS.values()) + 2
    heads = split_heads(pixel_logits)
    assert heads["offset"].shape == (2, 2, 32, 32)
    assert torch.count_nonzero(heads["offset"]) == 0
    assert "offset" not in split_heads(ScreeningUNet(SMALL)(torch.randn(1, 3, 32, 32))[0])


def test_to_dict_names_the_offset_head_only_when_there_is_one():
    assert "offset_head" not in SMALL.to_dict()
    grown = UNetConfig(**{**SMALL.to_dict(), "offset_head": True})
    assert grown.to_dict()["offset_head"] is True
    assert UNetConfig(**grown.to_dict()) == grown
    assert OFFSET_SCALE > 1


def test_weights_without_the_offset_head_grow_it_and_keep_every_other_output():
    torch.manual_seed(1)
    base = ScreeningUNet(SMALL).eval()
    grown = ScreeningUNet(UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True))
    load_growing_heads(grown, base.state_dict())
    grown.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (base_pixels, base_stamps), (grown_pixels, grown_stamps) = base(x), grown(x)
    n = sum(HEADS.values())
    torch.testing.assert_close(grown_pixels[:, :n], base_pixels)
    torch.testing.assert_close(grown_stamps, base_stamps)
    assert torch.count_nonzero(grown_pixels[:, n:]) == 0
    with pytest.raises(RuntimeError):  # a wider network is not "grown"
        load_growing_heads(
            ScreeningUNet(UNetConfig(width=8, depth=2, stamp_size=16)), base.state_dict()
        )


def test_the_boundary_head_comes_after_the_offset_head_and_starts_at_no_boundary():
    torch.manual_seed(2)
    both = UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True, boundary_head=True)
    pixel_logits, _ = ScreeningUNet(both)(torch.randn(1, 3, 32, 32))
    heads = split_heads(pixel_logits)
    assert list(heads)[-2:] == ["offset", "boundary"]
    assert heads["boundary"].shape == (1, BOUNDARY_CHANNELS, 32, 32)
    assert torch.sigmoid(heads["boundary"]).max() < 0.1
    alone = UNetConfig(width=4, depth=2, stamp_size=16, boundary_head=True)
    assert "offset" not in split_heads(ScreeningUNet(alone)(torch.randn(1, 3, 32, 32))[0])
    assert UNetConfig(**both.to_dict()) == both and "boundary_head" not in SMALL.to_dict()
    with pytest.raises(ValueError, match="no ScreeningUNet's"):
        layout_of_channels(sum(HEADS.values()) + 4)


def test_offset_weights_grow_a_boundary_head_but_boundary_weights_no_offset_head():
    torch.manual_seed(3)
    offsets = ScreeningUNet(UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True))
    both = UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True, boundary_head=True)
    grown = ScreeningUNet(both)
    load_growing_heads(grown, offsets.state_dict())
    n = sum(HEADS.values()) + 2
    torch.testing.assert_close(
        grown.state_dict()["pixel_head.weight"][:n], offsets.state_dict()["pixel_head.weight"]
    )
    boundaries = ScreeningUNet(UNetConfig(width=4, depth=2, stamp_size=16, boundary_head=True))
    with pytest.raises(ValueError, match="cannot grow"):
        load_growing_heads(ScreeningUNet(both), boundaries.state_dict())
