// The client's datasets: each shared project's versions with their cards and downloads.
import { all, api } from "./api.js";
import { $, h, toast, when } from "./dom.js";

function size(bytes) {
  if (!bytes) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  let n = bytes;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function versionCard(project, x) {
  const done = x.status === "done";
  return h(
    "article.card",
    { "data-export": x.id },
    h("h3", {}, `${project.name} v${x.version} · ${x.format.toUpperCase()}`),
    h("p", {}, h("span", { class: `badge ${x.status}` }, x.status), " ", when(x.finished_at || x.created_at), done ? ` · ${size(x.size_bytes)}` : ""),
    done
      ? h("p", {}, h("a.button.primary", { href: `/api/v1/exports/${x.id}/download/`, download: x.file_name || "", "aria-label": `Download ${project.name} version ${x.version} (${x.format})` }, "Download"))
      : x.error
        ? h("p.error", {}, x.error)
        : null,
    x.sha256 ? h("p.help", {}, "SHA-256 ", h("code", {}, x.sha256)) : null,
    x.card ? h("details", {}, h("summary", {}, "Dataset card"), h("pre.instructions", {}, x.card)) : null,
  );
}

async function load() {
  const projects = await all("/projects/?limit=500");
  const box = $("#projects");
  box.replaceChildren();
  if (!projects.length) {
    box.append(h("p.muted", {}, "No project has been shared with you yet. Ask the project's manager."));
    return;
  }
  for (const project of projects) {
    const exports = await api(`/projects/${project.id}/exports/`);
    const list = exports.results || exports;
    box.append(
      h(
        "section",
        { "aria-labelledby": `p${project.id}` },
        h("h2", { id: `p${project.id}` }, project.name, " ", h("span.muted", {}, `(${project.kind})`)),
        list.length ? h("div.cards", {}, list.map((x) => versionCard(project, x))) : h("p.muted", {}, "No dataset versions yet."),
      ),
    );
  }
}

load().catch((err) => toast(err.message, "error"));
