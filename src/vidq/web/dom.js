// Building the page from data: text only. Nothing a user or the API supplies is ever
// parsed as HTML (the app never assigns markup); URLs are checked before use.

/** An element with attributes, listeners (`onclick`) and children (nodes or text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (typeof value !== "string" && key in el) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  add(el, ...children);
  return el;
}

/** Append children: nodes as they are, anything else as text. */
export function add(el, ...children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return add(el, ...children);
}

/** Only http(s) URLs (and our own relative ones) become links or media sources. */
export function safeUrl(url) {
  try {
    const parsed = new URL(String(url), location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

export function seconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 90) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return m < 90 ? `${m} min ${Math.round(s % 60)} s` : `${(s / 3600).toFixed(1)} h`;
}

/** A file size in words: "830 KB", "1.4 MB". */
export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleString();
}

/** A status as a small badge (the class gives its colour). */
export function badge(status) {
  return h("span", { class: `badge s-${String(status).toLowerCase()}` }, words(status));
}

export function words(status) {
  return {
    IN_QUEUE: "Queued", IN_PROGRESS: "Running", COMPLETED: "Completed",
    FAILED: "Failed", CANCELLED: "Cancelled",
  }[status] ?? String(status);
}

/** Why a queued request is passed over for now (the API's `hold`), in words; "" if it is not. */
export function holdWords(hold) {
  return {
    PAUSED: "Paused by an operator: it starts once the queue is resumed",
    HELD: "Held until one of your running requests ends (max_running)",
  }[hold] ?? "";
}
