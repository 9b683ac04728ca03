/**
 * Random-access files for streaming parquet: local files read by position, and hub files read
 * with HTTP range requests. Nothing is ever read whole — a parquet reader asks for the footer
 * and then for the byte ranges of the row groups it needs.
 *
 * The hub is reached through the small {@link HubClient} interface (list a folder, open a file),
 * so a caching hub implementation can be plugged in; {@link httpHubClient} is a direct one that
 * talks to the hub's HTTP API (`HF_ENDPOINT` respected).
 *
 * @module
 */

import { open as openFile } from "node:fs/promises";
import { join } from "node:path";

/** A file read by byte ranges (the shape hyparquet calls an AsyncBuffer). */
export interface RandomAccessFile {
  byteLength: number;
  /** Bytes [start, end) — `end` defaults to the end of the file. */
  slice(start: number, end?: number): Promise<ArrayBuffer>;
  close?(): Promise<void>;
}

/** Access to a hub repository's files. */
export interface HubClient {
  /** Paths (relative to the repo root) of the files directly inside `dir`; [] if none. */
  listFiles(repo: string, dir: string): Promise<string[]>;
  /** Opens a repo file for ranged reads (or returns a cached local copy). */
  openFile(repo: string, path: string): Promise<RandomAccessFile>;
}

/** Opens a local file for positional reads (concurrent slices are safe). */
export async function openLocalFile(path: string): Promise<RandomAccessFile> {
  const fh = await openFile(path, "r");
  const { size } = await fh.stat();
  return {
    byteLength: size,
    async slice(start: number, end = size): Promise<ArrayBuffer> {
      if (start < 0 || end > size || start > end) {
        throw new Error(`${path}: read [${start}, ${end}) outside file of ${size} bytes`);
      }
      const buf = new Uint8Array(end - start);
      let got = 0;
      while (got < buf.length) {
        const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got);
        if (bytesRead === 0) throw new Error(`${path}: file shrank while reading`);
        got += bytesRead;
      }
      return buf.buffer;
    },
    close: () => fh.close(),
  };
}

/** Options of {@link httpHubClient}. */
export interface HttpHubOptions {
  /** Default `HF_ENDPOINT` or https://huggingface.co. */
  endpoint?: string;
  /** Default "main". */
  revision?: string;
  /** Access token; default `HF_TOKEN`. */
  token?: string;
  /** "dataset" (default) or "model". */
  repoType?: "dataset" | "model";
  fetch?: typeof fetch;
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no env permission
  }
}

/**
 * A hub client over plain HTTP: `GET {endpoint}/api/{type}s/{repo}/tree/{rev}/{dir}` to list,
 * `{endpoint}/{datasets/}{repo}/resolve/{rev}/{path}` with `Range` headers to read.
 */
export function httpHubClient(opts: HttpHubOptions = {}): HubClient {
  const endpoint = (opts.endpoint ?? envVar("HF_ENDPOINT") ?? "https://huggingface.co")
    .replace(/\/+$/, "");
  const rev = encodeURIComponent(opts.revision ?? "main");
  const token = opts.token ?? envVar("HF_TOKEN");
  const type = opts.repoType ?? "dataset";
  const doFetch = opts.fetch ?? fetch;
  const headers = (extra: Record<string, string> = {}) =>
    token ? { ...extra, authorization: `Bearer ${token}` } : extra;
  const enc = (p: string) => p.split("/").map(encodeURIComponent).join("/");
  const fileUrl = (repo: string, path: string) =>
    `${endpoint}/${type === "dataset" ? "datasets/" : ""}${repo}/resolve/${rev}/${enc(path)}`;

  return {
    async listFiles(repo, dir) {
      const url = `${endpoint}/api/${type}s/${repo}/tree/${rev}/${enc(dir)}`;
      const res = await doFetch(url, { headers: headers() });
      if (res.status === 404) {
        await res.body?.cancel();
        return [];
      }
      if (!res.ok) throw new Error(`hub: listing ${repo}/${dir} failed: HTTP ${res.status}`);
      const items = await res.json() as { type: string; path: string }[];
      return items.filter((x) => x.type === "file").map((x) => x.path);
    },
    async openFile(repo, path) {
      const url = fileUrl(repo, path);
      const head = await doFetch(url, { method: "HEAD", headers: headers() });
      await head.body?.cancel();
      const len = Number(head.headers.get("content-length") ?? head.headers.get("x-linked-size"));
      if (!head.ok || !Number.isFinite(len)) {
        throw new Error(`hub: cannot open ${repo}/${path}: HTTP ${head.status}`);
      }
      return {
        byteLength: len,
        async slice(start: number, end = len): Promise<ArrayBuffer> {
          if (start >= end) return new ArrayBuffer(0);
          const res = await doFetch(url, {
            headers: headers({ range: `bytes=${start}-${end - 1}` }),
          });
          if (res.status !== 206 && res.status !== 200) {
            await res.body?.cancel();
            throw new Error(`hub: range read of ${repo}/${path} failed: HTTP ${res.status}`);
          }
          const buf = await res.arrayBuffer();
          // A server that ignores Range answers 200 with the whole file.
          if (res.status === 200 && buf.byteLength === len) return buf.slice(start, end);
          if (buf.byteLength !== end - start) {
            throw new Error(`hub: short range read of ${repo}/${path}`);
          }
          return buf;
        },
      };
    },
  };
}

/** Where parquet files come from: a local folder or a hub dataset repository. */
export type ParquetLocation =
  | { dir: string }
  | { hub: HubClient; repo: string };

/** A parquet shard: its display name and how to open it. */
export interface ParquetShard {
  name: string;
  open(): Promise<RandomAccessFile>;
}

async function listLocalParquet(dir: string): Promise<string[] | undefined> {
  try {
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".parquet")) names.push(e.name);
    }
    return names.sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/**
 * The parquet shards of one dataset config (e.g. a FineVision subset), sorted by name:
 * `<dir>/<config>/*.parquet`, else `<dir>/data/<config>/*.parquet`; on the hub the same two
 * folders of the repository.
 */
export async function resolveParquetShards(
  config: string,
  where: ParquetLocation,
): Promise<ParquetShard[]> {
  const folders = [config, `data/${config}`];
  if ("dir" in where) {
    for (const f of folders) {
      const names = await listLocalParquet(join(where.dir, f));
      if (names?.length) {
        return names.map((n) => {
          const path = join(where.dir, f, n);
          return { name: `${f}/${n}`, open: () => openLocalFile(path) };
        });
      }
    }
    throw new Error(
      `no parquet files for "${config}" in ${where.dir}/${config}/ or ${where.dir}/data/${config}/`,
    );
  }
  for (const f of folders) {
    const paths = (await where.hub.listFiles(where.repo, f)).filter((p) => p.endsWith(".parquet"))
      .sort();
    if (paths.length) {
      return paths.map((p) => ({ name: p, open: () => where.hub.openFile(where.repo, p) }));
    }
  }
  throw new Error(
    `no parquet files for "${config}" in hub repo ${where.repo} (${folders.join(", ")})`,
  );
}
