// A JSON file import form (gold, predictions): the file sent with progress, then what was
// stored and each item refused, or why nothing was.
import { upload } from "./api.js";
import { h, table } from "./dom.js";

/**
 * Wires `form` (a `file` input, optional `format` select, `lenient` checkbox and other named
 * fields, a submit button and a progress bar) to POST `path`. `summary(report, refused)` words
 * what was stored; `onStored(report)` runs after. A strict import refused (`refusedCode`)
 * lists its items.
 */
export function importForm(form, result, { path, summary, refusedCode, onStored = async () => {} }) {
  const bar = form.querySelector("progress");
  const submit = form.querySelector("[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return;
    const data = new FormData();
    data.append("file", file, file.name);
    for (const input of form.elements) {
      if (!input.name || ["file", "lenient"].includes(input.name) || !input.value) continue;
      data.append(input.name, input.value.trim());
    }
    data.append("strict", form.elements.lenient.checked ? "false" : "true");
    bar.value = 0;
    bar.hidden = false;
    submit.disabled = true;
    try {
      const report = await upload(path, data, (fraction) => (bar.value = fraction));
      const rejected = report.rejected || [];
      result.replaceChildren(
        h("p", { class: rejected.length ? "warn" : "ok", "data-import": "stored" }, summary(report, rejected.length)),
        ...(rejected.length ? [table("Items not stored", ["Item", "Problem"], rejected.map((r) => [r.item, r.error]))] : []),
      );
      await onStored(report);
    } catch (err) {
      const problems = Object.entries(err.errors || {}).map(([item, messages]) => [item, [].concat(messages).join(" ")]);
      result.replaceChildren(
        h("p.error", { role: "alert", "data-import": "refused" }, err.code === refusedCode ? `${err.message} Nothing was stored.` : err.message),
        ...(problems.length ? [table("Items", ["Item", "Problem"], problems)] : []),
      );
    } finally {
      bar.hidden = true;
      submit.disabled = false;
    }
  });
}
