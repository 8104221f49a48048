import os
import stat

import pytest

from survey_seg.files import atomic_output, atomic_path, atomic_write_bytes, default_file_mode


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_permissions_of_the_umask(mask, expected, umask, tmp_path):
    """mkstemp made every output 0600: a survey's outputs were readable by their owner only."""
    umask(mask)
    assert default_file_mode() == expected
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    with atomic_output(tmp_path / "b.fits") as stream:
        stream.write(b"x")
    with atomic_path(tmp_path / "c.pt") as temporary:
        temporary.write_bytes(b"y")
    assert [_mode(tmp_path / name) for name in ("a.json", "b.fits", "c.pt")] == [expected] * 3
    # same as a plain open() under this umask
    (tmp_path / "plain").write_bytes(b"z")
    assert _mode(tmp_path / "plain") == expected


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "catalog.fits"
    atomic_write_bytes(target, b"earlier")
    with pytest.raises(RuntimeError), atomic_output(target) as stream:
        stream.write(b"half")
        raise RuntimeError("disk went away")
    assert target.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.fits"]
