// "Copy as code": the request the form would send, as curl, Python SDK and fal-client
// snippets. The token is never written into them: they read it from the environment.
// Chosen files are referred to by a file name, not pasted as megabytes of base64.

function fileName(file, field) {
  const clean = String(file?.name ?? "").replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 80);
  return clean && !/^[.-]/.test(clean) ? clean : `${field}.bin`;
}

/** A JSON value as a Python literal. */
function py(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string" || typeof value === "number") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => py(v, indent)).join(", ")}]`;
  const inner = `${indent}    `;
  const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${v instanceof Raw ? v.code : py(v, inner)},`);
  return items.length ? `{\n${items.join("\n")}\n${indent}}` : "{}";
}

class Raw { constructor(code) { this.code = code; } }

function withFiles(body, files, encode) {
  const out = { ...body };
  for (const [field, file] of Object.entries(files)) {
    if (field in out) out[field] = new Raw(`${encode}(${JSON.stringify(fileName(file, field))})`);
  }
  return out;
}

function curl(base, modelId, body, files) {
  const marker = (field) => `@@${field}@@`;
  const plain = { ...body };
  for (const field of Object.keys(files)) if (field in plain) plain[field] = marker(field);
  let json = JSON.stringify(plain, null, 2).replace(/'/g, "'\\''");
  for (const [field, file] of Object.entries(files)) {
    const type = /^[a-z]+\/[A-Za-z0-9.+-]+$/.test(file.type) ? file.type : "application/octet-stream";
    json = json.replace(JSON.stringify(marker(field)), `"data:${type};base64,'"$(base64 -w0 ${fileName(file, field)})"'"`);
  }
  return [
    `REQUEST_ID=$(curl -s ${base}/queue/${modelId} \\`,
    `  -H "Authorization: Bearer $VIDQ_TOKEN" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '${json}' | jq -r .request_id)`,
    `curl -s -H "Authorization: Bearer $VIDQ_TOKEN" ${base}/queue/${modelId}/requests/$REQUEST_ID/status`,
  ].join("\n");
}

function sdk(base, modelId, body, files) {
  return [
    "import os",
    "",
    "import vidq",
    "",
    `with vidq.Client(${JSON.stringify(base)}, os.environ["VIDQ_TOKEN"]) as client:`,
    `    handle = client.submit(${JSON.stringify(modelId)}, ${py(withFiles(body, files, "vidq.encode_file"), "    ")})`,
    "    handle.wait(on_update=lambda s: print(s.status, s.queue_position, s.done, s.total))",
    `    handle.download("out.mp4")`,
  ].join("\n");
}

function falClient(base, modelId, body, files) {
  const host = new URL(base).host;
  return [
    `# export FAL_KEY="$VIDQ_TOKEN" FAL_QUEUE_RUN_HOST=${host}/queue  (fal-client needs HTTPS)`,
    "import fal_client",
    "",
    "result = fal_client.subscribe(",
    `    ${JSON.stringify(`vidq/${modelId}`)},`,
    `    arguments=${py(withFiles(body, files, "fal_client.encode_file"), "    ")},`,
    "    with_logs=True,",
    ")",
    `print(result["video"]["url"])`,
  ].join("\n");
}

/** The three snippets for one request. */
export function snippets(base, modelId, body, files) {
  return [
    ["curl", curl(base, modelId, body, files)],
    ["Python SDK", sdk(base, modelId, body, files)],
    ["fal-client", falClient(base, modelId, body, files)],
  ];
}
