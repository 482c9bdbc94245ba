// overview: per source and per route, the last hour or day from GET /api/v1/stats — deliveries accepted and
// rejected, job outcomes, action duration p50/p95, queue depth and the oldest queued job's age.
import { $, el, number } from "./dom.js";
import { api, query } from "./api.js";
import { barChart, lineChart } from "./chart.js";

const RANGES = { "1h": "1m", "24h": "30m" };
let range = "1h";

export function mount() {
  for (const b of document.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => {
      range = b.dataset.range;
      for (const o of document.querySelectorAll("[data-range]")) o.setAttribute("aria-pressed", String(o === b));
      refresh();
    });
  }
}

function card(label, value, cls) {
  const c = el("div", null, "card " + (cls || ""));
  c.append(el("div", label, "card-label"), el("div", number(value), "card-value"));
  c.dataset.metric = label;
  return c;
}

function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
  return null;
}

function panel(title, subtitle, charts) {
  const box = el("article", null, "panel");
  const h = el("h4", title);
  if (subtitle) h.append(" ", el("span", subtitle, "muted"));
  box.append(h, ...charts);
  return box;
}

export async function refresh() {
  const stats = await api("/api/v1/stats?" + query({ since: range, bucket: RANGES[range] }));
  const b = stats.buckets;
  // Charts are drawn at the width they will take: a source's chart fills its panel, a route's four share it.
  const area = $("source-charts").clientWidth || 1200;
  const phone = window.matchMedia("(max-width: 760px)").matches;
  const perRow = (n) => (phone ? 1 : Math.max(1, Math.min(n, Math.floor((area + 12) / 512))));
  const panelWidth = (n) => (area - 12 * (perRow(n) - 1)) / perRow(n) - 26;
  const wide = panelWidth(stats.sources.length);
  const narrow = phone ? panelWidth(1) : panelWidth(stats.routes.length) / 2 - 6;
  $("overview-range").textContent = "buckets of " + (stats.bucket_seconds / 60) + " min · updated " + new Date().toLocaleTimeString();
  const t = stats.totals;
  const queued = stats.routes.reduce((a, r) => a + (latest(r.queue_depth) || 0), 0);
  $("totals").replaceChildren(
    card("accepted", t.accepted, "ok"), card("rejected", t.rejected, t.rejected ? "bad" : ""),
    card("succeeded", t.succeeded, "ok"), card("failed", t.failed, t.failed ? "warn" : ""),
    card("dead", t.dead, t.dead ? "bad" : ""), card("queued now", queued, queued ? "warn" : ""));

  $("source-charts").replaceChildren(...stats.sources.map((s) => panel(s.name, "source", [
    barChart(wide, "deliveries", b, [
      { label: "accepted", values: s.accepted, cls: "s-ok" },
      { label: "duplicate", values: s.duplicate, cls: "s-muted" },
      { label: "401", values: s.rejected["401"], cls: "s-bad" },
      { label: "413", values: s.rejected["413"], cls: "s-bad2" },
      { label: "429", values: s.rejected["429"], cls: "s-warn" },
      { label: "400", values: s.rejected["400"], cls: "s-warn2" },
      { label: "other", values: s.rejected.other, cls: "s-other" },
    ]),
  ])));
  if (!stats.sources.length) $("source-charts").append(el("p", "No sources configured.", "muted"));

  $("route-charts").replaceChildren(...stats.routes.map((r) => panel(r.name, "route · " + r.source, [
    barChart(narrow, "jobs", b, [
      { label: "succeeded", values: r.succeeded, cls: "s-ok" },
      { label: "failed (retried)", values: r.failed, cls: "s-warn" },
      { label: "dead", values: r.dead, cls: "s-bad" },
    ]),
    lineChart(narrow, "action duration", b, [
      { label: "p50", values: r.duration_p50_ms, cls: "s-info" },
      { label: "p95", values: r.duration_p95_ms, cls: "s-warn" },
    ], "ms"),
    lineChart(narrow, "queue depth", b, [{ label: "queued", values: r.queue_depth, cls: "s-info" }]),
    lineChart(narrow, "oldest queued job", b, [{ label: "age", values: r.queue_oldest_seconds, cls: "s-warn" }], "s"),
  ])));
  if (!stats.routes.length) $("route-charts").append(el("p", "No routes configured.", "muted"));
}
