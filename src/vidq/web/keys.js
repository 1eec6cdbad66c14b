// API keys: the user's own tokens (GET/POST /tokens, DELETE /tokens/{id}), their limits
// (GET /limits) and what their requests used today and in the last 7 days (GET /usage);
// for an admin also every user's tokens (GET /admin/tokens?user=, DELETE /admin/tokens/{id}).
// A new key's secret is shown once, in a read-only field with a Copy button; revoking asks
// first, inline (no window.confirm: it works the same with a keyboard and a screen reader).

import { api, explain } from "./api.js";
import { add, fill, h, seconds } from "./dom.js";

const LIMITS = [
  // [the API's name, words, its counter in /limits' usage or null]
  ["max_queued", "Requests waiting at once", "queued"],
  ["max_running", "Requests running at once", "running"],
  ["rate_per_minute", "Submits per minute", "last_minute"],
  ["daily_video_seconds", "Video seconds per day (UTC)", "video_seconds_today"],
  ["daily_gpu_seconds", "GPU-seconds per day (UTC)", "gpu_seconds_today"],
];

const STATES = { active: "Active", revoked: "Revoked", expired: "Expired" };

export function keys({ admin = false } = {}) {
  const view = h("section", { class: "keys", "aria-labelledby": "k-title" });
  const usage = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const limits = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const mine = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const reloadMine = () => loadTokens(mine, "/tokens", { owner: false, reload: reloadMine });
  add(view,
    h("h1", { id: "k-title" }, "API keys"),
    h("p", { class: "hint" }, "Keys let programs use vidq as you: with the SDK, curl or fal-client. ",
      "A new key has the limits of the key you signed in with."),
    h("h2", {}, "Usage"), usage,
    h("h2", {}, "Your limits"), limits,
    h("h2", { id: "k-create" }, "Create a key"), createForm(reloadMine),
    h("h2", {}, "Your keys"), mine);
  if (admin) view.append(...everyone());

  loadUsage(usage);
  loadLimits(limits);
  reloadMine();
  return view;
}

// -- usage and limits -----------------------------------------------------------------------

async function loadUsage(box) {
  try {
    const [today, week] = await Promise.all([api("/usage?days=1"), api("/usage?days=7")]);
    const row = (name, t) => h("tr", {}, h("th", { scope: "row" }, name),
      h("td", {}, String(t.jobs)), h("td", {}, seconds(t.video_seconds)), h("td", {}, seconds(t.gpu_seconds)));
    fill(box, h("div", { class: "table-wrap" }, h("table", { class: "usage" },
      h("thead", {}, h("tr", {}, ["", "Requests", "Video", "GPU time"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, row("Today (UTC)", today.total), row("Last 7 days", week.total)))));
  } catch (err) {
    fill(box, h("p", { class: "form-error" }, explain(err)));
  }
}

async function loadLimits(box) {
  try {
    const me = await api("/limits");
    const used = me.usage;
    const line = ([key, words, counter]) => {
      const limit = me.limits[key];
      const now = counter ? used[counter] : null;
      const shown = key.includes("seconds") ? seconds(now) : String(now);
      return [h("dt", {}, words),
        h("dd", {}, limit === null ? `no limit (${shown} now)` : `${shown} of ${limit}`)];
    };
    fill(box, h("dl", { class: "facts limits" },
      LIMITS.map(line),
      h("dt", {}, "Highest priority"), h("dd", {}, String(me.limits.max_priority)),
      h("dt", {}, "This key expires"), h("dd", {}, me.expires_at ? date(me.expires_at) : "never")));
  } catch (err) {
    fill(box, h("p", { class: "form-error" }, explain(err)));
  }
}

// -- creating a key -------------------------------------------------------------------------

function createForm(reload) {
  const name = h("input", { id: "key-name", name: "name", required: true, maxlength: "100", autocomplete: "off", "aria-describedby": "key-name-error" });
  const days = h("input", { id: "key-days", name: "expires_in_days", type: "number", min: "1", max: "3650", step: "1", inputmode: "numeric", "aria-describedby": "key-days-hint key-days-error" });
  const nameError = h("p", { class: "field-error", id: "key-name-error", hidden: true });
  const daysError = h("p", { class: "field-error", id: "key-days-error", hidden: true });
  const message = h("p", { class: "form-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, "Create key");
  const secret = h("div", { class: "new-key", hidden: true });
  const form = h("form", { class: "key-form", novalidate: true },
    h("div", { class: "fields" },
      h("div", { class: "field" }, h("label", { for: "key-name" }, "Name"), name, nameError),
      h("div", { class: "field" }, h("label", { for: "key-days" }, "Expires after (days)"), days,
        h("p", { class: "hint", id: "key-days-hint" }, "Leave empty for a key that does not expire."), daysError)),
    button, message, secret);

  const fieldError = (input, box, text) => {
    fill(box, text);
    box.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    fieldError(name, nameError, name.value.trim() ? "" : "Give the key a name, to tell it from your others.");
    const n = days.value.trim();
    const badDays = n !== "" && !(/^\d+$/.test(n) && +n >= 1 && +n <= 3650);
    fieldError(days, daysError, badDays ? "A whole number of days from 1 to 3650, or empty." : "");
    if (!nameError.hidden) { name.focus(); return; }
    if (!daysError.hidden) { days.focus(); return; }
    button.disabled = true;
    try {
      const made = await api("/tokens", { method: "POST", body: { name: name.value.trim(), expires_in_days: n ? +n : null } });
      name.value = "";
      days.value = "";
      showSecret(secret, made);
      reload();
    } catch (err) {
      const fields = { name: [name, nameError], expires_in_days: [days, daysError] };
      const details = Array.isArray(err.detail) ? err.detail : [];
      for (const d of details) {
        const [input, box] = fields[d.loc?.[1]] ?? [];
        if (input) fieldError(input, box, d.msg);
      }
      fill(message, explain(err));
      message.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function showSecret(box, made) {
  const value = h("input", { id: "new-key-value", class: "secret", readonly: true, value: made.token, spellcheck: "false", autocomplete: "off", "aria-describedby": "new-key-note" });
  const copied = h("span", { class: "hint", role: "status" });
  const copy = h("button", { type: "button", onclick: async () => {
    value.select();
    try {
      await navigator.clipboard.writeText(made.token);
      fill(copied, "Copied.");
    } catch {
      fill(copied, "Selected: press Ctrl+C (⌘C) to copy.");
    }
  } }, "Copy");
  const done = h("button", { type: "button", class: "quiet", onclick: () => { fill(box); box.hidden = true; document.getElementById("key-name")?.focus(); } }, "Done");
  fill(box,
    h("h3", { id: "new-key-title" }, `Your new key “${made.name}”`),
    h("p", { id: "new-key-note", class: "warn" }, "Copy it now: it will not be shown again. vidq keeps only a fingerprint of it."),
    h("label", { for: "new-key-value", class: "visually-hidden" }, "New API key"),
    h("div", { class: "secret-row" }, value, copy),
    h("div", { class: "actions" }, copied, done));
  box.hidden = false;
  value.focus();
  value.select();
}

// -- listing and revoking -------------------------------------------------------------------

// Only the newest listing of a box draws: an older answer that comes late (the first load
// of every user's keys, after a filter asked for one user's) must not replace it.
const newest = new WeakMap();

async function loadTokens(box, path, { owner, reload }) {
  const mine = {};
  newest.set(box, mine);
  try {
    const { tokens } = await api(path);
    if (newest.get(box) !== mine) return;
    if (!tokens.length) { fill(box, h("p", { class: "hint" }, owner ? "No keys." : "You have no keys.")); return; }
    const cols = [...(owner ? ["User"] : []), "Name", "Created", "Expires", "State", ""];
    fill(box, h("div", { class: "table-wrap" }, h("table", { class: "tokens" },
      h("thead", {}, h("tr", {}, cols.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, tokens.map((t) => tokenRow(t, { owner, reload }))))));
  } catch (err) {
    if (newest.get(box) === mine) fill(box, h("p", { class: "form-error" }, explain(err)));
  }
}

function tokenRow(t, { owner, reload }) {
  const label = t.name ?? `key ${t.id}`;
  const action = h("td", { class: "key-action" });
  const revokeButton = h("button", { type: "button", class: "quiet", "aria-label": `Revoke ${label}` }, "Revoke");
  const ask = () => {
    const yes = h("button", { type: "button", class: "danger", onclick: async () => {
      yes.disabled = true;
      try {
        await api(owner ? `/admin/tokens/${t.id}` : `/tokens/${t.id}`, { method: "DELETE" });
        reload();
      } catch (err) {
        fill(action, h("span", { class: "form-error", role: "alert" }, explain(err)));
      }
    } }, "Yes, revoke");
    const no = h("button", { type: "button", class: "quiet", onclick: () => { fill(action, revokeButton); revokeButton.focus(); } }, "Keep");
    fill(action, h("div", { class: "confirm", role: "group", "aria-label": `Revoke ${label}?` },
      h("span", {}, t.current ? "You are signed in with this key: revoking it signs you out. Revoke?" : `Revoke “${label}”? Programs using it stop working at once.`),
      yes, no));
    yes.focus();
  };
  revokeButton.addEventListener("click", ask);
  if (t.state === "active") action.append(revokeButton);
  // data-label: the column's name, shown before each cell where the rows stack (phones)
  return h("tr", { class: `key s-key-${t.state}` },
    owner ? h("td", { "data-label": "User" }, t.user) : null,
    h("th", { scope: "row" }, t.name ?? h("em", {}, "(no name)"), t.current ? h("span", { class: "badge this-key" }, "this session") : null,
      t.role !== "user" ? h("span", { class: "badge" }, t.role) : null),
    h("td", { "data-label": "Created" }, date(t.created_at)),
    h("td", { "data-label": "Expires" }, t.expires_at ? date(t.expires_at) : "never"),
    h("td", { "data-label": "State" }, STATES[t.state] ?? t.state),
    action);
}

function everyone() {
  const user = h("input", { id: "key-user", name: "user", maxlength: "200", autocomplete: "off", "aria-describedby": "key-user-hint" });
  const list = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const load = () => {
    const who = user.value.trim();
    loadTokens(list, `/admin/tokens${who ? `?user=${encodeURIComponent(who)}` : ""}`, { owner: true, reload: load });
  };
  const form = h("form", { class: "user-filter", role: "search" },
    h("div", { class: "field" }, h("label", { for: "key-user" }, "User"), user,
      h("p", { class: "hint", id: "key-user-hint" }, "Empty: every user's keys.")),
    h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
  return [h("h2", {}, "Every user's keys"), form, list];
}

function date(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "–" : d.toLocaleString();
}
