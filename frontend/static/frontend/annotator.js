/**
 * The annotation canvas used by the worker workspace, the gold editor and the review queue.
 *
 * Draws one image on a <canvas> and lets a person mark the task region with boxes, polygons,
 * keypoints, painted masks or a single class. Every coordinate it takes or returns is in
 * full-image pixels (origin top-left), in the payload format of the public API ("Annotation
 * payloads"); masks are COCO compressed RLE of the full image (mask_rle.js, mask_editor.js).
 *
 *   import { Annotator } from "/static/frontend/annotator.js";
 *   const a = new Annotator(element, {kind: "bbox", labels, imageUrl, width, height, region});
 *   await a.ready;
 *   a.getAnnotations();   // [{"label": "car", "bbox": [x, y, w, h]}, ...]
 *
 * No dependencies, no build step.
 */

import { MaskEditor, maskLayer } from "./mask_editor.js";

const KINDS = ["classification", "bbox", "polygon", "keypoints", "mask"];
/** Mask tools, in the toolbar's order, with their keys. */
const MASK_TOOLS = [
  { name: "brush", key: "b", title: "Brush" },
  { name: "eraser", key: "e", title: "Eraser" },
  { name: "lasso", key: "l", title: "Lasso fill" },
  { name: "fill", key: "f", title: "Flood fill" },
];
/** Brush diameters (image pixels) that `[` and `]` step through. */
const BRUSH_SIZES = [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 100, 128, 160, 200, 256, 320, 400, 512];
const DEFAULT_BRUSH = 20;
const DEFAULT_OPACITY = 0.5;
const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
  "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000",
];
/** A press that moves less than this (CSS px) is a click, never a drag. */
const DRAG_THRESHOLD = 3;
/** How close (CSS px) a press must be to a vertex, a point or an edge to hit it. */
const HIT_TOLERANCE = 7;
const HANDLE_SIZE = 8;
const FIT_MARGIN = 12;
const MAX_UNDO = 200;
const DOUBLE_CLICK_MS = 400;
const WHEEL_ZOOM_RATE = 0.002;
const KEY_ZOOM_FACTOR = 1.25;
const KEY_PAN_STEP = 40;
/** Box handles: the fraction of the box each sits at; 0 or 1 also says which edge it moves. */
const HANDLES = [
  { fx: 0, fy: 0, cursor: "nwse-resize" },
  { fx: 0.5, fy: 0, cursor: "ns-resize" },
  { fx: 1, fy: 0, cursor: "nesw-resize" },
  { fx: 1, fy: 0.5, cursor: "ew-resize" },
  { fx: 1, fy: 1, cursor: "nwse-resize" },
  { fx: 0.5, fy: 1, cursor: "ns-resize" },
  { fx: 0, fy: 1, cursor: "nesw-resize" },
  { fx: 0, fy: 0.5, cursor: "ew-resize" },
];

const round2 = (v) => Math.round(v * 100) / 100 + 0; // "+ 0" turns -0 into 0
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const clone = (v) => JSON.parse(JSON.stringify(v));
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * An annotation canvas inside `container`.
 *
 * Keys are handled on the container (it gets tabindex=0 and takes focus on a press), so
 * typing in the page's inputs is never intercepted, and Enter always reaches the page.
 */
export class Annotator {
  /**
   * @param {HTMLElement} container where the canvas (and, unless given elsewhere, the hint line
   *   and the object list) are rendered.
   * @param {object} options
   * @param {"classification"|"bbox"|"polygon"|"keypoints"|"mask"} options.kind
   * @param {"instance"|"semantic"} [options.maskMode] masks: any number of objects a label
   *   (default), or one layer a label with each pixel in at most one of them.
   * @param {Array<string|{name: string, color?: string, keypoints?: string[]}>} options.labels
   * @param {string} options.imageUrl fetched with the session cookie.
   * @param {number} [options.width] full-image width in pixels (read from the image if absent).
   * @param {number} [options.height] full-image height in pixels.
   * @param {number[]} [options.region] `[x, y, w, h]` to annotate; the whole image by default.
   * @param {object[]} [options.annotations] initial annotations (not an undo step).
   * @param {object[]} [options.prelabels] the model's objects (a lease's `prelabels`: payload
   *   items with `score`), shown as editable shapes marked as the model's until the person
   *   accepts them (`acceptPrelabels`, key A) or edits them; masks: shown as a layer that A
   *   copies into the answer.
   * @param {boolean} [options.readOnly] review mode: select, zoom and pan only.
   * @param {(annotations: object[]) => void} [options.onChange] called after every edit.
   * @param {(name: string) => void} [options.onLabel] called when the current label changes.
   * @param {HTMLElement} [options.listElement] where to render the list of objects.
   * @param {HTMLElement} [options.hintElement] where to write what the next click does.
   */
  constructor(container, options = {}) {
    if (!(container instanceof HTMLElement)) {
      throw new TypeError("Annotator needs a container element");
    }
    if (!KINDS.includes(options.kind)) {
      throw new TypeError(`Unknown annotation kind: ${options.kind}`);
    }
    this.container = container;
    /** The annotation kind, fixed for the annotator's life. */
    this.kind = options.kind;
    /** True in review mode: nothing can be edited through the canvas. */
    this.readOnly = Boolean(options.readOnly);
    this._onChange = options.onChange;
    this._onLabel = options.onLabel;
    this._labels = this._normalizeLabels(options.labels ?? []);
    this._size = isNum(options.width) && isNum(options.height) && options.width > 0 && options.height > 0
      ? { width: options.width, height: options.height }
      : null;
    this._regionOption = options.region;
    this._region = this._size ? this._regionFor(options.region) : null;

    this._state = { shapes: [], choice: null };
    this._undoStack = [];
    this._redoStack = [];
    this._selected = -1;
    this._draft = null; // an open polygon or a keypoint instance being placed
    this._drag = null; // the press in progress
    this._pointers = new Map(); // active touch points, for pinch zoom
    this._pinch = null;
    this._hover = null; // last pointer position over the canvas (canvas CSS px)
    this._spaceHeld = false;
    this._overlays = new Map();
    this._view = { scale: 1, offsetX: 0, offsetY: 0 };
    this._fitScale = 1;
    this._fitted = true; // the view is the fitted one (re-fit on resize)
    this._cssWidth = 0;
    this._cssHeight = 0;
    this._dpr = 1;
    this._raf = 0;
    this._image = null;
    this._objectUrl = null;
    this._loadState = "loading";
    this._destroyed = false;
    this._label = this.kind === "classification" ? null : (this._labels[0]?.name ?? null);
    // Masks: the pixels live in a MaskEditor made once the image's size is known.
    this.maskMode = options.maskMode === "semantic" ? "semantic" : "instance";
    this._masks = null;
    this._maskSelected = null; // the object the brush paints into (null: a new one)
    this._pendingMasks = this.kind === "mask" ? (options.annotations ?? []) : null;
    this._tool = "brush";
    this._brushSize = DEFAULT_BRUSH;
    this._opacity = DEFAULT_OPACITY;
    this._maskLayers = new Map();
    this._notifyTimer = 0;

    this._buildDom(options.listElement, options.hintElement);
    this._state = this._stateFrom(this.kind === "mask" ? [] : (options.annotations ?? []));
    this._prelabels = Array.isArray(options.prelabels) ? options.prelabels : [];
    this._loadPrelabels();
    if (this._size) this._initMasks();
    if (this.kind === "classification") this._label = this._state.choice;
    this._bindEvents();
    this._resize();
    /** Resolves when the image has loaded; rejects with an Error when it cannot be loaded. */
    this.ready = this._loadImage(options.imageUrl);
    this._refresh();
    if (this._label !== null) this._onLabel?.(this._label);
  }

  // ---------------------------------------------------------------- public API

  /**
   * The annotations as API payload items: numbers rounded to 0.01 px, shapes clipped to the
   * region, degenerate ones (boxes under 1 px, polygons under 3 points or 1 px², keypoint
   * instances with no point placed) left out. An open polygon or a keypoint instance still
   * being placed is not included (see `finishDraft`).
   * @returns {object[]}
   */
  getAnnotations() {
    if (this.kind === "mask") return this._masks ? this._masks.annotations() : clone(this._pendingMasks ?? []);
    if (this.kind === "classification") {
      return this._state.choice === null ? [] : [{ label: this._state.choice }];
    }
    const out = [];
    for (const shape of this._state.shapes) {
      const clipped = this._clipped(shape);
      if (clipped) out.push(clipped);
    }
    return out;
  }

  /**
   * The annotations as `getAnnotations` gives them, each object that came from a pre-label
   * with `prelabel`: its index in the `prelabels` option (what the server's record of kept,
   * moved, relabelled, deleted and added objects is computed from).
   * @returns {object[]}
   */
  getAnswer() {
    if (this.kind === "mask") return this._masks ? this._masks.annotations(true) : this.getAnnotations();
    if (this.kind === "classification") {
      if (this._state.choice === null) return [];
      const item = { label: this._state.choice };
      if (this._state.prelabel !== undefined) item.prelabel = this._state.prelabel;
      return [item];
    }
    const out = [];
    for (const shape of this._state.shapes) {
      const clipped = this._clipped(shape);
      if (!clipped) continue;
      if (shape.prelabel !== undefined) clipped.prelabel = shape.prelabel;
      out.push(clipped);
    }
    return out;
  }

  /** How many of the model's pre-labels are still shown unconfirmed (masks: 0 or all). */
  get pendingPrelabels() {
    if (this.kind === "mask") return this._maskPrelabelsPending ? this._prelabels.length : 0;
    if (this.kind === "classification") return this._state.pending ? 1 : 0;
    return this._state.shapes.filter((shape) => shape.pending).length;
  }

  /** Accept every pre-label still unconfirmed, as it is (one undo step). */
  acceptPrelabels() {
    if (this.readOnly || !this.pendingPrelabels) return;
    if (this.kind === "mask") {
      if (!this._masks) return;
      const offered = this._prelabels.map(({ label, rle }, index) => ({ label, rle, prelabel: index }));
      this._masks.load([...this._masks.annotations(true), ...offered], true);
      this._maskPrelabelsPending = false;
      this.setOverlay("prelabels", null);
      this._maskChanged();
      return;
    }
    const before = this._snapshot();
    if (this.kind === "classification") this._state.pending = false;
    for (const shape of this._state.shapes) shape.pending = false;
    this._commit(before);
  }

  /**
   * Replace all annotations (one undo step). Items that are not valid for the kind are ignored.
   * @param {object[]} list
   */
  setAnnotations(list) {
    if (!Array.isArray(list)) throw new TypeError("setAnnotations needs a list");
    if (this.kind === "mask") {
      this._cancelDrag();
      if (!this._masks) {
        this._pendingMasks = list;
        return;
      }
      this._masks.load(list, true);
      this._maskSelected = null;
      this._changed();
      return;
    }
    const before = this._snapshot();
    this._draft = null;
    this._cancelDrag();
    this._state = this._stateFrom(list);
    this._selected = -1;
    if (this.kind === "classification") this._setCurrentLabel(this._state.choice);
    this._commit(before);
  }

  /** The current label: what the next shape gets (for classification, the chosen answer). */
  get label() {
    return this._label;
  }

  /**
   * Choose the current label. For classification this sets the answer (one undo step).
   * @param {string} name one of the labels' names
   */
  setLabel(name) {
    if (!this._labelByName(name)) throw new RangeError(`Unknown label: ${name}`);
    if (this.kind === "classification") {
      if (this.readOnly) return;
      const before = this._snapshot();
      this._state.choice = name;
      this._state.pending = false; // choosing, even the model's class, confirms it
      this._label = name;
      this._onLabel?.(name);
      this._commit(before);
      return;
    }
    if (this._draft && this._draft.label !== name) {
      if (this.kind === "keypoints") this._finishKeypoints();
      else this._draft.label = name;
    }
    if (this.kind === "mask" && this._masks) {
      // The brush paints the chosen label: in semantic mode into its layer, in instance mode
      // into the selected object if it has that label, otherwise into a new object.
      if (this.maskMode === "semantic") this._maskSelected = this._masks.layerOf(name) ?? null;
      else if (this._maskSelected && this._maskSelected.label !== name) this._maskSelected = null;
    }
    this._label = name;
    this._onLabel?.(name); // also when unchanged, so a page can mark its label picker
    this._refresh();
  }

  /** Undo the last edit (while a shape is being drawn: remove its last point). */
  undo() {
    if (this.readOnly) return;
    if (this.kind === "mask") {
      if (this._cancelDrag()) return;
      if (this._masks?.undo()) this._maskChanged();
      return;
    }
    if (this._draft) {
      this._removeLastDraftPoint();
      return;
    }
    if (!this._undoStack.length) return;
    this._cancelDrag();
    this._redoStack.push(this._snapshot());
    this._restore(this._undoStack.pop());
  }

  /** Redo the last undone edit. */
  redo() {
    if (this.kind === "mask") {
      if (this.readOnly || this._drag) return;
      if (this._masks?.redo()) this._maskChanged();
      return;
    }
    if (this.readOnly || !this._redoStack.length) return;
    this._cancelDrag();
    this._draft = null;
    this._undoStack.push(this._snapshot());
    this._restore(this._redoStack.pop());
  }

  /** @type {boolean} */
  get canUndo() {
    if (this.kind === "mask") return !this.readOnly && Boolean(this._masks?.canUndo);
    return !this.readOnly && (this._undoStack.length > 0 || Boolean(this._draft));
  }

  /** @type {boolean} */
  get canRedo() {
    if (this.kind === "mask") return !this.readOnly && Boolean(this._masks?.canRedo);
    return !this.readOnly && this._redoStack.length > 0;
  }

  /** Delete the selected shape (one undo step); does nothing when none is selected. */
  deleteSelected() {
    if (this.kind === "mask") {
      if (this._maskSelected) this._deleteAt(this._masks.indexOf(this._maskSelected));
      return;
    }
    if (this._selected >= 0) this._deleteAt(this._selected);
  }

  // ---------------------------------------------------------------- masks, public

  /** Masks: the tool a press uses, one of "brush", "eraser", "lasso", "fill". */
  get tool() {
    return this._tool;
  }

  setTool(name) {
    if (!MASK_TOOLS.some((t) => t.name === name)) throw new RangeError(`Unknown tool: ${name}`);
    this._tool = name;
    this._updateCursor();
    this._refresh();
  }

  /** Masks: the brush's (and eraser's) diameter in image pixels. */
  get brushSize() {
    return this._brushSize;
  }

  setBrushSize(size) {
    if (!isNum(size)) throw new TypeError("A brush size is a number of pixels");
    this._brushSize = clamp(Math.round(size), BRUSH_SIZES[0], BRUSH_SIZES.at(-1));
    this._refresh();
  }

  /** Masks: how opaque the painted masks are drawn over the image, 0 to 1. */
  get opacity() {
    return this._opacity;
  }

  setOpacity(value) {
    if (!isNum(value)) throw new TypeError("An opacity is a number from 0 to 1");
    this._opacity = clamp(value, 0, 1);
    if (this._opacityInput) this._opacityInput.value = String(Math.round(this._opacity * 100));
    this._requestDraw();
  }

  /** Masks: the index of the object the brush paints into, or -1 (the next stroke starts one). */
  get selectedMask() {
    return this._masks && this._maskSelected ? this._masks.indexOf(this._maskSelected) : -1;
  }

  /** Masks: select the object at `index` (-1: none, the next stroke starts a new object). */
  selectMask(index) {
    const object = this._masks?.objects[index] ?? null;
    this._maskSelected = object;
    if (object) this._setCurrentLabel(object.label);
    this._refresh();
  }

  /** Masks, instance mode: the next stroke starts a new object of the current label. */
  newObject() {
    if (this.kind !== "mask") return;
    this._maskSelected = this.maskMode === "semantic" && this._label !== null
      ? (this._masks?.layerOf(this._label) ?? null)
      : null;
    this._refresh();
  }

  /** Masks: give the object at `index` another label (one undo step; semantic: merges). */
  relabelMask(index, name) {
    if (this.readOnly || !this._masks || !this._labelByName(name)) return;
    if (this._masks.objects[index]?.label === name) return;
    const carrier = this._masks.relabel(index, name);
    if (carrier) this._maskSelected = carrier;
    this._setCurrentLabel(name);
    this._maskChanged();
  }

  /** True while a polygon or a keypoint instance is being drawn and not yet finished. */
  get drafting() {
    return Boolean(this._draft);
  }

  /**
   * Finish the shape being drawn, if any: close an open polygon (3 points or more) or end a
   * keypoint instance with the remaining points absent. Pages call this before submitting.
   */
  finishDraft() {
    if (!this._draft) return;
    if (this.kind === "polygon") {
      if (!this._closePolygon()) this._draft = null;
    } else {
      this._finishKeypoints();
    }
    this._refresh();
  }

  /**
   * Draw (or, with `annotations` null, remove) a read-only layer on top of the shapes, such as
   * the consensus answer or the gold answer.
   * @param {string} name
   * @param {object[]|null} annotations payload items of this annotator's kind
   * @param {{color?: string, dashed?: boolean, title?: string}} [options]
   */
  setOverlay(name, annotations, options = {}) {
    if (annotations == null) {
      this._overlays.delete(name);
    } else if (this.kind === "mask") {
      this._overlays.set(name, {
        shapes: [],
        choice: null,
        masks: Array.isArray(annotations) ? annotations : [],
        layer: null, // drawn once the image's size is known
        color: this._cssColor(options.color ?? "#ffffff"),
        dashed: options.dashed ?? true,
        title: options.title ?? name,
      });
    } else {
      const state = this._stateFrom(Array.isArray(annotations) ? annotations : []);
      this._overlays.set(name, {
        shapes: state.shapes,
        choice: state.choice,
        color: this._cssColor(options.color ?? "#ffffff"),
        dashed: options.dashed ?? true,
        title: options.title ?? name,
      });
    }
    this._requestDraw();
  }

  /** Zoom and pan so that the task region fills the canvas. */
  fit() {
    const region = this._region;
    if (!region || !this._cssWidth || !this._cssHeight) return;
    const [rx, ry, rw, rh] = region;
    const scale = Math.max(
      1e-6,
      Math.min(
        (this._cssWidth - 2 * FIT_MARGIN) / rw,
        (this._cssHeight - 2 * FIT_MARGIN) / rh,
      ),
    );
    this._fitScale = scale;
    this._view = {
      scale,
      offsetX: (this._cssWidth - rw * scale) / 2 - rx * scale,
      offsetY: (this._cssHeight - rh * scale) / 2 - ry * scale,
    };
    this._fitted = true;
    this._requestDraw();
  }

  /**
   * The current view: a canvas CSS pixel is `offset + imagePixel * scale` from the canvas's
   * top-left corner.
   * @type {{scale: number, offsetX: number, offsetY: number}}
   */
  get view() {
    return { ...this._view };
  }

  /**
   * Where a full-image point is on the page (client coordinates, as in mouse events).
   * @returns {{x: number, y: number}}
   */
  imageToClient(x, y) {
    const rect = this._canvas.getBoundingClientRect();
    return {
      x: rect.left + this._view.offsetX + x * this._view.scale,
      y: rect.top + this._view.offsetY + y * this._view.scale,
    };
  }

  /**
   * The full-image point under a page (client) position.
   * @returns {{x: number, y: number}}
   */
  clientToImage(clientX, clientY) {
    const rect = this._canvas.getBoundingClientRect();
    return this._toImage({ x: clientX - rect.left, y: clientY - rect.top });
  }

  /** Remove the listeners and the elements the annotator created, and free the image. */
  destroy() {
    if (this._destroyed) return;
    this._destroyed = true;
    this._abort?.abort();
    if (this._raf) cancelAnimationFrame(this._raf);
    clearTimeout(this._notifyTimer);
    this._resizeObserver.disconnect();
    for (const [target, type, handler, opts] of this._listeners) {
      target.removeEventListener(type, handler, opts);
    }
    this._listeners = [];
    if (this._image) this._image.src = "";
    this._image = null;
    if (this._objectUrl) URL.revokeObjectURL(this._objectUrl);
    this._objectUrl = null;
    for (const el of this._createdElements) el.remove();
    if (!this._ownsList) this._listEl.replaceChildren();
    this.container.classList.remove("annotator", "annotator--external-list", "annotator--mask");
    if (this._addedTabIndex) this.container.removeAttribute("tabindex");
  }

  // ---------------------------------------------------------------- set-up

  _normalizeLabels(labels) {
    return labels.map((label, i) => {
      const item = typeof label === "string" ? { name: label } : label;
      return {
        name: String(item.name),
        color: this._cssColor(item.color ?? PALETTE[i % PALETTE.length]),
        keypoints: Array.isArray(item.keypoints) ? item.keypoints.map(String) : [],
      };
    });
  }

  /** Any CSS colour as the canvas spells it ("#rrggbb" for opaque colours). */
  _cssColor(color) {
    Annotator._probe ??= document.createElement("canvas").getContext("2d");
    const probe = Annotator._probe;
    probe.fillStyle = "#808080";
    probe.fillStyle = String(color);
    return probe.fillStyle;
  }

  _regionFor(region) {
    const { width, height } = this._size;
    if (Array.isArray(region) && region.length === 4 && region.every(isNum)) {
      const x = clamp(region[0], 0, width);
      const y = clamp(region[1], 0, height);
      const w = clamp(region[2], 0, width - x);
      const h = clamp(region[3], 0, height - y);
      if (w > 0 && h > 0) return [x, y, w, h];
    }
    return [0, 0, width, height];
  }

  _buildDom(listElement, hintElement) {
    const c = this.container;
    this._createdElements = [];
    c.classList.add("annotator");
    this._addedTabIndex = !c.hasAttribute("tabindex");
    if (this._addedTabIndex) c.tabIndex = 0;

    this._hintEl = hintElement ?? this._createElement("p", "annotator-hint");
    if (!this._hintEl.hasAttribute("aria-live")) this._hintEl.setAttribute("aria-live", "polite");

    this._stage = this._createElement("div", "annotator-stage");
    this._canvas = document.createElement("canvas");
    this._canvas.className = "annotator-canvas";
    this._canvas.setAttribute("role", "img");
    this._stage.append(this._canvas);
    this._ctx = this._canvas.getContext("2d");

    if (this.kind === "mask" && !this.readOnly) this._buildMaskTools();

    this._ownsList = !listElement;
    this._listEl = listElement ?? this._createElement("ol", "annotator-list");
    if (!this._ownsList) c.classList.add("annotator--external-list");
    if (!this._listEl.hasAttribute("aria-label")) this._listEl.setAttribute("aria-label", "Objects");
  }

  /** The mask toolbar: tools, brush size, a new object, and the masks' opacity. */
  _buildMaskTools() {
    const c = this.container;
    c.classList.add("annotator--mask");
    const bar = this._createElement("div", "annotator-tools");
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Mask tools");
    const button = (text, title, action, extra = {}) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "annotator-tool";
      b.textContent = text;
      b.title = title;
      b.dataset.action = action;
      for (const [k, v] of Object.entries(extra)) b.setAttribute(k, v);
      bar.append(b);
      return b;
    };
    this._toolButtons = MASK_TOOLS.map((t) =>
      button(t.title, `${t.title} (${t.key.toUpperCase()})`, `tool-${t.name}`, {
        "aria-keyshortcuts": t.key.toUpperCase(),
        "aria-pressed": "false",
      }),
    );
    button("−", "Smaller brush ([)", "smaller", { "aria-label": "Smaller brush", "aria-keyshortcuts": "[" });
    this._sizeEl = document.createElement("output");
    this._sizeEl.className = "annotator-size";
    this._sizeEl.setAttribute("aria-live", "polite");
    bar.append(this._sizeEl);
    button("+", "Larger brush (])", "larger", { "aria-label": "Larger brush", "aria-keyshortcuts": "]" });
    this._newButton = button("New object", "Start a new object (N)", "new", { "aria-keyshortcuts": "N" });
    const opacity = document.createElement("label");
    opacity.className = "annotator-opacity";
    opacity.append("Opacity ");
    this._opacityInput = document.createElement("input");
    this._opacityInput.type = "range";
    this._opacityInput.min = "0";
    this._opacityInput.max = "100";
    this._opacityInput.value = String(Math.round(this._opacity * 100));
    opacity.append(this._opacityInput);
    bar.append(opacity);
    this._toolbar = bar;
  }

  _onToolbarClick(event) {
    const b = event.target.closest("button[data-action]");
    if (!b) return;
    const action = b.dataset.action;
    if (action.startsWith("tool-")) this.setTool(action.slice(5));
    else if (action === "smaller") this._stepBrush(-1);
    else if (action === "larger") this._stepBrush(1);
    else if (action === "new") this.newObject();
    // A mouse click hands the keys back to the canvas ([, ], B, E... go on working); a button
    // pressed from the keyboard keeps the focus where the person is.
    if (event.detail > 0) this.container.focus({ preventScroll: true });
  }

  _stepBrush(direction) {
    const size = this._brushSize;
    const next = direction > 0
      ? BRUSH_SIZES.find((s) => s > size) ?? BRUSH_SIZES.at(-1)
      : BRUSH_SIZES.findLast((s) => s < size) ?? BRUSH_SIZES[0];
    this.setBrushSize(next);
  }

  _createElement(tag, className) {
    const el = document.createElement(tag);
    el.className = className;
    this.container.append(el);
    this._createdElements.push(el);
    return el;
  }

  _bindEvents() {
    this._listeners = [];
    const on = (target, type, handler, opts) => {
      const bound = handler.bind(this);
      target.addEventListener(type, bound, opts);
      this._listeners.push([target, type, bound, opts]);
    };
    on(this._canvas, "pointerdown", this._onPointerDown);
    on(this._canvas, "pointermove", this._onPointerMove);
    on(this._canvas, "pointerup", this._onPointerUp);
    on(this._canvas, "pointercancel", this._onPointerCancel);
    on(this._canvas, "pointerleave", this._onPointerLeave);
    on(this._canvas, "wheel", this._onWheel, { passive: false });
    on(this._canvas, "contextmenu", (e) => e.preventDefault());
    on(this.container, "keydown", this._onKeyDown);
    on(this.container, "keyup", this._onKeyUp);
    on(this.container, "focusout", this._onFocusOut);
    on(this._listEl, "click", this._onListClick);
    on(this._listEl, "change", this._onListChange);
    if (this._toolbar) {
      on(this._toolbar, "click", this._onToolbarClick);
      on(this._opacityInput, "input", () => this.setOpacity(Number(this._opacityInput.value) / 100));
    }
    this._resizeObserver = new ResizeObserver(() => this._resize());
    this._resizeObserver.observe(this._stage);
  }

  async _loadImage(url) {
    try {
      if (!url) throw new Error("No image URL was given");
      this._abort = new AbortController();
      const response = await fetch(url, { credentials: "same-origin", signal: this._abort.signal });
      if (!response.ok) throw new Error(`The image could not be loaded (HTTP ${response.status})`);
      const blob = await response.blob();
      if (this._destroyed) throw new Error("The annotator was closed before the image loaded");
      this._objectUrl = URL.createObjectURL(blob);
      const image = new Image();
      image.src = this._objectUrl;
      try {
        await image.decode();
      } catch {
        throw new Error("The image could not be decoded");
      }
      if (this._destroyed) throw new Error("The annotator was closed before the image loaded");
      this._image = image;
      if (!this._size) {
        this._size = { width: image.naturalWidth, height: image.naturalHeight };
        this._region = this._regionFor(this._regionOption);
        this._initMasks();
        this.fit();
      }
      this._loadState = "ready";
      this._refresh();
    } catch (error) {
      this._loadState = "error";
      if (!this._destroyed) this._refresh();
      throw error instanceof Error ? error : new Error(String(error));
    }
  }

  // ---------------------------------------------------------------- masks

  /** Make the mask editor once the image's size is known, with the initial masks. */
  _initMasks() {
    if (this.kind !== "mask" || this._masks || !this._size) return;
    this._masks = new MaskEditor({
      width: this._size.width,
      height: this._size.height,
      region: this._region,
      mode: this.maskMode,
      colorOf: (label) => this._colorOf(label),
    });
    this._masks.onDirty = () => this._requestDraw();
    this._maskSkipped = this._masks.load(this._pendingMasks ?? [], false);
    this._pendingMasks = null;
    if (this.maskMode === "semantic" && this._label !== null) this._maskSelected = this._masks.layerOf(this._label) ?? null;
  }

  /** After a mask edit: the list and the picture now, the page's onChange a moment later (it
   * encodes the changed objects, which is not worth doing after every stroke of a scribble). */
  _maskChanged() {
    const masks = this._masks;
    if (this._maskSelected && masks.indexOf(this._maskSelected) < 0) this._maskSelected = null;
    if (this.maskMode === "semantic" && !this._maskSelected && this._label !== null) {
      this._maskSelected = masks.layerOf(this._label) ?? null;
    }
    this._refresh();
    clearTimeout(this._notifyTimer);
    if (this._onChange) {
      this._notifyTimer = setTimeout(() => {
        if (!this._destroyed) this._onChange(this.getAnnotations());
      }, 150);
    }
  }

  /** The object a paint stroke goes into: the selected one, else a new one of the label. */
  _paintTarget() {
    if (this._maskSelected) return this._maskSelected;
    if (this.maskMode === "semantic") {
      const layer = this._masks.layerOf(this._label);
      if (layer) return layer;
    }
    return this._masks.create(this._label);
  }

  _maskPress(img, shift) {
    if (!this._masks || this._label === null) return { type: "click-none" };
    if (this._tool === "brush" || this._tool === "eraser") {
      const stroke = this._tool === "brush"
        ? this._masks.begin(this._paintTarget(), "paint")
        : this._masks.begin(this._maskSelected, "erase");
      this._masks.segment(stroke, img.x, img.y, img.x, img.y, this._brushSize / 2);
      return { type: "paint", stroke, last: img };
    }
    if (this._tool === "lasso") return { type: "lasso", points: [[img.x, img.y]], erase: shift };
    return { type: "click-fill" };
  }

  /** The end of a brush or eraser stroke, or of a lasso. */
  _finishMaskDrag(drag) {
    const masks = this._masks;
    let stroke = drag.stroke;
    if (drag.type === "lasso") {
      if (drag.points.length < 3) return;
      stroke = drag.erase ? masks.begin(this._maskSelected, "erase") : masks.begin(this._paintTarget(), "paint");
      masks.polygon(stroke, drag.points);
    }
    this._endStroke(stroke);
  }

  _endStroke(stroke) {
    if (!this._masks.end(stroke)) {
      this._refresh();
      return;
    }
    if (stroke.action === "paint" && this._masks.indexOf(stroke.target) >= 0) this._maskSelected = stroke.target;
    this._maskChanged();
  }

  _floodFill(img) {
    const stroke = this._masks.begin(this._paintTarget(), "paint");
    this._masks.flood(stroke, img.x, img.y);
    this._endStroke(stroke);
  }

  // ---------------------------------------------------------------- state and undo

  _snapshot() {
    return clone(this._state);
  }

  /** The pre-labels as shapes marked `pending` (not an undo step). */
  _loadPrelabels() {
    if (!this._prelabels.length) return;
    if (this.kind === "mask") {
      this._maskPrelabelsPending = true;
      this.setOverlay("prelabels", this._prelabels, { color: "#ffffff", title: `Model: ${plural(this._prelabels.length, "mask")} (A accepts)` });
      return;
    }
    if (this.kind === "classification") {
      const first = this._prelabels[0];
      if (first && this._labelByName(first.label) && this._state.choice === null) {
        Object.assign(this._state, { choice: first.label, prelabel: 0, pending: true, score: first.score ?? null });
      }
      return;
    }
    this._prelabels.forEach((item, index) => {
      const shape = item && this._labelByName(item.label) ? this._shapeFrom(item) : null;
      if (shape) this._state.shapes.push({ ...shape, prelabel: index, pending: true, score: item.score ?? null });
    });
  }

  /** An edited pre-label is the person's: it is no longer shown as unconfirmed. */
  _settlePrelabels() {
    if (this.kind === "classification") {
      const pre = this._prelabels[this._state.prelabel];
      if (this._state.pending && pre && this._state.choice !== pre.label) this._state.pending = false;
      return;
    }
    for (const shape of this._state.shapes) {
      if (!shape.pending) continue;
      const pre = this._prelabels[shape.prelabel];
      const now = this._clipped(shape);
      const was = pre ? this._clipped(this._shapeFrom(pre)) : null;
      if (shape.label !== pre?.label || JSON.stringify(now) !== JSON.stringify(was)) shape.pending = false;
    }
  }

  /** Record `before` as one undo step if the state changed, then tell the page. */
  _commit(before) {
    this._settlePrelabels();
    if (JSON.stringify(before) === JSON.stringify(this._state)) {
      this._refresh();
      return;
    }
    this._undoStack.push(before);
    if (this._undoStack.length > MAX_UNDO) this._undoStack.shift();
    this._redoStack = [];
    this._changed();
  }

  _restore(state) {
    this._state = state;
    this._selected = -1;
    if (this.kind === "classification") this._setCurrentLabel(state.choice);
    this._changed();
  }

  _changed() {
    if (this._selected >= this._state.shapes.length) this._selected = -1;
    this._refresh();
    this._onChange?.(this.getAnnotations());
  }

  _setCurrentLabel(name) {
    if (name === this._label) return;
    this._label = name;
    if (name !== null) this._onLabel?.(name);
  }

  _labelByName(name) {
    return this._labels.find((label) => label.name === name);
  }

  _colorOf(name) {
    return this._labelByName(name)?.color ?? "#9e9e9e";
  }

  _keypointNames(name) {
    return this._labelByName(name)?.keypoints ?? [];
  }

  /** The internal state for a list of payload items; items not valid for the kind are dropped. */
  _stateFrom(list) {
    const state = { shapes: [], choice: null };
    for (const item of list) {
      if (!item || typeof item !== "object" || typeof item.label !== "string") continue;
      if (this.kind === "classification") {
        if (state.choice === null) state.choice = item.label;
        continue;
      }
      const shape = this._shapeFrom(item);
      if (shape) state.shapes.push(shape);
    }
    return state;
  }

  _shapeFrom(item) {
    const { label } = item;
    if (this.kind === "bbox") {
      const b = item.bbox;
      if (!Array.isArray(b) || b.length !== 4 || !b.every(isNum)) return null;
      const [x, y, w, h] = b;
      return { label, bbox: [Math.min(x, x + w), Math.min(y, y + h), Math.abs(w), Math.abs(h)] };
    }
    if (this.kind === "polygon") {
      const pts = item.points;
      if (!Array.isArray(pts) || pts.length < 3) return null;
      if (!pts.every((p) => Array.isArray(p) && p.length >= 2 && isNum(p[0]) && isNum(p[1]))) {
        return null;
      }
      return { label, points: pts.map((p) => [p[0], p[1]]) };
    }
    const kps = item.keypoints;
    if (!Array.isArray(kps)) return null;
    const triples = kps.map((k) =>
      Array.isArray(k) && isNum(k[0]) && isNum(k[1]) && (k[2] === 1 || k[2] === 2)
        ? [k[0], k[1], k[2]]
        : [0, 0, 0],
    );
    const count = this._keypointNames(label).length || triples.length;
    while (triples.length < count) triples.push([0, 0, 0]);
    return { label, keypoints: triples.slice(0, count) };
  }

  /** A shape as an API payload item, clipped to the region; null when nothing valid is left. */
  _clipped(shape) {
    const [rx, ry, rw, rh] = this._region ?? [0, 0, Infinity, Infinity];
    if (shape.bbox) {
      const [x, y, w, h] = shape.bbox;
      const x1 = round2(Math.max(x, rx));
      const y1 = round2(Math.max(y, ry));
      const x2 = round2(Math.min(x + w, rx + rw));
      const y2 = round2(Math.min(y + h, ry + rh));
      const cw = round2(x2 - x1);
      const ch = round2(y2 - y1);
      if (cw < 1 || ch < 1) return null;
      return { label: shape.label, bbox: [x1, y1, cw, ch] };
    }
    if (shape.points) {
      const clipped = clipPolygon(shape.points, [rx, ry, rw, rh]);
      const points = [];
      for (const [x, y] of clipped) {
        const p = [round2(x), round2(y)];
        const last = points.at(-1);
        if (!last || last[0] !== p[0] || last[1] !== p[1]) points.push(p);
      }
      while (points.length > 1 && points[0][0] === points.at(-1)[0] && points[0][1] === points.at(-1)[1]) {
        points.pop();
      }
      if (points.length < 3 || Math.abs(polygonArea(points)) < 1) return null;
      return { label: shape.label, points };
    }
    const keypoints = shape.keypoints.map(([x, y, v]) =>
      v > 0 && x >= rx && x <= rx + rw && y >= ry && y <= ry + rh
        ? [round2(x), round2(y), v]
        : [0, 0, 0],
    );
    if (!keypoints.some((k) => k[2] > 0)) return null;
    return { label: shape.label, keypoints };
  }

  // ---------------------------------------------------------------- edits

  _addShape(shape) {
    const before = this._snapshot();
    this._state.shapes.push(shape);
    this._commit(before);
  }

  _deleteAt(index) {
    if (this.readOnly) return;
    if (this.kind === "mask") {
      const object = this._masks?.objects[index];
      if (!object) return;
      this._masks.remove(index);
      if (this._maskSelected === object) this._maskSelected = null;
      this._maskChanged();
      return;
    }
    const before = this._snapshot();
    if (this.kind === "classification") {
      this._state.choice = null;
      this._state.pending = false;
      delete this._state.prelabel;
      this._setCurrentLabel(null);
    } else {
      if (index < 0 || index >= this._state.shapes.length) return;
      this._state.shapes.splice(index, 1);
    }
    this._selected = -1;
    this._commit(before);
  }

  _relabelSelected(name) {
    const shape = this._state.shapes[this._selected];
    if (!shape || shape.label === name) return;
    const before = this._snapshot();
    shape.label = name;
    if (shape.keypoints) {
      const count = this._keypointNames(name).length || shape.keypoints.length;
      shape.keypoints = shape.keypoints.slice(0, count);
      while (shape.keypoints.length < count) shape.keypoints.push([0, 0, 0]);
    }
    this._commit(before);
  }

  _nudgeSelected(dx, dy) {
    const index = this._selected;
    const before = this._snapshot();
    const orig = clone(this._state.shapes[index]);
    const [mx, my] = this._clampedShift(orig, dx, dy);
    this._state.shapes[index] = translate(orig, mx, my);
    this._commit(before);
  }

  _clampToRegion(p) {
    const [rx, ry, rw, rh] = this._region;
    return { x: clamp(p.x, rx, rx + rw), y: clamp(p.y, ry, ry + rh) };
  }

  /** The shift (dx, dy) limited so that the shape stays inside the region where it fits. */
  _clampedShift(shape, dx, dy) {
    const [rx, ry, rw, rh] = this._region;
    const b = shapeBounds(shape);
    if (!b) return [dx, dy];
    const limit = (d, lo, size, rlo, rsize) =>
      size <= rsize ? clamp(d, rlo - lo, rlo + rsize - lo - size) : d;
    return [limit(dx, b[0], b[2], rx, rw), limit(dy, b[1], b[3], ry, rh)];
  }

  // ---------------------------------------------------------------- drafts

  _startDraft(img, shift) {
    if (this._label === null) return;
    if (this.kind === "polygon") {
      this._draft = { label: this._label, points: [[img.x, img.y]], lastAt: performance.now() };
    } else if (this._keypointNames(this._label).length) {
      this._draft = { label: this._label, keypoints: [] };
      this._placeKeypoint(img, shift ? 1 : 2);
    }
  }

  _draftClick(img, shift) {
    if (this.kind === "polygon") {
      const pts = this._draft.points;
      const now = performance.now();
      const first = { x: pts[0][0], y: pts[0][1] };
      const last = { x: pts.at(-1)[0], y: pts.at(-1)[1] };
      if (this._screenDistance(first, img) <= HIT_TOLERANCE + 2) {
        if (pts.length >= 3) this._closePolygon();
        return;
      }
      if (now - this._draft.lastAt < DOUBLE_CLICK_MS && this._screenDistance(last, img) <= HIT_TOLERANCE) {
        if (pts.length >= 3) this._closePolygon();
        return;
      }
      pts.push([img.x, img.y]);
      this._draft.lastAt = now;
    } else {
      this._placeKeypoint(img, shift ? 1 : 2);
    }
  }

  /** Close the open polygon; false (and still drawing) when it has fewer than 3 points. */
  _closePolygon() {
    const points = this._draft.points;
    if (points.length < 3) return false;
    const label = this._draft.label;
    this._draft = null;
    this._addShape({ label, points });
    return true;
  }

  /** Place the next keypoint (v=0: skip it); the instance is added once all are placed. */
  _placeKeypoint(img, visibility) {
    const draft = this._draft;
    draft.keypoints.push(visibility > 0 ? [img.x, img.y, visibility] : [0, 0, 0]);
    if (draft.keypoints.length >= this._keypointNames(draft.label).length) this._finishKeypoints();
  }

  /** End the keypoint instance being placed, the rest absent; dropped if no point is placed. */
  _finishKeypoints() {
    const draft = this._draft;
    this._draft = null;
    if (!draft) return;
    const count = this._keypointNames(draft.label).length;
    const keypoints = draft.keypoints.slice(0, count);
    while (keypoints.length < count) keypoints.push([0, 0, 0]);
    if (keypoints.some((k) => k[2] > 0)) this._addShape({ label: draft.label, keypoints });
    else this._refresh();
  }

  _removeLastDraftPoint() {
    const draft = this._draft;
    const list = draft.points ?? draft.keypoints;
    list.pop();
    if (!list.length) this._draft = null;
    this._refresh();
  }

  _skipKeypoint() {
    if (this.kind !== "keypoints" || this.readOnly) return false;
    if (!this._draft) {
      if (this._selected >= 0 || this._label === null) return false;
      if (!this._keypointNames(this._label).length) return false;
      this._draft = { label: this._label, keypoints: [] };
    }
    this._placeKeypoint(null, 0);
    this._refresh();
    return true;
  }

  // ---------------------------------------------------------------- geometry helpers

  _local(event) {
    const rect = this._canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  _toImage(p) {
    const v = this._view;
    return { x: (p.x - v.offsetX) / v.scale, y: (p.y - v.offsetY) / v.scale };
  }

  _toScreen(x, y) {
    const v = this._view;
    return { x: v.offsetX + x * v.scale, y: v.offsetY + y * v.scale };
  }

  _screenDistance(a, b) {
    return Math.hypot(a.x - b.x, a.y - b.y) * this._view.scale;
  }

  _minScale() {
    return this._fitScale / 4;
  }

  _maxScale() {
    return Math.max(32, this._fitScale * 8);
  }

  _zoomAt(p, factor) {
    const v = this._view;
    const scale = clamp(v.scale * factor, this._minScale(), this._maxScale());
    const img = this._toImage(p);
    this._view = { scale, offsetX: p.x - img.x * scale, offsetY: p.y - img.y * scale };
    this._fitted = false;
    this._requestDraw();
  }

  _panBy(dx, dy) {
    this._view.offsetX += dx;
    this._view.offsetY += dy;
    this._fitted = false;
    this._requestDraw();
  }

  /** The handle of the selected shape under `img`, or null. */
  _hitHandle(img) {
    const shape = this._state.shapes[this._selected];
    if (!shape) return null;
    const tol = HIT_TOLERANCE / this._view.scale;
    if (shape.bbox) {
      const [x, y, w, h] = shape.bbox;
      const reach = (HANDLE_SIZE / 2 + 3) / this._view.scale;
      for (let i = 0; i < HANDLES.length; i++) {
        const hx = x + HANDLES[i].fx * w;
        const hy = y + HANDLES[i].fy * h;
        if (Math.abs(img.x - hx) <= reach && Math.abs(img.y - hy) <= reach) return { handle: i };
      }
      return null;
    }
    const pts = shape.points ?? shape.keypoints;
    let best = null;
    let bestDist = tol;
    pts.forEach((p, i) => {
      if (shape.keypoints && p[2] === 0) return;
      const d = Math.hypot(img.x - p[0], img.y - p[1]);
      if (d <= bestDist) {
        best = { vertex: i };
        bestDist = d;
      }
    });
    return best;
  }

  /** The index of the shape under `img` (the selected one first, then the smallest), or -1. */
  _hitShape(img) {
    const tol = HIT_TOLERANCE / this._view.scale;
    const hits = (shape) => {
      if (shape.bbox) {
        const [x, y, w, h] = shape.bbox;
        return img.x >= x - tol && img.x <= x + w + tol && img.y >= y - tol && img.y <= y + h + tol;
      }
      if (shape.points) {
        return pointInPolygon(img, shape.points) || distanceToPolyline(img, shape.points, true) <= tol;
      }
      return shape.keypoints.some((k) => k[2] > 0 && Math.hypot(img.x - k[0], img.y - k[1]) <= tol);
    };
    const selected = this._state.shapes[this._selected];
    if (selected && hits(selected)) return this._selected;
    let best = -1;
    let bestArea = Infinity;
    this._state.shapes.forEach((shape, i) => {
      if (!hits(shape)) return;
      const b = shapeBounds(shape);
      const area = shape.keypoints ? 0 : b ? b[2] * b[3] : Infinity;
      if (area <= bestArea) {
        best = i;
        bestArea = area;
      }
    });
    return best;
  }

  // ---------------------------------------------------------------- pointer input

  _onPointerDown(event) {
    if (!this._region) return;
    this.container.focus({ preventScroll: true });
    const p = this._local(event);
    if (event.pointerType === "touch") {
      this._pointers.set(event.pointerId, p);
      if (this._pointers.size === 2) {
        this._startPinch();
        return;
      }
    }
    if (this._drag) return;
    event.preventDefault();
    this._canvas.setPointerCapture(event.pointerId);
    const img = this._toImage(p);
    const press = {
      pointerId: event.pointerId,
      start: p,
      startImg: img,
      shift: event.shiftKey,
      moved: false,
      view0: { ...this._view },
    };
    if (event.button === 1 || event.button === 2 || this._spaceHeld) {
      this._drag = { ...press, type: "pan" };
    } else if (event.button === 0) {
      this._drag = { ...press, ...this._pressAction(img, event.shiftKey) };
    }
    this._updateCursor();
    this._refresh();
  }

  /** What a left press at `img` starts; a drag of the "click-*" kinds pans the view. */
  _pressAction(img, shift) {
    if (this.kind === "mask") return this.readOnly ? { type: "click-mask-select" } : this._maskPress(img, shift);
    if (this.readOnly) return { type: "click-select", hit: this._hitShape(img) };
    if (this.kind === "classification") return { type: "click-none" };
    if (this._draft) return { type: "click-draft" };
    const handle = this._hitHandle(img);
    if (handle) {
      const index = this._selected;
      return { type: "edit", index, handle, before: this._snapshot(), orig: clone(this._state.shapes[index]) };
    }
    const hit = this._hitShape(img);
    if (hit >= 0) {
      this._selected = hit;
      const grab = { index: hit, before: this._snapshot(), orig: clone(this._state.shapes[hit]) };
      // An instance is hit by one of its points: that point is what a drag moves.
      const point = this.kind === "keypoints" ? this._hitHandle(img) : null;
      return point ? { type: "edit", handle: point, ...grab } : { type: "move", ...grab };
    }
    if (this.kind === "bbox") {
      this._selected = -1;
      return { type: "draw" };
    }
    return { type: "click-empty" };
  }

  _onPointerMove(event) {
    const p = this._local(event);
    if (this._pointers.has(event.pointerId)) this._pointers.set(event.pointerId, p);
    if (this._pinch) {
      this._updatePinch();
      return;
    }
    this._hover = p;
    const drag = this._drag;
    if (!drag || drag.pointerId !== event.pointerId) {
      this._updateCursor();
      this._requestDraw();
      return;
    }
    if (drag.type === "paint" || drag.type === "lasso") {
      this._maskMove(drag, event);
      return;
    }
    if (!drag.moved && Math.hypot(p.x - drag.start.x, p.y - drag.start.y) < DRAG_THRESHOLD) return;
    drag.moved = true;
    const img = this._toImage(p);
    if (drag.type === "draw") {
      const a = this._clampToRegion(drag.startImg);
      const b = this._clampToRegion(img);
      drag.box = [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y)];
    } else if (drag.type === "move") {
      const [dx, dy] = this._clampedShift(drag.orig, img.x - drag.startImg.x, img.y - drag.startImg.y);
      this._state.shapes[drag.index] = translate(drag.orig, dx, dy);
    } else if (drag.type === "edit") {
      this._state.shapes[drag.index] = this._edited(drag, this._clampToRegion(img));
    } else {
      this._view.offsetX = drag.view0.offsetX + p.x - drag.start.x;
      this._view.offsetY = drag.view0.offsetY + p.y - drag.start.y;
      this._fitted = false;
    }
    this._updateCursor();
    this._requestDraw();
  }

  /** A brush stroke goes on (through every event the browser merged into this one); a lasso
   * takes a point whenever the pointer moved a screen pixel or more. */
  _maskMove(drag, event) {
    const rect = this._canvas.getBoundingClientRect();
    const events = event.getCoalescedEvents?.() ?? [];
    for (const e of events.length ? events : [event]) {
      const img = this._toImage({ x: e.clientX - rect.left, y: e.clientY - rect.top });
      if (drag.type === "paint") {
        this._masks.segment(drag.stroke, drag.last.x, drag.last.y, img.x, img.y, this._brushSize / 2);
        drag.last = img;
      } else {
        const [lx, ly] = drag.points.at(-1);
        if (Math.hypot(img.x - lx, img.y - ly) * this._view.scale >= 1) drag.points.push([img.x, img.y]);
      }
    }
    drag.moved = true;
    this._requestDraw();
  }

  /** The shape of an "edit" drag with its handle (box) or vertex (polygon, keypoint) at `img`. */
  _edited(drag, img) {
    const shape = clone(drag.orig);
    if (shape.bbox) {
      const [x, y, w, h] = shape.bbox;
      const { fx, fy } = HANDLES[drag.handle.handle];
      let [x1, y1, x2, y2] = [x, y, x + w, y + h];
      if (fx === 0) x1 = img.x;
      if (fx === 1) x2 = img.x;
      if (fy === 0) y1 = img.y;
      if (fy === 1) y2 = img.y;
      shape.bbox = [Math.min(x1, x2), Math.min(y1, y2), Math.abs(x2 - x1), Math.abs(y2 - y1)];
    } else if (shape.points) {
      shape.points[drag.handle.vertex] = [img.x, img.y];
    } else {
      const k = shape.keypoints[drag.handle.vertex];
      shape.keypoints[drag.handle.vertex] = [img.x, img.y, k[2]];
    }
    return shape;
  }

  _onPointerUp(event) {
    this._pointers.delete(event.pointerId);
    if (this._pinch) {
      if (this._pointers.size < 2) this._pinch = null;
      return;
    }
    const drag = this._drag;
    if (!drag || drag.pointerId !== event.pointerId) return;
    this._drag = null;
    if (drag.type === "paint" || drag.type === "lasso") this._finishMaskDrag(drag);
    else if (drag.moved) this._finishDrag(drag);
    else this._click(drag);
    this._updateCursor();
    this._refresh();
  }

  _onPointerCancel(event) {
    this._pointers.delete(event.pointerId);
    if (this._pinch && this._pointers.size < 2) this._pinch = null;
    if (this._drag?.pointerId === event.pointerId) this._cancelDrag();
  }

  _onPointerLeave() {
    this._hover = null;
    this._requestDraw();
  }

  _click(drag) {
    const img = drag.startImg;
    switch (drag.type) {
      case "click-select":
        this._selected = drag.hit;
        break;
      case "click-fill":
        this._floodFill(img);
        break;
      case "click-mask-select":
        this.selectMask(this._masks ? this._masks.objectAt(img.x, img.y) : -1);
        break;
      case "click-draft":
        this._draftClick(this._clampToRegion(img), drag.shift);
        break;
      case "click-empty":
        if (this._selected >= 0) this._selected = -1;
        else this._startDraft(this._clampToRegion(img), drag.shift);
        break;
      default:
        // A click on a shape selected it on the press; a click on empty space deselected.
        break;
    }
  }

  _finishDrag(drag) {
    if (drag.type === "draw") {
      const box = drag.box;
      if (box && box[2] >= 1 && box[3] >= 1 && this._label !== null) {
        this._addShape({ label: this._label, bbox: box });
      }
    } else if (drag.type === "move" || drag.type === "edit") {
      this._commit(drag.before);
    }
  }

  /** Abandon the press in progress, putting back the shape it was changing. */
  _cancelDrag() {
    const drag = this._drag;
    if (!drag) return false;
    this._drag = null;
    if (drag.before) this._state = drag.before;
    if (drag.type === "paint") this._masks.cancel(drag.stroke);
    if (this._canvas.hasPointerCapture(drag.pointerId)) {
      this._canvas.releasePointerCapture(drag.pointerId);
    }
    this._refresh();
    return true;
  }

  _startPinch() {
    this._cancelDrag();
    const [a, b] = [...this._pointers.values()];
    this._pinch = {
      distance: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)),
      center: this._toImage({ x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 }),
      scale: this._view.scale,
    };
  }

  _updatePinch() {
    const [a, b] = [...this._pointers.values()];
    const pinch = this._pinch;
    const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    const factor = Math.hypot(a.x - b.x, a.y - b.y) / pinch.distance;
    const scale = clamp(pinch.scale * factor, this._minScale(), this._maxScale());
    this._view = {
      scale,
      offsetX: mid.x - pinch.center.x * scale,
      offsetY: mid.y - pinch.center.y * scale,
    };
    this._fitted = false;
    this._requestDraw();
  }

  _onWheel(event) {
    event.preventDefault();
    const unit = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? this._cssHeight : 1;
    this._zoomAt(this._local(event), Math.exp(-event.deltaY * unit * WHEEL_ZOOM_RATE));
  }

  _updateCursor() {
    let cursor = "default";
    const drag = this._drag;
    if (this._spaceHeld || drag?.type === "pan" || (drag?.moved && drag.type.startsWith("click"))) {
      cursor = drag ? "grabbing" : "grab";
    } else if (drag?.type === "edit" && drag.handle.handle !== undefined) {
      cursor = HANDLES[drag.handle.handle].cursor;
    } else if (drag?.type === "move" || drag?.type === "edit") {
      cursor = "move";
    } else if (this._hover && this._region && !this.readOnly && this.kind !== "classification") {
      const img = this._toImage(this._hover);
      const handle = this._draft ? null : this._hitHandle(img);
      if (handle) cursor = handle.handle !== undefined ? HANDLES[handle.handle].cursor : "move";
      else if (!this._draft && this._hitShape(img) >= 0) cursor = "pointer";
      else cursor = "crosshair";
    } else if (this.readOnly && this._hover && this._hitShape(this._toImage(this._hover)) >= 0) {
      cursor = "pointer";
    }
    this._canvas.style.cursor = cursor;
  }

  // ---------------------------------------------------------------- keyboard input

  _onKeyDown(event) {
    // Keys typed into anything but the annotator itself (the object list's buttons, inputs a
    // page puts inside the container) are left alone. Enter always reaches the page.
    if (event.target !== this.container && event.target !== this._canvas) return;
    if (event.isComposing || event.key === "Enter" || event.altKey) return;
    if (this._handleKey(event)) event.preventDefault();
  }

  _handleKey(event) {
    const key = event.key;
    if (event.ctrlKey || event.metaKey) {
      const k = key.toLowerCase();
      if (this.readOnly || (k !== "z" && k !== "y")) return false;
      if (k === "z" && !event.shiftKey) this.undo();
      else this.redo();
      return true;
    }
    if (key === " ") {
      this._spaceHeld = true;
      this._updateCursor();
      return true;
    }
    if (key === "+" || key === "=" || key === "-" || key === "_") {
      const factor = key === "+" || key === "=" ? KEY_ZOOM_FACTOR : 1 / KEY_ZOOM_FACTOR;
      this._zoomAt({ x: this._cssWidth / 2, y: this._cssHeight / 2 }, factor);
      return true;
    }
    if (key === "0") {
      this.fit();
      return true;
    }
    if (key.startsWith("Arrow")) return this._arrowKey(event);
    if (key === "Escape") return this._escape();
    if (this.readOnly) return false;
    if (this.kind === "mask" && this._maskKey(event)) return true;
    if (key === "Delete" || key === "Backspace") {
      if (this._draft) this._removeLastDraftPoint();
      else if (this._selected >= 0 || this._maskSelected) this.deleteSelected();
      else return false;
      return true;
    }
    if ((key === "c" || key === "C") && this.kind === "polygon" && this._draft) {
      this._closePolygon();
      this._refresh();
      return true;
    }
    if (key === "n" || key === "N") return this._skipKeypoint();
    if (key === "a" || key === "A") {
      if (!this.pendingPrelabels) return false;
      this.acceptPrelabels();
      return true;
    }
    if (/^[1-9]$/.test(key)) {
      const label = this._labels[Number(key) - 1];
      if (!label) return false;
      if (this._selected >= 0 && !this._draft) this._relabelSelected(label.name);
      else this.setLabel(label.name);
      return true;
    }
    return false;
  }

  /** B, E, L, F choose a tool; [ and ] size the brush; N starts a new object. */
  _maskKey(event) {
    const key = event.key;
    const tool = MASK_TOOLS.find((t) => t.key === key.toLowerCase());
    if (tool) {
      this.setTool(tool.name);
      return true;
    }
    if (key === "[" || key === "]") {
      this._stepBrush(key === "]" ? 1 : -1);
      return true;
    }
    if (key === "n" || key === "N") {
      this.newObject();
      return true;
    }
    return false;
  }

  _arrowKey(event) {
    const dir = {
      ArrowLeft: [-1, 0],
      ArrowRight: [1, 0],
      ArrowUp: [0, -1],
      ArrowDown: [0, 1],
    }[event.key];
    if (!dir || !this._region) return false;
    if (this._selected >= 0 && !this.readOnly && !this._drag) {
      const step = event.shiftKey ? 10 : 1; // image pixels
      this._nudgeSelected(dir[0] * step, dir[1] * step);
    } else {
      const step = event.shiftKey ? KEY_PAN_STEP * 5 : KEY_PAN_STEP;
      // The view moves the way the arrow points: the image slides the other way.
      this._panBy(-dir[0] * step, -dir[1] * step);
    }
    return true;
  }

  /** Escape: cancel a drag, drop an open polygon, end a keypoint instance, or deselect. */
  _escape() {
    if (this._cancelDrag()) return true;
    if (this._draft) {
      if (this.kind === "keypoints") this._finishKeypoints();
      else this._draft = null;
      this._refresh();
      return true;
    }
    if (this._selected >= 0) {
      this._selected = -1;
      this._refresh();
      return true;
    }
    if (this._maskSelected && this.maskMode === "instance") {
      this.newObject();
      return true;
    }
    return false;
  }

  _onKeyUp(event) {
    if (event.key === " " && this._spaceHeld) {
      this._spaceHeld = false;
      this._updateCursor();
    }
  }

  _onFocusOut(event) {
    if (this.container.contains(event.relatedTarget)) return;
    this._spaceHeld = false;
    this._updateCursor();
  }

  _onListClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || !this._listEl.contains(button)) return;
    const index = Number(button.closest("[data-index]").dataset.index);
    if (button.dataset.action === "delete") {
      const items = this._listEl.querySelectorAll(".annotator-item-delete");
      const position = [...items].indexOf(button);
      this._deleteAt(index);
      // Keep keyboard users in the list: focus the next Delete button, or the canvas.
      const rest = this._listEl.querySelectorAll(".annotator-item-delete");
      const next = rest[Math.min(position, rest.length - 1)];
      (next ?? this.container).focus({ preventScroll: true });
    } else if (this.kind === "mask") {
      this.selectMask(this.selectedMask === index ? -1 : index);
      if (event.detail > 0) this.container.focus({ preventScroll: true });
    } else if (this.kind !== "classification") {
      this._selected = this._selected === index ? -1 : index;
      this._refresh();
    }
  }

  /** Masks: a label chosen in an object's drop-down relabels it. */
  _onListChange(event) {
    const select = event.target.closest("select[data-action='relabel']");
    if (!select || !this._listEl.contains(select)) return;
    this.relabelMask(Number(select.closest("[data-index]").dataset.index), select.value);
  }

  // ---------------------------------------------------------------- rendering

  /** Bring the hint, the list, the accessible description and the picture up to date. */
  _refresh() {
    if (this._destroyed) return;
    this._hintEl.textContent = this._hintText();
    this._renderList();
    this._canvas.setAttribute("aria-label", this._description());
    if (this._toolbar) this._renderTools();
    this._requestDraw();
  }

  _renderTools() {
    MASK_TOOLS.forEach((t, i) => this._toolButtons[i].setAttribute("aria-pressed", String(t.name === this._tool)));
    const what = this._tool === "eraser" ? "Eraser" : "Brush";
    this._sizeEl.textContent = `${what} ${this._brushSize} px`;
    this._newButton.disabled = this.maskMode === "semantic";
  }

  _hintText() {
    if (this._loadState === "error") return "The image could not be loaded.";
    if (this.kind === "mask" && this._maskSkipped) {
      return `${plural(this._maskSkipped, "mask")} could not be shown: not masks of this ${this._size.width}×${this._size.height} image.`;
    }
    if (this.readOnly) return "Review: wheel to zoom, drag to pan, click a shape to select it.";
    if (this.kind === "mask") return this._maskHint();
    if (this.kind === "classification") {
      const keys = this._labels.length > 1 ? `1–${Math.min(9, this._labels.length)}` : "1";
      return this._state.choice === null
        ? `Press ${keys} (or pick a label) to classify the image.`
        : `Answer: ${this._state.choice}. Press ${keys} to change it.`;
    }
    const label = this._label ?? "";
    const selected = this._state.shapes[this._selected];
    if (selected && !this._draft) {
      const what = { bbox: "box", polygon: "polygon", keypoints: "instance" }[this.kind];
      const edit = {
        bbox: "drag to move, drag a handle to resize",
        polygon: "drag a point to reshape, drag inside to move",
        keypoints: "drag a point to move it",
      }[this.kind];
      return `${selected.label} ${what} selected: ${edit}, 1–9 to relabel, Delete to remove, Esc to deselect.`;
    }
    if (this.kind === "bbox") return `Drag to draw a ${label} box.`;
    if (this.kind === "polygon") {
      if (!this._draft) return `Click to start a ${label} polygon.`;
      const n = this._draft.points.length;
      const close = n >= 3 ? "click the first point, double-click or press C to close; " : "";
      return `Click to add a point (${plural(n, "point")} so far); ${close}Backspace removes the last point, Esc cancels.`;
    }
    const names = this._keypointNames(this._draft?.label ?? label);
    if (!names.length) return `${label} has no keypoints to place.`;
    const i = this._draft ? this._draft.keypoints.length : 0;
    const end = this._draft ? ", Esc to finish" : "";
    return `Click ${names[i]} (${i + 1} of ${names.length}), Shift+click if occluded, N to skip${end}.`;
  }

  _maskHint() {
    const label = this._label ?? "";
    const target = this._maskSelected
      ? `${this._maskSelected.label} object ${this._masks.indexOf(this._maskSelected) + 1}`
      : `a new ${label} object`;
    const size = `${this._brushSize} px ([ and ] to resize)`;
    switch (this._tool) {
      case "eraser":
        return `Eraser ${size}: drag to erase from ${this._maskSelected ? target : "every object"}.`;
      case "lasso":
        return `Lasso: draw a closed outline; its inside is painted into ${target} (Shift: erased).`;
      case "fill":
        return `Flood fill: click to paint the connected area of the clicked colour into ${target}.`;
      default:
        return `Brush ${size}: drag to paint ${target}. E eraser, L lasso, F fill, N new object.`;
    }
  }

  _description() {
    if (!this._size) return "Image loading";
    const { width, height } = this._size;
    const [rx, ry, rw, rh] = this._region;
    let text = `Image ${width}×${height}`;
    if (rx !== 0 || ry !== 0 || rw !== width || rh !== height) {
      text += `, task region ${Math.round(rw)}×${Math.round(rh)} at (${Math.round(rx)}, ${Math.round(ry)})`;
    }
    if (this.kind === "classification") {
      return `${text}, ${this._state.choice === null ? "no class chosen" : `class ${this._state.choice}`}`;
    }
    if (this.kind === "mask") return `${text}, ${plural(this._masks?.objects.length ?? 0, "mask")}`;
    return `${text}, ${plural(this._state.shapes.length, "object")}`;
  }

  /** The list's line for a shape, with the geometry that will be submitted (clipped). */
  _itemText(raw, i) {
    const n = `${i + 1}. ${raw.label} — `;
    const shape = this._clipped(raw);
    if (!shape) {
      const what = { bbox: "box", polygon: "polygon", keypoints: "keypoints" }[this.kind];
      return `${n}${what} outside the task region or too small (not submitted)`;
    }
    if (shape.bbox) {
      const [x, y, w, h] = shape.bbox.map(Math.round);
      return `${n}box ${w}×${h} at (${x}, ${y})`;
    }
    if (shape.points) {
      const b = shapeBounds(shape).map(Math.round);
      return `${n}polygon, ${plural(shape.points.length, "point")}, ${b[2]}×${b[3]} at (${b[0]}, ${b[1]})`;
    }
    const placed = shape.keypoints.filter((k) => k[2] > 0).length;
    return `${n}${placed} of ${plural(shape.keypoints.length, "keypoint")}`;
  }

  _renderMaskList() {
    const objects = this._masks?.objects ?? [];
    const items = objects.map((object, i) => {
      const li = document.createElement("li");
      li.className = "annotator-item";
      li.dataset.index = String(i);
      const selected = object === this._maskSelected;
      if (selected) li.classList.add("annotator-item--selected");
      const text = `${i + 1}. ${object.label} — mask, ${object.area.toLocaleString("en")} px`;
      const select = document.createElement("button");
      select.type = "button";
      select.className = "annotator-item-select";
      select.dataset.action = "select";
      select.setAttribute("aria-pressed", String(selected));
      const swatch = document.createElement("span");
      swatch.className = "annotator-swatch";
      swatch.style.background = this._colorOf(object.label);
      select.append(swatch, document.createTextNode(text));
      li.append(select);
      if (!this.readOnly) {
        const relabel = document.createElement("select");
        relabel.className = "annotator-item-label";
        relabel.dataset.action = "relabel";
        relabel.setAttribute("aria-label", `Label of ${text}`);
        for (const label of this._labels) relabel.append(new Option(label.name, label.name, false, label.name === object.label));
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "annotator-item-delete";
        remove.dataset.action = "delete";
        remove.textContent = "Delete";
        remove.setAttribute("aria-label", `Delete ${text}`);
        li.append(relabel, remove);
      }
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "annotator-empty";
      li.textContent = "No masks yet";
      items.push(li);
    }
    this._listEl.replaceChildren(...items);
  }

  _renderList() {
    if (this.kind === "mask") {
      this._renderMaskList();
      return;
    }
    const items = [];
    const entries = this.kind === "classification"
      ? (this._state.choice === null ? [] : [{ text: `1. ${this._state.choice} — class${provenance(this._state)}`, label: this._state.choice }])
      : this._state.shapes.map((shape, i) => ({ text: this._itemText(shape, i) + provenance(shape), label: shape.label }));
    entries.forEach((entry, i) => {
      const li = document.createElement("li");
      li.className = "annotator-item";
      li.dataset.index = String(i);
      const selected = i === this._selected;
      if (selected) li.classList.add("annotator-item--selected");
      const select = document.createElement("button");
      select.type = "button";
      select.className = "annotator-item-select";
      select.dataset.action = "select";
      select.setAttribute("aria-pressed", String(selected));
      const swatch = document.createElement("span");
      swatch.className = "annotator-swatch";
      swatch.style.background = this._colorOf(entry.label);
      select.append(swatch, document.createTextNode(entry.text));
      li.append(select);
      if (!this.readOnly) {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "annotator-item-delete";
        remove.dataset.action = "delete";
        remove.textContent = "Delete";
        remove.setAttribute("aria-label", `Delete ${entry.text}`);
        li.append(remove);
      }
      items.push(li);
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "annotator-empty";
      li.textContent = this.kind === "classification" ? "No class chosen yet" : "No objects yet";
      items.push(li);
    }
    this._listEl.replaceChildren(...items);
  }

  _resize() {
    if (this._destroyed) return;
    const rect = this._stage.getBoundingClientRect();
    const width = Math.max(1, Math.round(rect.width));
    const height = Math.max(1, Math.round(rect.height));
    const dpr = window.devicePixelRatio || 1;
    if (width === this._cssWidth && height === this._cssHeight && dpr === this._dpr) return;
    const center = this._cssWidth ? this._toImage({ x: this._cssWidth / 2, y: this._cssHeight / 2 }) : null;
    this._cssWidth = width;
    this._cssHeight = height;
    this._dpr = dpr;
    this._canvas.width = Math.round(width * dpr);
    this._canvas.height = Math.round(height * dpr);
    if (this._fitted || !center) {
      this.fit();
    } else {
      // The person zoomed in: keep what they were looking at in the middle.
      this._view.offsetX = width / 2 - center.x * this._view.scale;
      this._view.offsetY = height / 2 - center.y * this._view.scale;
    }
    this._draw();
  }

  _requestDraw() {
    if (this._raf || this._destroyed) return;
    this._raf = requestAnimationFrame(() => this._draw());
  }

  _draw() {
    if (this._raf) cancelAnimationFrame(this._raf);
    this._raf = 0;
    if (this._destroyed) return;
    const ctx = this._ctx;
    const w = this._cssWidth;
    const h = this._cssHeight;
    ctx.setTransform(this._dpr, 0, 0, this._dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#262626";
    ctx.fillRect(0, 0, w, h);
    if (this._size) {
      this._drawImageAndRegion(ctx);
      if (this._masks) this._drawMasks(ctx);
      this._state.shapes.forEach((shape, i) => {
        // The model's pre-labels not yet confirmed: dashed, unfilled, tagged "model".
        const model = shape.pending ? { dashed: true, fill: false, tag: `${shape.label} · model${percent(shape.score)}` } : {};
        this._drawShape(ctx, shape, this._colorOf(shape.label), { selected: i === this._selected, ...model });
      });
      this._drawInProgress(ctx);
      for (const overlay of this._overlays.values()) this._drawOverlay(ctx, overlay);
      this._drawCrosshair(ctx);
      this._drawLegend(ctx);
    }
    if (this._loadState !== "ready") {
      const text = this._loadState === "error" ? "The image could not be loaded" : "Loading image…";
      drawTag(ctx, text, w / 2 - ctx.measureText(text).width / 2, h / 2, "#000000");
    }
  }

  _drawImageAndRegion(ctx) {
    const { width, height } = this._size;
    const { scale, offsetX, offsetY } = this._view;
    if (this._image) {
      ctx.save();
      ctx.imageSmoothingEnabled = scale < 3;
      ctx.drawImage(this._image, offsetX, offsetY, width * scale, height * scale);
      ctx.restore();
    }
    const [rx, ry, rw, rh] = this._region;
    const r = this._toScreen(rx, ry);
    ctx.beginPath();
    ctx.rect(offsetX, offsetY, width * scale, height * scale);
    ctx.rect(r.x, r.y, rw * scale, rh * scale);
    ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
    ctx.fill("evenodd");
    ctx.lineWidth = 1;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.9)";
    ctx.strokeRect(r.x - 0.5, r.y - 0.5, rw * scale + 1, rh * scale + 1);
  }

  /** The visible part of `source` (a canvas of the image's size) over the image. */
  _drawImageLayer(ctx, source, alpha) {
    const { width, height } = this._size;
    const { scale, offsetX, offsetY } = this._view;
    const x0 = clamp(Math.floor(-offsetX / scale), 0, width);
    const y0 = clamp(Math.floor(-offsetY / scale), 0, height);
    const x1 = clamp(Math.ceil((this._cssWidth - offsetX) / scale), 0, width);
    const y1 = clamp(Math.ceil((this._cssHeight - offsetY) / scale), 0, height);
    if (x1 <= x0 || y1 <= y0 || alpha <= 0) return;
    ctx.save();
    ctx.globalAlpha = alpha;
    // Nearest-neighbour: the pixels are what is submitted, and no mipmap of a changing
    // full-size layer is built each frame.
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(source, x0, y0, x1 - x0, y1 - y0, offsetX + x0 * scale, offsetY + y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
    ctx.restore();
  }

  _drawMasks(ctx) {
    this._drawImageLayer(ctx, this._masks.canvas, this._opacity);
    const selected = this._maskSelected;
    if (!selected?.bounds || this._masks.indexOf(selected) < 0) return;
    const [x0, y0, x1, y1] = selected.bounds;
    const a = this._toScreen(x0, y0);
    const b = this._toScreen(x1, y1);
    ctx.save();
    ctx.setLineDash([5, 4]);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = this._colorOf(selected.label);
    ctx.strokeRect(a.x - 0.5, a.y - 0.5, b.x - a.x + 1, b.y - a.y + 1);
    ctx.restore();
    drawTag(ctx, selected.label, a.x, a.y - 4, this._colorOf(selected.label));
  }

  /** The brush's outline under the pointer, or the lasso being drawn. */
  _drawMaskTool(ctx) {
    const drag = this._drag;
    if (drag?.type === "lasso") {
      const pts = drag.points.map(([x, y]) => this._toScreen(x, y));
      ctx.save();
      ctx.strokeStyle = drag.erase ? "#ffffff" : this._colorOf(this._label);
      ctx.lineWidth = 2;
      ctx.beginPath();
      tracePath(ctx, pts, false);
      ctx.stroke();
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      tracePath(ctx, [pts.at(-1), pts[0]], false);
      ctx.stroke();
      ctx.restore();
      return;
    }
    if (!this._hover || this._spaceHeld || (this._tool !== "brush" && this._tool !== "eraser")) return;
    if (drag && drag.type !== "paint") return;
    const r = Math.max(1, (this._brushSize / 2) * this._view.scale);
    ctx.save();
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#000000";
    ctx.beginPath();
    ctx.arc(this._hover.x, this._hover.y, r + 1, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.strokeStyle = this._tool === "eraser" ? "#ffffff" : this._colorOf(this._label);
    ctx.setLineDash(this._tool === "eraser" ? [3, 3] : []);
    ctx.beginPath();
    ctx.arc(this._hover.x, this._hover.y, r, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.restore();
  }

  _drawShape(ctx, shape, color, { selected = false, dashed = false, fill = true, tagBelow = false, tag = null } = {}) {
    ctx.save();
    ctx.setLineDash(dashed ? [6, 4] : []);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = selected ? 3 : 2;
    let tagAt = null;
    if (shape.bbox) {
      const [x, y, w, h] = shape.bbox;
      const a = this._toScreen(x, y);
      const sw = w * this._view.scale;
      const sh = h * this._view.scale;
      this._fillAndStroke(ctx, () => ctx.rect(a.x, a.y, sw, sh), fill, selected);
      if (selected) {
        for (const handle of HANDLES) drawHandle(ctx, a.x + handle.fx * sw, a.y + handle.fy * sh);
      }
      tagAt = a;
    } else if (shape.points) {
      const pts = shape.points.map(([x, y]) => this._toScreen(x, y));
      this._fillAndStroke(ctx, () => tracePath(ctx, pts, true), fill, selected);
      if (selected) for (const p of pts) drawHandle(ctx, p.x, p.y);
      tagAt = { x: Math.min(...pts.map((p) => p.x)), y: Math.min(...pts.map((p) => p.y)) };
    } else if (this._drawKeypoints(ctx, shape.keypoints, color, selected)) {
      const [x, y] = shapeBounds(shape);
      tagAt = this._toScreen(x, y);
      tagAt.y -= 12; // above the points' numbers
    }
    ctx.restore();
    if (!tagAt) return;
    if (tagBelow) {
      // Overlays put their label under the shape, clear of the shape's own label above it.
      const [x, y, , h] = shapeBounds(shape);
      const at = this._toScreen(x, y + h);
      drawTag(ctx, shape.label, at.x, at.y + 20, color);
    } else {
      drawTag(ctx, tag ?? shape.label, tagAt.x, tagAt.y - 4, color);
    }
  }

  _fillAndStroke(ctx, trace, fill, selected) {
    ctx.beginPath();
    trace();
    if (fill) {
      ctx.globalAlpha = selected ? 0.35 : 0.2;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    if (selected) {
      const { strokeStyle, lineWidth } = ctx;
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = lineWidth + 3;
      ctx.stroke();
      ctx.strokeStyle = strokeStyle;
      ctx.lineWidth = lineWidth;
    }
    ctx.stroke();
  }

  /** Dots numbered in the label's order, joined in that order; occluded points hollow.
   * False when no point is placed. */
  _drawKeypoints(ctx, keypoints, color, selected) {
    const placed = keypoints
      .map(([x, y, v], i) => ({ ...this._toScreen(x, y), v, i }))
      .filter((p) => p.v > 0);
    if (!placed.length) return false;
    ctx.globalAlpha = 0.8;
    ctx.lineWidth = selected ? 2.5 : 1.5;
    ctx.beginPath();
    tracePath(ctx, placed, false);
    ctx.stroke();
    ctx.globalAlpha = 1;
    ctx.setLineDash([]);
    ctx.font = "10px system-ui, sans-serif";
    for (const p of placed) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, selected ? 5 : 4, 0, 2 * Math.PI);
      ctx.fillStyle = p.v === 2 ? color : "#ffffff";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = p.v === 2 ? "#ffffff" : color;
      ctx.stroke();
      ctx.fillStyle = "#ffffff";
      ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
      ctx.lineWidth = 3;
      ctx.strokeText(String(p.i + 1), p.x + 6, p.y - 5);
      ctx.fillText(String(p.i + 1), p.x + 6, p.y - 5);
    }
    return true;
  }

  /** The box being dragged out, or the open polygon or keypoint instance. */
  _drawInProgress(ctx) {
    if (this.kind === "mask") {
      if (!this.readOnly && this._masks) this._drawMaskTool(ctx);
      return;
    }
    const drag = this._drag;
    if (drag?.type === "draw" && drag.box) {
      this._drawShape(ctx, { label: this._label, bbox: drag.box }, this._colorOf(this._label));
    }
    const draft = this._draft;
    if (!draft) return;
    const color = this._colorOf(draft.label);
    if (draft.keypoints) {
      this._drawKeypoints(ctx, draft.keypoints, color, true);
      return;
    }
    const pts = draft.points.map(([x, y]) => this._toScreen(x, y));
    ctx.save();
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    tracePath(ctx, pts, false);
    if (this._hover) ctx.lineTo(this._hover.x, this._hover.y);
    ctx.stroke();
    const nearFirst = this._hover && pts.length >= 3
      && Math.hypot(this._hover.x - pts[0].x, this._hover.y - pts[0].y) <= HIT_TOLERANCE + 2;
    pts.forEach((p, i) => drawHandle(ctx, p.x, p.y, i === 0 ? (nearFirst ? 7 : 5) : 3.5, i === 0 && nearFirst ? color : "#ffffff"));
    ctx.restore();
  }

  _drawOverlay(ctx, overlay) {
    if (overlay.masks) {
      overlay.layer ??= maskLayer(overlay.masks, this._size.width, this._size.height, overlay.color);
      this._drawImageLayer(ctx, overlay.layer, 0.45);
      return;
    }
    for (const shape of overlay.shapes) {
      this._drawShape(ctx, shape, overlay.color, { dashed: overlay.dashed, fill: false, tagBelow: true });
    }
  }

  _drawCrosshair(ctx) {
    const drawing = !this._drag || this._drag.type === "draw";
    if (this.kind !== "bbox" || this.readOnly || !this._hover || !drawing || this._spaceHeld) return;
    if (!this._drag && this._hitShape(this._toImage(this._hover)) >= 0) return;
    ctx.save();
    ctx.strokeStyle = "rgba(255, 255, 255, 0.7)";
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(0, Math.round(this._hover.y) + 0.5);
    ctx.lineTo(this._cssWidth, Math.round(this._hover.y) + 0.5);
    ctx.moveTo(Math.round(this._hover.x) + 0.5, 0);
    ctx.lineTo(Math.round(this._hover.x) + 0.5, this._cssHeight);
    ctx.stroke();
    ctx.restore();
  }

  /** The chosen class, and the title of every overlay, in the canvas's top-left corner. */
  _drawLegend(ctx) {
    let y = 20;
    if (this.kind === "classification" && this._state.choice !== null) {
      const model = this._state.pending ? ` · model${percent(this._state.score)} (A accepts)` : "";
      drawTag(ctx, this._state.choice + model, 10, y, this._colorOf(this._state.choice));
      y += 22;
    }
    const pending = this.kind === "classification" || this.kind === "mask" ? 0 : this.pendingPrelabels;
    if (pending) {
      drawTag(ctx, `Dashed: the model's ${plural(pending, "pre-label")}, unconfirmed (A accepts all)`, 10, y, "#fff3b0");
      y += 22;
    }
    for (const overlay of this._overlays.values()) {
      const text = overlay.choice !== null ? `${overlay.title}: ${overlay.choice}` : overlay.title;
      drawTag(ctx, text, 10, y, overlay.color);
      y += 22;
    }
  }
}

// ---------------------------------------------------------------- pure helpers

/** " 87%" for a model's score, "" when it gave none. */
function percent(score) {
  return isNum(score) ? ` ${Math.round(score * 100)}%` : "";
}

/** What the object list says of an object from a pre-label. */
function provenance(entry) {
  if (entry.prelabel === undefined) return "";
  return entry.pending ? ` (model${percent(entry.score)}, unconfirmed)` : " (from the model)";
}

function tracePath(ctx, pts, closed) {
  pts.forEach((p, i) => (i === 0 ? ctx.moveTo(p.x, p.y) : ctx.lineTo(p.x, p.y)));
  if (closed) ctx.closePath();
}

function drawHandle(ctx, x, y, radius = HANDLE_SIZE / 2, fill = "#ffffff") {
  ctx.save();
  ctx.setLineDash([]);
  ctx.fillStyle = fill;
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = 1;
  ctx.fillRect(x - radius, y - radius, 2 * radius, 2 * radius);
  ctx.strokeRect(x - radius, y - radius, 2 * radius, 2 * radius);
  ctx.restore();
}

/** A text tag with its bottom-left corner at (x, y), on the colour, readable on any image. */
function drawTag(ctx, text, x, y, color) {
  ctx.save();
  ctx.setLineDash([]);
  ctx.font = "12px system-ui, sans-serif";
  const width = ctx.measureText(text).width + 8;
  const top = Math.max(0, y - 16);
  ctx.fillStyle = color;
  ctx.fillRect(x, top, width, 16);
  ctx.fillStyle = textColorOn(color);
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + 4, top + 8);
  ctx.restore();
}

function textColorOn(color) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (!m) return "#ffffff";
  const [r, g, b] = m.slice(1).map((hex) => parseInt(hex, 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#000000" : "#ffffff";
}

/** `[x, y, w, h]` around a shape (keypoints: the placed ones), or null if it has no extent. */
function shapeBounds(shape) {
  if (shape.bbox) return shape.bbox;
  const pts = shape.points ?? shape.keypoints.filter((k) => k[2] > 0);
  if (!pts.length) return null;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  return [x, y, Math.max(...xs) - x, Math.max(...ys) - y];
}

function translate(shape, dx, dy) {
  if (shape.bbox) {
    const [x, y, w, h] = shape.bbox;
    return { ...shape, bbox: [x + dx, y + dy, w, h] };
  }
  if (shape.points) return { ...shape, points: shape.points.map(([x, y]) => [x + dx, y + dy]) };
  return {
    ...shape,
    keypoints: shape.keypoints.map(([x, y, v]) => (v > 0 ? [x + dx, y + dy, v] : [0, 0, 0])),
  };
}

/** Sutherland–Hodgman clipping of a polygon to the rectangle `[x, y, w, h]`. */
function clipPolygon(points, [rx, ry, rw, rh]) {
  const edges = [
    (p) => p[0] >= rx, (p) => p[0] <= rx + rw, (p) => p[1] >= ry, (p) => p[1] <= ry + rh,
  ];
  const cut = [
    (a, b) => atX(a, b, rx), (a, b) => atX(a, b, rx + rw), (a, b) => atY(a, b, ry), (a, b) => atY(a, b, ry + rh),
  ];
  let out = points;
  for (let e = 0; e < 4 && out.length; e++) {
    const input = out;
    out = [];
    input.forEach((cur, i) => {
      const prev = input[(i + input.length - 1) % input.length];
      const curIn = edges[e](cur);
      if (curIn !== edges[e](prev)) out.push(cut[e](prev, cur));
      if (curIn) out.push(cur);
    });
  }
  return out;
}

function atX(a, b, x) {
  const t = (x - a[0]) / (b[0] - a[0]);
  return [x, a[1] + t * (b[1] - a[1])];
}

function atY(a, b, y) {
  const t = (y - a[1]) / (b[1] - a[1]);
  return [a[0] + t * (b[0] - a[0]), y];
}

function polygonArea(points) {
  let sum = 0;
  points.forEach(([x1, y1], i) => {
    const [x2, y2] = points[(i + 1) % points.length];
    sum += x1 * y2 - x2 * y1;
  });
  return sum / 2;
}

function pointInPolygon({ x, y }, points) {
  let inside = false;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const [xi, yi] = points[i];
    const [xj, yj] = points[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function distanceToPolyline(p, points, closed) {
  let best = Infinity;
  const n = closed ? points.length : points.length - 1;
  for (let i = 0; i < n; i++) {
    const [x1, y1] = points[i];
    const [x2, y2] = points[(i + 1) % points.length];
    const dx = x2 - x1;
    const dy = y2 - y1;
    const len2 = dx * dx + dy * dy;
    const t = len2 ? clamp(((p.x - x1) * dx + (p.y - y1) * dy) / len2, 0, 1) : 0;
    best = Math.min(best, Math.hypot(p.x - (x1 + t * dx), p.y - (y1 + t * dy)));
  }
  return best;
}
