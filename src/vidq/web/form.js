// A form made from a model's input JSON schema (GET /models: the same schema as
// /openapi.json): one labelled control per property, defaults and limits from the schema,
// size presets, file pickers (with drag and drop) for the media fields, checked on choice
// (kind and size) and sent as data: URIs.

import { bytes, h, fill } from "./dom.js";

const LONG_TEXT = 1000; // strings allowed to be this long get a text area
// Options every family shares come after the family's own fields (schema order otherwise).
const LATER = ["negative_prompt", "priority", "seed", "higher_quality_with_more_steps"];
// Where the image sets the video's shape (no width field), how it is sized is a detail:
// these fields go under "Advanced", closed.
const ADVANCED = ["height", "min_height", "use_best_resolution", "new_resolution"];
// Size presets: [label, width, height]; only those the schema's bounds allow are offered
// (sides are multiples of 16). Without a width field, the heights alone.
const SIZES = [
  ["16:9", 1280, 720], ["16:9", 832, 480], ["9:16", 720, 1280], ["9:16", 480, 832],
  ["1:1", 960, 960], ["1:1", 480, 480], ["4:3", 960, 720], ["3:4", 720, 960],
];
const HEIGHTS = [["480p", 480], ["720p", 720]];
// Room left in a request's body for what is not the file (prompt, options, JSON).
const BODY_ROOM = 16 * 1024;

/** What the first bytes of a file say it is: "image", "audio", "video", or null. The
 * server reads the format from the bytes too; the browser's type is only a fallback. */
function sniff(b) {
  const ascii = (from, to) => String.fromCharCode(...b.slice(from, to));
  if (b[0] === 0x89 && ascii(1, 4) === "PNG") return "image";
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "image";
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WAVE") return "audio";
  if (ascii(0, 3) === "ID3" || ascii(0, 4) === "fLaC" || ascii(0, 4) === "OggS") return "audio";
  if (b[0] === 0xff && (b[1] & 0xe0) === 0xe0) return "audio"; // an MPEG or AAC frame
  if (ascii(4, 8) === "ftyp") return ascii(8, 11) === "M4A" ? "audio" : "video";
  if (["moov", "mdat", "wide", "free", "skip"].includes(ascii(4, 8))) return "video"; // a QuickTime MOV
  if (b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3) return "video"; // WebM, MKV
  return null;
}

const KIND_WORDS = { image: "an image (PNG, JPEG or WEBP)", audio: "a sound file", video: "a video" };

/** The property with its `anyOf` folded: the non-null variant's keywords, and `types`. */
function fold(prop) {
  const variants = (prop.anyOf ?? [prop]).filter((v) => v.type !== "null");
  const merged = Object.assign({}, ...variants, prop);
  delete merged.anyOf;
  merged.types = [...new Set(variants.map((v) => v.type))];
  merged.nullable = (prop.anyOf ?? []).some((v) => v.type === "null");
  return merged;
}

function kindOf(p) {
  if (p.contentMediaType) return "file";
  if (p.types.length !== 1) return "text"; // e.g. an integer or a string: typed as text
  const [type] = p.types;
  if (type === "array" || type === "object") return "json"; // e.g. loras: typed as JSON
  if (type === "boolean") return "checkbox";
  if (type === "integer" || type === "number") return "number";
  if (type === "string" && (p.maxLength ?? 0) >= LONG_TEXT) return "textarea";
  return "text";
}

/** A JSON field's value: the parsed JSON, or the text as typed (the API's 422 then names it). */
function parseJson(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** The form for `schema`, prefilled with `values` where given; `limits` (GET /models'):
 * the largest file the server takes. */
export function schemaForm(schema, values = {}, { limits = null } = {}) {
  const required = new Set(schema.required ?? []);
  const fields = new Map(); // name -> {prop, kind, control, error, file}
  const element = h("div", { class: "form-body" });
  const main = h("div", { class: "fields" });
  const props = schema.properties ?? {};
  const imageSized = !("width" in props);
  const advancedFields = h("div", { class: "fields" });
  const advanced = h("details", { class: "advanced" }, h("summary", {}, "Advanced"), advancedFields);
  let onchange = () => {};
  const largest = fileLimit(limits);

  const rank = ([name]) => (LATER.includes(name) ? 1 : 0);
  const properties = Object.entries(schema.properties ?? {}).sort((a, b) => rank(a) - rank(b));
  for (const [name, raw] of properties) {
    const prop = fold(raw);
    const kind = kindOf(prop);
    const id = `field-${name}`;
    const title = prop.title || name;
    const hint = prop.description ? h("p", { class: "hint", id: `${id}-hint` }, prop.description) : null;
    const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true });
    const described = [hint && `${id}-hint`, `${id}-error`].filter(Boolean).join(" ");
    const field = { name, prop, kind, error, file: null };
    const wrap = h("div", { class: `field kind-${kind}`, "data-field": name });
    field.wrap = wrap;
    const label = h("label", { for: id }, title);
    const head = required.has(name) ? h("div", { class: "label-row" }, label, h("span", { class: "req" }, "required")) : label;
    const initial = values[name] ?? prop.default;

    if (kind === "checkbox") {
      field.control = h("input", { type: "checkbox", id, name, checked: Boolean(initial), "aria-describedby": described });
      wrap.append(h("div", { class: "check" }, field.control, label), hint ?? "", error);
    } else if (kind === "file") {
      field.control = h("input", { type: "file", id, name, accept: prop.contentMediaType, "aria-describedby": described });
      field.chosen = h("div", { class: "chosen", "aria-live": "polite" });
      const drop = h("div", { class: "drop" }, field.control, h("span", { class: "hint" }, "or drop a file here"));
      const wanted = (prop.contentMediaType ?? "").split("/")[0];
      const take = async (file) => {
        if (!file) return;
        const refused = await refuse(file, wanted, largest);
        if (refused) {
          field.file = null;
          field.control.value = "";
          showFile(field);
          showError(field, refused);
          onchange();
          return;
        }
        hideError(field);
        field.file = { name: file.name, type: file.type, uri: await readFile(file) };
        showFile(field);
        onchange();
      };
      field.control.addEventListener("change", () => take(field.control.files[0]));
      drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (e) => {
        e.preventDefault();
        drop.classList.remove("over");
        take(e.dataTransfer.files[0]);
      });
      field.clear = () => { field.file = null; field.control.value = ""; showFile(field); onchange(); };
      wrap.append(head, drop, field.chosen, hint ?? "", error);
      if (values[name] !== undefined) field.chosen.append(h("p", { class: "hint" }, "Attach the file again: the history keeps no copy of uploaded files."));
    } else {
      const attrs = { id, name, "aria-describedby": described, required: required.has(name) };
      if (kind === "number") {
        Object.assign(attrs, { type: "number", inputmode: "numeric", min: prop.minimum, max: prop.maximum, step: prop.types[0] === "integer" ? 1 : "any" });
      }
      if (kind === "text") attrs.type = "text";
      if (prop.maxLength && kind !== "number") attrs.maxlength = prop.maxLength;
      if (kind === "json" && prop.examples) attrs.placeholder = `e.g. ${JSON.stringify(prop.examples[0])}`;
      else if (prop.examples) attrs.placeholder = `e.g. ${prop.examples.join(", ")}`;
      else if (initial === null || initial === undefined) attrs.placeholder = prop.nullable ? "optional" : "";
      const area = kind === "textarea" || kind === "json";
      field.control = h(area ? "textarea" : "input", { ...attrs, rows: area ? (name === "prompt" ? 3 : 2) : undefined });
      if (initial !== null && initial !== undefined) field.control.value = kind === "json" ? JSON.stringify(initial) : String(initial);
      wrap.append(head, field.control, hint ?? "", error);
    }
    field.control.addEventListener("input", () => onchange());
    field.control.addEventListener("change", () => onchange());
    fields.set(name, field);
    (imageSized && ADVANCED.includes(name) ? advancedFields : main).append(wrap);
  }
  const presets = sizePresets(props, fields, () => onchange());
  if (presets) (imageSized ? advancedFields : main).prepend(presets);
  element.append(main);
  if (advancedFields.childElementCount) element.append(advanced);

  return {
    element,
    fields,
    set onchange(fn) { onchange = fn; },

    /** The request body: the fields that differ from their defaults, and required ones. */
    values() {
      const body = {};
      for (const { name, prop, kind, control, file } of fields.values()) {
        let value;
        if (kind === "file") value = file?.uri;
        else if (kind === "checkbox") value = control.checked;
        else if (control.value.trim() === "") value = undefined;
        else if (kind === "number") value = Number(control.value);
        else if (kind === "json") value = parseJson(control.value);
        else if (prop.types.includes("integer") && /^\d+$/.test(control.value.trim())) value = Number(control.value.trim());
        else value = control.value;
        if (value === undefined || (value === prop.default && !required.has(name))) continue;
        body[name] = value;
      }
      return body;
    },

    /** The chosen files, by field (for the code snippets: name and type). */
    files() {
      return Object.fromEntries([...fields.values()].filter((f) => f.file).map((f) => [f.name, f.file]));
    },

    /** Show the API's 422 `detail` next to its fields; what names no field is returned. */
    showErrors(detail) {
      this.clearErrors();
      const rest = [];
      for (const item of detail) {
        const loc = Array.isArray(item.loc) ? item.loc : [];
        const field = fields.get(String(loc[0] === "body" ? loc[1] : loc[0]));
        if (!field) { rest.push(item.msg ?? String(item)); continue; }
        showError(field, item.msg ?? "invalid");
        if (advanced.contains(field.wrap)) advanced.open = true;
      }
      const first = element.querySelector("[aria-invalid=true]");
      if (first) first.focus();
      return rest;
    },

    clearErrors() {
      for (const f of fields.values()) hideError(f);
    },
  };
}

function showError(field, text) {
  fill(field.error, text);
  field.error.hidden = false;
  field.control.setAttribute("aria-invalid", "true");
}

function hideError(field) {
  field.error.hidden = true;
  fill(field.error);
  field.control.removeAttribute("aria-invalid");
}

/** The largest file the server takes: a decoded input's limit, and the request's body
 * limit with the file in base64 (a third larger) and room for the other fields. */
function fileLimit(limits) {
  if (!limits) return null;
  const sizes = [limits.max_input_bytes, Math.floor(((limits.max_body_bytes ?? 0) - BODY_ROOM) * 3 / 4)];
  return Math.max(0, Math.min(...sizes.filter((n) => Number.isFinite(n))));
}

/** Why `file` cannot go in a field that takes `wanted` ("image", ...), or null. */
async function refuse(file, wanted, largest) {
  if (largest !== null && file.size > largest) {
    return `${file.name} is too large (${bytes(file.size)}): this server takes files up to ${bytes(largest)}.`;
  }
  if (!wanted) return null;
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  // Every image format the server takes is known here by its bytes; a sound or video in
  // a format not listed may still be one, as the browser's type says.
  const kind = sniff(head) ?? (wanted === "image" ? null : (file.type || "").split("/")[0] || null);
  if (kind !== wanted) return `${file.name} is not ${KIND_WORDS[wanted] ?? wanted}: choose another file.`;
  return null;
}

/** Buttons that fill width and height (or the height alone) with a common size. */
function sizePresets(props, fields, changed) {
  const width = fields.get("width");
  const height = fields.get("height");
  if (!height || height.kind !== "number" && height.kind !== "text") return null;
  const fits = (f, n) => !f || ((f.prop.minimum ?? 0) <= n && n <= (f.prop.maximum ?? Infinity) && n % 16 === 0);
  const choices = width
    ? SIZES.filter(([, w, hh]) => fits(width, w) && fits(height, hh)).map(([ratio, w, hh]) => [`${ratio} · ${w}×${hh}`, w, hh])
    : HEIGHTS.filter(([, hh]) => fits(height, hh)).map(([label, hh]) => [label, null, hh]);
  if (!choices.length) return null;
  const buttons = choices.map(([label, w, hh]) => {
    const b = h("button", { type: "button", class: "quiet preset", "aria-pressed": "false", "data-size": w ? `${w}x${hh}` : String(hh) }, label);
    b.addEventListener("click", () => {
      if (width) width.control.value = String(w);
      height.control.value = String(hh);
      mark();
      changed();
    });
    return b;
  });
  const mark = () => {
    for (const b of buttons) {
      const now = width ? `${width.control.value}x${height.control.value}` : height.control.value;
      b.setAttribute("aria-pressed", String(b.dataset.size === now));
    }
  };
  for (const f of [width, height]) f?.control.addEventListener("input", mark);
  mark();
  return h("div", { class: "field presets-field" },
    h("p", { class: "label", id: "size-presets" }, width ? "Common sizes" : "Common heights"),
    h("div", { class: "presets", role: "group", "aria-labelledby": "size-presets" }, buttons));
}

function showFile(field) {
  if (!field.file) { fill(field.chosen); return; }
  const { name, type, uri } = field.file;
  const kind = (type || "").split("/")[0];
  const preview = kind === "image" ? h("img", { src: uri, alt: `Preview of ${name}` })
    : kind === "audio" ? h("audio", { src: uri, controls: true })
    : kind === "video" ? h("video", { src: uri, controls: true, muted: true })
    : null;
  const size = Math.round((uri.length * 3) / 4 / 1024);
  fill(field.chosen, preview, h("span", { class: "file-name" }, `${name} (${size} KB)`),
    h("button", { type: "button", class: "quiet", onclick: field.clear }, "Remove"));
}
