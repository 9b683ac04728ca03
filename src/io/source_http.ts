// A ModelFolder over HTTP(S) with `fetch` only (no Deno APIs): what a web page loads a
// checkpoint through. Weights are read with HTTP Range requests (a safetensors header, then one
// range per tensor); with a Cache (the browser's Cache API) a file is downloaded once, stored,
// and later reads — a page reload included — come from the stored copy.

import { readLimit } from "./file.ts";
import type { ByteSource, ModelFolder } from "./source.ts";

/** Options of {@link httpFolder}. */
export interface HttpFolderOptions {
  /** Store whole files here and read them from it (e.g. `await caches.open("siqvl")`). */
  cache?: Cache;
  /** Bytes fetched over the network so far for a file (downloads and ranges alike). */
  onProgress?: (name: string, loaded: number, total: number) => void;
  /** Headers for every request (e.g. Authorization). */
  headers?: Record<string, string>;
}

/** Network statistics of a folder (tests check that a cached reload downloads nothing). */
export interface HttpStats {
  requests: number;
  bytes: number;
  cacheHits: number;
}

/** A checkpoint folder at `base` (a URL; a missing trailing slash is added). */
export function httpFolder(
  base: string | URL,
  opts: HttpFolderOptions = {},
): ModelFolder & { stats: HttpStats } {
  const root = new URL(base);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  const stats: HttpStats = { requests: 0, bytes: 0, cacheHits: 0 };
  const url = (name: string) => new URL(name, root).href;
  const get = async (name: string, init: RequestInit = {}) => {
    stats.requests++;
    const res = await fetch(url(name), {
      ...init,
      headers: { ...opts.headers, ...(init.headers as Record<string, string> ?? {}) },
    });
    return res;
  };
  return {
    path: root.href,
    stats,
    where: url,
    async text(name, kind) {
      const cached = await fresh(name);
      const res = cached ?? await get(name);
      if (res.status === 404) return undefined;
      if (!res.ok) throw new Error(`${url(name)}: HTTP ${res.status}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (!cached) stats.bytes += bytes.byteLength;
      if (bytes.byteLength > readLimit(kind)) {
        throw new Error(
          `${kind} file ${url(name)} is too large: ${bytes.byteLength} bytes > limit ` +
            `${readLimit(kind)}`,
        );
      }
      if (opts.cache && !cached) {
        await opts.cache.put(url(name), new Response(bytes, { headers: tagOf(res) }));
      }
      return new TextDecoder().decode(bytes);
    },
    async has(name) {
      if (await fresh(name)) return true;
      const res = await get(name, { method: "HEAD" });
      return res.ok;
    },
    async open(name) {
      if (opts.cache) {
        const cached = await fresh(name);
        if (cached) return blobSource(url(name), await cached.blob());
        const { blob, headers } = await download(name);
        await opts.cache.put(url(name), new Response(blob, { headers }));
        return blobSource(url(name), blob);
      }
      return await rangeSource(name);
    },
  };

  // The stored copy of `name` while it is still the server's version: its ETag equals the one a
  // HEAD request reports (no ETag on either side, or no answer, keeps the stored copy).
  async function fresh(name: string): Promise<Response | undefined> {
    const cached = await opts.cache?.match(url(name));
    if (!cached) return undefined;
    const tag = cached.headers.get("etag");
    if (tag) {
      try {
        const head = await get(name, { method: "HEAD" });
        const now = head.headers.get("etag");
        if (head.ok && now && now !== tag) {
          await opts.cache!.delete(url(name));
          return undefined;
        }
      } catch { /* unreachable: the stored copy */ }
    }
    stats.cacheHits++;
    return cached;
  }

  // The whole file, reporting progress as it streams in.
  async function download(name: string): Promise<{ blob: Blob; headers: Record<string, string> }> {
    const res = await get(name);
    if (!res.ok || !res.body) throw new Error(`cannot fetch ${url(name)}: HTTP ${res.status}`);
    const total = Number(res.headers.get("content-length") ?? 0);
    const parts: Uint8Array[] = [];
    let loaded = 0;
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      loaded += value.byteLength;
      stats.bytes += value.byteLength;
      opts.onProgress?.(name, loaded, total || loaded);
    }
    return { blob: new Blob(parts as BlobPart[]), headers: tagOf(res) };
  }

  // Ranged reads; the size comes from the first range's Content-Range. A server that ignores
  // Range (200 with the whole body) is read once into a blob instead.
  async function rangeSource(name: string): Promise<ByteSource> {
    const where = url(name);
    const first = await get(name, { headers: { range: "bytes=0-0" } });
    if (first.status === 404) throw new Error(`no such file: ${where}`);
    if (first.status === 200) {
      const blob = await first.blob();
      stats.bytes += blob.size;
      return blobSource(where, blob);
    }
    if (first.status !== 206) throw new Error(`cannot fetch ${where}: HTTP ${first.status}`);
    const m = /\/(\d+)$/.exec(first.headers.get("content-range") ?? "");
    if (!m) throw new Error(`${where}: 206 response without a Content-Range size`);
    await first.arrayBuffer();
    const size = Number(m[1]);
    let loaded = 0;
    return {
      path: where,
      size,
      async read(position, length) {
        checkRange(where, size, position, length);
        if (length === 0) return new Uint8Array(0);
        const res = await get(name, {
          headers: { range: `bytes=${position}-${position + length - 1}` },
        });
        if (res.status !== 206) {
          throw new Error(`${where}: range request answered HTTP ${res.status}, not 206`);
        }
        const bytes = new Uint8Array(await res.arrayBuffer());
        if (bytes.byteLength !== length) {
          throw new Error(
            `${where}: asked ${length} bytes at ${position}, got ${bytes.byteLength}`,
          );
        }
        loaded += length;
        stats.bytes += length;
        opts.onProgress?.(name, loaded, size);
        return bytes;
      },
      close() {},
    };
  }
}

// The ETag of a response, as headers to store with its body.
function tagOf(res: Response): Record<string, string> {
  const tag = res.headers.get("etag");
  return tag ? { etag: tag } : {};
}

function checkRange(where: string, size: number, position: number, length: number): void {
  if (
    !Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 ||
    length < 0 || position + length > size
  ) {
    throw new Error(`read of ${length} bytes at ${position} is outside ${where} (${size} bytes)`);
  }
}

/** A ByteSource over an in-memory Blob (a cached or fully downloaded file). */
export function blobSource(path: string, blob: Blob): ByteSource {
  return {
    path,
    size: blob.size,
    async read(position, length) {
      checkRange(path, blob.size, position, length);
      return new Uint8Array(await blob.slice(position, position + length).arrayBuffer());
    },
    close() {},
  };
}
