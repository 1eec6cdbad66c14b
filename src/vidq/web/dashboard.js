// The operators' dashboard (admin tokens): GET /admin/queues, /admin/workers and
// /admin/history every few seconds; pools paused and resumed, failed requests retried.

import { api, explain } from "./api.js";
import { active, poolCharts } from "./charts.js";
import { add, fill, h, seconds, when } from "./dom.js";

const REFRESH_MS = 5000;
const HISTORY_MIN = 60;
const LIVE_S = 60; // a worker seen within this long is live (the API's own window)

// What a worker is doing, in words, and the class of its badge: what it said it is doing
// (warming, engine down, stopped, draining), else busy or idle from its current job; a worker whose
// every pool is paused claims nothing either.
export function workerState(w, paused) {
  if (w.state === "engine_down") return { text: "engine down", cls: "w-down" };
  if (w.state === "warming") return { text: "warming", cls: "w-warming" };
  if (w.state === "stopped") return { text: "stopped", cls: "w-stopped" };
  if (w.state === "draining") return { text: "draining", cls: "w-warming" };
  if (w.current_job !== null && w.current_job !== undefined) return { text: "busy", cls: "w-busy" };
  if (w.pools.length > 0 && w.pools.every((p) => paused.has(p))) return { text: "idle, pool paused", cls: "w-paused" };
  return { text: "idle", cls: "w-idle" };
}

// Per pool: its live workers, and whether every one of them has its engine down.
function poolWorkers(workers) {
  const pools = new Map();
  for (const w of workers) {
    if (w.last_seen_seconds > LIVE_S || w.state === "stopped" || w.state === "draining") continue;
    for (const p of w.pools) {
      const seen = pools.get(p) ?? { live: 0, down: 0 };
      seen.live += 1;
      if (w.state === "engine_down") seen.down += 1;
      pools.set(p, seen);
    }
  }
  return pools;
}

export function dashboard() {
  const view = h("section", { class: "dashboard", "aria-labelledby": "d-title" });
  const updated = h("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  // What the last action changed (or why it did not), said once and kept until the next.
  const outcome = h("p", { class: "outcome", role: "status", tabindex: "-1" });
  const pools = h("div", { class: "table-wrap" });
  const charts = h("div", { class: "history" });
  const workers = h("div", { class: "table-wrap" });
  const failures = h("div");
  add(view, h("h1", { id: "d-title" }, "Dashboard"), updated, outcome, h("h2", {}, "Pools"), pools,
    h("h2", {}, `The last ${HISTORY_MIN} minutes`),
    h("p", { class: "hint" }, "Per minute, from the requests' rows: requests the retention collector has purged are no longer counted."),
    charts, h("h2", {}, "Workers"), workers, h("h2", {}, "Latest failures"), failures);

  const say = (text, failed = false) => {
    outcome.className = failed ? "outcome error-text" : "outcome";
    fill(outcome, text);
  };
  // A change from the page: say what changed, then show it.
  const act = async (path, done, { focusOutcome = false } = {}) => {
    try {
      say(done(await api(path, { method: "POST" })));
    } catch (err) {
      say(explain(err), true);
    }
    if (focusOutcome) outcome.focus();
    await refresh();
  };
  const pauseButton = (name, paused) => h("button", {
    class: "quiet", type: "button", "data-key": `pool:${name}`,
    "aria-label": `${paused ? "Resume" : "Pause"} ${name}`,
    onclick: () => act(`/admin/pools/${encodeURIComponent(name)}/${paused ? "resume" : "pause"}`,
      () => (paused ? `Resumed ${name}: its workers take its queued requests again.`
        : `Paused ${name}: its workers start none of its requests until it is resumed; running ones finish.`)),
  }, paused ? "Resume" : "Pause");
  const retryButton = (f) => h("button", {
    class: "quiet", type: "button", "data-key": `retry:${f.job_id}`,
    "aria-label": `Retry request #${f.job_id}`,
    onclick: () => act(`/admin/requests/${encodeURIComponent(f.job_id)}/retry`,
      (job) => `Request #${f.job_id} is queued again with fresh attempts (now ${job.status === "IN_QUEUE" ? "queued" : String(job.status).toLowerCase()}).`,
      { focusOutcome: true }),
  }, "Retry");

  let timer = null;
  let latest = 0; // only the newest refresh draws: an older answer may predate an action
  const refresh = async () => {
    const mine = ++latest;
    try {
      const [q, wk, past] = await Promise.all([api("/admin/queues"), api("/admin/workers"),
        api(`/admin/history?minutes=${HISTORY_MIN}`)]);
      if (mine !== latest) return;
      // The tables are rebuilt: the focused button is found again by its key.
      const focused = view.contains(document.activeElement) ? document.activeElement.dataset?.key : undefined;
      const hour = Math.round((q.window_s ?? 3600) / 60);
      const paused = new Set(Object.entries(q.pools).filter(([, p]) => p.paused).map(([name]) => name));
      const byPool = poolWorkers(wk.workers);
      fill(pools, h("table", { class: "pools" },
        h("thead", {}, h("tr", {}, ["Pool", "Queued", "Running", "Workers", "Median wait", "Median run", `Completed (${hour} min)`, `Failed (${hour} min)`, "Queue"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, Object.entries(q.pools).map(([name, p]) => {
          const seen = byPool.get(name);
          const allDown = seen !== undefined && seen.live > 0 && seen.down === seen.live;
          return h("tr", {},
            h("th", { scope: "row" }, name, p.paused ? h("span", { class: "badge w-paused" }, "paused") : ""),
            h("td", {}, p.queued), h("td", {}, p.running),
            h("td", { class: p.workers && !allDown ? "" : "warn" }, p.workers, allDown ? " (engine down)" : ""),
            h("td", {}, seconds(p.median_wait_s)), h("td", {}, seconds(p.median_run_s)),
            h("td", {}, p.completed), h("td", { class: p.failed ? "warn" : "" }, p.failed),
            h("td", {}, pauseButton(name, p.paused)));
        }))));
      const shown = Object.entries(past.pools).filter(([, p]) => active(p));
      const quiet = Object.keys(past.pools).filter((name) => !active(past.pools[name]));
      fill(charts, shown.map(([name, p]) => h("section", { class: "pool-history", "data-pool": name, "aria-label": `${name}, the last ${past.minutes} minutes` },
        h("h3", {}, name), h("div", { class: "charts" }, poolCharts(name, p, past.minutes, past.step_s)))),
      h("p", { class: "hint" }, shown.length === 0 ? `No requests in the last ${past.minutes} minutes.`
        : quiet.length ? `No requests in the last ${past.minutes} minutes: ${quiet.join(", ")}.` : ""));
      fill(workers, wk.workers.length === 0 ? h("p", { class: "hint" }, "No worker has registered yet.") :
        h("table", { class: "workers" },
          h("thead", {}, h("tr", {}, ["Worker", "Pools", "State", "Job", "Last seen", "Jobs done"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, wk.workers.map((w) => {
            const state = workerState(w, paused);
            return h("tr", {},
              h("th", { scope: "row" }, w.name),
              h("td", {}, w.pools.join(", ")),
              h("td", {}, h("span", { class: `badge ${state.cls}` }, state.text),
                w.state_reason ? h("span", { class: "error-text" }, ` ${w.state_reason}`) : ""),
              h("td", {}, w.current_job ?? "–"),
              h("td", { class: w.last_seen_seconds > LIVE_S ? "warn" : "" }, seconds(w.last_seen_seconds)),
              h("td", {}, w.jobs_done));
          }))));
      fill(failures, q.failures.length === 0 ? h("p", { class: "hint" }, "No failures.") :
        h("ul", { class: "failures" }, q.failures.map((f) => h("li", {},
          h("p", { class: "line" }, h("strong", {}, `#${f.job_id}`), ` ${f.model_id} · ${f.user} · ${when(f.finished_at)}`,
            f.error_type ? h("span", { class: "badge s-failed" }, f.error_type) : "", retryButton(f)),
          h("p", { class: "error-text" }, f.error ?? "unknown error")))));
      fill(updated, `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`);
      if (focused) view.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
    } catch (err) {
      if (mine === latest) fill(updated, explain(err));
    }
  };
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
  view.leave = () => clearInterval(timer);
  return view;
}
