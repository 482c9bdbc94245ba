// app: the dashboard's shell — sign-in with the admin token, the pages (#/overview, #/deliveries[/id],
// #/routes, #/dead), and live updates: the page in view is read again every few seconds.
import { $, setStatus } from "./dom.js";
import { token, setToken, api } from "./api.js";
import * as overview from "./overview.js";
import * as deliveries from "./deliveries.js";
import * as routes from "./routes.js";
import * as dead from "./dead.js";

const PAGES = { overview, deliveries, routes, dead };
const LIVE_EVERY_MS = 3000;
let timer = null;
let busy = false;

function current() {
  const [, page, id] = location.hash.match(/^#\/(\w+)(?:\/(.+))?$/) || [];
  return { page: PAGES[page] ? page : "overview", id: id && decodeURIComponent(id) };
}

function signedIn(yes) {
  $("signin").hidden = yes;
  $("signed-in").hidden = !yes;
  document.body.classList.toggle("anonymous", !yes);
}

// Lists that name routes and sources (search, dead letters) follow the configuration.
async function loadNames() {
  const [r, s] = await Promise.all([api("/api/v1/routes"), api("/api/v1/sources")]);
  deliveries.mount(s.items);
  dead.mount(r.items);
}

async function refresh() {
  if (busy || !token()) return;
  busy = true;
  const { page } = current();
  try {
    await PAGES[page].refresh();
  } catch (e) {
    setStatus(e.message, "error");
    if (e.status === 401) { setToken(""); signedIn(false); show(); }
  } finally { busy = false; }
}

function show() {
  const { page, id } = current();
  const visible = token() ? page : "welcome";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + visible;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page && token()) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (!token()) return;
  if (page === "deliveries" && id) deliveries.open(id);
  refresh();
}

function live() {
  clearInterval(timer);
  if ($("live").checked) timer = setInterval(() => { if (!document.hidden) refresh(); }, LIVE_EVERY_MS);
}

async function start() {
  signedIn(Boolean(token()));
  overview.mount();
  deliveries.wire();
  routes.wire();
  dead.wire();
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken($("token").value);
    $("token").value = "";
    signedIn(true);
    try { await loadNames(); } catch (err) { setStatus(err.message, "error"); }
    show();
  });
  $("signout").addEventListener("click", () => { setToken(""); signedIn(false); show(); });
  $("live").addEventListener("change", live);
  window.addEventListener("hashchange", show);
  if (token()) { try { await loadNames(); } catch (err) { setStatus(err.message, "error"); } }
  show();
  live();
}

start();
