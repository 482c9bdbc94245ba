// api: the admin API with the token this tab was given (sessionStorage: gone when the tab closes).
const KEY = "hookgate-token";

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(t) { if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (options.body) headers["Content-Type"] = "application/json";
  // A retried click sends the same request again: the key makes the server act once.
  if (options.idempotent) headers["Idempotency-Key"] = options.idempotent;
  const response = await fetch(path, { method: options.method || "GET", body: options.body, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, (body && body.message) || response.statusText);
  return body;
}

// A fresh idempotency key (crypto.randomUUID needs a secure context; getRandomValues does not).
export function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export const post = (path, body, idempotent) =>
  api(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body), idempotent });

export const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  return q.toString();
};
