// The worker's home: projects with live availability, earnings, payouts and history.
import { all, api } from "./api.js";
import { $, duration, h, money, showErrors, table, toast, when } from "./dom.js";
import { live } from "./live.js";

const available = new Map(); // project id -> {n, exact}: answers it can hand out now
let projects = [];

function renderProjects() {
  const box = $("#projects");
  box.replaceChildren();
  if (!projects.length) {
    box.append(h("p.muted", {}, "No projects are open for you right now. This page updates when one opens."));
    return;
  }
  box.append(
    h(
      "div.cards",
      {},
      projects.map((p) => {
        const { n, exact } = available.get(p.id) || { n: p.available, exact: true };
        return h(
          "article.card",
          { "data-project": p.id },
          h("h3", {}, p.name),
          h("p", {}, h("strong", {}, `${p.reward} ${p.currency}`), " a task · ", p.kind,
            " · about ", p.estimated_seconds ? duration(p.estimated_seconds) : "a minute", " each"),
          h("p", { class: n > 0 ? "ok" : "muted", "data-available": n }, n > 0 ? `${n}${exact ? "" : "+"} tasks available now` : "No tasks right now"),
          h("a.button.primary", { href: `/work/projects/${p.id}/` }, "Start working"),
        );
      }),
    ),
  );
}

async function loadProjects() {
  projects = await all("/projects/?limit=500");
  renderProjects();
}

async function loadMe() {
  const me = await api("/me/");
  const rates = (me.hourly_rates || []).map(money).join(", ") || "—";
  $("#earnings").replaceChildren(
    ...[
      ["Balance", money(me.balance)],
      ...(me.balances || []).filter((b) => b.currency !== me.balance.currency).map((b) => ["Balance", money(b)]),
      ["Effective hourly rate", rates],
      ["Quality score", me.score === null || me.score === undefined ? "—" : `${Math.round(me.score * 100)}%`],
    ].map(([label, value]) => h("div.stat", {}, h("div.value", {}, value), h("div.label", {}, label))),
  );
  const box = $("#suspensions");
  box.replaceChildren(
    ...(me.suspensions || []).map((s) => {
      const project = projects.find((p) => p.id === s.project);
      return h("div.callout.bad", { role: "alert" }, h("strong", {}, `Suspended from ${project ? project.name : `project ${s.project}`}: `), s.reason || "no reason given");
    }),
  );
}

async function loadPayouts() {
  const [list, account] = await Promise.all([api("/me/payouts/"), api("/me/payout-account/").catch(() => null)]);
  const rows = (list.results || list).map((p) => [when(p.created_at), `${p.amount} ${p.currency}`, h("span", { class: `badge ${p.status}` }, p.status), p.failure_reason || ""]);
  $("#payouts").replaceChildren(table("Payouts", ["Requested", "Amount", "Status", "Note"], rows, "No payouts yet."));
  const box = $("#payout-account");
  box.replaceChildren();
  if (account && account.provider === "stripe" && !account.payouts_enabled) {
    const button = h("button", { type: "button" }, "Set up payouts with Stripe");
    button.addEventListener("click", async () => {
      try {
        const link = await api("/me/payout-account/", { method: "POST" });
        if (link.onboarding_url) window.location.assign(link.onboarding_url);
      } catch (err) {
        toast(err.message, "error");
      }
    });
    box.append(h("p", {}, "Payouts go to your Stripe account. ", button));
  }
}

async function loadHistory() {
  const page = await api("/me/assignments/?limit=50");
  const rows = page.results.map((a) => [
    when(a.submitted_at || a.leased_at),
    a.project_name,
    h("span", { class: `badge ${a.status}` }, a.status),
    `${a.reward} ${a.currency}`,
    a.time_spent_ms ? duration(a.time_spent_ms / 1000) : "—",
    a.review_reason || "",
  ]);
  $("#history").replaceChildren(table(`Your last ${rows.length} of ${page.count} tasks`, ["When", "Project", "Status", "Reward", "Time", "Review note"], rows, "You have not answered any task yet."));
}

$("#payout-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const amount = form.amount.value.trim();
  try {
    const payout = await api("/me/payouts/", { method: "POST", body: amount ? { amount } : {} });
    toast(`Payout of ${payout.amount} ${payout.currency} requested.`, "ok");
    form.reset();
    showErrors(form, { errors: {}, message: "" });
    $("#form-error").hidden = true;
    await Promise.all([loadMe(), loadPayouts()]);
  } catch (err) {
    showErrors(form, err);
  }
});

live(
  "/ws/worker/",
  (event) => {
    if (event.type === "queue") {
      available.set(event.project, event.state === "active" ? { n: event.available, exact: event.exact !== false } : { n: 0, exact: true });
      if (!projects.some((p) => p.id === event.project) && event.state === "active") loadProjects();
      else renderProjects();
    } else if (event.type === "balance" || event.type === "score") {
      loadMe();
    }
  },
  { onState: (state) => ($("#live-state").textContent = state === "open" ? "· live" : "· reconnecting…") },
);

await loadProjects();
await Promise.all([loadMe(), loadPayouts(), loadHistory()]).catch((err) => toast(err.message, "error"));
