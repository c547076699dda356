/* The annotation canvas on a generated image (annotator_demo.html): ?kind=bbox|polygon|keypoints|
   classification|mask, ?mode=semantic (masks), ?size=WxH (the image declared that large and drawn
   stretched, as a tile of a large image is), ?region=x,y,w,h (a tile), ?readonly=1 (review).
   Exposes window.annotator. */

import { Annotator } from "./annotator.js";

import { encodeMask } from "./mask_rle.js";

const KINDS = ["bbox", "polygon", "keypoints", "classification", "mask"];
const LABELS = {
  bbox: [{ name: "car", color: "#e6194b" }, { name: "person", color: "#3cb44b" }, { name: "tree", color: "#4363d8" }],
  polygon: [{ name: "car", color: "#e6194b" }, { name: "person", color: "#3cb44b" }, { name: "tree", color: "#4363d8" }],
  keypoints: [
    { name: "person", color: "#3cb44b", keypoints: ["head", "left_hand", "right_hand", "left_foot", "right_foot"] },
    { name: "car", color: "#e6194b", keypoints: ["front_wheel", "back_wheel"] },
  ],
  classification: [{ name: "street", color: "#4363d8" }, { name: "park", color: "#3cb44b" }, { name: "beach", color: "#f58231" }],
  mask: [{ name: "car", color: "#e6194b" }, { name: "person", color: "#3cb44b" }, { name: "tree", color: "#4363d8" }],
};
const CONSENSUS = {
  bbox: [{ label: "car", bbox: [90, 225, 160, 108] }, { label: "tree", bbox: [400, 90, 130, 240] }],
  polygon: [{ label: "tree", points: [[400, 160], [465, 90], [530, 160], [475, 230], [475, 330], [455, 330], [455, 230]] }],
  keypoints: [{ label: "person", keypoints: [[340, 240, 2], [320, 262, 2], [360, 262, 2], [326, 335, 2], [354, 335, 2]] }],
  classification: [{ label: "street" }],
};

const params = new URLSearchParams(location.search);
const kind = KINDS.includes(params.get("kind")) ? params.get("kind") : "bbox";
const [width, height] = /^\d+x\d+$/.test(params.get("size") ?? "") ? params.get("size").split("x").map(Number) : [640, 480];
if (kind === "mask") CONSENSUS.mask = [{ label: "tree", rle: rectangleMask(400, 90, 530, 330) }];

/** A mask of the demo image with the rectangle [x0, x1) x [y0, y1) set. */
function rectangleMask(x0, y0, x1, y1) {
  const bits = new Uint8Array(width * height);
  for (let y = y0; y < y1; y++) bits.fill(1, y * width + x0, y * width + x1);
  return encodeMask(bits, width, height);
}
const region = (params.get("region") || "").split(",").map(Number);
for (const link of document.querySelectorAll("nav a")) {
  if (link.search === location.search || (!location.search && link.search === "?kind=bbox")) link.setAttribute("aria-current", "page");
}

const labelBar = document.getElementById("labels");
for (const [i, label] of LABELS[kind].entries()) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.label = label.name;
  button.setAttribute("aria-pressed", "false");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = label.color;
  const key = document.createElement("kbd");
  key.textContent = String(i + 1);
  button.append(swatch, label.name, key);
  button.addEventListener("click", () => window.annotator.setLabel(label.name));
  labelBar.append(button);
}

// What the tests read: how often the annotator reported a change, and each label it reported.
window.events = { changes: 0, labels: [], submits: 0 };
const payload = document.getElementById("payload");
window.annotator = new Annotator(document.getElementById("annotator"), {
  kind,
  maskMode: params.get("mode") === "semantic" ? "semantic" : "instance",
  labels: LABELS[kind],
  imageUrl: new URL("demo.png", import.meta.url).href,
  width,
  height,
  region: region.length === 4 && region.every(Number.isFinite) ? region : undefined,
  readOnly: params.get("readonly") === "1",
  onChange(annotations) {
    window.events.changes += 1;
    payload.textContent = JSON.stringify(annotations, null, 1);
  },
  onLabel(name) {
    window.events.labels.push(name);
    for (const button of labelBar.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.label === name));
    }
  },
});
document.getElementById("undo").addEventListener("click", () => window.annotator.undo());
document.getElementById("redo").addEventListener("click", () => window.annotator.redo());
document.getElementById("fit").addEventListener("click", () => window.annotator.fit());
document.getElementById("overlay").addEventListener("change", (event) => {
  const on = event.target.checked;
  window.annotator.setOverlay("consensus", on ? CONSENSUS[kind] : null, { color: "#ffe119", title: "Consensus" });
});
// The page submits on Enter, as the workspace does; the canvas must let Enter through.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.defaultPrevented && !event.target.closest("button, input, select, textarea, a")) submit();
});
document.getElementById("answer").addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
function submit() {
  window.annotator.finishDraft();
  window.events.submits += 1;
  document.getElementById("submitted").textContent =
    `Submitted ${window.annotator.getAnnotations().length} annotation(s).`;
}
window.annotator.ready.then(
  () => document.body.dataset.ready = "true",
  (error) => document.body.dataset.ready = `error: ${error.message}`,
);
