"""The IDX file format of the MNIST files, read with every size checked.

An IDX file is a 4-byte magic number -- two zero bytes, a type code, the number of
dimensions -- then one big-endian uint32 per dimension, then the values in C order, big-endian.
MNIST's images are 2051 (0x00000803: unsigned bytes, 3 dimensions) and its labels 2049
(0x00000801: unsigned bytes, 1 dimension).  Files may be gzipped (recognised by their first
bytes, whatever their name).
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "IDX_TYPES", "IMAGES_MAGIC", "LABELS_MAGIC", "MAX_IDX_BYTES"]

MAX_IDX_BYTES = 4 << 30  # an IDX file, after decompression (MNIST's training images: 47 MB)

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049

#: type code -> (big-endian dtype, name in messages)
IDX_TYPES = {
    0x08: (np.dtype(">u1"), "unsigned bytes"),
    0x09: (np.dtype(">i1"), "signed bytes"),
    0x0B: (np.dtype(">i2"), "16-bit integers"),
    0x0C: (np.dtype(">i4"), "32-bit integers"),
    0x0D: (np.dtype(">f4"), "32-bit floats"),
    0x0E: (np.dtype(">f8"), "64-bit floats"),
}

_GZIP_START = b"\x1f\x8b"


def _describe(magic: int) -> str:
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    kind = IDX_TYPES.get(type_code, (None, f"type 0x{type_code:02X}"))[1]
    return f"{kind}, {ndim} dimension{'s' if ndim != 1 else ''}"


def _too_big(path: Path, what: str) -> DataError:
    return DataError(f"{path} holds more than {MAX_IDX_BYTES:,} bytes{what}, more than an IDX "
                     "file may have here: is it the right file?")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_IDX_BYTES:
            raise _too_big(path, "")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(_GZIP_START):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as unpacked:
                data = unpacked.read(MAX_IDX_BYTES + 1)  # bounded: a small file can unpack huge
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a damaged gzip file ({exc}); download it again") from None
        if len(data) > MAX_IDX_BYTES:
            raise _too_big(path, " once unpacked")
        return data
    return raw


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """The array in the IDX file at ``path`` (native byte order); ``magic``: the one expected.

    A wrong magic number, a truncated file or trailing bytes raise ``DataError`` naming the
    file and what was expected.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than the "
                        "4-byte magic number")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise DataError(f"{path} has magic number {found} ({_describe(found)}); expected "
                        f"{magic} ({_describe(magic)}) -- is it the right file?")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or type_code not in IDX_TYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file: its first bytes {raw[:4].hex(' ')} "
                        "are not a magic number (00 00, a type code, a dimension count)")
    dtype, kind = IDX_TYPES[type_code]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its "
                        f"{header}-byte header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    needed = header + math.prod(shape) * dtype.itemsize  # Python ints: 2^32-1 ^4 fits
    sizes = "x".join(map(str, shape))
    if len(raw) < needed:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, but its header announces "
                        f"{sizes} {kind} ({needed} bytes); download it again")
    if len(raw) > needed:
        raise DataError(f"{path} has {len(raw) - needed} bytes after the {sizes} {kind} its "
                        f"header announces ({needed} bytes): not an IDX file, or a damaged one")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))
