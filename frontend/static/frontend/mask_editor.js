/**
 * The pixels behind the annotation canvas's mask tools (annotator.js, kind "mask").
 *
 * Each object is a row-major `Uint8Array` of the full image (1 = painted), so a mask on a tile
 * of a large image is in full-image coordinates from the start. An edit (a brush stroke, a
 * lasso, a flood fill) writes horizontal spans into those arrays, clipped to the task region,
 * and records the 128x128 tiles it touched before changing them: undo puts those tiles back, so
 * an undo step costs what the edit touched, never the whole image. What the page shows is one
 * canvas of the image's size holding every object's colour; an edit repaints only the rectangle
 * it changed. Objects are encoded as COCO RLE (mask_rle.js) only when asked for, and each one
 * only when it changed since it was last encoded.
 */

import { decodeMask, encodeMask } from "./mask_rle.js";

const TILE = 128;
/** Undo keeps at most this many steps and this many bytes of saved pixels. */
const MAX_UNDO = 200;
const MAX_UNDO_BYTES = 512 * 1024 * 1024;

let nextId = 1;

/** `#rrggbb` as the 32-bit pixel of an ImageData on a little-endian machine (ABGR). */
function pixelOf(color, shade = 0) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color) ?? [null, "9e", "9e", "9e"];
  // Objects after the first of a label are drawn lighter, so that neighbours stand apart.
  const mix = [0, 0.3, 0.5, 0.15][shade % 4];
  const [r, g, b] = m.slice(1).map((hex) => Math.round(parseInt(hex, 16) * (1 - mix) + 255 * mix));
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

function union(a, b) {
  if (!a) return b ? [...b] : null;
  if (!b) return [...a];
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
}

function intersect(a, b) {
  const r = [Math.max(a[0], b[0]), Math.max(a[1], b[1]), Math.min(a[2], b[2]), Math.min(a[3], b[3])];
  return r[0] < r[2] && r[1] < r[3] ? r : null;
}

/**
 * The objects of one mask answer and their undo history.
 */
export class MaskEditor {
  /**
   * @param {object} options
   * @param {number} options.width full-image width
   * @param {number} options.height
   * @param {number[]} options.region `[x, y, w, h]`: pixels whose centre lies inside are editable
   * @param {"instance"|"semantic"} options.mode
   * @param {(label: string) => string} options.colorOf a label's `#rrggbb`
   */
  constructor({ width, height, region, mode, colorOf }) {
    this.width = width;
    this.height = height;
    this.mode = mode === "semantic" ? "semantic" : "instance";
    this._colorOf = colorOf;
    const [rx, ry, rw, rh] = region;
    // Pixel (x, y) has its centre at (x + 0.5, y + 0.5).
    this.clip = [
      Math.max(0, Math.ceil(rx - 0.5)),
      Math.max(0, Math.ceil(ry - 0.5)),
      Math.min(width, Math.floor(rx + rw - 0.5) + 1),
      Math.min(height, Math.floor(ry + rh - 0.5) + 1),
    ];
    /** @type {{id: number, label: string, data: Uint8Array, bounds: number[]|null, area: number, shade: number, version: number, encoded: object|null}[]} */
    this.objects = [];
    this._undo = [];
    this._redo = [];
    this._undoBytes = 0;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this._ctx = this.canvas.getContext("2d");
    /** Called with `[x0, y0, x1, y1)` after the picture of that rectangle changed. */
    this.onDirty = null;
  }

  // ------------------------------------------------------------ objects

  /** A new, empty object (not in the list, no undo step: `insert` adds it). */
  create(label) {
    const shade = this.objects.filter((o) => o.label === label).length;
    return {
      id: nextId++, label, data: new Uint8Array(this.width * this.height),
      bounds: null, area: 0, shade, version: 0, encoded: null,
    };
  }

  indexOf(object) {
    return this.objects.indexOf(object);
  }

  /** The object of a label in semantic mode (each label has at most one), or undefined. */
  layerOf(label) {
    return this.objects.find((o) => o.label === label);
  }

  /** The topmost object painted at pixel (x, y), or -1. */
  objectAt(x, y) {
    const px = Math.floor(x);
    const py = Math.floor(y);
    if (px < 0 || py < 0 || px >= this.width || py >= this.height) return -1;
    const i = py * this.width + px;
    for (let k = this.objects.length - 1; k >= 0; k--) if (this.objects[k].data[i]) return k;
    return -1;
  }

  /**
   * Replace every object by the decoded `items` (one undo step when `undoable`). Items that
   * are not masks of this image are left out and counted in the returned number.
   */
  load(items, undoable) {
    const objects = [];
    let skipped = 0;
    for (const item of items) {
      if (!item || typeof item.label !== "string") {
        skipped += 1;
        continue;
      }
      const object = this.create(item.label);
      object.shade = objects.filter((o) => o.label === item.label).length;
      try {
        const rle = item.rle;
        if (!rle || rle.size?.[0] !== this.height || rle.size?.[1] !== this.width) throw new RangeError("size");
        const decoded = decodeMask(rle, object.data);
        object.bounds = decoded.bounds;
        object.area = decoded.area;
        object.encoded = { counts: rle.counts, version: 0 };
        if (Number.isInteger(item.prelabel)) object.prelabel = item.prelabel;
      } catch {
        skipped += 1;
        continue;
      }
      if (object.area) objects.push(object);
      else skipped += 1;
    }
    const ops = [{ op: "replace", before: this.objects, after: objects }];
    this._apply(ops, false);
    if (undoable) this._record(ops, 0);
    else {
      this._undo = [];
      this._redo = [];
      this._undoBytes = 0;
    }
    return skipped;
  }

  /** Add `object` at the top (one undo step). */
  insert(object) {
    this._do([{ op: "insert", object, index: this.objects.length }]);
  }

  /** Remove the object at `index` (one undo step). */
  remove(index) {
    const object = this.objects[index];
    if (object) this._do([{ op: "remove", object, index }]);
  }

  /**
   * Give the object at `index` another label (one undo step). In semantic mode, when that
   * label already has a layer, the object's pixels join it and the object goes.
   * @returns {object} the object that now carries the pixels
   */
  relabel(index, label) {
    const object = this.objects[index];
    if (!object || object.label === label) return object;
    const target = this.mode === "semantic" ? this.layerOf(label) : null;
    if (!target) {
      const shade = this.objects.filter((o) => o.label === label && o !== object).length;
      this._do([{ op: "label", object, before: [object.label, object.shade], after: [label, shade] }]);
      return object;
    }
    const stroke = this.begin(target, "paint");
    const b = object.bounds;
    if (b) {
      this._touch(stroke, b);
      const { width } = this;
      for (let y = b[1]; y < b[3]; y++) {
        for (let x = b[0], i = y * width + b[0]; x < b[2]; x++, i++) {
          if (object.data[i] && !target.data[i]) {
            target.data[i] = 1;
            target.area += 1;
          }
        }
      }
      target.bounds = union(target.bounds, b);
      target.version += 1;
    }
    const patches = this._patches(stroke);
    this._do([...patches, { op: "remove", object, index: this.indexOf(object) }], true);
    return target;
  }

  // ------------------------------------------------------------ pixel edits

  /**
   * Start an edit: `paint` sets the target's pixels (in semantic mode taking them from every
   * other object); `erase` clears them from the target, or from every object when the target
   * is null.
   */
  begin(target, action) {
    const stroke = { target, action, saved: new Map(), dirty: null, added: false };
    if (target && action === "paint" && this.indexOf(target) < 0) {
      // A new object is in the list (on top) while it is painted, so that it shows.
      this.objects.push(target);
      stroke.added = true;
    }
    return stroke;
  }

  /** A brush stamp: the pixels whose centre is within `radius` of the segment a-b. */
  segment(stroke, ax, ay, bx, by, radius) {
    const r = Math.max(0.5, radius);
    const rect = intersect(
      [Math.floor(Math.min(ax, bx) - r), Math.floor(Math.min(ay, by) - r),
        Math.ceil(Math.max(ax, bx) + r) + 1, Math.ceil(Math.max(ay, by) + r) + 1],
      this.clip,
    );
    if (!rect) return;
    const dx = bx - ax;
    const dy = by - ay;
    const len2 = dx * dx + dy * dy;
    const r2 = r * r;
    const spans = [];
    for (let y = rect[1]; y < rect[3]; y++) {
      const cy = y + 0.5;
      let first = -1;
      let last = -1;
      for (let x = rect[0]; x < rect[2]; x++) {
        const cx = x + 0.5;
        let t = len2 ? ((cx - ax) * dx + (cy - ay) * dy) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        const ex = cx - (ax + t * dx);
        const ey = cy - (ay + t * dy);
        if (ex * ex + ey * ey <= r2) {
          if (first < 0) first = x;
          last = x;
        } else if (first >= 0) break; // a capsule's row is one run
      }
      if (first >= 0) spans.push(y, first, last + 1);
    }
    this._spans(stroke, spans);
  }

  /** The pixels whose centre lies inside the closed polygon (even-odd rule). */
  polygon(stroke, points) {
    if (points.length < 3) return;
    const ys = points.map((p) => p[1]);
    const y0 = Math.max(this.clip[1], Math.floor(Math.min(...ys)));
    const y1 = Math.min(this.clip[3], Math.ceil(Math.max(...ys)) + 1);
    const spans = [];
    const xs = [];
    for (let y = y0; y < y1; y++) {
      const cy = y + 0.5;
      xs.length = 0;
      for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
        const [xi, yi] = points[i];
        const [xj, yj] = points[j];
        if (yi > cy !== yj > cy) xs.push(xi + ((cy - yi) * (xj - xi)) / (yj - yi));
      }
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        // Pixels whose centre x + 0.5 lies in [xs[k], xs[k + 1]).
        const a = Math.max(this.clip[0], Math.ceil(xs[k] - 0.5));
        const b = Math.min(this.clip[2], Math.ceil(xs[k + 1] - 0.5));
        if (a < b) spans.push(y, a, b);
      }
    }
    this._spans(stroke, spans);
  }

  /**
   * Flood fill from pixel (x, y): the 4-connected pixels of the task region that have the same
   * owner as the clicked one (the topmost object painted there, or none), painted into the
   * stroke's target. Nothing happens when the click is on the target already.
   * @returns {number} how many pixels the fill reached
   */
  flood(stroke, x, y) {
    const px = Math.floor(x);
    const py = Math.floor(y);
    const [cx0, cy0, cx1, cy1] = this.clip;
    if (px < cx0 || py < cy0 || px >= cx1 || py >= cy1) return 0;
    const seedOwner = this.objectAt(px, py);
    if (seedOwner >= 0 && this.objects[seedOwner] === stroke.target) return 0;
    // Scanline fill over a bitmap of the clip rectangle: 1 where a pixel has the clicked
    // pixel's owner and the fill has not reached it yet.
    const open = this._ownedBy(seedOwner);
    const cw = cx1 - cx0;
    const ch = cy1 - cy0;
    const spans = [];
    let stack = new Int32Array(4096);
    let top = 0;
    const push = (xx, yy) => {
      if (top + 2 > stack.length) {
        const grown = new Int32Array(stack.length * 2);
        grown.set(stack);
        stack = grown;
      }
      stack[top++] = xx;
      stack[top++] = yy;
    };
    push(px - cx0, py - cy0);
    let count = 0;
    while (top) {
      const sy = stack[--top];
      const sx = stack[--top];
      const row = sy * cw;
      if (!open[row + sx]) continue;
      let a = sx;
      while (a > 0 && open[row + a - 1]) a -= 1;
      let b = sx + 1;
      while (b < cw && open[row + b]) b += 1;
      open.fill(0, row + a, row + b);
      spans.push(sy + cy0, a + cx0, b + cx0);
      count += b - a;
      for (let ny = sy - 1; ny <= sy + 1; ny += 2) {
        if (ny < 0 || ny >= ch) continue;
        const next = ny * cw;
        let inRun = false;
        for (let xx = a; xx < b; xx++) {
          const ok = open[next + xx] !== 0;
          if (ok && !inRun) push(xx, ny);
          inRun = ok;
        }
      }
    }
    this._spans(stroke, spans);
    return count;
  }

  /**
   * A bitmap of the clip rectangle: 1 where object `k` is the topmost paint (`k` = -1: where
   * nothing is painted). Only the objects' bounds are read.
   */
  _ownedBy(k) {
    const [cx0, cy0, cx1, cy1] = this.clip;
    const cw = cx1 - cx0;
    const { width } = this;
    const open = new Uint8Array(cw * (cy1 - cy0));
    const within = (object) => (object.bounds ? intersect(object.bounds, this.clip) : null);
    if (k < 0) {
      open.fill(1);
    } else {
      const r = within(this.objects[k]);
      const data = this.objects[k].data;
      if (r) {
        for (let yy = r[1]; yy < r[3]; yy++) {
          open.set(data.subarray(yy * width + r[0], yy * width + r[2]), (yy - cy0) * cw + r[0] - cx0);
        }
      }
    }
    // Paint above the owner hides it.
    for (let m = k + 1; m < this.objects.length; m++) {
      const r = within(this.objects[m]);
      if (!r) continue;
      const data = this.objects[m].data;
      for (let yy = r[1]; yy < r[3]; yy++) {
        const from = yy * width;
        const to = (yy - cy0) * cw - cx0;
        for (let xx = r[0]; xx < r[2]; xx++) if (data[from + xx]) open[to + xx] = 0;
      }
    }
    return open;
  }

  /**
   * End an edit: one undo step when it changed any pixel (a new target object is added to the
   * list in the same step). @returns {boolean} whether anything changed
   */
  end(stroke) {
    const patches = this._patches(stroke);
    if (!patches.length) {
      this._drop(stroke);
      return false;
    }
    const ops = [...patches];
    if (stroke.added) ops.unshift({ op: "insert", object: stroke.target, index: this.indexOf(stroke.target) });
    this._record(ops, patches.reduce((n, p) => n + 2 * p.before.length, 0));
    return true;
  }

  /** Abandon an edit, putting back every pixel it changed. */
  cancel(stroke) {
    for (const { object, rect, before } of stroke.saved.values()) this._put(object, rect, before);
    this._drop(stroke);
    if (stroke.dirty) this._repaint(stroke.dirty);
  }

  _drop(stroke) {
    if (stroke.added) this.objects.splice(this.indexOf(stroke.target), 1);
    stroke.added = false;
  }

  /** The objects an edit of `stroke` writes to. */
  _affected(stroke) {
    if (stroke.action === "paint") {
      const others = this.mode === "semantic" ? this.objects.filter((o) => o !== stroke.target) : [];
      return [stroke.target, ...others];
    }
    return stroke.target ? [stroke.target] : [...this.objects];
  }

  /** Save the tiles of `rect` of every affected object that this edit has not saved yet. */
  _touch(stroke, rect) {
    const { width } = this;
    for (const object of this._affected(stroke)) {
      for (let ty = Math.floor(rect[1] / TILE); ty * TILE < rect[3]; ty++) {
        for (let tx = Math.floor(rect[0] / TILE); tx * TILE < rect[2]; tx++) {
          const key = `${object.id}:${tx}:${ty}`;
          if (stroke.saved.has(key)) continue;
          const tileRect = [tx * TILE, ty * TILE, Math.min(width, tx * TILE + TILE), Math.min(this.height, ty * TILE + TILE)];
          stroke.saved.set(key, { object, rect: tileRect, before: this._get(object, tileRect) });
        }
      }
    }
  }

  /** Write spans (a flat list of y, x0, x1) for the stroke's action. */
  _spans(stroke, spans) {
    if (!spans.length) return;
    let rect = null;
    for (let s = 0; s < spans.length; s += 3) {
      rect = union(rect, [spans[s + 1], spans[s], spans[s + 2], spans[s] + 1]);
    }
    this._touch(stroke, rect);
    const { width } = this;
    const paint = stroke.action === "paint";
    const affected = this._affected(stroke);
    for (let k = 0; k < affected.length; k++) {
      const object = affected[k];
      const set = paint && k === 0;
      const data = object.data;
      let changed = 0;
      if (!set && !object.bounds) continue;
      const b = object.bounds;
      for (let s = 0; s < spans.length; s += 3) {
        const y = spans[s];
        let x0 = spans[s + 1];
        let x1 = spans[s + 2];
        if (!set) {
          if (y < b[1] || y >= b[3]) continue;
          x0 = Math.max(x0, b[0]);
          x1 = Math.min(x1, b[2]);
        }
        const row = y * width;
        if (set) {
          for (let i = row + x0; i < row + x1; i++) if (!data[i]) { data[i] = 1; changed += 1; }
        } else {
          for (let i = row + x0; i < row + x1; i++) if (data[i]) { data[i] = 0; changed += 1; }
        }
      }
      if (!changed) continue;
      object.area += set ? changed : -changed;
      object.version += 1;
      if (set) object.bounds = union(object.bounds, rect);
      else if (!object.area) object.bounds = null;
    }
    stroke.dirty = union(stroke.dirty, rect);
    this._repaint(rect);
  }

  /** The changed tiles of an edit as undo patches. */
  _patches(stroke) {
    const patches = [];
    for (const { object, rect, before } of stroke.saved.values()) {
      const after = this._get(object, rect);
      let same = true;
      for (let i = 0; i < after.length; i++) {
        if (after[i] !== before[i]) {
          same = false;
          break;
        }
      }
      if (!same) patches.push({ op: "pixels", object, rect, before, after });
    }
    return patches;
  }

  _get(object, [x0, y0, x1, y1]) {
    const w = x1 - x0;
    const out = new Uint8Array(w * (y1 - y0));
    for (let y = y0; y < y1; y++) out.set(object.data.subarray(y * this.width + x0, y * this.width + x1), (y - y0) * w);
    return out;
  }

  _put(object, [x0, y0, x1, y1], bytes) {
    const w = x1 - x0;
    let delta = 0;
    for (let y = y0; y < y1; y++) {
      const row = y * this.width;
      for (let x = x0; x < x1; x++) {
        const v = bytes[(y - y0) * w + x - x0];
        if (v !== object.data[row + x]) {
          delta += v ? 1 : -1;
          object.data[row + x] = v;
        }
      }
    }
    object.area += delta;
    object.version += 1;
    if (delta > 0 || object.area) object.bounds = union(object.bounds, [x0, y0, x1, y1]);
    if (!object.area) object.bounds = null;
  }

  // ------------------------------------------------------------ undo

  get canUndo() {
    return this._undo.length > 0;
  }

  get canRedo() {
    return this._redo.length > 0;
  }

  undo() {
    const entry = this._undo.pop();
    if (!entry) return false;
    this._undoBytes -= entry.bytes;
    this._apply(entry.ops, true);
    this._redo.push(entry);
    return true;
  }

  redo() {
    const entry = this._redo.pop();
    if (!entry) return false;
    this._undoBytes += entry.bytes;
    this._apply(entry.ops, false);
    this._undo.push(entry);
    return true;
  }

  _do(ops, recorded = false) {
    if (!recorded) this._apply(ops, false);
    else this._applyStructural(ops);
    this._record(ops, ops.reduce((n, p) => n + (p.before instanceof Uint8Array ? 2 * p.before.length : 0), 0));
  }

  /** Apply the non-pixel ops of a list whose pixel ops are already written. */
  _applyStructural(ops) {
    this._apply(ops.filter((o) => o.op !== "pixels"), false);
  }

  _record(ops, bytes) {
    this._undo.push({ ops, bytes });
    this._undoBytes += bytes;
    this._redo = [];
    while (this._undo.length > MAX_UNDO || (this._undo.length > 1 && this._undoBytes > MAX_UNDO_BYTES)) {
      this._undoBytes -= this._undo.shift().bytes;
    }
  }

  /** Apply a step's ops forward, or (`reverse`) take them back last first. */
  _apply(ops, reverse) {
    let dirty = null;
    const list = reverse ? [...ops].reverse() : ops;
    for (const o of list) {
      if (o.op === "pixels") {
        this._put(o.object, o.rect, reverse ? o.before : o.after);
        dirty = union(dirty, o.rect);
      } else if (o.op === "insert" || o.op === "remove") {
        const adding = (o.op === "insert") !== reverse;
        if (adding) this.objects.splice(Math.min(o.index, this.objects.length), 0, o.object);
        else this.objects.splice(this.objects.indexOf(o.object), 1);
        dirty = union(dirty, o.object.bounds);
      } else if (o.op === "label") {
        [o.object.label, o.object.shade] = reverse ? o.before : o.after;
        o.object.version += 1;
        dirty = union(dirty, o.object.bounds);
      } else if (o.op === "replace") {
        this.objects = [...(reverse ? o.before : o.after)];
        dirty = [0, 0, this.width, this.height];
      }
    }
    if (dirty) this._repaint(dirty);
  }

  // ------------------------------------------------------------ output

  /**
   * The objects as API payload items; an empty object is left out. Only objects changed since
   * their last encoding are encoded again, each over its own bounds.
   */
  annotations(withPrelabels = false) {
    const out = [];
    for (const object of this.objects) {
      if (!object.area) continue;
      if (!object.encoded || object.encoded.version !== object.version) {
        const b = object.bounds ?? [0, 0, 0, 0];
        object.encoded = {
          counts: encodeMask(object.data, this.width, this.height, b).counts,
          version: object.version,
        };
      }
      const item = { label: object.label, rle: { size: [this.height, this.width], counts: object.encoded.counts } };
      if (withPrelabels && object.prelabel !== undefined) item.prelabel = object.prelabel;
      out.push(item);
    }
    return out;
  }

  /** Paint the picture of `rect` again: each pixel the colour of its topmost object. */
  _repaint(rect) {
    const r = intersect(rect.map(Math.round), [0, 0, this.width, this.height]);
    if (!r) return;
    const [x0, y0, x1, y1] = r;
    const w = x1 - x0;
    const image = this._ctx.createImageData(w, y1 - y0);
    const out = new Uint32Array(image.data.buffer);
    const { width } = this;
    for (const object of this.objects) {
      const b = object.bounds && intersect(object.bounds, r);
      if (!b) continue;
      const color = pixelOf(this._colorOf(object.label), object.shade);
      const data = object.data;
      for (let y = b[1]; y < b[3]; y++) {
        const row = y * width;
        const o = (y - y0) * w - x0;
        for (let x = b[0]; x < b[2]; x++) if (data[row + x]) out[o + x] = color;
      }
    }
    this._ctx.putImageData(image, x0, y0);
    this.onDirty?.(r);
  }
}

/**
 * A canvas of the image's size with every mask of `items` in `color` (for read-only layers such
 * as the consensus); items that do not decode at this size are left out.
 */
export function maskLayer(items, width, height, color) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const data = new Uint8Array(width * height);
  let bounds = null;
  for (const item of items) {
    try {
      if (item?.rle?.size?.[0] !== height || item.rle.size[1] !== width) continue;
      bounds = union(bounds, decodeMask(item.rle, data).bounds);
    } catch {
      // not a mask of this image
    }
  }
  if (bounds) {
    const ctx = canvas.getContext("2d");
    const [x0, y0, x1, y1] = bounds;
    const w = x1 - x0;
    const image = ctx.createImageData(w, y1 - y0);
    const out = new Uint32Array(image.data.buffer);
    const pixel = pixelOf(color);
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) if (data[y * width + x]) out[(y - y0) * w + x - x0] = pixel;
    }
    ctx.putImageData(image, x0, y0);
  }
  return canvas;
}
