// History: the user's requests (GET /requests), newest first, a page at a time; one
// request's inputs, status and result; cancel a queued one; run one again.

import { api, explain } from "./api.js";
import { add, badge, fill, h, holdWords, seconds, when } from "./dom.js";
import { follow, showVideo } from "./playground.js";

const PAGE = 10;

/** The list; `cursors` is the stack of `before` ids that led to this page. */
export function history(cursors = []) {
  const view = h("section", { class: "history", "aria-labelledby": "h-title" });
  const list = h("ol", { class: "requests" });
  const status = h("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  const newer = h("button", { type: "button", class: "quiet", disabled: cursors.length === 0 }, "← Newer");
  const older = h("button", { type: "button", class: "quiet", disabled: true }, "Older →");
  add(view, h("h1", { id: "h-title" }, "History"), status, list, h("div", { class: "pager" }, newer, older));

  const before = cursors.at(-1);
  api(`/requests?limit=${PAGE}${before ? `&before=${before}` : ""}`).then((page) => {
    fill(status, page.requests.length ? "" : "No requests yet: make one in the Playground.");
    for (const r of page.requests) list.append(row(r));
    if (page.next_before) {
      older.disabled = false;
      older.addEventListener("click", () => view.replaceWith(history([...cursors, page.next_before])));
    }
  }).catch((err) => fill(status, explain(err)));
  newer.addEventListener("click", () => view.replaceWith(history(cursors.slice(0, -1))));
  return view;
}

function row(r) {
  const thumb = h("div", { class: "thumb-slot" });
  if (r.status === "COMPLETED") showVideo(thumb, r.model_id, r.request_id, { small: true });
  else thumb.append(h("div", { class: "thumb placeholder", "aria-hidden": "true" }));
  const prompt = r.inputs?.prompt ?? "";
  return h("li", { class: "request" },
    thumb,
    h("div", { class: "request-text" },
      h("p", { class: "line" }, badge(r.status), " ", h("span", { class: "model-id" }, r.model_id)),
      h("p", { class: "prompt" }, prompt || h("em", {}, "(no prompt)")),
      h("p", { class: "hint" }, when(r.created_at))),
    h("a", { href: `#/history/${encodeURIComponent(r.request_id)}`, class: "open", "aria-label": `Open request ${r.request_id}` }, "Open"));
}

/** One request: its inputs, status and result, with Cancel and Run again. */
export function requestView(requestId, runAgain) {
  const view = h("section", { class: "request-detail", "aria-labelledby": "r-title" });
  const body = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  add(view, h("p", {}, h("a", { href: "#/history" }, "← History")), h("h1", { id: "r-title" }, `Request ${requestId}`), body);
  const controller = new AbortController();
  view.leave = () => controller.abort();

  const load = () => api(`/requests/${encodeURIComponent(requestId)}`).then((r) => {
    const actions = h("div", { class: "actions" });
    const message = h("p", { class: "form-error", role: "alert", hidden: true });
    if (r.status === "IN_QUEUE") {
      actions.append(h("button", { type: "button", onclick: async () => {
        try {
          await api(`/queue/${encodeURIComponent(r.model_id)}/requests/${encodeURIComponent(requestId)}/cancel`, { method: "PUT" });
          load();
        } catch (err) { fill(message, explain(err)); message.hidden = false; }
      } }, "Cancel request"));
    }
    actions.append(h("button", { type: "button", class: "primary", onclick: () => runAgain({ model_id: r.model_id, inputs: { ...r.inputs, ...Object.fromEntries(r.input_files.map((f) => [f, ""])) } }) }, "Run again"));
    const facts = h("dl", { class: "facts" },
      fact("Status", badge(r.status)),
      fact("Model", r.model_id),
      fact("Submitted", when(r.created_at)),
      r.started_at ? fact("Started", when(r.started_at)) : null,
      r.finished_at ? fact("Finished", when(r.finished_at)) : null,
      r.run_seconds ? fact("Run time", seconds(r.run_seconds)) : null,
      r.metrics ? fact("GPU time", `${seconds(r.metrics.gpu_seconds)}${r.metrics.device ? ` on ${r.metrics.device}` : ""}`) : null,
      r.status === "IN_QUEUE" ? fact("Queue position", String(r.queue_position)) : null,
      r.status === "IN_QUEUE" && r.hold ? fact("Waiting", holdWords(r.hold)) : null,
      r.error ? fact("Error", r.error) : null);
    const inputs = h("dl", { class: "facts inputs" },
      Object.entries(r.inputs ?? {}).map(([k, v]) => fact(k, typeof v === "string" ? v : JSON.stringify(v))),
      r.input_files.map((f) => fact(f, "(an uploaded file)")));
    const result = h("div", { class: "run" });
    fill(body, h("div", { class: "pg-grid" },
      h("div", {}, facts, h("h2", {}, "Inputs"), inputs, actions, message), result));
    if (r.status === "COMPLETED") showVideo(result, r.model_id, requestId);
    else if (r.status === "IN_QUEUE" || r.status === "IN_PROGRESS") follow(result, r.model_id, requestId, controller.signal).then(() => { if (!controller.signal.aborted) load(); });
  }).catch((err) => fill(body, h("p", { class: "form-error" }, explain(err))));
  load();
  return view;
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}
