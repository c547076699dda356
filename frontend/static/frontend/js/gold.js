// The gold editor: the workspace's tools on the project's images; saves through /gold/.
import { Annotator } from "../annotator.js";
import { all, api } from "./api.js";
import { $, h, labelMark, labelPicker, toast } from "./dom.js";
import { importForm } from "./imports.js";

const projectId = Number(document.getElementById("main").dataset.project);
const base = `/projects/${projectId}`;
const PAGE = 24;
let project = null;
let gold = new Map(); // image id -> annotations
let offset = 0;
let current = null; // {image, annotator}

function labelButtons() {
  labelPicker($("#labels"), project.labels, (name) => current && current.annotator.setLabel(name));
}

function markLabel(name) {
  labelMark($("#labels"), name);
}

function open(image) {
  if (current) current.annotator.destroy();
  $("#empty").hidden = true;
  $("#gold-error").hidden = true;
  const annotator = new Annotator($("#stage"), {
    kind: project.kind,
    maskMode: project.mask_mode,
    labels: project.labels,
    imageUrl: image.url,
    width: image.width,
    height: image.height,
    annotations: gold.get(image.id) || [],
    listElement: $("#objects"),
    hintElement: $("#hint"),
    onLabel: markLabel,
  });
  current = { image, annotator };
  // A card picked further down the page brings the editor back into sight.
  $("#stage").scrollIntoView({ block: "nearest" });
  $("#save").disabled = false;
  $("#remove").disabled = !gold.has(image.id);
  for (const card of document.querySelectorAll("[data-image]")) card.setAttribute("aria-current", String(Number(card.dataset.image) === image.id));
}

async function save() {
  if (!current) return;
  const { image, annotator } = current;
  if (annotator.drafting) annotator.finishDraft();
  const annotations = annotator.getAnnotations();
  $("#save").disabled = true;
  try {
    await api(`${base}/gold/`, { method: "POST", body: { image: image.id, annotations } });
    gold.set(image.id, annotations);
    toast(`Gold saved for ${image.name}.`, "ok");
    $("#remove").disabled = false;
    renderImages(lastPage);
  } catch (err) {
    const box = $("#gold-error");
    box.textContent = `${err.message} ${Object.keys(err.errors).length ? JSON.stringify(err.errors) : ""}`;
    box.hidden = false;
  } finally {
    $("#save").disabled = false;
  }
}

async function remove() {
  if (!current || !window.confirm("Remove this image's gold answer?")) return;
  try {
    await api(`${base}/gold/${current.image.id}/`, { method: "DELETE" });
    gold.delete(current.image.id);
    current.annotator.setAnnotations([]);
    $("#remove").disabled = true;
    toast("Gold removed.", "ok");
    renderImages(lastPage);
  } catch (err) {
    toast(err.message, "error");
  }
}

let lastPage = [];
function renderImages(images) {
  lastPage = images;
  const onlyGold = $("#only-gold").checked;
  const shown = onlyGold ? images.filter((i) => gold.has(i.id)) : images;
  $("#images").replaceChildren(
    ...shown.map((image) =>
      h(
        "button.card",
        { type: "button", "data-image": image.id, onclick: () => open(image), "aria-label": `${image.name}${gold.has(image.id) ? ", has gold" : ""}` },
        image.thumbnail_url ? h("img", { src: image.thumbnail_url, alt: "", width: 160, loading: "lazy" }) : null,
        h("div", {}, image.name),
        gold.has(image.id) ? h("span.badge.done", {}, "gold") : h("span.badge", {}, image.status),
      ),
    ),
  );
  $("#gold-count").textContent = `(${gold.size} with gold)`;
}

async function loadPage() {
  const page = await api(`${base}/images/?limit=${PAGE}&offset=${offset}`);
  $("#prev").disabled = offset === 0;
  $("#next").disabled = !page.next;
  renderImages(page.results);
}

async function loadGold() {
  gold = new Map((await all(`${base}/gold/?limit=500`, Infinity)).map((g) => [g.image, g.annotations]));
}

importForm($("#import-form"), $("#import-result"), {
  path: `${base}/gold/file/`,
  refusedCode: "invalid_gold",
  summary: (r, rejected) => `${r.created} made gold, ${r.replaced} replaced (images); ${rejected} not stored (items).`,
  onStored: async () => {
    await loadGold();
    await loadPage();
    if (current) open(current.image);
  },
});
$("#save").addEventListener("click", save);
$("#remove").addEventListener("click", remove);
$("#undo").addEventListener("click", () => current && current.annotator.undo());
$("#redo").addEventListener("click", () => current && current.annotator.redo());
$("#prev").addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE);
  loadPage();
});
$("#next").addEventListener("click", () => {
  offset += PAGE;
  loadPage();
});
$("#only-gold").addEventListener("change", () => renderImages(lastPage));

project = await api(base);
$("#project-name").textContent = project.name;
labelButtons();
await loadGold();
await loadPage().catch((err) => toast(err.message, "error"));
