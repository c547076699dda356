// The manager's project list and client accounts.
import { all, api } from "./api.js";
import { $, h, showErrors, table, toast, when } from "./dom.js";

async function load() {
  const projects = await all("/projects/?limit=500");
  const progress = await Promise.all(projects.map((p) => api(`/projects/${p.id}/progress/`).catch(() => null)));
  const rows = projects.map((p, i) => {
    const pr = progress[i];
    const pct = pr && pr.tasks ? Math.round((100 * pr.done) / (pr.tasks - pr.gold || 1)) : 0;
    return [
      h("a", { href: `/manage/projects/${p.id}/` }, p.name),
      p.kind,
      h("span", { class: `badge ${p.state}` }, p.state),
      pr ? `${pr.done} / ${pr.tasks - pr.gold} tasks (${pct}%)` : "—",
      pr && pr.spent ? `${pr.spent.amount} ${pr.spent.currency}` : "—",
      when(p.created_at),
    ];
  });
  $("#projects").replaceChildren(table("Your projects", ["Name", "Kind", "State", "Progress", "Spent", "Created"], rows, "No projects yet: create one."));
}

$("#client-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  try {
    const user = await api("/clients/", { method: "POST", body: Object.fromEntries(new FormData(form).entries()) });
    toast(`Client ${user.username} created. Share a project with them from its page.`, "ok");
    form.reset();
  } catch (err) {
    showErrors(form, err);
  }
});

load().catch((err) => toast(err.message, "error"));
