"""Images made for tests: scenes with structure (so perceptual hashes mean something),
EXIF-rotated JPEGs, broken files, bombs and hostile zip archives."""

from __future__ import annotations

import io
import random
import stat
import zipfile

from PIL import Image, ImageDraw


def scene(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(10, width // 2), y0 + rng.randrange(10, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg(width: int = 320, height: int = 240, seed: int = 0, quality: int = 90) -> bytes:
    return encode(scene(width, height, seed), "JPEG", quality=quality)


def png(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(scene(width, height, seed), "PNG")


def rotated_jpeg(width: int = 400, height: int = 200, orientation: int = 6) -> bytes:
    """A JPEG stored sideways with the EXIF tag that tells viewers to turn it."""
    image = scene(width, height, seed=7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def corrupt_png() -> bytes:
    data = bytearray(png())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # scribble over compressed data: CRC mismatch
    return bytes(data)


def bomb_png(side: int = 15000) -> bytes:
    """A tiny file that decodes to side*side pixels (225 million by default)."""
    return encode(Image.new("1", (side, side), 0), "PNG", optimize=False)


def zip_of(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()
