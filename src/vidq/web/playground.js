// The playground: pick a model, fill the form made from its schema, Generate, follow the
// request live (queue position and why it waits, then "k/n" progress, the ETA when there
// is one and the video so far), cancel it, show its seed, play the result and say what
// it is (size, frame rate, length, file size, run time).

import { api, ApiError, cancel, explain, result, statusStream, videoUrl } from "./api.js";
import { snippets } from "./code.js";
import { add, badge, bytes, fill, h, holdWords, safeUrl, seconds } from "./dom.js";
import { schemaForm } from "./form.js";

const FAMILIES = {
  t2v: "Text to video",
  i2v: "Image to video",
  s2v: "Sound + image to video",
  foley: "Add sound to a video",
};
const POLL_MS = 1000;

let models = null; // GET /models, once per page load
let limits = null; // its `limits`: the largest media input and request body

export async function loadModels() {
  if (models === null) {
    const listing = await api("/models");
    limits = listing.limits ?? null;
    models = listing.models;
  }
  return models;
}

const PREVIEW_ENGINE = "This server runs the preview engine for this model: videos are placeholders made on the CPU, no AI model is loaded.";

/** The playground view; `prefill` ({model_id, inputs}) comes from "Use these settings again". */
export function playground(prefill = null) {
  const view = h("section", { class: "playground", "aria-labelledby": "pg-title" });
  const picker = h("select", { id: "model", name: "model" });
  const formSlot = h("div");
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });
  const generate = h("button", { type: "submit", class: "primary" }, "Generate");
  const form = h("form", { novalidate: true, "aria-label": "Request" },
    h("div", { class: "field model" }, h("label", { for: "model" }, "Model"), picker,
      h("p", { class: "hint", id: "model-about" })),
    formSlot, formError, h("div", { class: "actions" }, generate));
  const progress = h("div", { class: "run", "aria-live": "polite" });
  const codeSlot = h("div", { class: "code-tabs" });
  const code = h("details", { class: "code" }, h("summary", {}, "Copy as code"), codeSlot);
  const engineBanner = h("p", { class: "engine-banner", role: "note", hidden: true });
  add(view, h("h1", { id: "pg-title" }, "Playground"),
    h("div", { class: "pg-grid" }, h("div", { class: "pg-form" }, engineBanner, form, code), progress));

  let current = null; // {model, form}
  let tracking = null; // AbortController of the request being followed

  const renderCode = () => {
    if (!current) return;
    const base = location.origin;
    const body = current.form.values();
    fill(codeSlot, ...snippets(base, current.model.id, body, current.form.files()).map(([title, text]) => {
      const pre = h("pre", { tabindex: 0 }, h("code", {}, text));
      const copy = h("button", { type: "button", class: "quiet" }, "Copy");
      copy.addEventListener("click", async () => {
        try { await navigator.clipboard.writeText(text); copy.textContent = "Copied"; }
        catch { copy.textContent = "Select the text to copy"; }
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
      });
      return h("div", { class: "snippet" }, h("div", { class: "snippet-head" }, h("h3", {}, title), copy), pre);
    }));
  };

  const choose = (modelId, values) => {
    const model = models.find((m) => m.id === modelId) ?? models[0];
    picker.value = model.id;
    const previous = current ? current.form.values() : {};
    const built = schemaForm(model.input_schema, values ?? carry(previous, model), { limits });
    built.onchange = renderCode;
    current = { model, form: built };
    fill(formSlot, built.element);
    fill(view.querySelector("#model-about"),
      `${FAMILIES[model.family] ?? model.family} · tier ${model.tier} · pool ${model.pool} · engine ${model.engine}`);
    fill(engineBanner, model.engine === "preview" ? PREVIEW_ENGINE : "");
    engineBanner.hidden = model.engine !== "preview";
    formError.hidden = true;
    renderCode();
  };

  loadModels().then((list) => {
    const families = [...new Set(list.map((m) => m.family))];
    for (const family of families) {
      const group = h("optgroup", { label: FAMILIES[family] ?? family });
      for (const m of list.filter((x) => x.family === family)) {
        group.append(h("option", { value: m.id }, `${m.id} (${m.tier})`));
      }
      picker.append(group);
    }
    choose(prefill?.model_id ?? "wan22-fast-t2v", prefill?.inputs);
  }).catch((err) => showFormError(formError, explain(err)));
  picker.addEventListener("change", () => { if (picker.value !== current?.model.id) choose(picker.value); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    const { model, form: built } = current;
    built.clearErrors();
    formError.hidden = true;
    generate.disabled = true;
    try {
      const submitted = await api(`/queue/${encodeURIComponent(model.id)}`, { method: "POST", body: built.values() });
      // One request at a time on screen: an accepted one replaces the last; a refused
      // one leaves its panel as it is (the line above the button says why).
      tracking?.abort();
      tracking = new AbortController();
      follow(progress, model.id, submitted.request_id, tracking.signal);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && Array.isArray(err.detail)) {
        const rest = built.showErrors(err.detail);
        showFormError(formError, rest.length ? `${explain(err)} ${rest.join("; ")}` : explain(err));
      } else if (err instanceof ApiError && err.status === 413 && typeof err.detail === "string") {
        const field = err.detail.split(":")[0];
        if (built.fields.has(field)) built.showErrors([{ loc: ["body", field], msg: err.detail }]);
        showFormError(formError, explain(err));
      } else {
        showFormError(formError, explain(err));
      }
    } finally {
      generate.disabled = false;
    }
  });
  return view;
}

/** Keep what the user typed when switching to a model that has the same fields. */
function carry(values, model) {
  const names = new Set(Object.keys(model.input_schema.properties ?? {}));
  return Object.fromEntries(Object.entries(values).filter(([k, v]) => names.has(k) && !String(v).startsWith("data:")));
}

function showFormError(el, text) {
  fill(el, text);
  el.hidden = false;
}

/** Follow one request in `panel`: the SSE stream, or polling when that is unavailable. */
export async function follow(panel, modelId, requestId, signal) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Progress" });
  const state = h("p", { class: "state" });
  const counts = h("span", { class: "counts" });
  const eta = h("span", { class: "eta" });
  const hold = h("p", { class: "hold", hidden: true });
  const seed = h("p", { class: "seed hint" });
  // The video so far while it renders (the engine's live preview, an animated image).
  const preview = h("figure", { class: "live-preview", hidden: true },
    h("img", { alt: "Live preview of the video so far" }), h("figcaption", { class: "hint" }));
  const slot = h("div", { class: "result" });
  // Cancel, queued or running: a running job is stopped by its worker within a heartbeat.
  const stop = h("button", { type: "button", class: "cancel" }, "Cancel");
  const stopping = h("p", { class: "hint", "aria-live": "polite" });
  const controls = h("div", { class: "actions run-actions" }, stop, stopping);
  fill(panel, h("h2", {}, `Request ${requestId}`), state, hold,
    h("div", { class: "bar" }, bar, counts, eta), seed, controls, preview, slot);
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    fill(stopping, "Cancelling…");
    try {
      await cancel(modelId, requestId);
      fill(stopping, "Cancelling: the request stops in a few seconds.");
    } catch (err) {
      if (signal.aborted) return;
      fill(stopping, explain(err));
      stop.disabled = false;
    }
  });

  const showPreview = (p) => {
    const url = safeUrl(p.url);
    if (!url) return;
    preview.querySelector("img").src = url;
    fill(preview.querySelector("figcaption"), `Preview at step ${p.step}`);
    preview.hidden = false;
  };

  const show = (s) => {
    fill(state, badge(s.status), " ",
      s.status === "IN_QUEUE" ? `Position in queue: ${s.position ?? 0}` : "",
      s.status === "IN_PROGRESS" && !(s.total > 0) ? "Starting…" : "");
    const waiting = s.status === "IN_QUEUE" ? holdWords(s.hold) : "";
    fill(hold, waiting);
    hold.hidden = !waiting;
    // Chosen at submit, shown from the start: with it the same video can be made again.
    fill(seed, s.seed !== undefined && s.seed !== null ? `Seed ${s.seed}` : "");
    if (s.status === "IN_PROGRESS" && s.total > 0) {
      bar.max = s.total;
      bar.value = s.done;
      fill(counts, `${s.done}/${s.total}`);
    }
    fill(eta, s.eta !== undefined && s.eta !== null && !isFinal(s.status) ? `ETA ${seconds(s.eta)}` : "");
    controls.hidden = isFinal(s.status);
  };

  let last = null;
  try {
    for await (const [name, event] of statusStream(modelId, requestId, signal)) {
      if (name === "preview") {
        showPreview(event);
        continue;
      }
      last = fromFal(event);
      show(last);
      if (isFinal(last.status)) break;
    }
  } catch (err) {
    if (signal.aborted) return;
  }
  while (!signal.aborted && (last === null || !isFinal(last.status))) {
    try {
      last = fromRequest(await api(`/requests/${encodeURIComponent(requestId)}`, { signal }));
      show(last);
    } catch (err) {
      if (signal.aborted) return;
      fill(slot, h("p", { class: "form-error" }, explain(err)));
    }
    if (!isFinal(last?.status)) await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (signal.aborted) return;
  preview.hidden = true; // the preview is gone with the run: the result takes its place
  if (last.status === "COMPLETED") {
    bar.value = bar.max;
    if (bar.max > 1) fill(counts, `${bar.max}/${bar.max}`);
    await showResult(slot, modelId, requestId, signal);
  } else if (last.error) {
    fill(slot, h("p", { class: "form-error" }, last.error));
  }
}

/** The finished video, its download link and what it is. */
async function showResult(slot, modelId, requestId, signal) {
  try {
    const [res, info] = await Promise.all([
      result(modelId, requestId),
      api(`/requests/${encodeURIComponent(requestId)}`, { signal }),
    ]);
    const url = safeUrl(res.video?.url);
    if (!url) return;
    const video = h("video", { src: url, controls: true, preload: "metadata", playsInline: true, class: "player" });
    fill(slot, video, h("p", {}, h("a", { href: url, download: `vidq-${requestId}.mp4` }, "Download MP4")),
      resultFacts(res, info));
  } catch (err) {
    if (!signal.aborted) fill(slot, h("p", { class: "form-error" }, explain(err)));
  }
}

/** Seed, size, frame rate, length, file size and run time of a completed request. */
function resultFacts(res, info) {
  const out = info.output ?? {};
  const rows = [
    ["Seed", res.seed ?? info.seed],
    ["Size", out.width && out.height ? `${out.width} × ${out.height}` : null],
    ["Frame rate", out.fps ? `${out.fps} fps` : null],
    ["Length", out.seconds ? `${out.seconds.toFixed(2)} s (${out.frames} frames)` : null],
    ["File size", bytes(res.video?.file_size ?? out.file_size)],
    ["Run time", info.run_seconds ? seconds(info.run_seconds) : null],
    ["GPU time", info.metrics ? `${seconds(info.metrics.gpu_seconds)}${info.metrics.device ? ` on ${info.metrics.device}` : ""}` : null],
  ].filter(([, v]) => v !== null && v !== undefined);
  return h("dl", { class: "facts result-facts", "aria-label": "About this video" },
    rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

/** The result player and its download link. */
export async function showVideo(slot, modelId, requestId, { small = false, poster = null } = {}) {
  try {
    const url = safeUrl(await videoUrl(modelId, requestId));
    if (!url) return;
    const still = poster ? safeUrl(poster) : null; // the gallery's poster frame, while it loads
    const video = h("video", { src: url, controls: true, preload: "metadata", playsInline: true, poster: still ?? undefined, class: small ? "thumb" : "player" });
    fill(slot, video, small ? "" : h("p", {}, h("a", { href: url, download: `vidq-${requestId}.mp4` }, "Download MP4")));
  } catch (err) {
    fill(slot, h("p", { class: "form-error" }, explain(err)));
  }
}

function isFinal(status) {
  return status === "COMPLETED" || status === "FAILED" || status === "CANCELLED";
}

/** A fal status object (the stream) in the page's terms. */
function fromFal(e) {
  const status = e.error_type === "request_cancelled" ? "CANCELLED" : e.error ? "FAILED" : e.status;
  return { status, position: e.queue_position, hold: e.hold, seed: e.seed, done: e.progress?.done ?? 0, total: e.progress?.total ?? 0, eta: e.eta_seconds, error: e.error };
}

/** GET /requests/{id} (the polling fallback) in the page's terms. */
function fromRequest(r) {
  const cancelled = r.status === "CANCELLED" ? `Request ${r.request_id} was cancelled.` : null;
  return { status: r.status, position: r.queue_position, hold: r.hold, seed: r.seed, done: r.progress?.done ?? 0, total: r.progress?.total ?? 0, eta: r.eta_seconds, error: r.error ?? cancelled };
}
