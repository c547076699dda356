// The review queue: each answer drawn over its reference (gold, or the consensus so far).
import { Annotator } from "../annotator.js";
import { api } from "./api.js";
import { $, duration, h, toast, when } from "./dom.js";

const projectId = Number(document.getElementById("main").dataset.project);
const base = `/projects/${projectId}`;
let project = null;
let items = [];
let index = 0;
let annotator = null;

function setError(message) {
  const box = $("#review-error");
  box.textContent = message || "";
  box.hidden = !message;
}

function renderQueue() {
  $("#queue").replaceChildren(
    ...items.map((item, i) =>
      h("li", { "aria-current": String(i === index) }, h("button.link", { type: "button", onclick: () => show(i) }, `${item.worker} · ${item.image_name}`), item.is_gold ? " (gold)" : ""),
    ),
  );
}

async function show(i) {
  index = i;
  setError("");
  if (annotator) annotator.destroy();
  annotator = null;
  const item = items[i];
  const pending = $("#status-filter").value === "submitted";
  $("#approve").disabled = !item || !pending;
  $("#reject").disabled = !item || !pending;
  renderQueue();
  if (!item) {
    $("#empty").hidden = false;
    $("#facts").replaceChildren();
    $("#objects").replaceChildren();
    return;
  }
  $("#empty").hidden = true;
  $("#facts").replaceChildren(
    h("dt", {}, "Worker"), h("dd", {}, item.worker),
    h("dt", {}, "Image"), h("dd", {}, item.image_name),
    h("dt", {}, "Submitted"), h("dd", {}, when(item.submitted_at)),
    h("dt", {}, "Time spent"), h("dd", {}, item.time_spent_ms ? duration(item.time_spent_ms / 1000) : "—"),
    h("dt", {}, "Objects"), h("dd", {}, String(item.annotations.length)),
    ...(item.reason ? [h("dt", {}, "Review note"), h("dd", {}, item.reason)] : []),
  );
  annotator = new Annotator($("#stage"), {
    kind: project.kind,
    maskMode: project.mask_mode,
    labels: project.labels,
    imageUrl: item.image_url,
    width: item.width,
    height: item.height,
    region: item.region,
    annotations: item.annotations,
    readOnly: true,
    listElement: $("#objects"),
    hintElement: $("#hint"),
  });
  const reference = await api(`${base}/tasks/${item.task}/reference/`);
  if (items[index] !== item || !annotator) return;
  $("#reference-name").textContent = reference.source === "gold" ? "gold answer" : `consensus of ${reference.answers} answers`;
  annotator.setOverlay("reference", reference.annotations, { color: "#e3b341", dashed: true, title: reference.source });
}

async function decide(approve) {
  const item = items[index];
  if (!item) return;
  const reason = $("#reason").value.trim();
  if (!approve && !reason) {
    setError("Tell the worker why the answer is rejected.");
    $("#reason").focus();
    return;
  }
  $("#approve").disabled = true;
  $("#reject").disabled = true;
  try {
    await api(`/assignments/${item.id}/${approve ? "approve" : "reject"}/`, { method: "POST", body: reason ? { reason } : {} });
    toast(`${approve ? "Approved" : "Rejected"} ${item.worker}'s answer.`, "ok");
    $("#reason").value = "";
    items.splice(index, 1);
    $("#queue-count").textContent = `${items.length} on this page`;
    await show(Math.min(index, items.length - 1));
  } catch (err) {
    setError(err.message);
    $("#approve").disabled = false;
    $("#reject").disabled = false;
  }
}

async function approvePage() {
  if (!items.length || $("#status-filter").value !== "submitted") return;
  try {
    await api(`${base}/reviews/`, { method: "POST", body: { assignments: items.map((i) => i.id), action: "approve" } });
    toast(`Approved ${items.length} answers.`, "ok");
    await load();
  } catch (err) {
    setError(err.message);
  }
}

async function load() {
  const status = $("#status-filter").value;
  const page = await api(`${base}/reviews/?status=${status}&limit=50`);
  items = page.results;
  $("#queue-count").textContent = `${page.count} ${status === "submitted" ? "waiting" : status}`;
  $("#approve-page").disabled = status !== "submitted" || !items.length;
  await show(0);
}

$("#approve").addEventListener("click", () => decide(true));
$("#reject").addEventListener("click", () => decide(false));
$("#approve-page").addEventListener("click", approvePage);
$("#status-filter").addEventListener("change", load);
document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLElement && e.target.matches("input, textarea, select")) return;
  if (e.key === "a" || e.key === "A") decide(true);
  else if (e.key === "r" || e.key === "R") {
    if ($("#reason").value.trim()) decide(false);
    else $("#reason").focus();
  }
});

project = await api(base);
$("#project-name").textContent = project.name;
await load().catch((err) => toast(err.message, "error"));
