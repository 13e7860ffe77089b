"""Atomic writes: complete or absent, and with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest

from geo3d.utils.atomic import atomic_directory, atomic_write_bytes, atomic_write_text


def test_files_and_folders_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
        assert path.read_text() == "hello"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "x").write_bytes(b"1")
        assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_failed_writes_leave_nothing(tmp_path):
    atomic_write_bytes(tmp_path / "keep", b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "keep", "not bytes")  # type: ignore[arg-type]
    assert (tmp_path / "keep").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["keep"]
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "dir") as tmp:
        (tmp / "x").write_bytes(b"1")
        raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["keep"]
    with pytest.raises(FileExistsError):
        with atomic_directory(tmp_path / "keep"):
            pass
