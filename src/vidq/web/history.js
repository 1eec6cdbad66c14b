// History: the user's requests (GET /requests) as a gallery of poster frames, newest
// first, a page at a time, filtered by model and status and searched by prompt (on the
// server: model_id, status, q); one request's inputs, status and result; cancel a queued
// one; use its settings again; delete a finished one (DELETE /requests/{id}).

import { api, explain } from "./api.js";
import { add, badge, fill, h, holdWords, seconds, when, words } from "./dom.js";
import { follow, showVideo } from "./playground.js";

const PAGE = 12;
const Q_MAX = 200; // the API's longest prompt search
const STATUSES = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"];
const FINISHED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

/** The gallery; `cursors` is the stack of `before` ids that led to this page, `filters`
 * the {model_id, status, q} it shows. */
export function history(reuse, cursors = [], filters = {}) {
  const view = h("section", { class: "history", "aria-labelledby": "h-title" });
  const list = h("ol", { class: "requests gallery" });
  const status = h("p", { class: "hint", role: "status", "aria-live": "polite" }, "Loading…");
  const newer = h("button", { type: "button", class: "quiet", disabled: cursors.length === 0 }, "← Newer");
  const older = h("button", { type: "button", class: "quiet", disabled: true }, "Older →");
  const again = (next, more = {}) => view.replaceWith(history(reuse, next, { ...filters, ...more }));
  add(view, h("h1", { id: "h-title" }, "History"), filterForm(filters, (chosen) => view.replaceWith(history(reuse, [], chosen))),
    status, list, h("div", { class: "pager" }, newer, older));

  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const key of ["model_id", "status", "q"]) if (filters[key]) query.set(key, filters[key]);
  const before = cursors.at(-1);
  if (before) query.set("before", String(before));
  api(`/requests?${query}`).then((page) => {
    const filtered = Boolean(filters.model_id || filters.status || filters.q);
    fill(status, page.requests.length ? "" : filtered ? "No requests match these filters." : "No requests yet: make one in the Playground.");
    for (const r of page.requests) list.append(card(r, reuse, () => {
      fill(status, `Request ${r.request_id} was deleted.`);
      const next = list.querySelector("li:not(.removing) .open");
      next?.focus();
    }));
    if (page.next_before) {
      older.disabled = false;
      older.addEventListener("click", () => again([...cursors, page.next_before]));
    }
  }).catch((err) => fill(status, explain(err)));
  newer.addEventListener("click", () => again(cursors.slice(0, -1)));
  return view;
}

/** Model, status and prompt search; `apply` gets the chosen filters. */
function filterForm(filters, apply) {
  const model = h("select", { id: "f-model", name: "model_id" }, h("option", { value: "" }, "All models"));
  const state = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, words(s))));
  const q = h("input", { id: "f-q", name: "q", type: "search", maxlength: String(Q_MAX), value: filters.q ?? "", placeholder: "Words in the prompt", autocomplete: "off" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter requests" },
    h("div", { class: "filter" }, h("label", { for: "f-model" }, "Model"), model),
    h("div", { class: "filter" }, h("label", { for: "f-status" }, "Status"), state),
    h("div", { class: "filter grow" }, h("label", { for: "f-q" }, "Search prompts"), q),
    h("button", { type: "submit" }, "Search"));
  api("/models").then(({ models }) => {
    for (const m of models) model.append(h("option", { value: m.id, selected: filters.model_id === m.id }, m.id));
  }).catch(() => {}); // the list still filters by the other fields
  const chosen = () => ({ model_id: model.value, status: state.value, q: q.value.trim() });
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(chosen()); });
  for (const select of [model, state]) select.addEventListener("change", () => apply(chosen()));
  return form;
}

/** One request as a card: its poster (a still: no player controls), status, model,
 * prompt and time; Open, Use these settings again, Delete. */
function card(r, reuse, deleted) {
  const prompt = r.inputs?.prompt ?? "";
  const poster = r.poster_url
    ? h("img", { class: "poster", src: r.poster_url, alt: "", loading: "lazy", decoding: "async" })
    : h("div", { class: "poster placeholder", "aria-hidden": "true" }, words(r.status));
  const item = h("li", { class: "request" });
  const actions = h("div", { class: "card-actions" },
    h("a", { href: `#/history/${encodeURIComponent(r.request_id)}`, class: "open", "aria-label": `Open request ${r.request_id}` }, "Open"),
    h("button", { type: "button", class: "quiet", "aria-label": `Use again: the settings of request ${r.request_id}`, onclick: () => reuse(settingsOf(r)) }, "Use again"));
  if (FINISHED.has(r.status)) actions.append(deleteButton(r, actions, () => {
    item.classList.add("removing");
    deleted();
    item.remove();
  }));
  return add(item,
    h("a", { href: `#/history/${encodeURIComponent(r.request_id)}`, class: "poster-link", tabindex: "-1", "aria-hidden": "true" }, poster),
    h("div", { class: "request-text" },
      h("p", { class: "line" }, badge(r.status), " ", h("span", { class: "model-id" }, r.model_id)),
      h("p", { class: "prompt", title: prompt }, prompt || h("em", {}, "(no prompt)")),
      h("p", { class: "hint" }, when(r.created_at))),
    actions);
}

/** What "Use these settings again" fills the Playground with: the model and inputs (the
 * uploaded files are not kept: those fields are left to choose again). */
function settingsOf(r) {
  return { model_id: r.model_id, inputs: { ...r.inputs, ...Object.fromEntries((r.input_files ?? []).map((f) => [f, ""])) } };
}

/** Delete, with a confirm step in place: the question and two buttons, focus on Keep;
 * Escape keeps. `done` runs once the API deleted it. */
function deleteButton(r, slot, done) {
  const button = h("button", { type: "button", class: "danger", "aria-label": `Delete request ${r.request_id}` }, "Delete");
  button.addEventListener("click", () => {
    const message = h("p", { class: "form-error", role: "alert", hidden: true });
    const keep = h("button", { type: "button", class: "quiet" }, "Keep");
    const yes = h("button", { type: "button", class: "danger" }, "Delete for good");
    const ask = h("div", { class: "confirm", role: "group", "aria-label": `Delete request ${r.request_id}?` },
      h("p", {}, "Delete this request? Its video and inputs are removed; its status and cost stay in your usage."),
      h("div", { class: "line" }, yes, keep), message);
    const back = () => { ask.replaceWith(slot); button.focus(); };
    keep.addEventListener("click", back);
    ask.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); back(); } });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await api(`/requests/${encodeURIComponent(r.request_id)}`, { method: "DELETE" });
        done();
      } catch (err) {
        fill(message, explain(err));
        message.hidden = false;
        yes.disabled = false;
      }
    });
    slot.replaceWith(ask);
    keep.focus();
  });
  return button;
}

/** One request: its inputs, status and result, with Cancel, Use these settings again and
 * Delete. */
export function requestView(requestId, reuse) {
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
    actions.append(h("button", { type: "button", class: "primary", onclick: () => reuse(settingsOf(r)) }, "Use these settings again"));
    if (FINISHED.has(r.status) && !r.deleted) actions.append(deleteButton(r, actions, () => { location.hash = "#/history"; }));
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
      r.error ? fact("Error", r.error) : null,
      r.deleted ? fact("Deleted", "Its video and inputs were removed.") : null);
    const inputs = h("dl", { class: "facts inputs" },
      Object.entries(r.inputs ?? {}).map(([k, v]) => fact(k, typeof v === "string" ? v : JSON.stringify(v))),
      r.input_files.map((f) => fact(f, "(an uploaded file)")));
    const result = h("div", { class: "run" });
    fill(body, h("div", { class: "pg-grid" },
      h("div", {}, facts, h("h2", {}, "Inputs"), inputs, actions, message), result));
    if (r.status === "COMPLETED" && r.expired) fill(result, h("p", { class: "hint" }, r.deleted ? "This request was deleted." : "This video expired and was deleted."));
    else if (r.status === "COMPLETED") showVideo(result, r.model_id, requestId, { poster: r.poster_url });
    else if (r.status === "IN_QUEUE" || r.status === "IN_PROGRESS") follow(result, r.model_id, requestId, controller.signal).then(() => { if (!controller.signal.aborted) load(); });
  }).catch((err) => fill(body, h("p", { class: "form-error" }, explain(err))));
  load();
  return view;
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}
