// The public HTTP API, as the SDK uses it: the token goes in the Authorization header only
// (never in a URL), and is kept for this tab in sessionStorage.

const KEY = "vidq.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** An answer that is not 2xx: its status, the API's `detail`, Retry-After and the whole
 * JSON body (a 429 names its `limit` and `value` there). */
export class ApiError extends Error {
  constructor(status, detail, retryAfter = null, body = null) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.body = body;
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
    const error = new ApiError(res.status, data?.detail ?? res.statusText, res.headers.get("Retry-After"), data);
    if (res.status === 401 && token === undefined) onUnauthorized(error);
    throw error;
  }
  return data;
}

// A token's limits (docs/api.md "Limits per token") as a person says them.
const LIMITS = {
  max_queued: (n) => `you already have ${n} ${n === 1 ? "request" : "requests"} waiting, the most this token may queue`,
  rate_per_minute: (n) => `this token may send ${n} ${n === 1 ? "request" : "requests"} a minute`,
  daily_video_seconds: (n) => `this token's ${n} s of video for today are used up`,
  daily_gpu_seconds: (n) => `this token's ${n} GPU-seconds for today are used up`,
};

/** When to try again, from a Retry-After in seconds: "in 42 s", "in 3 min", "at 01:00". */
export function retryWhen(after) {
  const s = Number(after);
  if (!Number.isFinite(s) || s <= 0) return "later";
  if (s < 90) return `in ${Math.ceil(s)} s`;
  if (s < 3600) return `in ${Math.ceil(s / 60)} min`;
  const at = new Date(Date.now() + s * 1000);
  return `at ${at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
}

/** An error in words, for a person. */
export function explain(err) {
  if (!(err instanceof ApiError)) return String(err?.message ?? err);
  const detail = typeof err.detail === "string" ? err.detail : "";
  const later = `; try again ${retryWhen(err.retryAfter)}.`;
  const limit = err.body?.limit;
  if (err.status === 429 && LIMITS[limit]) {
    return `Not sent: ${LIMITS[limit](err.body.value)}${later}`;
  }
  switch (err.status) {
    case 0: return err.message;
    case 401: return "That token was not accepted.";
    case 404: return detail || "Not found.";
    case 409: return detail || "That is not possible in the request's current state.";
    case 413: return `Too large: ${detail || "the request is over the server's limit."}`;
    case 422: return "Some inputs are not valid: see the messages next to the fields.";
    case 429: return `Not sent: too many requests${detail ? ` (${detail.replace(/\.$/, "")})` : ""}${later}`;
    case 503: return `Not sent: the service is unavailable${detail ? ` (${detail.replace(/\.$/, "")})` : ""}${later}`;
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

/** A completed request's result (the fal dialect's result route): `video` {url, file_size, ...}, `seed`. */
export async function result(modelId, requestId) {
  return api(`/queue/vidq/${encodeURIComponent(modelId)}/requests/${encodeURIComponent(requestId)}`);
}

/** The signed URL of a completed request's video. */
export async function videoUrl(modelId, requestId) {
  return (await result(modelId, requestId)).video.url;
}

/** Cancel a queued or running request (native dialect; a running one is stopped by its
 * worker within a heartbeat). */
export async function cancel(modelId, requestId) {
  return api(`/queue/${encodeURIComponent(modelId)}/requests/${encodeURIComponent(requestId)}/cancel?running=true`, { method: "PUT" });
}
