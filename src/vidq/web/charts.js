// The Dashboard's small charts: plain inline SVG made with DOM calls (a few polylines: no
// library to vendor or keep up to date). Colours come from classes in app.css (the CSP
// refuses style attributes), so the charts follow dark mode; the viewBox scales them to any
// width. Each point is (bucket index, -value): the points are the figures themselves.

import { h, seconds } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Runs of consecutive known values (a bucket without a figure, a wait where nothing
// started, is a gap, not a zero). A run of one point is drawn as a dot.
function runs(values) {
  const out = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (run.length) out.push(run);
      run = [];
    } else {
      run.push([i, v]);
    }
  });
  if (run.length) out.push(run);
  return out;
}

function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) {
    if (values[i] !== null && values[i] !== undefined) return values[i];
  }
  return null;
}

/** One chart: `series` = [{name, label, cls, values}] over the same buckets; `format`
 * writes a value in words; `summary` is the chart's text alternative. */
export function chart({ title, summary, series, span, format = String }) {
  const n = Math.max(...series.map((s) => s.values.length), 1);
  const known = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const top = Math.max(1, ...known);
  const pad = top * 0.08;
  const drawing = svg("svg", {
    class: "chart", role: "img", "aria-label": summary, "data-max": top,
    viewBox: `0 ${-(top + pad)} ${Math.max(n - 1, 1)} ${top + 2 * pad}`,
    preserveAspectRatio: "none",
  }, svg("title", {}, summary),
  svg("line", { class: "grid", x1: 0, x2: n - 1, y1: 0, y2: 0, "vector-effect": "non-scaling-stroke" }),
  svg("line", { class: "grid", x1: 0, x2: n - 1, y1: -top, y2: -top, "vector-effect": "non-scaling-stroke" }),
  series.flatMap((s) => runs(s.values).map((run) => svg("polyline", {
    class: `series ${s.cls}${run.length === 1 ? " dot" : ""}`, "data-series": s.name, fill: "none",
    "stroke-linecap": "round", "stroke-linejoin": "round", "vector-effect": "non-scaling-stroke",
    points: (run.length === 1 ? [run[0], run[0]] : run).map(([x, y]) => `${x},${-y}`).join(" "),
  }))));
  return h("figure", { class: "chart-card" },
    h("figcaption", {}, h("strong", {}, title), " ",
      h("span", { class: "hint" }, `top ${format(top)}`)),
    drawing,
    h("p", { class: "axis hint", "aria-hidden": "true" }, h("span", {}, span), h("span", {}, "now")),
    h("p", { class: "legend" }, series.map((s) => h("span", { class: `key ${s.cls}` },
      `${s.label}: ${latest(s.values) === null ? "–" : format(latest(s.values))}`))));
}

/** A pool's three charts from its `/admin/history` figures. */
export function poolCharts(pool, p, minutes, step) {
  const per = step >= 120 ? `${step / 60} min` : "min";
  const last = (values) => latest(values) ?? "none";
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const span = `${minutes} min ago`;
  const waitText = (v) => (v === null ? "none" : seconds(v));
  return [
    chart({
      title: "Queue depth",
      summary: `${pool}, queue depth over the last ${minutes} min: now ${last(p.queued)}, peak ${Math.max(0, ...p.queued)}`,
      span,
      series: [{ name: "queued", label: "now", cls: "c-queued", values: p.queued }],
    }),
    chart({
      title: `Finished per ${per}`,
      summary: `${pool}, jobs finished per ${per} over the last ${minutes} min: ${sum(p.completed)} completed, ${sum(p.failed)} failed; latest ${per}: ${last(p.completed)} completed, ${last(p.failed)} failed`,
      span,
      series: [
        { name: "completed", label: "completed", cls: "c-completed", values: p.completed },
        { name: "failed", label: "failed", cls: "c-failed", values: p.failed },
      ],
    }),
    chart({
      title: "Wait (submit → start)",
      summary: `${pool}, wait from submit to start per ${per} over the last ${minutes} min: latest p50 ${waitText(latest(p.wait_p50_s))}, p95 ${waitText(latest(p.wait_p95_s))}`,
      span,
      series: [
        { name: "wait_p50_s", label: "p50", cls: "c-p50", values: p.wait_p50_s },
        { name: "wait_p95_s", label: "p95", cls: "c-p95", values: p.wait_p95_s },
      ],
      format: seconds,
    }),
  ];
}

/** Whether a pool did anything in the window (else it is only named). */
export function active(p) {
  return [p.queued, p.started, p.completed, p.failed].some((vs) => vs.some((v) => v > 0));
}
