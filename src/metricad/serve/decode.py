"""Untrusted bytes to the model's input array, or a ``BadImage`` that says why not.

Pillow reads the header first, so the pixel count is checked before anything is decompressed (a small PNG can
announce gigapixels: a decompression bomb). ``load()`` then decodes fully, so truncated data fails here and not
later inside the batch.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from metricad.data.images import image_to_array


class BadImage(ValueError):
    """The bytes are not an image metricad can score (HTTP 400)."""

    status_code = 400


class ImageTooLarge(BadImage):
    """The image announces more pixels than allowed (HTTP 413)."""

    status_code = 413


def decode_image(data: bytes, size: tuple[int, int] | None, channels: int, max_pixels: int,
                 name: str = "image") -> np.ndarray:
    """Decode ``data`` into uint8 ``(H, W)`` (or ``(3, H, W)``) at the model's ``size`` (None: its own size);
    ``name`` goes in errors."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage(f"{name}: empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"{name}: {width}x{height} pixels is more than the limit of {max_pixels}")
                img.load()
                return image_to_array(img, size, channels)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{name}: too many pixels ({exc})") from exc
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image in a format metricad reads (PNG, JPEG, BMP, TIFF, WebP, ...)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types (OSError, SyntaxError,
        # struct.error, IndexError, ...) on malformed data; every one of them means "bad image" here.
        raise BadImage(f"{name}: corrupt or truncated image ({type(exc).__name__}: {exc})") from exc
