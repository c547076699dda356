// Small DOM helpers shared by the pages.

/** `h("tag.class", {attr: value, onclick: fn}, ...children)`: an element. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** A short message for everyone (and screen readers) at the top of the page. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : undefined }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Shows an ApiError on a form: per-field messages next to inputs, the rest at the bottom. */
export function showErrors(form, err) {
  for (const el of form.querySelectorAll(".error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const rest = [];
  for (const [field, messages] of Object.entries(err.errors || {})) {
    const slot = form.querySelector(`[data-error="${CSS.escape(field)}"]`) || form.querySelector(`#${CSS.escape(field)}-error`);
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    const text = Array.isArray(messages) ? messages.join(" ") : JSON.stringify(messages);
    if (slot) {
      slot.textContent = text;
      slot.hidden = false;
      if (input) input.setAttribute("aria-invalid", "true");
    } else rest.push(`${field}: ${text}`);
  }
  const general = form.querySelector('[data-error="form"]') || form.querySelector("#form-error");
  if (general && (rest.length || !Object.keys(err.errors || {}).length)) {
    general.textContent = rest.length ? `${err.message} ${rest.join(" ")}` : err.message;
    general.hidden = false;
  }
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

/** "12.50 USD" from the API's `{amount, currency}`. */
export const money = (m) => (m ? `${m.amount} ${m.currency}` : "—");

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - m * 60)} s`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

/** A <table> with a caption, headers and rows of cells (nodes or text). */
export function table(caption, headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p.muted", {}, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
  );
}

/** The label picker: a button per label (its colour, its number key), calling `pick(name)`. */
export function labelPicker(box, labels, pick) {
  box.replaceChildren(
    ...labels.map((label, i) =>
      h(
        "button",
        { type: "button", "aria-pressed": "false", "data-label": label.name, onclick: () => pick(label.name) },
        h("span.swatch", { "data-color": label.color }),
        label.name,
        i < 9 ? h("kbd", {}, String(i + 1)) : null,
      ),
    ),
  );
  for (const swatch of box.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
}

/** Marks the picker's button of `name` as the current label. */
export function labelMark(box, name) {
  for (const button of box.querySelectorAll("button")) button.setAttribute("aria-pressed", String(button.dataset.label === name));
}
