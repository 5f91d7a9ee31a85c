"""Images too large to decode safely are refused from their header, before any pixel is decoded.

A small file can claim an enormous size (a "decompression bomb": a PNG of a few kilobytes that
decodes to tens of gigabytes), and a genuine huge scan can exhaust memory just as well. Both are
refused with :class:`ImageTooLargeError`, naming the file, its size and the limit
(``INPUT.MAX_IMAGE_PIXELS``; 0: no limit). The size is read by PIL, which parses only the header;
images PIL cannot identify are checked after decoding (:func:`check_decoded_size`), by the
caller's decoder (OpenCV, whose own ``CV_IO_MAX_IMAGE_PIXELS`` limit, 2**30 by default, also
applies).
"""

import io
import re
from typing import BinaryIO, Optional, Tuple, Union

from PIL import Image

__all__ = ["ImageTooLargeError", "check_decoded_size", "check_image_header", "header_size"]

Source = Union[str, bytes, BinaryIO]


class ImageTooLargeError(ValueError):
    """An image whose pixel count exceeds the configured limit."""


def _refuse(name: str, width: int, height: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{name}: {width} x {height} = {width * height} pixels exceeds INPUT.MAX_IMAGE_PIXELS="
        f"{max_pixels}; the image is refused (raise the limit if it is genuine)"
    )


def header_size(source: Source) -> Optional[Tuple[int, int]]:
    """(width, height) from the image header, or None when PIL cannot identify the format."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as image:
            return image.size
    except (Image.UnidentifiedImageError, SyntaxError, ValueError):
        return None


def check_image_header(source: Source, max_pixels: int, name: str = "") -> None:
    """Raise :class:`ImageTooLargeError` naming ``name`` (default: the path) when the header of
    ``source`` (a path, bytes or a binary file) claims more than ``max_pixels`` pixels."""
    if max_pixels <= 0:
        return
    name = name or (source if isinstance(source, str) else "<image>")
    try:
        size = header_size(source)
    except Image.DecompressionBombError as e:  # PIL's own limit (2x Image.MAX_IMAGE_PIXELS)
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        claimed = f"{pixels.group(1)} pixels" if pixels else "more pixels than PIL accepts"
        raise ImageTooLargeError(
            f"{name}: its header claims {claimed}, more than INPUT.MAX_IMAGE_PIXELS={max_pixels}"
            "; the image is refused (a decompression bomb or a damaged header)"
        ) from e
    if size is not None and size[0] * size[1] > max_pixels:
        raise _refuse(name, size[0], size[1], max_pixels)


def check_decoded_size(name: str, width: int, height: int, max_pixels: int) -> None:
    """The same limit for an image decoded by another library (its size known afterwards)."""
    if max_pixels > 0 and width * height > max_pixels:
        raise _refuse(name, width, height, max_pixels)
