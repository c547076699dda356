"""Image checks and processing with Pillow: what ingestion needs, nothing Django. Pure.

Two steps, so that the upload answers quickly and the heavy part runs as a job:
:func:`inspect` reads the header (format, size, orientation) and does cheap structural checks;
:func:`process` decodes the whole image once and derives everything else from that decode.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from scipy.fft import dctn

# Formats a worker's browser can show. MPO is how many phones write JPEGs.
FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
           "BMP": ".bmp", "TIFF": ".tif"}  # fmt: skip
BROWSER_UNSAFE = {"TIFF", "BMP"}  # decoded fine, re-encoded as PNG for the browser
THUMBNAIL_SIZE = 256
ORIENTATION_TAG = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never a grey stripe


class ImageRejected(ValueError):
    """The file cannot become a task; ``code`` is stable, the message is for a person."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Header:
    format: str
    width: int  # upright
    height: int  # upright
    orientation: int
    frames: int


@dataclass(frozen=True)
class Processed:
    width: int
    height: int
    thumbnail: bytes  # JPEG
    phash: int  # signed 64-bit
    # The re-encoded upright image when the upload needed rotating (or was not browser-safe);
    # None when the original bytes are kept as they are.
    replacement: bytes | None
    replacement_format: str | None


def _open(source: str | IO[bytes], max_pixels: int) -> Any:
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            "too_many_pixels",
            f"The image has more than the {max_pixels:,} pixels allowed "
            "(a decompression bomb, or simply too large).",
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "Not an image file Pillow can read.") from None
    except Exception as exc:  # Pillow parsing hostile bytes can raise nearly anything
        raise ImageRejected("corrupt", f"The image header is corrupt ({exc}).") from None


def _jpeg_is_complete(fh: IO[bytes]) -> bool:
    """A JPEG whose upload was cut short lacks the end-of-image marker FF D9."""
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - 4096))
    return b"\xff\xd9" in fh.read().rstrip(b"\x00")


def inspect(path: str, *, max_pixels: int) -> Header:
    """Cheap checks on a stored upload: readable header, supported format, pixel cap,
    and for JPEG and PNG that the file is complete. Raises :class:`ImageRejected`."""
    try:
        return _inspect(path, max_pixels)
    except ImageRejected:
        raise
    except Exception as exc:  # as in _open: hostile bytes, any exception
        raise ImageRejected("corrupt", f"The image is corrupt ({exc}).") from None


def _inspect(path: str, max_pixels: int) -> Header:
    with open(path, "rb") as fh:
        image = _open(fh, max_pixels)
        with image:
            fmt = image.format or ""
            if fmt not in FORMATS:
                raise ImageRejected(
                    "unsupported_format",
                    f"{fmt or 'This'} format is not supported; "
                    "use JPEG, PNG, WebP, GIF, BMP or TIFF.",
                )
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected("empty_image", "The image has no pixels.")
            if width * height > max_pixels:
                raise ImageRejected(
                    "too_many_pixels",
                    f"{width}x{height} is more than the {max_pixels:,} pixels allowed.",
                )
            orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
            frames = int(getattr(image, "n_frames", 1))
            if fmt in ("JPEG", "MPO") and not _jpeg_is_complete(fh):
                raise ImageRejected("truncated", "The JPEG file is truncated (upload cut short?).")
        if fmt == "PNG":
            fh.seek(0)
            try:
                # A fresh open: verify() must start right after the header. It walks every
                # chunk and checks its CRC, without decompressing the pixels.
                with Image.open(fh) as fresh:
                    fresh.verify()
            except Exception:
                raise ImageRejected("corrupt", "The PNG file is corrupt or truncated.") from None
    if orientation not in range(1, 9):
        orientation = 1
    if orientation in _TRANSPOSED:
        width, height = height, width
    return Header(fmt, width, height, orientation, frames)


def perceptual_hash(image: Any) -> int:
    """64-bit DCT hash: low frequencies of a 32x32 greyscale copy against their median."""
    small = image.convert("L").resize((32, 32), Image.Resampling.BOX)
    coefficients = dctn(np.asarray(small, dtype=np.float64), type=2, norm="ortho")[:8, :8]
    flat = coefficients.flatten()
    bits = flat > np.median(flat[1:])  # the DC term would dominate the median
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value  # fits a signed BIGINT


def hamming(a: int, b: np.ndarray) -> np.ndarray:
    """Bit distance of one hash to many (signed 64-bit, as stored)."""
    return np.bitwise_count(np.bitwise_xor(np.int64(a), b.astype(np.int64))).astype(np.int64)


def process(source: str | IO[bytes], *, orientation: int, max_pixels: int) -> Processed:
    """Decode the image once, then take the thumbnail and hash from that decode.

    Raises :class:`ImageRejected` for files that only a full decode finds broken.
    """
    image = _open(source, max_pixels)
    with image:
        fmt = image.format or ""
        width, height = image.size  # before draft() shrinks it
        needs_upright = orientation != 1 or fmt in BROWSER_UNSAFE
        if fmt in ("JPEG", "MPO") and not needs_upright:
            # JPEG can decode at 1/2..1/8 scale straight from the DCT: the whole stream is
            # still read (so truncation is still caught) at a fraction of the cost. The
            # smallest scale still at least thumbnail-sized is all the thumbnail needs.
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        try:
            image.load()
        except Exception as exc:  # hostile bytes: any exception means undecodable
            code = "truncated" if "truncated" in str(exc) else "corrupt"
            raise ImageRejected(code, f"The image cannot be decoded ({exc}).") from None
        replacement = replacement_format = None
        if needs_upright:
            upright = ImageOps.exif_transpose(image)
            buffer = io.BytesIO()
            if fmt in ("JPEG", "MPO"):
                upright.convert("RGB").save(buffer, "JPEG", quality=95, subsampling=0)
                replacement_format = "JPEG"
            else:
                upright.save(buffer, "PNG")
                replacement_format = "PNG"
            replacement = buffer.getvalue()
            width, height = upright.size
            working = upright
        else:
            working = image
        thumb = working if working.mode == "RGB" else working.convert("RGB")
        thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        thumb.save(out, "JPEG", quality=82)
        return Processed(
            width=width,
            height=height,
            thumbnail=out.getvalue(),
            phash=perceptual_hash(thumb),
            replacement=replacement,
            replacement_format=replacement_format,
        )
