// A small SVG line chart of per-minute series (no library: two lines and an axis).
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** Draws `points` ([{t, submitted, done}]) into `box`, replacing what was there. */
export function throughputChart(box, points) {
  const width = 600;
  const height = 180;
  const pad = { left: 34, right: 8, top: 10, bottom: 22 };
  const max = Math.max(1, ...points.map((p) => Math.max(p.submitted, p.done)));
  const x = (i) => pad.left + (i * (width - pad.left - pad.right)) / Math.max(1, points.length - 1);
  const y = (v) => height - pad.bottom - (v * (height - pad.top - pad.bottom)) / max;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  svg.append(el("line", { class: "axis", x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0) }));
  svg.append(el("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: y(0) }));
  const top = el("text", { x: 4, y: pad.top + 8 });
  top.textContent = String(max);
  const zero = el("text", { x: 4, y: y(0) });
  zero.textContent = "0";
  svg.append(top, zero);
  if (points.length) {
    const first = el("text", { x: pad.left, y: height - 4 });
    first.textContent = new Date(points[0].t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const last = el("text", { x: width - pad.right - 40, y: height - 4 });
    last.textContent = "now";
    svg.append(first, last);
  }
  for (const series of ["submitted", "done"]) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[series]).toFixed(1)}`).join(" ");
    svg.append(el("path", { class: series, d }));
  }
  box.replaceChildren(svg);
  const total = points.reduce((s, p) => s + p.submitted, 0);
  box.setAttribute("aria-label", `${total} answers in the last ${points.length} minutes; at most ${max} in one minute`);
}
