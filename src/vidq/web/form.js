// A form made from a model's input JSON schema (GET /models: the same schema as
// /openapi.json): one labelled control per property, defaults and limits from the schema,
// file pickers (with drag and drop) for the media fields, sent as data: URIs.

import { h, fill } from "./dom.js";

const LONG_TEXT = 1000; // strings allowed to be this long get a text area
// Options every family shares come after the family's own fields (schema order otherwise).
const LATER = ["negative_prompt", "priority", "seed", "higher_quality_with_more_steps"];

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

/** The form for `schema`, prefilled with `values` where given. */
export function schemaForm(schema, values = {}) {
  const required = new Set(schema.required ?? []);
  const fields = new Map(); // name -> {prop, kind, control, error, file}
  const element = h("div", { class: "fields" });
  let onchange = () => {};

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
      const take = async (file) => {
        if (!file) return;
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
    element.append(wrap);
  }

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
        fill(field.error, item.msg ?? "invalid");
        field.error.hidden = false;
        field.control.setAttribute("aria-invalid", "true");
      }
      const first = element.querySelector("[aria-invalid=true]");
      if (first) first.focus();
      return rest;
    },

    clearErrors() {
      for (const f of fields.values()) {
        f.error.hidden = true;
        fill(f.error);
        f.control.removeAttribute("aria-invalid");
      }
    },
  };
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
