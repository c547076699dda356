// The public API from the pages: JSON over fetch with the session cookie and CSRF token.

/** An API error: `status`, the server's `detail` and `code`, and per-field `errors`. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `Request failed (${status})`);
    this.status = status;
    this.code = body && body.code;
    this.errors = (body && body.errors) || {};
    this.body = body;
  }
}

function csrfToken() {
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/**
 * Calls `/api/v1` + `path`. `body` is sent as JSON unless it is a FormData.
 * Resolves with the parsed JSON (null for 204); rejects with ApiError.
 */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path.startsWith("/") && !path.startsWith("/api/") ? `/api/v1${path}` : path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { detail: "The server cannot be reached. Check your connection and try again.", code: "network" });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text.slice(0, 200) };
  }
  if (!response.ok) {
    if (response.status === 401 || (response.status === 403 && data && data.code === "not_authenticated")) {
      window.location.assign(`/login/?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

/** Uploads a FormData with progress (fetch has no upload progress): resolves with JSON. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1${path}`);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = { detail: xhr.responseText.slice(0, 200) };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { detail: "The upload was interrupted. Try again.", code: "network" })));
    xhr.send(form);
  });
}

/** Every page of a paginated list (`{count, next, results}`), up to `max` rows. */
export async function all(path, max = 1000) {
  const rows = [];
  let next = path;
  while (next && rows.length < max) {
    const page = await api(next);
    rows.push(...page.results);
    next = page.next ? new URL(page.next, location.origin).pathname + new URL(page.next, location.origin).search : null;
  }
  return rows;
}
