// The client API with the operator's token, kept for this tab only.

const KEY = "avtomatika.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** A failed call, with the API's own `{"error": "…"}` message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls `path`; resolves to the parsed JSON (or the raw Response when `raw`). */
export async function call(path, { method = "GET", body, raw = false, withToken = token() } = {}) {
  const headers = { "X-Avtomatika-Token": withToken ?? "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${e.message})`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const error = await response.json();
      if (error && typeof error.error === "string") message = error.error;
    } catch {
      // Not the API's error format; the status line says enough.
    }
    if (response.status === 401 && withToken === token()) {
      window.dispatchEvent(new CustomEvent("avtomatika:unauthorized", { detail: message }));
    }
    throw new ApiError(response.status, message);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** `/api/v1/...` with a query string of the non-empty `params`. */
export function path(base, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${base}?${text}` : base;
}

/**
 * The blueprint's state graph as an SVG element (parsed, never as HTML), with
 * `state` highlighted and the `visited` states shaded.
 */
export async function graphSvg(blueprint, state, visited = []) {
  const response = await call(path(`/api/v1/blueprints/${encodeURIComponent(blueprint)}/graph`,
    { format: "svg", state, visited: visited.join(",") }), { raw: true });
  const text = await response.text();
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (root.nodeName !== "svg" || doc.getElementsByTagName("parsererror").length > 0) {
    throw new ApiError(0, "the graph is not a valid SVG drawing");
  }
  return document.importNode(root, true);
}
