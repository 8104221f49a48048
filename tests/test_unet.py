import pytest
import torch

from survey_seg.models.unet import (
    HEADS,
    OFFSET_SCALE,
    ScreeningUNet,
    UNetConfig,
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
