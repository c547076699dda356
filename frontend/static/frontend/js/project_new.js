// Create a project: the form maps one-to-one onto POST /projects/.
import { api } from "./api.js";
import { $, h, showErrors } from "./dom.js";

const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#9a6324", "#469990"];
const list = $("#labels");
const kind = $("#kind");

function addLabel(name = "", color) {
  const n = list.children.length;
  const row = h(
    "div.row.label-row",
    {},
    h("div.field", {}, h("label", { for: `label-name-${n}` }, `Label ${n + 1}`), h("input", { id: `label-name-${n}`, class: "label-name", value: name, required: true })),
    h("div.field", {}, h("label", { for: `label-color-${n}` }, "Colour"), h("input", { id: `label-color-${n}`, class: "label-color", type: "color", value: color || PALETTE[n % PALETTE.length] })),
    h("div.field.keypoints-field", { hidden: kind.value !== "keypoints" }, h("label", { for: `label-kp-${n}` }, "Keypoints, in order"), h("input", { id: `label-kp-${n}`, class: "label-keypoints", placeholder: "nose, left eye, right eye" })),
    h("button.danger", { type: "button", "aria-label": `Remove label ${n + 1}`, onclick: () => row.remove() }, "Remove"),
  );
  list.append(row);
  return row;
}

kind.addEventListener("change", () => {
  const keypoints = kind.value === "keypoints";
  $("#keypoints-help").hidden = !keypoints;
  for (const el of list.querySelectorAll(".keypoints-field")) el.hidden = !keypoints;
});
$("#add-label").addEventListener("click", () => addLabel().querySelector("input").focus());
addLabel("car");
addLabel("person");

$("#project-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const body = {};
  for (const [key, value] of new FormData(form).entries()) {
    if (value === "" && key !== "instructions") continue;
    body[key] = form.elements[key].type === "number" ? Number(value) : value;
  }
  body.labels = [...list.querySelectorAll(".label-row")].map((row) => {
    const label = { name: row.querySelector(".label-name").value.trim(), color: row.querySelector(".label-color").value };
    if (kind.value === "keypoints") {
      label.keypoints = row.querySelector(".label-keypoints").value.split(",").map((s) => s.trim()).filter(Boolean);
    }
    return label;
  });
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const project = await api("/projects/", { method: "POST", body });
    window.location.assign(`/manage/projects/${project.id}/`);
  } catch (err) {
    showErrors(form, err);
    button.disabled = false;
  }
});
