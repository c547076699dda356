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


def unpack(rle: Sequence[int], *, limit: int) -> npt.NDArray[np.unsignedinteger]:
    """The values of a packed stream, at most ``limit`` of them, in the narrowest unsigned type
    that holds its words (a byte each for Label Studio's). A stream longer than such a mask can
    pack to (a byte a value and the chunks' headers, twice over) is refused before it is read,
    so that its reading holds no more than the mask would. A run is one slice assignment and
    the values of a literal chunk are read together, so the reading loops once a chunk, not
    once a value."""
    if len(rle) > 2 * limit + 64:
        raise BrushError(f"The rle has {len(rle):,} bytes: more than a mask of its size packs to.")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in rle):
        raise BrushError("The rle is a list of bytes (integers 0 to 255).")
    bits = _Bits(bytes(rle))
    count = bits.read(32)
    if count > limit:
        raise BrushError(f"The rle holds {count:,} values; at most {limit:,} were expected.")
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    dtype = np.uint8 if word <= 8 else np.uint16 if word <= 16 else np.uint32
    out: npt.NDArray[np.unsignedinteger] = np.zeros(count, dtype=dtype)
    i = 0
    while i < count:
        repeated = bits.read(1)
        end = i + 1 + bits.read(sizes[bits.read(2)])
        if end > count:
            raise BrushError("A run of the rle goes past its last value.")
        out[i:end] = bits.read(word) if repeated else bits.words(end - i, word)
        i = end
    return out


class _Bits:
    """A byte string read as bits, most significant first, from a moving position."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at, self.total = data, 0, 8 * len(data)

    def _take(self, size: int) -> tuple[int, int]:
        """The byte span holding the next ``size`` bits, and the position moved past them."""
        if self.at + size > self.total:
            raise BrushError("The rle ends before its last value.")
        at = self.at
        self.at += size
        return at >> 3, ((at + size - 1) >> 3) + 1

    def read(self, size: int) -> int:
        """The next ``size`` bits as one unsigned number (0 for none)."""
        if not size:
            return 0
        first, last = self._take(size)
        return (int.from_bytes(self.data[first:last], "big") >> (8 * last - self.at)) & (
            (1 << size) - 1
        )

    def words(self, n: int, size: int) -> npt.NDArray[np.unsignedinteger]:
        """The next ``n`` words of ``size`` bits each, as an array."""
        skip = self.at & 7
        first, last = self._take(n * size)
        span = np.frombuffer(self.data, dtype=np.uint8, count=last - first, offset=first)
        grid = np.unpackbits(span)[skip : skip + n * size].reshape(n, size)
        weights = np.left_shift(np.uint64(1), np.arange(size - 1, -1, -1, dtype=np.uint64))
        values: npt.NDArray[np.unsignedinteger] = grid @ weights
        return values


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
