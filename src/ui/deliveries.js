// deliveries: search stored deliveries (source, event, delivery id, time range, job status, a body filter in
// the route filter language) and open one: its jobs and attempts, headers and body, replay and retry.
import { $, el, button, fillSelect, timeCell, setStatus } from "./dom.js";
import { api, post, query } from "./api.js";
import { listKeys, row, replaceRows } from "./keys.js";

const FIELDS = { source: "q-source", event: "q-event", delivery: "q-delivery", status: "q-status", since: "q-since", until: "q-until", filter: "q-filter" };
let cursor = null;
let pages = 0;
let selected = null;
let lastDrawn = "";

function params() {
  const p = { limit: 50 };
  for (const [k, id] of Object.entries(FIELDS)) p[k] = $(id).value.trim();
  return p;
}

export function mount(sources) { fillSelect($("q-source"), sources, "any"); }

export function wire() {
  $("search").addEventListener("submit", (e) => { e.preventDefault(); search(false); });
  $("q-clear").addEventListener("click", () => { for (const id of Object.values(FIELDS)) $(id).value = ""; search(false); });
  $("more").addEventListener("click", () => search(true));
  listKeys($("deliveries"), (tr) => open(tr.dataset.key));
}

function jobCounts(j) {
  const span = el("span");
  for (const s of ["queued", "running", "succeeded", "dead", "cancelled"]) {
    if (j[s]) span.append(el("span", j[s] + " " + s, "tag " + s), " ");
  }
  if (!span.childNodes.length) span.append(el("span", "no jobs", "muted"));
  return span;
}

function deliveryRow(d) {
  const tr = row(d.id, "delivery" + (d.id === selected ? " selected" : ""));
  const jobs = el("td"); jobs.append(jobCounts(d.jobs));
  tr.append(timeCell(d.received_at), el("td", d.source), el("td", d.event), el("td", d.delivery, "wide mono"), jobs);
  tr.addEventListener("click", () => open(d.id));
  return tr;
}

// Run the search again (first page), or fetch the next page after the last one shown.
export async function search(append) {
  if (append && !cursor) return;
  const p = params();
  if (append) p.cursor = cursor;
  try {
    const page = await api("/api/v1/deliveries?" + query(p));
    const seen = JSON.stringify([p, page]);
    if (!append && seen === lastDrawn) { setStatus("updated " + new Date().toLocaleTimeString()); return; }
    lastDrawn = append ? "" : seen;
    const rows = page.items.map(deliveryRow);
    if (append) { $("deliveries").append(...rows); pages += 1; } else { replaceRows($("deliveries"), rows); pages = 1; }
    cursor = page.next;
    $("more").hidden = !cursor;
    const shown = $("deliveries").children.length;
    let note = shown ? "" : "No delivery matches.";
    if (page.scanned !== undefined) note = `${shown} shown · ${page.scanned} deliveries scanned by the body filter` + (cursor ? " · Older… scans further" : "");
    $("deliveries-note").textContent = note;
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (e) { setStatus(e.message, "error"); }
}

// Live update: the first page again (an operator paging back through older results is left alone), and the
// open delivery while its jobs are still moving.
export async function refresh() {
  if (pages <= 1) await search(false);
  if (selected && !$("detail").dataset.settled) await show(selected);
}

export function open(id) {
  selected = id;
  for (const tr of $("deliveries").children) tr.classList.toggle("selected", tr.dataset.key === id);
  history.replaceState(null, "", "#/deliveries/" + encodeURIComponent(id));
  show(id);
}

async function act(promise, done) {
  try { const r = await promise; setStatus(done(r)); await show(selected); } catch (e) { setStatus(e.message, "error"); }
}

function attempts(j) {
  const table = el("table", null, "attempts");
  const head = el("tr");
  for (const h of ["#", "started", "result", "error"]) head.append(el("th", h));
  table.append(head);
  for (const a of j.attempt_log || []) {
    const tr = el("tr");
    tr.append(el("td", a.attempt), timeCell(a.started_at),
      el("td", a.ok ? "ok" : "failed" + (a.status_code ? " (" + a.status_code + ")" : ""), a.ok ? "succeeded" : "dead"),
      el("td", a.error || "", "error-text"));
    table.append(tr);
    if (a.output) { const o = el("tr"); const td = el("td"); td.colSpan = 4; td.append(el("pre", a.output)); o.append(td); table.append(o); }
  }
  return table;
}

export async function show(id) {
  const detail = $("detail");
  let d;
  try { d = await api("/api/v1/deliveries/" + encodeURIComponent(id)); }
  catch (e) { setStatus(e.message, "error"); return; }
  if (id !== selected) return;
  const moving = d.jobs.some((j) => j.status === "queued" || j.status === "running");
  if (moving) delete detail.dataset.settled; else detail.dataset.settled = "1";
  const parts = [];
  const title = el("h2"); title.append(el("span", d.source), " · ", el("span", d.event, "event-name"));
  parts.push(title);
  parts.push(el("p", "id " + d.id + " · delivery " + d.delivery + " · received " + d.received_at, "muted mono"));
  parts.push(button("Replay", () => act(post("/api/v1/deliveries/" + encodeURIComponent(id) + "/replay"),
    (r) => "replayed: " + r.jobs + " job(s)"), "replay"));
  parts.push(el("h3", "Jobs"));
  if (!d.jobs.length) parts.push(el("p", "No route took this delivery.", "muted"));
  for (const j of d.jobs) {
    const box = el("div", null, "job");
    box.dataset.job = j.id;
    const line = el("p");
    line.append(el("strong", j.route), " ", el("span", j.status, "tag " + j.status), " · attempts " + j.attempts);
    if (j.next_attempt_at && j.status === "queued") line.append(" · next " + j.next_attempt_at);
    if (j.status === "dead" || j.status === "succeeded" || j.status === "cancelled") {
      line.append(" ", button("Retry", () => act(post("/api/v1/jobs/" + encodeURIComponent(j.id) + "/retry"),
        () => "job of " + j.route + " queued again"), "retry"));
    }
    box.append(line);
    if (j.last_error && j.status !== "succeeded") box.append(el("p", j.last_error, "error-text"));
    box.append(attempts(j));
    parts.push(box);
  }
  parts.push(el("h3", "Headers"), el("pre", JSON.stringify(d.headers, null, 2)));
  parts.push(el("h3", "Body"), el("pre", typeof d.body === "string" ? d.body : JSON.stringify(d.body, null, 2)));
  detail.replaceChildren(...parts);
}
