// dead: dead jobs by route with their last error; retry one, the selected ones, or every dead job that matches.
import { $, el, button, errorCell, fillSelect, timeCell, setStatus } from "./dom.js";
import { api, post, query, newKey } from "./api.js";
import { listKeys, row, replaceRows } from "./keys.js";
import { open as openDelivery } from "./deliveries.js";

const PAGE = 100;
const chosen = new Set();
let cursor = null;
let pages = 0;
let lastDrawn = "";

export function wire() {
  $("dead-route").addEventListener("change", () => { chosen.clear(); refresh(); });
  $("dead-more").addEventListener("click", () => load(true));
  $("dead-all").addEventListener("change", (e) => {
    for (const box of $("dead").querySelectorAll("input[type=checkbox]")) if (box.checked !== e.target.checked) box.click();
  });
  $("dead-retry-selected").addEventListener("click", retrySelected);
  $("dead-retry-all").addEventListener("click", retryAll);
  listKeys($("dead"), (tr) => { location.hash = "#/deliveries"; openDelivery(tr.dataset.delivery); });
}

export function mount(routes) { fillSelect($("dead-route"), routes, "all routes"); }

function selectionChanged() {
  $("dead-retry-selected").disabled = chosen.size === 0;
  $("dead-retry-selected").textContent = chosen.size ? `Retry selected (${chosen.size})` : "Retry selected";
}

function deadRow(j) {
  const tr = row(j.id, "dead-job");
  tr.dataset.delivery = j.delivery_id;
  const box = el("input"); box.type = "checkbox"; box.checked = chosen.has(j.id);
  box.setAttribute("aria-label", "select job " + j.id);
  box.addEventListener("change", () => { if (box.checked) chosen.add(j.id); else chosen.delete(j.id); selectionChanged(); });
  const pick = el("td"); pick.append(box);
  const retry = el("td");
  retry.append(button("Retry", async () => {
    try { await post("/api/v1/jobs/" + encodeURIComponent(j.id) + "/retry"); chosen.delete(j.id); setStatus("job of " + j.route + " queued again"); refresh(); }
    catch (e) { setStatus(e.message, "error"); }
  }, "retry"));
  const from = el("td"); from.append(el("span", j.source ?? ""), " · ", el("span", j.event ?? ""));
  tr.append(pick, timeCell(j.updated_at), el("td", j.route), from, el("td", j.attempts), errorCell(j.last_error), retry);
  return tr;
}

function groups() {
  const counts = new Map();
  for (const tr of $("dead").children) {
    const route = tr.children[2].textContent;
    counts.set(route, (counts.get(route) || 0) + 1);
  }
  const cards = [];
  for (const [route, n] of counts) {
    const c = el("button", null, "card bad");
    c.type = "button";
    c.append(el("div", route, "card-label"), el("div", String(n) + (cursor ? "+" : ""), "card-value"));
    c.addEventListener("click", () => { $("dead-route").value = route; chosen.clear(); refresh(); });
    cards.push(c);
  }
  if (!cards.length) cards.push(el("p", "No dead jobs" + ($("dead-route").value ? " for this route." : "."), "muted"));
  $("dead-groups").replaceChildren(...cards);
}

async function load(append) {
  const p = { status: "dead", route: $("dead-route").value, limit: PAGE };
  if (append) p.cursor = cursor;
  const page = await api("/api/v1/jobs?" + query(p));
  const seen = JSON.stringify([p, page]);
  if (!append && seen === lastDrawn) return;
  lastDrawn = append ? "" : seen;
  const rows = page.items.map(deadRow);
  if (append) { $("dead").append(...rows); pages += 1; } else { replaceRows($("dead"), rows); pages = 1; }
  cursor = page.next;
  $("dead-more").hidden = !cursor;
  // Selections of jobs no longer dead (retried elsewhere) are dropped.
  const shown = new Set(Array.from($("dead").children, (tr) => tr.dataset.key));
  for (const id of chosen) if (!shown.has(id)) chosen.delete(id);
  selectionChanged();
  groups();
}

export async function refresh() { if (pages <= 1) await load(false); }

async function retrySelected() {
  const ids = Array.from(chosen);
  const results = await Promise.allSettled(ids.map((id) => post("/api/v1/jobs/" + encodeURIComponent(id) + "/retry")));
  const failed = results.filter((r) => r.status === "rejected").length;
  chosen.clear();
  setStatus(`${ids.length - failed} job(s) queued again` + (failed ? `, ${failed} failed` : ""), failed ? "error" : "");
  refresh();
}

async function retryAll() {
  const route = $("dead-route").value;
  const what = route ? "every dead job of route " + route : "every dead job of every route";
  if (!window.confirm("Retry " + what + "?")) return;
  try {
    const r = await post("/api/v1/jobs/retry", { status: "dead", route: route || undefined }, newKey());
    setStatus(r.count + " job(s) queued again" + (r.more ? "; more matched: press again for the rest" : ""));
    chosen.clear();
    refresh();
  } catch (e) { setStatus(e.message, "error"); }
}
