// dom: building the page from API values. Every value is inserted as text (textContent, attributes set one
// by one), never parsed as markup: payloads, headers and event names come from the outside world.
export const $ = (id) => document.getElementById(id);

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// The options of a select: "" (shown as `anyLabel`) and each item's name; the current choice is kept.
export function fillSelect(select, items, anyLabel) {
  const current = select.value;
  const any = el("option", anyLabel);
  any.value = "";
  const options = items.map((item) => { const o = el("option", item.name); o.value = item.name; return o; });
  select.replaceChildren(any, ...options);
  select.value = current;
}

export function button(text, onClick, cls) {
  const b = el("button", text, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// A time as the operator reads it: "16:51:30" today, "2026-11-30 16:51" before; the full time in the title.
// Absolute, so a list redrawn with the same data reads the same (and is not redrawn at all).
export function when(iso) {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso ?? "");
  const today = new Date().toDateString() === t.toDateString();
  const pad = (n) => String(n).padStart(2, "0");
  const time = pad(t.getHours()) + ":" + pad(t.getMinutes());
  if (today) return time + ":" + pad(t.getSeconds());
  return t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + " " + time;
}

export function timeCell(iso) {
  const td = el("td", when(iso), "time");
  td.title = String(iso ?? "");
  return td;
}

export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

export function number(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 10000) return Math.round(n / 1000) + "k";
  if (n >= 1000) return (n / 1000).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

export function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = "status" + (kind ? " " + kind : "");
}

// A short error cell: the first line, cut; the whole text in the title.
export function errorCell(text) {
  const td = el("td", "", "error-text");
  if (!text) { td.append(el("span", "–", "muted")); return td; }
  const first = String(text).split("\n")[0];
  td.textContent = first.length > 120 ? first.slice(0, 117) + "…" : first;
  td.title = String(text);
  return td;
}
