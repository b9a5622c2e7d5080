"""Which decoder reads a training file: TensorFlow's ops where they give PIL's pixels, else PIL.

Chosen per file from its header (`image_kind`, `label_kind`), when the input pipeline is made:
RGB JPEGs without an EXIF orientation, 8-bit RGB PNGs, 8-bit grayscale PNG labels and palette
PNG labels (whose palette `deeplab_resnet.data.pipeline` swaps for the gray ramp of
`identity_palettes`, so that the gray decode is the class indices); everything else is PIL's.
"""

import struct
import zlib

import numpy as np
from PIL import Image

from deeplab_resnet.data.images import MAX_IMAGE_PIXELS, exif_orientation, file_orientation

# How each file is decoded (the values of `image_kind` and `label_kind`).
PIL, JPEG, PNG_RGB, PNG_GRAY, PNG_PALETTE = 0, 1, 2, 3, 4
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY, _PNG_RGB, _PNG_INDEXED = 0, 2, 3  # IHDR colour types


def png_header(path):
    """A PNG file's (width, height, bit depth, colour type, (PLTE offset, PLTE length) or
    None), or None if it is not a PNG."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            header, palette = None, None
            while True:
                offset = f.tell()
                length, kind = struct.unpack(">I4s", f.read(8))
                if kind == b"IHDR":
                    header = struct.unpack(">IIBB", f.read(10))
                    f.seek(length - 10 + 4, 1)
                elif kind in (b"IDAT", b"IEND"):
                    break
                else:
                    palette = (offset, length) if kind == b"PLTE" else palette
                    f.seek(length + 4, 1)
    except (OSError, struct.error):
        return None
    return None if header is None else header + (palette,)


def _small(width, height):
    """Whether PIL would decode an image of this size (larger ones it refuses, with a message)."""
    return width * height <= MAX_IMAGE_PIXELS


def _fast_jpeg(path):
    """Whether TensorFlow's JPEG decoder gives the pixels PIL reads, from the header: a
    3-channel (YCbCr or RGB) JPEG without an EXIF orientation to apply."""
    try:
        with Image.open(path) as image:
            return (image.format == "JPEG" and image.mode == "RGB" and _small(*image.size)
                    and exif_orientation(image) == 1)
    except Exception:  # noqa: BLE001 - any unreadable file goes to PIL, which names the problem
        return False


def image_kind(path):
    """How an image file is decoded: JPEG, PNG_RGB, else PIL (which also turns an image with
    an EXIF orientation upright: TensorFlow's decoders ignore it)."""
    header = png_header(path)
    if header is None:
        return JPEG if _fast_jpeg(path) else PIL
    width, height, depth, colour, _ = header
    fast = (depth, colour) == (8, _PNG_RGB) and _small(width, height)
    return PNG_RGB if fast and file_orientation(path) == 1 else PIL


def label_kind(path):
    """(how a label file is decoded: PNG_GRAY, PNG_PALETTE or PIL; (offset, length) of a
    palette PNG's PLTE chunk, else (0, 0))."""
    header = png_header(path)
    if header is None or not _small(*header[:2]):
        return PIL, (0, 0)
    depth, colour, palette = header[2:]
    if (depth, colour) == (8, _PNG_GRAY):
        return PNG_GRAY, (0, 0)
    # Packed palettes (1, 2, 4 bits: PIL writes small palettes so) unpack to their indices too.
    if (colour == _PNG_INDEXED and depth in (1, 2, 4, 8) and palette
            and palette[1] % 3 == 0 and 0 < palette[1] <= 768):
        return PNG_PALETTE, palette
    return PIL, (0, 0)


def identity_palettes():
    """PLTE chunks mapping index i to the gray colour (i, i, i), one per palette length (1..256
    entries), CRC included: swapped into a palette PNG, the gray decode is its class indices."""
    chunks = []
    for entries in range(1, 257):
        data = b"PLTE" + bytes(np.repeat(np.arange(entries, dtype=np.uint8), 3))
        chunks.append(struct.pack(">I", 3 * entries) + data + struct.pack(">I", zlib.crc32(data)))
    return chunks
