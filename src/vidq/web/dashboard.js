// The operators' dashboard (admin tokens): GET /admin/queues every few seconds.

import { api, explain } from "./api.js";
import { add, fill, h, seconds, when } from "./dom.js";

const REFRESH_MS = 5000;

export function dashboard() {
  const view = h("section", { class: "dashboard", "aria-labelledby": "d-title" });
  const updated = h("p", { class: "hint", "aria-live": "polite" }, "Loading…");
  const pools = h("div", { class: "table-wrap" });
  const failures = h("div");
  add(view, h("h1", { id: "d-title" }, "Dashboard"), updated, h("h2", {}, "Pools"), pools,
    h("h2", {}, "Latest failures"), failures);

  let timer = null;
  const refresh = async () => {
    try {
      const q = await api("/admin/queues");
      const hour = Math.round((q.window_s ?? 3600) / 60);
      fill(pools, h("table", {},
        h("thead", {}, h("tr", {}, ["Pool", "Queued", "Running", "Workers", "Median wait", "Median run", `Completed (${hour} min)`, `Failed (${hour} min)`].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, Object.entries(q.pools).map(([name, p]) => h("tr", {},
          h("th", { scope: "row" }, name),
          h("td", {}, p.queued), h("td", {}, p.running), h("td", { class: p.workers ? "" : "warn" }, p.workers),
          h("td", {}, seconds(p.median_wait_s)), h("td", {}, seconds(p.median_run_s)),
          h("td", {}, p.completed), h("td", { class: p.failed ? "warn" : "" }, p.failed))))));
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
