// The operators' dashboard (admin tokens): GET /admin/queues and /admin/workers every few
// seconds.

import { api, explain } from "./api.js";
import { add, fill, h, seconds, when } from "./dom.js";

const REFRESH_MS = 5000;
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
  const pools = h("div", { class: "table-wrap" });
  const workers = h("div", { class: "table-wrap" });
  const failures = h("div");
  add(view, h("h1", { id: "d-title" }, "Dashboard"), updated, h("h2", {}, "Pools"), pools,
    h("h2", {}, "Workers"), workers, h("h2", {}, "Latest failures"), failures);

  let timer = null;
  const refresh = async () => {
    try {
      const [q, wk] = await Promise.all([api("/admin/queues"), api("/admin/workers")]);
      const hour = Math.round((q.window_s ?? 3600) / 60);
      const paused = new Set(Object.entries(q.pools).filter(([, p]) => p.paused).map(([name]) => name));
      const byPool = poolWorkers(wk.workers);
      fill(pools, h("table", { class: "pools" },
        h("thead", {}, h("tr", {}, ["Pool", "Queued", "Running", "Workers", "Median wait", "Median run", `Completed (${hour} min)`, `Failed (${hour} min)`].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, Object.entries(q.pools).map(([name, p]) => {
          const seen = byPool.get(name);
          const allDown = seen !== undefined && seen.live > 0 && seen.down === seen.live;
          return h("tr", {},
            h("th", { scope: "row" }, name, p.paused ? h("span", { class: "badge w-paused" }, "paused") : ""),
            h("td", {}, p.queued), h("td", {}, p.running),
            h("td", { class: p.workers && !allDown ? "" : "warn" }, p.workers, allDown ? " (engine down)" : ""),
            h("td", {}, seconds(p.median_wait_s)), h("td", {}, seconds(p.median_run_s)),
            h("td", {}, p.completed), h("td", { class: p.failed ? "warn" : "" }, p.failed));
        }))));
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
            f.error_type ? h("span", { class: "badge s-failed" }, f.error_type) : ""),
          h("p", { class: "error-text" }, f.error ?? "unknown error")))));
      fill(updated, `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`);
    } catch (err) {
      fill(updated, explain(err));
    }
  };
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
  view.leave = () => clearInterval(timer);
  return view;
}
