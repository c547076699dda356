/**
 * COCO compressed run-length encoding of binary masks, byte for byte as `pycocotools.mask.encode`
 * writes it, and back.
 *
 * Masks here are row-major `Uint8Array`s of `width * height` bytes (0 = background, anything
 * else = mask), as a canvas lays out pixels. COCO counts in column-major order: the runs
 * alternate background and mask, starting with background (a mask whose first pixel is set
 * starts with a run of 0), over the pixels (0, 0), (0, 1), ... (0, h-1), (1, 0), ...
 *
 *   import { encodeMask, decodeMask } from "/static/frontend/mask_rle.js";
 *   const rle = encodeMask(bits, width, height);   // {size: [height, width], counts: "..."}
 *   const { data, width, height } = decodeMask(rle);
 *
 * No dependencies, no build step.
 */

/**
 * The runs of a row-major mask in column-major order, optionally only looking inside the
 * rectangle `bounds` = [x0, y0, x1, y1) (every pixel outside it must be 0): what a mask
 * painted in one corner of a large image costs to encode is that corner, not the image.
 * @param {Uint8Array} data
 * @param {number} width
 * @param {number} height
 * @param {number[]} [bounds]
 * @returns {number[]}
 */
export function maskRuns(data, width, height, bounds) {
  checkSize(data, width, height);
  const [x0, y0, x1, y1] = bounds ?? [0, 0, width, height];
  const runs = [];
  let current = 0; // the value of the run being counted
  let length = 0;
  // Everything before column x0 is background.
  length += x0 * height;
  for (let x = x0; x < x1; x++) {
    if (y0 > 0) {
      // The rows above the bounds are background.
      if (current !== 0) {
        runs.push(length);
        length = 0;
        current = 0;
      }
      length += y0;
    }
    for (let y = y0, i = y0 * width + x; y < y1; y++, i += width) {
      const v = data[i] ? 1 : 0;
      if (v !== current) {
        runs.push(length);
        length = 0;
        current = v;
      }
      length += 1;
    }
    if (height - y1 > 0) {
      if (current !== 0) {
        runs.push(length);
        length = 0;
        current = 0;
      }
      length += height - y1;
    }
  }
  if (current !== 0 && width - x1 > 0) {
    runs.push(length);
    length = 0;
    current = 0;
  }
  length += (width - x1) * height;
  runs.push(length);
  return runs;
}

/**
 * The counts string of a list of runs (pycocotools' `rleToString`): each run, from the third
 * on as the difference to the run two before, in groups of 5 bits, least significant first,
 * each group + 48 as a character, 0x20 set on all but a number's last group.
 * @param {number[]} runs
 * @returns {string}
 */
export function runsToString(runs) {
  const out = [];
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i];
    if (i > 2) x -= runs[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32); // an arithmetic shift that also holds past 32 bits
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out.push(c + 48);
    }
  }
  // String.fromCharCode takes its arguments on the stack: convert in slices.
  let text = "";
  for (let i = 0; i < out.length; i += 8192) text += String.fromCharCode(...out.slice(i, i + 8192));
  return text;
}

/**
 * The runs of a counts string (pycocotools' `rleFrString`); throws a RangeError when the
 * string is not one.
 * @param {string} counts
 * @returns {number[]}
 */
export function stringToRuns(counts) {
  if (typeof counts !== "string") throw new TypeError("The counts are a string");
  const runs = [];
  let value = 0;
  let shift = 0;
  for (let i = 0; i < counts.length; i++) {
    const code = counts.charCodeAt(i) - 48;
    if (code < 0 || code >= 64) throw new RangeError(`Not an RLE character at ${i}: ${counts[i]}`);
    value += (code & 0x1f) * 2 ** shift;
    shift += 5;
    if (code & 0x20) continue;
    if (code & 0x10) value -= 2 ** shift; // the last group's top bit is the sign
    if (runs.length > 2) value += runs[runs.length - 2];
    if (value < 0) throw new RangeError(`A negative run at ${i}`);
    runs.push(value);
    value = 0;
    shift = 0;
  }
  if (shift) throw new RangeError("The counts end inside a number");
  return runs;
}

/**
 * A mask as COCO compressed RLE of the full image.
 * @param {Uint8Array} data row-major, `width * height` bytes
 * @param {number} width
 * @param {number} height
 * @param {number[]} [bounds] `[x0, y0, x1, y1)` outside which every pixel is 0
 * @returns {{size: [number, number], counts: string}}
 */
export function encodeMask(data, width, height, bounds) {
  return { size: [height, width], counts: runsToString(maskRuns(data, width, height, bounds)) };
}

/**
 * Decode a COCO compressed RLE into `into` (row-major, set pixels become `value`; others are
 * left as they are) or into a new array. Throws a RangeError when the counts do not decode or
 * do not cover the size exactly.
 * @param {{size: number[], counts: string}} rle
 * @param {Uint8Array} [into]
 * @param {number} [value]
 * @returns {{data: Uint8Array, width: number, height: number, bounds: number[]|null, area: number}}
 *   `bounds` is `[x0, y0, x1, y1)` holding the set pixels (null when there are none;
 *   it may be larger than the tightest box).
 */
export function decodeMask(rle, into, value = 1) {
  if (!rle || !Array.isArray(rle.size) || rle.size.length !== 2) {
    throw new RangeError('A mask is {"size": [height, width], "counts": "..."}');
  }
  const [height, width] = rle.size;
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 0 || width < 0) {
    throw new RangeError("The size is [height, width] in whole pixels");
  }
  const runs = stringToRuns(rle.counts);
  const total = width * height;
  let sum = 0;
  for (const run of runs) sum += run;
  if (sum !== total) throw new RangeError(`The runs cover ${sum} pixels; the mask has ${total}`);
  const data = into ?? new Uint8Array(total);
  checkSize(data, width, height);
  let k = 0;
  let area = 0;
  let [bx0, by0, bx1, by1] = [width, height, 0, 0];
  for (let r = 0; r < runs.length; r++) {
    const n = runs[r];
    if (r % 2 === 1 && n > 0) {
      area += n;
      let x = Math.floor(k / height);
      let y = k - x * height;
      const end = k + n;
      const lastX = Math.floor((end - 1) / height);
      // Bounds that hold the run: its rows when it stays in one column, every row otherwise.
      bx0 = Math.min(bx0, x);
      bx1 = Math.max(bx1, lastX + 1);
      by0 = Math.min(by0, lastX === x ? y : 0);
      by1 = Math.max(by1, lastX === x ? y + n : height);
      for (let j = k; j < end; j++) {
        data[y * width + x] = value;
        y += 1;
        if (y === height) {
          y = 0;
          x += 1;
        }
      }
    }
    k += n;
  }
  const bounds = area ? [bx0, by0, bx1, by1] : null;
  return { data, width, height, bounds, area };
}

function checkSize(data, width, height) {
  if (!(data instanceof Uint8Array) || data.length !== width * height) {
    throw new RangeError(`A ${width}x${height} mask needs ${width * height} bytes`);
  }
}
