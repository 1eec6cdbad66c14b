// Drives the real @fal-ai/client (npm) against vidq. A requestMiddleware rewrites the
// hosts the client builds (https://queue.fal.run/, https://fal.run/, https://rest.fal.ai/)
// to vidq's /queue/, /run/ and /fal/, as docs/clients.md shows.
// Usage: node fal_js_driver.mjs polling|streaming|more   (env: FAL_KEY, VIDQ_URL,
// NODE_EXTRA_CA_CERTS). Prints one JSON object on stdout.
import { fal, ValidationError } from "@fal-ai/client";

const base = process.env.VIDQ_URL;
const mode = process.argv[2];
const seenUrls = [];
const HOSTS = [
  [/^https:\/\/queue\.fal\.run\//, `${base}/queue/`],
  [/^https:\/\/fal\.run\//, `${base}/run/`],
  [/^https:\/\/rest\.fal\.ai\//, `${base}/fal/`],
];

fal.config({
  credentials: process.env.FAL_KEY,
  requestMiddleware: async (request) => {
    let url = request.url;
    for (const [from, to] of HOSTS) url = url.replace(from, to);
    seenUrls.push(`${request.method} ${url.replace(base, "")}`);
    return { ...request, url };
  },
});

async function subscribe() {
  const updates = [];
  let requestId = null;
  const result = await fal.subscribe("vidq/wan22-fast-t2v", {
    input: { prompt: `js ${mode}`, width: 128, height: 128, duration: 1 },
    mode,
    logs: true,
    pollInterval: 100,
    onEnqueue: (id) => {
      requestId = id;
    },
    onQueueUpdate: (update) => {
      updates.push({
        status: update.status,
        logs: update.logs ? update.logs.map((line) => line.message) : null,
      });
    },
  });
  const polled = await fal.queue.status("vidq/wan22-fast-t2v", { requestId, logs: true });
  return { requestId, result, updates, polledLogs: polled.logs.map((l) => l.message) };
}

function png(width, height) {
  // A real PNG made by hand: 8-bit grey, no filter, zlib "stored" blocks.
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const raw = Buffer.alloc((width + 1) * height, 128);
  for (let y = 0; y < height; y++) raw[y * (width + 1)] = 0;
  const blocks = [];
  for (let i = 0; i < raw.length; i += 65535) {
    const part = raw.subarray(i, i + 65535);
    const head = Buffer.from([i + 65535 >= raw.length ? 1 : 0, part.length & 255, part.length >> 8, ~part.length & 255, (~part.length >> 8) & 255]);
    blocks.push(head, part);
  }
  let a = 1, b = 0;
  for (const byte of raw) { a = (a + byte) % 65521; b = (b + a) % 65521; }
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE(((b << 16) | a) >>> 0);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", Buffer.concat([Buffer.from([0x78, 0x01]), ...blocks, adler])),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function more() {
  const out = {};
  // The client uploads a Blob input by itself (storage/upload/initiate, then a PUT).
  const image = new Blob([png(96, 160)], { type: "image/png" });
  out.uploaded = await fal.storage.upload(new Blob([png(32, 32)], { type: "image/png" }));
  const i2v = await fal.subscribe("fal-ai/wan/v2.2-a14b/image-to-video/turbo", {
    input: { prompt: "js upload", image_url: image, resolution: "480p", aspect_ratio: "9:16" },
    pollInterval: 100,
  });
  out.i2v = i2v.data;
  out.run = (await fal.run("vidq/wan22-fast-t2v", {
    input: { prompt: "js run", width: 128, height: 128, duration: 1 },
  })).data;
  // Queue by hand: submit, status, result, then a cancel of a queued request.
  const t2v = "fal-ai/wan/v2.2-a14b/text-to-video/turbo";
  const sub = await fal.queue.submit(t2v, { input: { prompt: "js queue", resolution: "480p", aspect_ratio: "1:1" } });
  let status = await fal.queue.status(t2v, { requestId: sub.request_id });
  while (status.status !== "COMPLETED") {
    await new Promise((r) => setTimeout(r, 100));
    status = await fal.queue.status(t2v, { requestId: sub.request_id, logs: true });
  }
  out.queueStatus = status.status;
  out.queueResult = (await fal.queue.result(t2v, { requestId: sub.request_id })).data;
  const busy = await fal.queue.submit("vidq/wan22-fast-t2v", { input: { prompt: "busy", width: 128, height: 128, duration: 3 } });
  const queued = await fal.queue.submit("vidq/wan22-fast-t2v", { input: { prompt: "queued", width: 128, height: 128, duration: 1 } });
  await fal.queue.cancel("vidq/wan22-fast-t2v", { requestId: queued.request_id });
  out.cancelled = await fal.queue.status("vidq/wan22-fast-t2v", { requestId: queued.request_id });
  out.busyRequestId = busy.request_id;
  try {
    await fal.queue.submit("vidq/wan22-fast-t2v", { input: { prompt: "x", width: 321 } });
    out.invalid = { ok: true };
  } catch (error) {
    out.invalid = {
      isValidationError: error instanceof ValidationError,
      status: error.status,
      width: error instanceof ValidationError ? error.getFieldErrors("width") : null,
    };
  }
  try {
    await fal.queue.submit("fal-ai/wan/v2.2-a14b/text-to-video", { input: { prompt: "x", num_frames: 162 } });
    out.frames = { ok: true };
  } catch (error) {
    out.frames = { status: error.status, numFrames: error.getFieldErrors("num_frames") };
  }
  return out;
}

const result = mode === "more" ? await more() : await subscribe();
console.log(JSON.stringify({ mode, ...result, seenUrls }));
