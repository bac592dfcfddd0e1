"""Reading ``.npz`` members without copying them: memory maps through the zip offsets.

``np.savez`` (not ``savez_compressed``) stores every array as an uncompressed (ZIP_STORED) ``.npy``
member, so the array bytes sit contiguously in the file and ``np.memmap`` can map them directly.
Compressed members are read normally. Every failure becomes a :class:`PoseDataError` naming the
file and the member.
"""
from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np

from fastlift.data.errors import PoseDataError

__all__ = ["open_npz", "npz_member_names", "read_member"]

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def open_npz(path: str) -> zipfile.ZipFile:
    """Open ``path`` as a zip archive; PoseDataError if it is not one (truncated, corrupt, other)."""
    try:
        return zipfile.ZipFile(path, "r")
    except FileNotFoundError:
        raise PoseDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PoseDataError(f"{path}: is a directory, not an .npz file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise PoseDataError(
            f"{path}: not a readable .npz file (truncated or corrupt zip archive: {exc})") from None


def npz_member_names(zf: zipfile.ZipFile) -> list[str]:
    """Array names stored in an open npz (member names without the ``.npy`` suffix)."""
    return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


def _read_npy_header(fp, path, name):
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:  # (3, 0): utf8 field names; same layout as 2.0
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed member
        raise PoseDataError(f"{path}: member {name!r} is not a valid .npy array ({exc})") from None
    return shape, fortran, dtype


def read_member(path: str, zf: zipfile.ZipFile, name: str, mmap: bool = True,
                allow_pickle: bool = False) -> np.ndarray:
    """Array ``name`` of the npz at ``path``.

    With ``mmap=True`` an uncompressed member is returned as a read-only memory map (a plain
    ``np.ndarray`` view whose base is the ``np.memmap``); with ``mmap=False`` it is read with one
    ``np.fromfile`` at its offset. Compressed members, object arrays and empty arrays are read
    through the zip module.
    """
    member = name + ".npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise PoseDataError(f"{path}: has no array {name!r}; arrays: {', '.join(npz_member_names(zf))}") from None
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as fp:
            fp.seek(info.header_offset)
            raw = fp.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size:
                raise PoseDataError(f"{path}: truncated zip archive (member {name!r})")
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != b"PK\x03\x04":
                raise PoseDataError(f"{path}: corrupt zip archive (bad local header of member {name!r})")
            data_start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            fp.seek(data_start)
            shape, fortran, dtype = _read_npy_header(fp, path, name)
            offset = fp.tell()
        if not dtype.hasobject:
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > data_start + info.file_size:
                raise PoseDataError(
                    f"{path}: member {name!r} is truncated ({info.file_size - (offset - data_start)} of "
                    f"{nbytes} data bytes present)")
            if nbytes == 0:
                return np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
            if not mmap:  # one sequential read straight from the file (no zip-level copying)
                with open(path, "rb") as fp:
                    fp.seek(offset)
                    arr = np.fromfile(fp, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)))
                if arr.size * dtype.itemsize != nbytes:
                    raise PoseDataError(f"{path}: member {name!r} is truncated")
                return arr.reshape(shape, order="F" if fortran else "C")
            try:
                mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                               order="F" if fortran else "C")
            except (OSError, ValueError) as exc:
                raise PoseDataError(f"{path}: cannot memory-map member {name!r} ({exc})") from None
            return mm.view(np.ndarray)
    try:
        with zf.open(member) as fp:
            return np.lib.format.read_array(fp, allow_pickle=allow_pickle)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise PoseDataError(f"{path}: member {name!r} is a pickled object array, which this reader "
                                f"does not load") from None
        raise PoseDataError(f"{path}: member {name!r} is not a valid .npy array ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise PoseDataError(f"{path}: member {name!r} is truncated or corrupt ({exc})") from None
