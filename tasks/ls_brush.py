"""Label Studio's brush masks: the run-length format its ``brushlabels`` regions carry. Pure.

Label Studio stores a painted mask, and ML backends (SAM's, for one) return theirs, as
``{"format": "rle", "rle": [bytes as ints]}``: the image's RGBA pixels, row by row, packed
by thi.ng's rle-pack. The packed stream is read bit by bit, most significant bit first:

- 32 bits: how many values follow (width x height x 4);
- 5 bits: the word size minus one (8 for bytes);
- four times 4 bits: the four run-length field sizes, each minus one;
- then, until every value is out, a chunk: 1 bit (a run, or literals), 2 bits choosing a
  run-length field size, that many bits of length minus one, and either one word repeated
  for the whole run or one word per literal value.

A pixel is painted where its alpha (the fourth value) is not 0, as Label Studio's own
converter reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class BrushError(ValueError):
    """The packed stream is not a mask of the size it was said to be."""


def unpack(rle: Sequence[int], *, limit: int) -> npt.NDArray[np.uint32]:
    """The values of a packed stream, at most ``limit`` of them. A stream longer than such a
    mask can pack to (a byte a value and the chunks' headers, twice over) is refused before
    it is read, so that its reading holds no more than the mask would."""
    if len(rle) > 2 * limit + 64:
        raise BrushError(f"The rle has {len(rle):,} bytes: more than a mask of its size packs to.")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in rle):
        raise BrushError("The rle is a list of bytes (integers 0 to 255).")
    bits = "".join(format(b, "08b") for b in rle)
    at = 0

    def read(size: int) -> int:
        nonlocal at
        if at + size > len(bits):
            raise BrushError("The rle ends before its last value.")
        value = int(bits[at : at + size], 2) if size else 0
        at += size
        return value

    count = read(32)
    if count > limit:
        raise BrushError(f"The rle holds {count:,} values; at most {limit:,} were expected.")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint32)
    i = 0
    while i < count:
        repeated = read(1)
        end = i + 1 + read(sizes[read(2)])
        if end > count:
            raise BrushError("A run of the rle goes past its last value.")
        if repeated:
            out[i:end] = read(word)
        else:
            for k in range(i, end):
                out[k] = read(word)
        i = end
    return out


def brush_mask(rle: Sequence[int], width: int, height: int) -> npt.NDArray[np.bool_]:
    """The (height, width) mask of a brush region of an image of that size."""
    values = unpack(rle, limit=width * height * 4)
    if len(values) != width * height * 4:
        raise BrushError(
            f"The rle holds {len(values):,} values; a {width}x{height} mask has "
            f"{width * height * 4:,} (4 a pixel)."
        )
    mask: npt.NDArray[np.bool_] = values.reshape(height, width, 4)[:, :, 3] > 0
    return mask
