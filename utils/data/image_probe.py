"""A cheap image probe: the format and size from the header, so that a broken file is named
before any decoding starts; and a full decode with Pillow to find the files DALI cannot read.
"""
from __future__ import annotations

import io
import struct
from typing import List, Optional, Sequence, Tuple

from ..process.errors import DataError

# Pillow format names of the formats DALI decodes (JPEG headers are read without Pillow).
DALI_FORMATS = frozenset(("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"))


# EXIF orientations 5 to 8 turn the image by 90 degrees: shown, its width and height swap.
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = frozenset((5, 6, 7, 8))


def _exif_orientation(exif: bytes) -> int:
    """The orientation tag of IFD0 in an EXIF block (TIFF header first); 1 if absent."""
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if exif[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", exif[4:8])
    if ifd + 2 > len(exif):
        return 1
    (count,) = struct.unpack(order + "H", exif[ifd:ifd + 2])
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(exif) - 11), 12):
        tag, kind = struct.unpack(order + "HH", exif[entry:entry + 4])
        if tag == EXIF_ORIENTATION_TAG and kind == 3:  # SHORT
            return struct.unpack(order + "H", exif[entry + 8:entry + 10])[0]
    return 1


def _jpeg_header(data: bytes) -> Optional[Tuple[int, int, int]]:
    """(width, height, EXIF orientation) from the markers up to the first start-of-frame,
    None when there is no start-of-frame."""
    pos, end, orientation = 2, len(data), 1
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\0\0":
            orientation = _exif_orientation(data[pos + 10:pos + 2 + length])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height, orientation
        if marker == 0xD9 or length < 2:
            return None
        pos += 2 + length
    return None


def _pillow_header(data: bytes) -> Tuple[str, Optional[Tuple[int, int, int]]]:
    """(format, (width, height, EXIF orientation)) of any format Pillow reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            header = (*img.size, int(img.getexif().get(EXIF_ORIENTATION_TAG, 1)))
    except UnidentifiedImageError:
        raise DataError("not an image (no decoder recognises it)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"not an image ({e})") from None
    if fmt not in DALI_FORMATS:
        raise DataError(f"unsupported image format {fmt}")
    return fmt, header


def probe_image(data: bytes) -> Tuple[str, int, int]:
    """(format, width, height) of an encoded image as shown, reading only its header.

    The size is the one after the EXIF orientation is applied, as DALI's decoders (and the
    official example) apply it. Raises DataError (without a file name: callers add it) for
    empty data, data no decoder recognises, a missing or zero size, or a format DALI cannot
    decode (GIF, for example).
    """
    if not data:
        raise DataError("empty file")
    if data[:2] == b"\xff\xd8":
        fmt, header = "JPEG", _jpeg_header(data)
    else:
        fmt, header = _pillow_header(data)
    if header is None or header[0] <= 0 or header[1] <= 0:
        raise DataError(f"no valid {fmt} header")
    width, height, orientation = header
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return fmt, int(width), int(height)


def verify_image(path: str) -> Optional[str]:
    """None if the file fully decodes (Pillow) in a format DALI reads, else the reason."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
        fmt = probe_image(data)[0]
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except DataError as e:
        return str(e)
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        return f"damaged {fmt} data: no decoder recognises it"
    except Exception as e:  # Pillow raises many types for broken data
        return f"{type(e).__name__}: {e}"
    return None


def unreadable_images(paths: Sequence[str], workers: int, progress: bool, what: str
                      ) -> List[Tuple[int, str]]:
    """(index, reason) of each of `paths` that Pillow cannot fully decode, checked by
    `workers` processes with a progress bar."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    bar = dict(total=len(paths), desc=f"verifying {what}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            reasons = list(tqdm(pool.map(verify_image, paths, chunksize=64), **bar))
    else:
        reasons = [verify_image(p) for p in tqdm(paths, **bar)]
    return [(i, r) for i, r in enumerate(reasons) if r is not None]
