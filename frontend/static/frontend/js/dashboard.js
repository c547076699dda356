// The manager's live dashboard for one project.
import { all, api, upload } from "./api.js";
import { throughputChart } from "./chart.js";
import { $, h, money, showErrors, table, toast, when } from "./dom.js";
import { importForm } from "./imports.js";
import { live } from "./live.js";

const main = document.getElementById("main");
const projectId = Number(main.dataset.project);
const maxUpload = Number(main.dataset.maxUpload) || 64 * 1024 * 1024;
const base = `/projects/${projectId}`;
let project = null;
let workers = [];

function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    }
  };
}

function renderProject(p) {
  project = p;
  $("#project-name").textContent = p.name;
  document.title = `${p.name} · Crowd`;
  const badge = $("#project-state");
  badge.textContent = p.state;
  badge.className = `badge ${p.state}`;
  $("#start").disabled = p.state === "active";
  $("#pause").disabled = p.state !== "active";
  const form = $("#settings-form");
  for (const name of ["reward", "budget", "min_overlap", "max_overlap", "gold_rate", "prelabel_holdout", "min_worker_score", "instructions"]) {
    if (document.activeElement !== form.elements[name]) form.elements[name].value = p[name] ?? "";
  }
  if (run !== undefined) renderRun();
}

/** Runs `act`; its error's message shows in `box`, hidden again at the next try. */
async function reporting(box, act) {
  box.hidden = true;
  try {
    await act();
  } catch (err) {
    box.textContent = err.message;
    box.hidden = false;
  }
}

function stat(label, value, id) {
  return h("div.stat", { "data-stat": id }, h("div.value", {}, value), h("div.label", {}, label));
}

function renderProgress(p) {
  const work = Math.max(0, p.tasks - p.gold);
  const pct = work ? Math.round((100 * p.done) / work) : 0;
  $("#progress-fill").style.width = `${pct}%`;
  $("#progress-bar").setAttribute("aria-valuenow", String(pct));
  $("#progress-text").textContent = `${p.done} of ${work} tasks done (${pct}%), ${p.in_progress} in progress, ${p.open} open; ${p.assignments_submitted} answers.`;
  const budget = p.budget ? ` of ${money(p.budget)}` : "";
  $("#stats").replaceChildren(
    stat("Tasks done", `${p.done} / ${work}`, "done"),
    stat("Answers", String(p.assignments_submitted), "answers"),
    stat("In progress", String(p.in_progress), "in_progress"),
    stat("Gold tasks", String(p.gold), "gold"),
    stat(`Spent${budget}`, money(p.spent), "spent"),
    stat("Committed (incl. unreviewed)", money(p.committed), "committed"),
    stat("Effective hourly rate", money(p.effective_hourly_rate), "hourly"),
    stat("Images", p.images ? `${p.images.ready} ready, ${p.images.failed} failed` : "—", "images"),
  );
  $("#fair-pay").replaceChildren(...(p.fair_pay_warning ? [h("div.callout", { role: "status" }, h("strong", {}, "Fair pay: "), p.fair_pay_warning)] : []));
  if (p.stalled) loadStalled();
  else $("#stalled").replaceChildren();
}

// Open tasks no worker left can answer: the reason, the project's rule, the way out now.
const loadStalled = throttle(async () => {
  const s = await api(`${base}/tasks/stalled/`);
  if (!s.count) {
    $("#stalled").replaceChildren();
    return;
  }
  const rule = s.action === "close"
    ? `They close with low confidence after ${s.grace_minutes} minutes.`
    : "They wait for workers who join later.";
  const act = (action, done) => async () => {
    try {
      const r = await api(`${base}/tasks/stalled/`, { method: "POST", body: { action } });
      toast(done(r), "ok");
      loadProgress();
    } catch (err) {
      toast(err.message, "error");
    }
  };
  $("#stalled").replaceChildren(
    h("div.callout", { role: "status", "data-stalled": String(s.count) },
      h("strong", {}, `${s.count} stalled task${s.count === 1 ? "" : "s"}: `),
      s.tasks[0] ? s.tasks[0].message : "",
      ` ${rule} `,
      h("button", { type: "button", onclick: act("close", (r) => `${r.closed} closed with low confidence.`) }, "Close them now"),
      " ",
      h("button", { type: "button", onclick: act("reoffer", (r) => `${r.reoffered} offered again.`) }, "Offer again to workers who skipped"),
    ),
  );
}, 5000);

async function loadProgress() {
  renderProgress(await api(`${base}/progress/`));
}

const loadChart = throttle(async () => {
  const data = await api(`${base}/throughput/?minutes=60`);
  throughputChart($("#chart"), data.points);
}, 5000);

const loadAgreement = throttle(async () => {
  const a = await api(`${base}/agreement/`);
  const parts = [];
  if (a.kind === "classification") {
    parts.push(["Fleiss' kappa", a.fleiss_kappa], ["Krippendorff's alpha", a.krippendorff_alpha], ["Mean pairwise kappa", a.mean_pairwise_kappa]);
  } else {
    parts.push(["Mean pairwise IoU", a.mean_pairwise_iou], ["Mean pairwise F1", a.mean_pairwise_f1]);
  }
  $("#agreement").replaceChildren(
    h("div.stats", {}, parts.map(([label, v]) => stat(label, v === null || v === undefined ? "—" : Number(v).toFixed(3), label)), stat("Tasks compared", String(a.tasks), "tasks")),
  );
}, 10000);

async function loadWorkers() {
  workers = await api(`${base}/workers/`);
  const rows = workers.map((w) => [
    w.username,
    h("span", { class: `badge ${w.status}` }, w.status),
    `${Math.round(w.score * 100)}%`,
    `${w.gold_passed} / ${w.gold_seen}`,
    w.agreement === null ? "—" : `${Math.round(w.agreement * 100)}%`,
    String(w.submitted),
    money(w.earned),
    [w.status_reason || "", ...(w.flags || []).map((f) => (typeof f === "string" ? f : f.message || f.signal || JSON.stringify(f)))].filter(Boolean).join("; "),
    w.status === "suspended"
      ? h("button", { type: "button", onclick: () => reinstate(w) }, `Reinstate ${w.username}`)
      : h("button.danger", { type: "button", onclick: () => suspend(w) }, `Suspend ${w.username}`),
  ]);
  $("#worker-table").replaceChildren(table(`${workers.length} workers`, ["Worker", "Status", "Score", "Gold passed", "Agreement", "Answers", "Earned", "Evidence", ""], rows, "No workers yet."));
  const select = $("#bonus-worker");
  const current = select.value;
  select.replaceChildren(...workers.map((w) => h("option", { value: w.worker }, w.username)));
  if (current) select.value = current;
}

function fixed(v, digits) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(digits);
}

function seconds(v) {
  return v === null || v === undefined ? "—" : `${Number(v).toFixed(1)} s`;
}

function difference(d, digits, unit = "") {
  if (!d) return "—";
  const p = d.p_value === undefined ? "" : `, p ${fixed(d.p_value, 3)}`;
  const sign = d.estimate > 0 ? "+" : "";
  return `${sign}${fixed(d.estimate, digits)}${unit} [${fixed(d.ci95[0], digits)}, ${fixed(d.ci95[1], digits)}]${p}`;
}

function comparisonRow(name, c) {
  const w = c.with_prelabels;
  const o = c.without_prelabels;
  return [
    name,
    `${w.answers} / ${o.answers}`,
    `${fixed(w.gold_score_mean, 3)} (${w.gold_answers}) / ${fixed(o.gold_score_mean, 3)} (${o.gold_answers})`,
    difference(c.gold_score_difference, 3),
    `${seconds(w.median_seconds)} / ${seconds(o.median_seconds)}`,
    difference(c.median_seconds_difference, 1, " s"),
  ];
}

const loadPrelabelEffect = throttle(async () => {
  const e = await api(`${base}/prelabels/effect/`);
  const box = $("#prelabel-effect");
  if (!e.prelabels && !e.overall.with_prelabels.answers && !e.overall.without_prelabels.answers) {
    box.replaceChildren(h("p.muted", {}, "Pre-labels are off for this project (PATCH prelabels: true to show workers the model's objects)."));
    return;
  }
  const cov = e.coverage;
  const out = e.outcomes;
  const headers = ["", "Answers with / without", "Mean gold score with / without (gold answers)", "Gold score difference [95%]", "Median time with / without", "Time difference [95%]"];
  box.replaceChildren(
    h("p", {}, `Model version ${cov.model_version ?? "—"}: ${cov.images_predicted} of ${cov.images} images predicted (${cov.gold_images_predicted} of ${cov.gold_images} gold). Held out: ${Math.round(e.prelabel_holdout * 100)}% of tasks.`),
    ...cov.warnings.map((w) => h("p.error", { role: "alert" }, w)),
    ...(e.overall.gold_score_flag === "lower_with_prelabels"
      ? [h("p.error", { role: "alert" }, "Gold scores are lower with pre-labels than without (95% interval below 0): workers follow the model's mistakes.")]
      : e.overall.gold_score_flag === "higher_with_prelabels"
        ? [h("p.muted", {}, "Gold scores are higher with pre-labels than without (95% interval above 0).")]
        : []),
    h("div.stats", {}, ["kept", "moved", "relabelled", "deleted", "added"].map((k) => stat(`pre-labels ${k}`, String(out[k]), k)), stat("kept unchanged", out.kept_share === null ? "—" : `${Math.round(out.kept_share * 100)}%`, "kept_share")),
    ...(e.answers_of_suspended_workers
      ? [h("p.muted", {}, `${e.answers_of_suspended_workers} answers of suspended workers are left out of "All workers" and the pre-label counts.`)]
      : []),
    table("With and without pre-labels", headers, [comparisonRow("All workers", e.overall), ...e.workers.map((w) => comparisonRow(w.suspended ? `${w.username} (suspended)` : w.username, w))], "No answers yet."),
  );
}, 10000);

function percent(v) {
  return v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)}%`;
}

// --- Predictions: the ML backend's runs, and files of a model's output ---
let run; // the latest run of the ML backend: undefined until loaded, null if none
const RUN_ACTIVE = ["queued", "running"];

function renderRun() {
  const backend = project && project.ml_backend;
  const active = Boolean(run && RUN_ACTIVE.includes(run.status));
  $("#predict-run").disabled = !backend || active;
  $("#predict-cancel").hidden = !active;
  const lines = [
    backend
      ? h("p", {}, `ML backend: ${backend.url}`)
      : h("p.muted", {}, "No ML backend: name one in the project's ml_backend setting, or import predictions from a file."),
  ];
  if (!run) {
    lines.push(h("p.muted", {}, "The ML backend has not been run for this project."));
  } else {
    lines.push(
      h("p", { "data-run-status": run.status }, `Run ${run.id}: ${run.status}${run.model_version ? `, model version ${run.model_version}` : ""}.`),
      h("div.row", {},
        h("label", { for: "run-bar" }, `${run.images_done} of ${run.images_total} images`),
        h("progress", { id: "run-bar", max: String(run.images_total || 1), value: String(run.images_done) }),
      ),
      h("div.stats", {}, stat("Images predicted", String(run.predicted), "predicted"), stat("Images failed", String(run.failed), "failed")),
    );
    if (run.error) lines.push(h("p.error", {}, run.error));
    if (run.errors && run.errors.length) {
      lines.push(table("Images the backend failed on", ["Image", "Error"], run.errors.map((e) => [String(e.image), e.error])));
    }
  }
  $("#prediction-run").replaceChildren(...lines);
}

async function loadRun() {
  try {
    run = await api(`${base}/predictions/run/`);
  } catch (err) {
    if (err.status !== 404) throw err;
    run = null;
  }
  renderRun();
}

/** A live frame of a run: its progress; once it has ended, the run with its errors. */
function runChanged(frame) {
  const fields = { ...frame };
  delete fields.type;
  run = run && run.id === fields.id ? { ...run, ...fields } : fields;
  renderRun();
  if (!RUN_ACTIVE.includes(run.status)) loadRun().catch(() => {});
}

function runAction(send) {
  return reporting($("#predict-error"), async () => {
    const answer = await send();
    // The run's first frames may come before the answer that queued it: they are newer.
    if (!(run && run.id === answer.id && answer.status === "queued")) run = answer;
    renderRun();
  });
}

$("#predict-run").addEventListener("click", () => runAction(() => api(`${base}/predictions/run/`, { method: "POST" })));
$("#predict-cancel").addEventListener("click", () => runAction(() => api(`${base}/predictions/runs/${run.id}/cancel/`, { method: "POST" })));
importForm($("#predictions-import"), $("#predictions-import-result"), {
  path: `${base}/predictions/file/`,
  refusedCode: "invalid_predictions",
  summary: (r, rejected) => `${r.created} predictions stored; ${rejected} items not stored.`,
  onStored: () => loadPrelabelEffect(),
});

async function loadAutoAccept() {
  const a = await api(`${base}/auto-accept/`);
  const box = $("#auto-accept");
  $("#auto-accept-reopen").disabled = !a.images_auto_accepted;
  $("#auto-accept-run").disabled = !a.settings;
  if (!a.settings) {
    box.replaceChildren(
      h("p.muted", {}, "Auto-accept is off for this project (PATCH auto_accept: {} to turn it on with the defaults)."),
      ...(a.images_auto_accepted ? [h("p", {}, `${a.images_auto_accepted} images labelled by the model alone earlier still are.`)] : []),
    );
    return;
  }
  const cfg = a.settings;
  const spot = a.spot_checks;
  box.replaceChildren(
    h("p", { "data-auto-accept": a.enabled ? "on" : "off" }, a.enabled
      ? `On: model version ${a.model_version}, threshold ${a.threshold}.`
      : `Not labelling: ${a.reason}.`),
    h("p.muted", {}, `Target accuracy ${percent(cfg.target_accuracy)} with ${percent(cfg.confidence)} confidence, from at least ${cfg.min_checked} checked images; spot-checks on ${percent(cfg.spot_check_rate)} of the images it could label.`),
    h("div.stats", {},
      stat("Images labelled by the model alone", String(a.images_auto_accepted), "auto_accepted"),
      stat("Checked images above the threshold", `${a.correct} / ${a.checked}`, "checked"),
      stat("Their accuracy (lower bound)", `${percent(a.accuracy)} (${percent(a.lower_bound)})`, "accuracy"),
      stat("Spot-checks right", spot ? `${spot.correct} / ${spot.checked}` : "—", "spot_checks"),
    ),
    ...(a.computed_at ? [h("p.muted", {}, `Calibrated ${when(a.computed_at)}.`)] : []),
  );
}

function autoAcceptAction(send, done) {
  return reporting($("#auto-accept-error"), async () => {
    toast(done(await send()), "ok");
    await loadAutoAccept();
  });
}

$("#auto-accept-run").addEventListener("click", () =>
  autoAcceptAction(
    () => api(`${base}/auto-accept/`, { method: "POST" }),
    () => "Auto-accept is calibrating; the figures update when it is done.",
  ),
);
$("#auto-accept-reopen").addEventListener("click", () => {
  if (!window.confirm("Send every image the model labelled alone back to the crowd? Their tasks open again, and auto-accept never labels them again.")) return;
  autoAcceptAction(
    () => api(`${base}/auto-accept/reopen/`, { method: "POST", body: { all: true } }),
    (r) => `${r.reopened} images sent back to the crowd.`,
  );
});

async function suspend(w) {
  const reason = window.prompt(`Why suspend ${w.username}? They see this reason.`);
  if (reason === null) return;
  try {
    await api(`${base}/workers/${w.worker}/suspend/`, { method: "POST", body: { reason } });
    toast(`${w.username} suspended; their answers no longer count.`, "ok");
    await loadWorkers();
  } catch (err) {
    toast(err.message, "error");
  }
}

async function reinstate(w) {
  try {
    await api(`${base}/workers/${w.worker}/reinstate/`, { method: "POST" });
    toast(`${w.username} reinstated.`, "ok");
    await loadWorkers();
  } catch (err) {
    toast(err.message, "error");
  }
}

async function loadBonuses() {
  const page = await api(`${base}/bonuses/?limit=50`);
  const rows = page.results.map((b) => [when(b.created_at), (workers.find((w) => w.worker === b.worker) || {}).username || String(b.worker), `${b.amount} ${b.currency}`, b.reason]);
  $("#bonus-list").replaceChildren(table("Bonuses", ["When", "Worker", "Amount", "Reason"], rows, "No bonuses yet."));
}

async function loadExports() {
  const page = await api(`${base}/exports/?limit=50`);
  const list = page.results || page;
  const rows = list.map((x) => [
    `v${x.version}`,
    x.format,
    h("span", { class: `badge ${x.status}` }, x.status === "running" && x.images_total ? `running ${Math.round((100 * x.images_done) / x.images_total)}%` : x.status),
    x.counts && x.counts.images !== undefined ? `${x.counts.images} images, ${x.counts.annotations ?? 0} labels` : "",
    when(x.created_at),
    x.download_url ? h("a", { href: `/api/v1/exports/${x.id}/download/`, download: "" }, `Download v${x.version}`) : x.error || "",
  ]);
  $("#export-list").replaceChildren(table("Dataset versions", ["Version", "Format", "Status", "Contents", "Created", ""], rows, "No exports yet."));
}

async function loadImageCount() {
  const page = await api(`${base}/images/?limit=1`);
  $("#image-count").textContent = `${page.count} images in this project.`;
}

// Upload: files go in batches under the server's per-request limit, with one progress bar.
async function uploadFiles(files) {
  const batches = [];
  let batch = [];
  let size = 0;
  const limit = Math.min(maxUpload, 64 * 1024 * 1024);
  for (const file of files) {
    if (batch.length && (size + file.size > limit || batch.length >= 50)) {
      batches.push(batch);
      batch = [];
      size = 0;
    }
    batch.push(file);
    size += file.size;
  }
  if (batch.length) batches.push(batch);
  const total = files.reduce((s, f) => s + f.size, 0) || 1;
  let sent = 0;
  const bar = $("#upload-bar");
  $("#upload-progress").hidden = false;
  const results = [];
  for (const group of batches) {
    const form = new FormData();
    for (const file of group) form.append("files", file, file.name);
    const groupSize = group.reduce((s, f) => s + f.size, 0);
    try {
      const report = await upload(`${base}/images/`, form, (fraction) => (bar.value = (sent + fraction * groupSize) / total));
      results.push(...report.files);
    } catch (err) {
      // An upload that stored nothing is a 400 that still carries each file's result.
      if (err.body && Array.isArray(err.body.files)) results.push(...err.body.files);
      else results.push(...group.map((f) => ({ name: f.name, result: "rejected", error: err.message })));
    }
    sent += groupSize;
    bar.value = sent / total;
  }
  $("#upload-progress").hidden = true;
  const created = results.filter((r) => r.result === "created").length;
  const duplicates = results.filter((r) => r.result === "duplicate").length;
  const rejected = results.filter((r) => r.result === "rejected");
  $("#upload-result").replaceChildren(
    h("p", { class: rejected.length ? "warn" : "ok" }, `${created} created, ${duplicates} duplicates, ${rejected.length} rejected.`),
    table(
      "Files",
      ["File", "Result", "Detail"],
      results.map((r) => [r.name, h("span", { class: `badge ${r.result === "rejected" ? "failed" : r.result === "created" ? "done" : ""}`, "data-result": r.result }, r.result), r.error || (r.duplicate_of ? `same as image ${r.duplicate_of}` : "")]),
    ),
  );
  loadImageCount();
  loadProgress();
}

const drop = $("#dropzone");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  uploadFiles([...e.dataTransfer.files]);
});
$("#files").addEventListener("change", (e) => {
  uploadFiles([...e.target.files]);
  e.target.value = "";
});

function transition(action) {
  return reporting($("#state-error"), async () => {
    renderProject(await api(`${base}/${action}/`, { method: "POST" }));
    toast(action === "start" ? "Project started: workers can take tasks." : "Project paused.", "ok");
  });
}
$("#start").addEventListener("click", () => transition("start"));
$("#pause").addEventListener("click", () => transition("pause"));

function formHandler(id, send) {
  const form = document.getElementById(id);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await send(form, Object.fromEntries(new FormData(form).entries()));
      showErrors(form, { errors: {}, message: "" });
      const general = form.querySelector('[data-error="form"]');
      if (general) general.hidden = true;
    } catch (err) {
      showErrors(form, err);
    } finally {
      button.disabled = false;
    }
  });
}

formHandler("bonus-form", async (form, data) => {
  const bonus = await api(`${base}/bonuses/`, { method: "POST", body: { ...data, worker: Number(data.worker) }, headers: { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) } });
  toast(`Bonus of ${bonus.amount} ${bonus.currency} granted.`, "ok");
  form.reset();
  loadBonuses();
});
formHandler("export-form", async (form, data) => {
  await api(`${base}/exports/`, { method: "POST", body: { format: data.format, min_confidence: Number(data.min_confidence || 0) } });
  toast("Export queued.", "ok");
  loadExports();
});
formHandler("share-form", async (form, data) => {
  await api(`${base}/clients/`, { method: "POST", body: { username: data.username } });
  toast(`${data.username} can now download this project's datasets.`, "ok");
  form.reset();
});
formHandler("settings-form", async (form, data) => {
  const body = {};
  for (const [key, value] of Object.entries(data)) {
    const input = form.elements[key];
    if (key === "budget") body.budget = value === "" ? null : value;
    else if (input.type === "number") body[key] = Number(value);
    else body[key] = value;
  }
  renderProject(await api(base, { method: "PATCH", body }));
  toast("Settings saved.", "ok");
});

const refreshWorkers = throttle(loadWorkers, 2000);
const refreshExports = throttle(loadExports, 1000);
const refreshAutoAccept = throttle(() => loadAutoAccept().catch(() => {}), 10000);
live(
  `/ws/projects/${projectId}/`,
  (event) => {
    if (event.type === "progress") {
      renderProgress(event);
      loadChart();
      loadAgreement();
      loadPrelabelEffect();
      refreshAutoAccept();
    } else if (event.type === "prediction_run") runChanged(event);
    else if (event.type === "worker") refreshWorkers();
    else if (event.type === "export") refreshExports();
  },
  { onState: (state) => ($("#live-state").textContent = state === "open" ? "live" : "reconnecting…") },
);

renderProject(await api(base));
await Promise.all([loadProgress(), loadWorkers(), loadBonuses(), loadExports(), loadImageCount(), loadAutoAccept(), loadRun()]).catch((err) => toast(err.message, "error"));
loadChart();
loadAgreement();
loadPrelabelEffect();
