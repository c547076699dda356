// The worker's workspace: lease a task, annotate it, submit (Enter) and get the next at once.
import { Annotator } from "../annotator.js";
import { api } from "./api.js";
import { $, labelMark, labelPicker, toast } from "./dom.js";
import { live } from "./live.js";

const projectId = Number(document.getElementById("main").dataset.project);
const stage = $("#stage");
const submitButton = $("#submit");
const skipButton = $("#skip");
const state = { assignment: null, annotator: null, key: null, busy: false, waiting: false, timer: null, done: 0, earned: 0, currency: "", shownAt: 0 };

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function setError(message, details = []) {
  const box = $("#task-error");
  box.replaceChildren(message || "");
  if (details.length) {
    const list = document.createElement("ul");
    for (const line of details) {
      const li = document.createElement("li");
      li.textContent = line;
      list.append(li);
    }
    box.append(list);
  }
  box.hidden = !message;
}

// The server's per-field errors as lines a worker can act on: `annotations[2].rle.counts`
// becomes "Object 3 (mask)", the numbers the object list shows.
function errorLines(errors) {
  const lines = [];
  for (const [field, messages] of Object.entries(errors || {})) {
    const m = /^annotations\[(\d+)\](?:\.(\w+))?/.exec(field);
    const where = m ? `Object ${Number(m[1]) + 1}${m[2] ? ` (${m[2] === "rle" ? "mask" : m[2]})` : ""}` : field;
    for (const message of [].concat(messages)) lines.push(`${where}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
  }
  return lines;
}

function setButtons() {
  const ready = Boolean(state.assignment) && !state.busy;
  submitButton.disabled = !ready;
  skipButton.disabled = !ready;
}

function showEmpty(message) {
  if (state.annotator) state.annotator.destroy();
  state.annotator = null;
  state.assignment = null;
  clearInterval(state.timer);
  $("#countdown").textContent = "—";
  $("#labels").replaceChildren();
  $("#objects").replaceChildren();
  $("#hint").textContent = "";
  const empty = $("#empty");
  empty.textContent = message;
  empty.hidden = false;
  setButtons();
}

function renderLabels(assignment) {
  labelPicker($("#labels"), assignment.labels, (name) => state.annotator && state.annotator.setLabel(name));
}

function markLabel(name) {
  labelMark($("#labels"), name);
}

function startCountdown(expiresAt) {
  clearInterval(state.timer);
  const end = new Date(expiresAt).getTime();
  const tick = () => {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    const el = $("#countdown");
    el.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    el.classList.toggle("low", left <= 30);
    if (left === 0) {
      clearInterval(state.timer);
      toast("Time ran out on this task; here is another.", "error");
      next();
    }
  };
  tick();
  state.timer = setInterval(tick, 1000);
}

async function show(assignment) {
  $("#empty").hidden = true;
  setError("");
  if (state.annotator) state.annotator.destroy();
  state.assignment = assignment;
  state.key = randomKey();
  $("#instructions").textContent = assignment.instructions || "No instructions.";
  renderLabels(assignment);
  const task = assignment.task;
  state.annotator = new Annotator(stage, {
    kind: assignment.kind,
    maskMode: assignment.mask_mode,
    labels: assignment.labels,
    imageUrl: task.image_url,
    width: task.width,
    height: task.height,
    region: task.region,
    listElement: $("#objects"),
    hintElement: $("#hint"),
    onLabel: markLabel,
    prelabels: assignment.prelabels || [],
    // The refusal to submit unconfirmed pre-labels goes once none is left.
    onChange: () => {
      if (state.pendingRefused && state.annotator && !state.annotator.pendingPrelabels) {
        state.pendingRefused = false;
        setError("");
      }
    },
  });
  state.shownAt = performance.now();
  state.pendingRefused = false;
  const note = $("#prelabel-note");
  note.hidden = !(assignment.prelabels || []).length;
  note.querySelector("[data-what]").textContent = assignment.kind === "mask" ? "The light layer shows the model's masks" : "Dashed shapes are the model's guesses";
  if (assignment.kind !== "classification" && assignment.labels.length) state.annotator.setLabel(assignment.labels[0].name);
  startCountdown(assignment.expires_at);
  setButtons();
  try {
    await state.annotator.ready;
    // "crowd:task-shown" once the image is on screen (the frame after it was drawn): with
    // "crowd:submit", what a worker waits between pressing Enter and seeing the next task.
    requestAnimationFrame(() => setTimeout(() => performance.mark("crowd:task-shown", { detail: task.id }), 0));
  } catch (err) {
    setError(`The image could not be loaded (${err.message}). Skip this task or reload the page.`);
  }
  stage.focus();
}

// A lease (from next/, or handed over by a submit) or none: show it, or wait for work.
async function present(assignment, refused) {
  if (assignment) {
    state.waiting = false;
    await show(assignment);
  } else if (refused) {
    state.waiting = false;
    showEmpty(`You cannot work on this project now. ${refused.detail}`);
  } else {
    state.waiting = true;
    showEmpty("No tasks for you right now. This page will fetch one as soon as there is work.");
  }
}

async function next() {
  if (state.busy) return;
  state.busy = true;
  setButtons();
  try {
    await present(await api(`/projects/${projectId}/assignments/next/`, { method: "POST" }));
  } catch (err) {
    state.waiting = err.status === 429;
    showEmpty(err.status === 403 ? `You cannot work on this project now. ${err.message}` : `Could not get a task: ${err.message}`);
  } finally {
    state.busy = false;
    setButtons();
  }
}

async function submit() {
  if (!state.assignment || state.busy) return;
  if (state.annotator.drafting) state.annotator.finishDraft();
  const annotations = state.annotator.getAnswer();
  if (state.assignment.kind === "classification" && !annotations.length) {
    setError("Pick a label first (number keys 1–9).");
    return;
  }
  const pending = state.annotator.pendingPrelabels;
  if (pending) {
    // Every pre-label gets a decision: kept, changed or deleted, never passed by unseen.
    state.pendingRefused = true;
    setError(`${pending === 1 ? "One of the model's pre-labels is" : `${pending} of the model's pre-labels are`} not confirmed yet: press A to accept them as they are, or edit or delete them first.`);
    return;
  }
  state.busy = true; // a double click or a held Enter sends one submission
  setButtons();
  performance.mark("crowd:submit");
  const { assignment, key } = state;
  try {
    // ?next=1: the next lease comes back with the answer's receipt, in one round trip.
    const body = { annotations, time_spent_ms: Math.max(0, Math.round(performance.now() - state.shownAt)) };
    const version = (assignment.prelabels || [])[0]?.model_version;
    if (version) body.prelabel_version = version;
    const done = await api(`/assignments/${assignment.id}/submit/?next=1`, { method: "POST", body, headers: { "Idempotency-Key": key } });
    state.done += 1;
    state.earned += Number(assignment.reward);
    state.currency = assignment.currency;
    $("#session-stats").textContent = `${state.done} submitted this session · ${state.earned.toFixed(2)} ${state.currency} pending review`;
    await present(done.next, done.next_refused);
    state.busy = false;
    setButtons();
  } catch (err) {
    state.busy = false;
    if (err.status === 409 || err.status === 404) {
      toast(err.message, "error");
      await next();
    } else {
      if (err.status === 400) setError(`The answer was not accepted: ${err.message} Your drawing is kept; fix it and submit again.`, errorLines(err.errors));
      else setError(`${err.message} Your drawing is kept; press Enter to try again.`);
      setButtons();
    }
  }
}

async function skip() {
  if (!state.assignment || state.busy) return;
  state.busy = true;
  setButtons();
  try {
    await api(`/assignments/${state.assignment.id}/skip/`, { method: "POST" });
  } catch (err) {
    toast(err.message, "error");
  }
  state.busy = false;
  await next();
}

submitButton.addEventListener("click", submit);
skipButton.addEventListener("click", skip);
$("#undo").addEventListener("click", () => state.annotator && state.annotator.undo());
$("#redo").addEventListener("click", () => state.annotator && state.annotator.redo());
document.addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || e.isComposing) return;
  const target = e.target;
  if (target instanceof HTMLElement && (target.matches("input, textarea, select, button, a, summary") || target.isContentEditable)) return;
  e.preventDefault();
  if (e.repeat) return;
  if (e.shiftKey) skip();
  else submit();
});

live("/ws/worker/", (event) => {
  if (event.type === "queue" && event.project === projectId && event.available > 0 && state.waiting) next();
  if (event.type === "lease_expiring" && state.assignment && event.assignment === state.assignment.id) {
    toast(`${event.seconds_left ?? "A few"} seconds left on this task.`, "error");
  }
});

api(`/projects/${projectId}/`).then((p) => {
  $("#project-name").textContent = `${p.name} · ${p.reward} ${p.currency} a task`;
  if (!state.assignment) $("#instructions").textContent = p.instructions || "No instructions.";
  document.title = `${p.name} · Crowd`;
});
next();
