"""A cheap image probe: the format and size from the header, so that a broken file is named
before any decoding starts; and a full decode with Pillow to find the files DALI cannot read.
"""
from __future__ import annotations

import io
import struct
from typing import Optional, Tuple

from .errors import DataError

# Pillow format names of the formats DALI decodes (JPEG and PNG are recognised without Pillow).
DALI_FORMATS = frozenset(("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"))


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the first start-of-frame marker, None when there is none."""
    pos, end = 2, len(data)
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
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker == 0xD9 or length < 2:
            return None
        pos += 2 + length
    return None


def probe_image(data: bytes) -> Tuple[str, int, int]:
    """(format, width, height) of an encoded image, reading only its header.

    Raises DataError (without a file name: callers add it) for empty data, data no decoder
    recognises, a missing or zero size, or a format DALI cannot decode (GIF, for example).
    """
    if not data:
        raise DataError("empty file")
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        fmt = "JPEG"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        size = struct.unpack(">II", data[16:24])
        fmt = "PNG"
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, size = img.format, img.size
        except UnidentifiedImageError:
            raise DataError("not an image (no decoder recognises it)") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"not an image ({e})") from None
        if fmt not in DALI_FORMATS:
            raise DataError(f"unsupported image format {fmt}")
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise DataError(f"no valid {fmt} header")
    return fmt, int(size[0]), int(size[1])


def verify_image(path: str) -> Optional[str]:
    """None if the file fully decodes (Pillow) in a format DALI reads, else the reason."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
        probe_image(data)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except DataError as e:
        return str(e)
    except Exception as e:  # Pillow raises many types for broken data
        return f"{type(e).__name__}: {e}"
    return None
