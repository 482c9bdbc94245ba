// chart: small time-series charts drawn as SVG by hand (stacked bars for counts, lines for durations and
// gauges). Labels are set as text; nothing from the API becomes markup.
import { el, svg, clock, number } from "./dom.js";

// Drawn in CSS pixels of the width the chart will take (the caller knows it), so text keeps its size.
const H = 150, LEFT = 40, RIGHT = 10, TOP = 8, BOTTOM = 22;

function niceMax(max) {
  if (max <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 2.5, 5, 10]) if (max <= m * p) return m * p;
  return 10 * p;
}

function frame(W, buckets, max, unit) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const plotH = H - TOP - BOTTOM;
  for (const f of [0, 0.5, 1]) {
    const y = TOP + plotH * (1 - f);
    root.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid-line" }));
    const label = svg("text", { x: LEFT - 4, y: y + 4, class: "axis", "text-anchor": "end" });
    label.textContent = number(max * f);
    root.append(label);
  }
  const n = buckets.length;
  for (const i of [0, Math.floor(n / 2), n - 1]) {
    if (i < 0 || i >= n) continue;
    const x = LEFT + ((i + 0.5) / n) * (W - LEFT - RIGHT);
    const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    const edge = i === 0 ? LEFT : i === n - 1 ? W - RIGHT : x;
    const t = svg("text", { x: edge, y: H - 6, class: "axis", "text-anchor": anchor });
    t.textContent = clock(buckets[i]);
    root.append(t);
  }
  return root;
}

function legend(series) {
  const ul = el("ul", null, "legend");
  for (const s of series) {
    const li = el("li");
    li.append(el("span", "", "swatch " + s.cls), " " + s.label + " ", el("strong", number(s.total)));
    ul.append(li);
  }
  return ul;
}

function figure(title, root, series, total, unit) {
  const fig = el("figure", null, "chart-box");
  const caption = el("figcaption", title);
  if (unit) caption.append(el("span", " (" + unit + ")", "muted"));
  fig.append(caption);
  root.dataset.total = String(total);
  root.setAttribute("aria-label", title + ": " + series.map((s) => s.label + " " + number(s.total)).join(", "));
  fig.append(root, legend(series));
  return fig;
}

// Stacked bars, one per bucket: counts such as accepted and rejected deliveries.
export function barChart(width, title, buckets, series) {
  const W = Math.max(200, Math.round(width));
  const n = buckets.length;
  const sums = buckets.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...sums));
  const root = frame(W, buckets, max);
  const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
  const bw = Math.max(1, plotW / Math.max(n, 1) - 1);
  for (let i = 0; i < n; i++) {
    let y = TOP + plotH;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      const h = (v / max) * plotH;
      y -= h;
      const rect = svg("rect", { x: LEFT + (i / n) * plotW, y, width: bw, height: Math.max(h, 0.5), class: "bar " + s.cls });
      const tip = svg("title");
      tip.textContent = clock(buckets[i]) + " · " + s.label + ": " + v;
      rect.append(tip);
      root.append(rect);
    }
  }
  for (const s of series) s.total = s.values.reduce((a, v) => a + (v || 0), 0);
  return figure(title, root, series, series.reduce((a, s) => a + s.total, 0));
}

// Lines with gaps where a bucket has no value: durations and queue gauges.
export function lineChart(width, title, buckets, series, unit) {
  const W = Math.max(200, Math.round(width));
  const n = buckets.length;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(0, ...all));
  const root = frame(W, buckets, max, unit);
  const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      const x = LEFT + ((i + 0.5) / n) * plotW, y = TOP + plotH * (1 - v / max);
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
      pen = true;
      const dot = svg("circle", { cx: x, cy: y, r: 1.8, class: "dot " + s.cls });
      const tip = svg("title");
      tip.textContent = clock(buckets[i]) + " · " + s.label + ": " + number(v) + (unit ? " " + unit : "");
      dot.append(tip);
      root.append(dot);
    });
    if (d) root.append(svg("path", { d, class: "line " + s.cls }));
    // A line's "total" in the legend is its latest value: what the operator wants to know now.
    const seen = s.values.filter((v) => v !== null && v !== undefined);
    s.total = seen.length ? seen[seen.length - 1] : null;
  }
  return figure(title, root, series, all.reduce((a, v) => a + v, 0), unit);
}
