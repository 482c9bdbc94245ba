"use strict";
// Every value from the API is inserted with textContent: payloads come from the outside world.
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("hookgate-token") || "";
let cursor = null;
$("token").value = token;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token };
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body && body.message) || response.statusText);
  return body;
}

function jobCounts(j) {
  const span = el("span");
  for (const s of ["queued", "running", "succeeded", "dead", "cancelled"]) {
    if (j[s]) { span.append(el("span", j[s] + " " + s, s), " "); }
  }
  if (!span.childNodes.length) span.append(el("span", "none", "muted"));
  return span;
}

async function loadDeliveries(append) {
  const params = new URLSearchParams({ limit: "50" });
  if ($("source").value) params.set("source", $("source").value);
  if ($("event").value) params.set("event", $("event").value);
  if (append && cursor) params.set("cursor", cursor);
  try {
    const page = await api("/api/v1/deliveries?" + params);
    const tbody = $("deliveries");
    if (!append) tbody.replaceChildren();
    for (const d of page.items) {
      const tr = el("tr", null, "delivery");
      tr.append(el("td", d.received_at), el("td", d.source), el("td", d.event));
      const td = el("td"); td.append(jobCounts(d.jobs)); tr.append(td);
      tr.addEventListener("click", () => {
        document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
        tr.classList.add("selected");
        showDelivery(d.id);
      });
      tbody.append(tr);
    }
    cursor = page.next;
    $("more").hidden = !cursor;
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) { $("status").textContent = e.message; }
}

async function showDelivery(id) {
  const detail = $("detail");
  try {
    const d = await api("/api/v1/deliveries/" + encodeURIComponent(id));
    detail.replaceChildren();
    detail.append(el("h2", d.source + " · " + d.event));
    detail.append(el("p", "id " + d.id + " · delivery " + d.delivery + " · received " + d.received_at, "muted"));
    const replay = el("button", "Replay");
    replay.addEventListener("click", async () => {
      try { const r = await api("/api/v1/deliveries/" + encodeURIComponent(id) + "/replay", { method: "POST" });
            $("status").textContent = "replayed: " + r.jobs + " job(s)"; showDelivery(id); }
      catch (e) { $("status").textContent = e.message; }
    });
    detail.append(replay);
    detail.append(el("h3", "Jobs"));
    for (const j of d.jobs) {
      const box = el("div");
      const line = el("p");
      line.append(el("strong", j.route), " ", el("span", j.status, j.status), " · attempts " + j.attempts);
      if (j.next_attempt_at && j.status === "queued") line.append(" · next " + j.next_attempt_at);
      if (j.status === "dead" || j.status === "succeeded") {
        const retry = el("button", "Retry");
        retry.addEventListener("click", async () => {
          try { await api("/api/v1/jobs/" + encodeURIComponent(j.id) + "/retry", { method: "POST" }); showDelivery(id); }
          catch (e) { $("status").textContent = e.message; }
        });
        line.append(" ", retry);
      }
      box.append(line);
      const table = el("table");
      const head = el("tr");
      for (const h of ["#", "started", "result", "error"]) head.append(el("th", h));
      table.append(head);
      for (const a of j.attempt_log || []) {
        const tr = el("tr");
        tr.append(el("td", a.attempt), el("td", a.started_at),
                  el("td", a.ok ? "ok" : "failed", a.ok ? "succeeded" : "dead"), el("td", a.error || ""));
        table.append(tr);
        if (a.output) { const o = el("tr"); const td = el("td"); td.colSpan = 4; td.append(el("pre", a.output)); o.append(td); table.append(o); }
      }
      box.append(table);
      detail.append(box);
    }
    detail.append(el("h3", "Headers"));
    detail.append(el("pre", JSON.stringify(d.headers, null, 2)));
    detail.append(el("h3", "Body"));
    detail.append(el("pre", typeof d.body === "string" ? d.body : JSON.stringify(d.body, null, 2)));
  } catch (e) { $("status").textContent = e.message; }
}

// A route's or source's state in words: who paused it and why, a peer's 410, the circuit.
function stateCell(item) {
  const td = el("td");
  if (item.paused) td.append(el("span", "paused by " + item.paused.by + (item.paused.reason ? ": " + item.paused.reason : ""), "paused"), " ");
  if (item.stopped) td.append(el("span", "stopped: peer answered " + item.stopped.status, "stopped"), " ");
  if (item.circuit && item.circuit !== "closed") td.append(el("span", "circuit " + item.circuit, item.circuit), " ");
  if (item.enabled === false) td.append(el("span", "off in the configuration", "muted"));
  if (!td.childNodes.length) td.append(el("span", "running", "succeeded"));
  return td;
}

// Pause asks for a reason; resume clears pause, 410 stop and open circuit. Both act on every instance.
function controlButton(kind, item) {
  const held = item.paused || item.stopped || (item.circuit && item.circuit !== "closed");
  const button = el("button", held ? "Resume" : "Pause");
  button.dataset.action = (held ? "resume-" : "pause-") + kind + ":" + item.name;
  button.addEventListener("click", async () => {
    const body = { by: "dashboard" };
    if (!held) {
      const reason = window.prompt("Why pause " + kind + " " + item.name + "?", "");
      if (reason === null) return;
      body.reason = reason;
    }
    try {
      await api("/api/v1/" + kind + "s/" + encodeURIComponent(item.name) + (held ? "/resume" : "/pause"),
                { method: "POST", body: JSON.stringify(body) });
      $("status").textContent = kind + " " + item.name + (held ? " resumed" : " paused");
      loadControls();
    } catch (e) { $("status").textContent = e.message; }
  });
  return button;
}

async function loadControls() {
  try {
    const [routes, sources] = await Promise.all([api("/api/v1/routes"), api("/api/v1/sources")]);
    $("routes").replaceChildren(...routes.items.map((r) => {
      const tr = el("tr");
      const td = el("td"); td.append(controlButton("route", r));
      tr.append(el("td", r.name), el("td", r.source), stateCell(r), td);
      return tr;
    }));
    $("sources").replaceChildren(...sources.items.map((s) => {
      const tr = el("tr");
      const td = el("td"); td.append(controlButton("source", s));
      tr.append(el("td", s.name), el("td", s.provider), stateCell(s), td);
      return tr;
    }));
  } catch (e) { $("status").textContent = e.message; }
}

function loadAll() { loadDeliveries(false); loadControls(); }

$("save").addEventListener("click", () => {
  token = $("token").value;
  sessionStorage.setItem("hookgate-token", token);
  loadAll();
});
$("refresh").addEventListener("click", loadAll);
$("more").addEventListener("click", () => loadDeliveries(true));
if (token) loadAll();
