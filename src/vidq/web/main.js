// The vidq web app: sign in with an API token, then Playground, History, API keys and (for
// admin tokens) Dashboard, as hash routes (#/playground, #/history/42, #/keys, ...).

import { api, ApiError, explain, session, whenUnauthorized } from "./api.js";
import { dashboard } from "./dashboard.js";
import { fill, h } from "./dom.js";
import { history, requestView } from "./history.js";
import { keys } from "./keys.js";
import { playground } from "./playground.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
const dashboardLink = nav.querySelector('[data-view="dashboard"]');

let admin = false;
let current = null; // the view on screen (its `leave` stops timers and streams)
let pg = null; // the playground is kept, so a running request keeps its progress

/** The token's role: any token may list its requests; only an admin's reads queues. */
async function roleOf(token) {
  await api("/requests?limit=1", { token });
  try {
    await api("/admin/queues", { token });
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return false;
    throw err;
  }
}

function signInView(message = "") {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "token-hint token-error" });
  const error = h("p", { class: "form-error", id: "token-error", role: "alert", hidden: !message }, message);
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "sign-in", novalidate: true },
    h("h1", {}, "Sign in"),
    h("div", { class: "field" }, h("label", { for: "token" }, "API token"), input,
      h("p", { class: "hint", id: "token-hint" }, "A token from ", h("code", {}, "vidq token create"),
        " (the admin token is printed when ", h("code", {}, "vidq serve"), " starts). It is kept for this tab only.")),
    error, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    error.hidden = true;
    if (!token) { fill(error, "Enter an API token."); error.hidden = false; return; }
    button.disabled = true;
    try {
      admin = await roleOf(token);
      session.set(token);
      input.value = "";
      start();
    } catch (err) {
      fill(error, explain(err));
      error.hidden = false;
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function show(next) {
  current?.leave?.();
  current = next;
  fill(view, next);
}

function route() {
  if (!session.token) return;
  const [, name = "playground", arg] = location.hash.split("/");
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "history" && arg) show(requestView(decodeURIComponent(arg), runAgain));
  else if (name === "history") show(history(runAgain));
  else if (name === "dashboard" && admin) show(dashboard());
  else if (name === "keys") show(keys({ admin }));
  else {
    if (name !== "playground") { location.replace("#/playground"); return; }
    pg ??= playground();
    show(pg);
  }
  view.focus({ preventScroll: true });
}

function runAgain(prefill) {
  pg = playground(prefill);
  if (location.hash === "#/playground") route();
  else location.hash = "#/playground";
}

function start() {
  nav.hidden = false;
  signOut.hidden = false;
  dashboardLink.hidden = !admin;
  if (!location.hash || location.hash === "#/") location.replace("#/playground");
  route();
}

function stop(message = "") {
  session.clear();
  admin = false;
  pg = null;
  nav.hidden = true;
  signOut.hidden = true;
  dashboardLink.hidden = true;
  show(signInView(message));
  document.getElementById("token").focus();
}

signOut.addEventListener("click", () => stop());
whenUnauthorized(() => stop("Your token is no longer accepted: sign in again."));
window.addEventListener("hashchange", route);

if (session.token) {
  roleOf(session.token).then((isAdmin) => { admin = isAdmin; start(); })
    .catch((err) => stop(explain(err)));
} else {
  stop();
}
