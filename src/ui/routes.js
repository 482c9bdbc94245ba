// routes: every route and source with the state all instances share (paused, stopped by a peer's 410, the
// circuit), its concurrency and last error, and the pause and resume buttons.
import { $, el, errorCell, setStatus, when } from "./dom.js";
import { api, post } from "./api.js";
import { listKeys, row, replaceRows } from "./keys.js";

export function wire() {
  // Enter on a row presses its button.
  for (const id of ["routes", "sources"]) listKeys($(id), (tr) => tr.querySelector("button")?.click());
}

function stateCell(item) {
  const td = el("td");
  if (item.paused) td.append(el("span", "paused by " + item.paused.by + (item.paused.reason ? ": " + item.paused.reason : ""), "tag paused"), " ");
  if (item.stopped) td.append(el("span", "stopped: peer answered " + item.stopped.status, "tag stopped"), " ");
  if (item.circuit === "open") td.append(el("span", "circuit open" + (item.circuit_open_until ? " until " + new Date(item.circuit_open_until).toLocaleTimeString() : ""), "tag open"), " ");
  else if (item.circuit && item.circuit !== "closed") td.append(el("span", "circuit " + item.circuit, "tag " + item.circuit), " ");
  if (item.enabled === false) td.append(el("span", "off in the configuration", "tag muted"));
  if (!td.childNodes.length) td.append(el("span", "active", "tag succeeded"));
  return td;
}

// Pause asks for a reason; resume clears a pause, a 410 stop and an open circuit. Both act on every instance.
function controlButton(kind, item) {
  const held = item.paused || item.stopped || (item.circuit && item.circuit !== "closed");
  const b = el("button", held ? "Resume" : "Pause");
  b.type = "button";
  b.dataset.action = (held ? "resume-" : "pause-") + kind + ":" + item.name;
  b.addEventListener("click", async () => {
    const body = { by: "dashboard" };
    if (!held) {
      const reason = window.prompt("Why pause " + kind + " " + item.name + "?", "");
      if (reason === null) return;
      body.reason = reason;
    }
    try {
      await post("/api/v1/" + kind + "s/" + encodeURIComponent(item.name) + (held ? "/resume" : "/pause"), body);
      setStatus(kind + " " + item.name + (held ? " resumed" : " paused"));
      refresh();
    } catch (e) { setStatus(e.message, "error"); }
  });
  return b;
}

function lastError(r) {
  const td = errorCell(r.last_error && r.last_error.message);
  if (r.last_error) td.prepend(el("span", when(r.last_error.at) + " · ", "muted"));
  return td;
}

let lastDrawn = "";

export async function refresh() {
  const [routes, sources] = await Promise.all([api("/api/v1/routes"), api("/api/v1/sources")]);
  // Nothing changed since the last poll: leave the rows (and the operator's focus and hover) alone.
  const seen = JSON.stringify([routes, sources]);
  if (seen === lastDrawn) return { routes: routes.items, sources: sources.items };
  lastDrawn = seen;
  replaceRows($("routes"), routes.items.map((r) => {
    const tr = row(r.name);
    const td = el("td"); td.append(controlButton("route", r));
    tr.append(el("td", r.name), el("td", r.source), stateCell(r),
      el("td", r.concurrency ? String(r.concurrency) : "unlimited"), lastError(r), td);
    return tr;
  }));
  replaceRows($("sources"), sources.items.map((s) => {
    const tr = row(s.name);
    const td = el("td"); td.append(controlButton("source", s));
    tr.append(el("td", s.name), el("td", s.provider), stateCell(s), td);
    return tr;
  }));
  return { routes: routes.items, sources: sources.items };
}
