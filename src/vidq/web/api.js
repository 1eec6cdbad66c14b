// The public HTTP API, as the SDK uses it: the token goes in the Authorization header only
// (never in a URL), and is kept for this tab in sessionStorage.

const KEY = "vidq.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** An answer that is not 2xx: its status, the API's `detail` and Retry-After. */
export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

let onUnauthorized = () => {};
/** Called when the API stops accepting the token (revoked while signed in). */
export function whenUnauthorized(callback) { onUnauthorized = callback; }

function headers(token, extra = {}) {
  return { Authorization: `Bearer ${token ?? session.token ?? ""}`, ...extra };
}

/** One API call; JSON in and out. `token` overrides the session's (signing in). */
export async function api(path, { method = "GET", body, token, signal } = {}) {
  const init = { method, headers: headers(token), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Check that vidq is running.");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const error = new ApiError(res.status, data?.detail ?? res.statusText, res.headers.get("Retry-After"));
    if (res.status === 401 && token === undefined) onUnauthorized(error);
    throw error;
  }
  return data;
}

/** An error in words, for a person. */
export function explain(err) {
  if (!(err instanceof ApiError)) return String(err?.message ?? err);
  const detail = typeof err.detail === "string" ? err.detail : "";
  const later = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again later.";
  switch (err.status) {
    case 0: return err.message;
    case 401: return "That token was not accepted.";
    case 404: return detail || "Not found.";
    case 409: return detail || "That is not possible in the request's current state.";
    case 413: return `Too large: ${detail || "the request is over the server's limit."}`;
    case 422: return "Some inputs are not valid: see the messages next to the fields.";
    case 429: return `Too many requests${detail ? `: ${detail}` : "."}${later}`;
    case 503: return `The service is unavailable${detail ? `: ${detail}` : "."}${later}`;
    default: return detail || `The server answered HTTP ${err.status}.`;
  }
}

/** The request's status objects as they change: the fal dialect's server-sent event
 * stream, read with fetch (EventSource cannot send the Authorization header). Yields
 * [name, data]: "message" for a status object, "preview" for a new live preview of the
 * running job ({url, content_type, step, updated_at}). */
export async function* statusStream(modelId, requestId, signal) {
  const path = `/queue/vidq/${encodeURIComponent(modelId)}/requests/${encodeURIComponent(requestId)}/status/stream?previews=true`;
  const res = await fetch(path, { headers: headers(), signal, cache: "no-store" });
  if (!res.ok || !res.body) throw new ApiError(res.status, "no status stream");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const lines = event.split("\n");
      const name = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() || "message";
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield [name, JSON.parse(data)];
    }
  }
}

/** The signed URL of a completed request's video (the fal dialect's result route). */
export async function videoUrl(modelId, requestId) {
  const body = await api(`/queue/vidq/${encodeURIComponent(modelId)}/requests/${encodeURIComponent(requestId)}`);
  return body.video.url;
}
