// Drives the real @fal-ai/client (npm) against vidq. A requestMiddleware rewrites the
// queue host the client builds (https://queue.fal.run/...) to vidq's /queue/... .
// Usage: node fal_js_driver.mjs polling|streaming   (env: FAL_KEY, VIDQ_URL,
// NODE_EXTRA_CA_CERTS). Prints one JSON object on stdout.
import { fal } from "@fal-ai/client";

const base = process.env.VIDQ_URL;
const mode = process.argv[2];
const seenUrls = [];

fal.config({
  credentials: process.env.FAL_KEY,
  requestMiddleware: async (request) => {
    const url = request.url.replace(/^https:\/\/queue\.fal\.run\//, `${base}/queue/`);
    seenUrls.push(`${request.method} ${url.replace(base, "")}`);
    return { ...request, url };
  },
});

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
    updates.push({ status: update.status, logs: update.logs ? update.logs.length : null });
  },
});

console.log(JSON.stringify({ mode, requestId, result, updates, seenUrls }));
