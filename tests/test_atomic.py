"""fastlift._atomic: a failed write leaves the old file and no temporary behind."""
import os

import numpy as np
import pytest

from fastlift._atomic import atomic_write, atomic_write_path


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "poses.npz"
    atomic_write(str(path), lambda fh: np.savez(fh, a=np.arange(3)))
    before = path.read_bytes()

    def half_then_fail(fh):
        fh.write(b"partial")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), half_then_fail)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["poses.npz"]
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))


def test_path_writer_keeps_the_extension_and_creates_folders(tmp_path):
    seen = []

    def writer(tmp):
        seen.append(tmp)
        np.savez(tmp, b=np.ones(2))  # np.savez would append ".npz" to a name without it
    out = atomic_write_path(str(tmp_path / "sub" / "x.npz"), writer)
    assert out.endswith("x.npz") and seen[0].endswith(".npz")
    assert os.listdir(tmp_path / "sub") == ["x.npz"]
    np.testing.assert_array_equal(np.load(out)["b"], np.ones(2))
