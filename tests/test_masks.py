import numpy as np

from survey_seg.masks import ARTEFACT_BITS, DESCRIPTIONS, MaskBit, describe_bits, has_bit


def test_planes_are_distinct_single_bits_in_design_order():
    values = [int(bit) for bit in MaskBit]
    assert values == [1 << n for n in range(len(values))]
    assert [b.name for b in MaskBit][:3] == ["NO_DATA", "BAD", "SAT"]
    assert MaskBit.REJECTED == 1 << 10


def test_every_plane_is_described():
    described = describe_bits()
    assert set(described) == set(DESCRIPTIONS) == {b.name for b in MaskBit}
    assert described["CR"] == {"bit": 3, "value": 8, "doc": "cosmic ray"}


def test_has_bit_and_artefact_planes():
    mask = np.array([0, int(MaskBit.CR), int(MaskBit.DETECTED | MaskBit.SAT)], np.uint32)
    np.testing.assert_array_equal(has_bit(mask, MaskBit.CR), [False, True, False])
    np.testing.assert_array_equal(has_bit(mask, ARTEFACT_BITS), [False, True, True])
    assert not ARTEFACT_BITS & MaskBit.DETECTED
