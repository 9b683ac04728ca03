// The web demo's HTTP side: the page and its bundle (src/web/), the shaders the bundle fetches
// relative to its own URL, and model folders the page loads by HTTP Range requests.
//
//   GET /                      src/web/index.html
//   GET /web/<file>            src/web/<file> (dist/ holds the bundle: deno task bundle:web)
//   GET /shaders/<name>.wgsl   shaders/
//   GET /models.json           {"models": [ids]} of the folders below
//   GET /models/<id>/<file>    a file of model folder <id> (Range requests answered with 206)
//
// `webHandler` returns null for any other path, so an API server can mount it in front of its
// own routes (src/serve/server.ts does, for `deno task serve`).

import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const WEB_DIR = join(ROOT, "src/web");
const SHADER_DIR = join(ROOT, "shaders");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wgsl": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".map": "application/json",
  ".safetensors": "application/octet-stream",
  ".jinja": "text/plain; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
};

/** Options of {@link webHandler}. */
export interface WebOptions {
  /** Model folders the page may load: id → local directory. */
  models?: Record<string, string>;
  /** Extra folders served read-only at /files/<name>/ (tests put sample images there). */
  files?: Record<string, string>;
}

/** A handler for the web demo's routes; null for paths it does not serve. */
export function webHandler(opts: WebOptions = {}): (req: Request) => Promise<Response | null> {
  const models = opts.models ?? {};
  return async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return null;
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path === "/" || path === "/index.html") {
      return await sendFile(req, join(WEB_DIR, "index.html"));
    }
    if (path === "/models.json") {
      return new Response(JSON.stringify({ models: Object.keys(models) }), {
        headers: { "content-type": "application/json" },
      });
    }
    if (path.startsWith("/web/")) return await sendInside(req, WEB_DIR, path.slice(5));
    if (path.startsWith("/shaders/")) return await sendInside(req, SHADER_DIR, path.slice(9));
    for (const [prefix, dirs] of [["/models/", models], ["/files/", opts.files ?? {}]] as const) {
      if (!path.startsWith(prefix)) continue;
      const rest = path.slice(prefix.length);
      // Longest id first: ids may contain "/" (org/name).
      const id = Object.keys(dirs).sort((a, b) => b.length - a.length)
        .find((k) => rest.startsWith(k + "/"));
      if (!id) return notFound(path);
      return await sendInside(req, dirs[id], rest.slice(id.length + 1));
    }
    return null;
  };
}

function notFound(what: string): Response {
  return new Response(`not found: ${what}\n`, { status: 404 });
}

// `rel` inside `dir` only: no "..", no absolute paths, no hidden files.
async function sendInside(req: Request, dir: string, rel: string): Promise<Response> {
  const clean = normalize(rel);
  if (!rel || clean.startsWith("..") || clean.startsWith("/") || /(^|\/)\./.test(clean)) {
    return notFound(rel);
  }
  return await sendFile(req, join(dir, clean));
}

// A file, honouring a single `Range: bytes=a-b` (or `a-`, `-n`) with 206 / 416.
async function sendFile(req: Request, path: string): Promise<Response> {
  let size: number, etag: string;
  try {
    const st = await Deno.stat(path);
    if (!st.isFile) return notFound(path);
    size = st.size;
    etag = `"${size.toString(36)}-${(st.mtime?.getTime() ?? 0).toString(36)}"`;
  } catch {
    return notFound(path);
  }
  const headers: Record<string, string> = {
    "content-type": TYPES[extname(path)] ?? "application/octet-stream",
    "accept-ranges": "bytes",
    "cache-control": "no-cache",
    etag,
  };
  const range = req.headers.get("range");
  let start = 0, end = size - 1, status = 200;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === "" && m[2] === "")) {
      return new Response("bad Range\n", {
        status: 416,
        headers: { "content-range": `bytes */${size}` },
      });
    }
    if (m[1] === "") start = Math.max(0, size - Number(m[2]));
    else {
      start = Number(m[1]);
      if (m[2] !== "") end = Math.min(end, Number(m[2]));
    }
    if (start >= size || start > end) {
      return new Response("range not satisfiable\n", {
        status: 416,
        headers: { "content-range": `bytes */${size}` },
      });
    }
    status = 206;
    headers["content-range"] = `bytes ${start}-${end}/${size}`;
  }
  const length = Math.max(0, end - start + 1);
  headers["content-length"] = String(length);
  if (req.method === "HEAD") return new Response(null, { status, headers });
  return new Response(rangeStream(await Deno.open(path, { read: true }), path, start, length), {
    status,
    headers,
  });
}

// `length` bytes of `file` from `start`, streamed in chunks of at most 1 MiB (a multi-GB weights
// file is never held in memory); the file is closed at the end or when the client goes away.
function rangeStream(
  file: Deno.FsFile,
  path: string,
  start: number,
  length: number,
): ReadableStream<Uint8Array> {
  let left = length;
  let sought = false;
  return new ReadableStream({
    async pull(ctrl) {
      try {
        if (!sought) {
          await file.seek(start, Deno.SeekMode.Start);
          sought = true;
        }
        if (left === 0) {
          file.close();
          ctrl.close();
          return;
        }
        const buf = new Uint8Array(Math.min(left, 1 << 20));
        const n = await file.read(buf);
        if (n === null || n === 0) throw new Error(`${path}: file ended ${left} bytes early`);
        left -= n;
        ctrl.enqueue(buf.subarray(0, n));
      } catch (e) {
        file.close();
        ctrl.error(e);
      }
    },
    cancel() {
      file.close();
    },
  });
}
