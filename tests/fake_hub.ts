// A fake Hugging Face hub on 127.0.0.1 for tests: serves the URL layout @huggingface/hub
// requests (revision info, tree, paths-info, resolve with ranges, preupload, LFS batch, commit,
// tag) from in-memory repos, plus helpers to run code with a clean hub environment.

const te = new TextEncoder();

export async function hex(algo: "SHA-1" | "SHA-256", data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest(algo, data.slice()));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}
async function gitOid(data: Uint8Array): Promise<string> {
  const head = te.encode(`blob ${data.byteLength}\0`);
  const all = new Uint8Array(head.byteLength + data.byteLength);
  all.set(head);
  all.set(data, head.byteLength);
  return await hex("SHA-1", all);
}
const randomSha = () =>
  [...crypto.getRandomValues(new Uint8Array(20))].map((b) => b.toString(16).padStart(2, "0"))
    .join("");

interface Repo {
  private: boolean;
  commits: Map<string, Map<string, Uint8Array>>;
  refs: Map<string, string>;
}

const LFS_THRESHOLD = 1000;

/** An in-memory hub speaking the subset of the HTTP API that @huggingface/hub uses. */
export class FakeHub {
  repos = new Map<string, Repo>(); // key "models/org/name" or "datasets/org/name"
  lfs = new Map<string, Uint8Array>(); // sha256 → bytes
  log: string[] = [];
  token = "hf_secret_test_token";
  server: Deno.HttpServer<Deno.NetAddr>;
  url: string;

  constructor() {
    this.server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.handle(req),
    );
    this.url = `http://127.0.0.1:${this.server.addr.port}`;
  }

  async close(): Promise<void> {
    await this.server.shutdown();
  }

  addRepo(
    key: string,
    files: Record<string, Uint8Array | string>,
    opts: { private?: boolean } = {},
  ) {
    const sha = randomSha();
    const m = new Map<string, Uint8Array>();
    for (const [p, c] of Object.entries(files)) m.set(p, typeof c === "string" ? te.encode(c) : c);
    const r = this.repos.get(key);
    if (r) {
      // A new commit on main; older commits stay reachable by sha.
      r.commits.set(sha, m);
      r.refs.set("main", sha);
    } else {
      this.repos.set(key, {
        private: !!opts.private,
        commits: new Map([[sha, m]]),
        refs: new Map([["main", sha]]),
      });
    }
    return sha;
  }

  #repo(key: string, req: Request): Repo | Response {
    const r = this.repos.get(key);
    if (!r) return Response.json({ error: "Repository not found" }, { status: 404 });
    if (r.private && req.headers.get("authorization") !== `Bearer ${this.token}`) {
      return Response.json({ error: "Invalid credentials" }, { status: 401 });
    }
    return r;
  }

  #commit(r: Repo, rev: string): [string, Map<string, Uint8Array>] | undefined {
    const sha = r.refs.get(rev) ?? (r.commits.has(rev) ? rev : undefined);
    return sha ? [sha, r.commits.get(sha)!] : undefined;
  }

  async #entry(path: string, data: Uint8Array, sha: string, expand: boolean) {
    const e: Record<string, unknown> = {
      type: "file",
      path,
      size: data.byteLength,
      oid: await gitOid(data),
    };
    if (data.byteLength > LFS_THRESHOLD) {
      e.lfs = { oid: await hex("SHA-256", data), size: data.byteLength, pointerSize: 134 };
    }
    if (expand) e.lastCommit = { id: sha, title: "commit", date: new Date().toISOString() };
    return e;
  }

  async handle(req: Request): Promise<Response> {
    const u = new URL(req.url);
    const p = decodeURIComponent(u.pathname);
    this.log.push(`${req.method} ${u.pathname}`);
    let m: RegExpMatchArray | null;
    // Repo info at a revision.
    if ((m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/revision\/(.+)$/))) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      return Response.json({
        _id: "x",
        id: m[2],
        sha: c[0],
        private: r.private,
        lastModified: new Date().toISOString(),
        siblings: [...c[1].keys()].map((rfilename) => ({ rfilename })),
      });
    }
    // Tree listing.
    if ((m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/))) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      const prefix = m[4] ? `${m[4]}/` : "";
      const recursive = u.searchParams.get("recursive") === "true";
      const out: unknown[] = [];
      const dirs = new Set<string>();
      for (const [path, data] of c[1]) {
        if (!path.startsWith(prefix)) continue;
        const rest = path.slice(prefix.length);
        if (!recursive && rest.includes("/")) {
          dirs.add(prefix + rest.split("/")[0]);
          continue;
        }
        out.push(await this.#entry(path, data, c[0], false));
      }
      for (const d of dirs) out.push({ type: "directory", path: d, size: 0, oid: "0".repeat(40) });
      return Response.json(out);
    }
    // Paths info.
    if (
      (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/paths-info\/(.+)$/)) &&
      req.method === "POST"
    ) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      const body = await req.json() as { paths: string[]; expand?: boolean };
      const out = [];
      for (const path of body.paths) {
        const d = c[1].get(path);
        if (d) out.push(await this.#entry(path, d, c[0], !!body.expand));
      }
      return Response.json(out);
    }
    // File download.
    if ((m = p.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/))) {
      const r = this.#repo(`${m[1] ? "datasets" : "models"}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      const data = c?.[1].get(m[4]);
      if (!c || !data) {
        return new Response("Entry not found", {
          status: 404,
          headers: { "X-Error-Code": "EntryNotFound" },
        });
      }
      const etag = data.byteLength > LFS_THRESHOLD
        ? await hex("SHA-256", data)
        : await gitOid(data);
      const headers: Record<string, string> = {
        "etag": `"${etag}"`,
        "x-repo-commit": c[0],
        "accept-ranges": "bytes",
      };
      const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
      if (range) {
        const start = Number(range[1]);
        const end = range[2]
          ? Math.min(Number(range[2]), data.byteLength - 1)
          : data.byteLength - 1;
        headers["content-range"] = `bytes ${start}-${end}/${data.byteLength}`;
        return new Response(data.slice(start, end + 1), { status: 206, headers });
      }
      return new Response(data.slice(), { status: 200, headers });
    }
    // Upload: create repo.
    if (p === "/api/repos/create" && req.method === "POST") {
      if (req.headers.get("authorization") !== `Bearer ${this.token}`) {
        return Response.json({ error: "Invalid credentials" }, { status: 401 });
      }
      const b = await req.json() as {
        name: string;
        organization: string;
        type: string;
        visibility?: string;
      };
      const key = `${b.type}s/${b.organization}/${b.name}`;
      if (this.repos.has(key)) {
        return Response.json({ error: "You already created this model repo" }, { status: 409 });
      }
      this.addRepo(key, {}, { private: b.visibility === "private" });
      return Response.json({ url: `${this.url}/${b.organization}/${b.name}`, id: "x" });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/preupload\/(.+)$/))) {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      const b = await req.json() as { files: { path: string; size: number }[] };
      return Response.json({
        files: b.files.map((f) => ({
          path: f.path,
          uploadMode: f.size > LFS_THRESHOLD ? "lfs" : "regular",
        })),
      });
    }
    if ((m = p.match(/^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/))) {
      const b = await req.json() as {
        objects: { oid: string; size: number }[];
        transfers: string[];
      };
      return Response.json({
        transfer: "basic",
        objects: b.objects.map((o) => ({
          oid: o.oid,
          size: o.size,
          actions: this.lfs.has(o.oid)
            ? undefined
            : { upload: { href: `${this.url}/lfs-upload/${o.oid}` } },
        })),
      }, { headers: { "content-type": "application/vnd.git-lfs+json" } });
    }
    if ((m = p.match(/^\/lfs-upload\/([0-9a-f]{64})$/)) && req.method === "PUT") {
      const data = new Uint8Array(await req.arrayBuffer());
      if (await hex("SHA-256", data) !== m[1]) return new Response("sha mismatch", { status: 400 });
      this.lfs.set(m[1], data);
      return new Response(null, { status: 200 });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/commit\/(.+)$/)) && req.method === "POST") {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      if (req.headers.get("authorization") !== `Bearer ${this.token}`) {
        return Response.json({ error: "Invalid credentials" }, { status: 401 });
      }
      const branch = m[2];
      const parent = this.#commit(r, branch)?.[1] ?? new Map();
      const files = new Map(parent);
      for (const line of (await req.text()).split("\n")) {
        const { key, value } = JSON.parse(line);
        if (key === "file") {
          files.set(
            value.path,
            Uint8Array.from(atob(value.content), (ch) => ch.charCodeAt(0)),
          );
        }
        if (key === "lfsFile") {
          const d = this.lfs.get(value.oid);
          if (!d) {
            return Response.json({ error: `LFS object ${value.oid} not uploaded` }, {
              status: 400,
            });
          }
          files.set(value.path, d);
        }
        if (key === "deletedFile") files.delete(value.path);
      }
      const sha = randomSha();
      r.commits.set(sha, files);
      r.refs.set(branch, sha);
      return Response.json({ commitOid: sha, commitUrl: `${this.url}/${m[1]}/commit/${sha}` });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/tag\/(.+)$/)) && req.method === "POST") {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      const b = await req.json() as { tag: string };
      if (r.refs.has(b.tag)) return Response.json({ error: "tag exists" }, { status: 409 });
      const c = this.#commit(r, m[2]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      r.refs.set(b.tag, c[0]);
      return Response.json({});
    }
    return new Response(`not found: ${req.method} ${p}`, { status: 404 });
  }
}

const ENV_KEYS = [
  "HF_HOME",
  "HF_HUB_CACHE",
  "HUGGINGFACE_HUB_CACHE",
  "HF_ENDPOINT",
  "HF_TOKEN",
  "HUGGING_FACE_HUB_TOKEN",
  "HF_TOKEN_PATH",
  "HF_HUB_OFFLINE",
  "XDG_CACHE_HOME",
];

/** Run `fn` with the hub environment cleared and then restored. */
export async function withEnv(
  vars: Record<string, string>,
  fn: () => Promise<void>,
): Promise<void> {
  const saved = new Map(ENV_KEYS.map((k) => [k, Deno.env.get(k)]));
  for (const k of ENV_KEYS) Deno.env.delete(k);
  // Never pick up a developer's real token file (~/.cache/huggingface/token).
  Deno.env.set("HF_TOKEN_PATH", "/nonexistent/siqvl-test-token");
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

/** Silence @huggingface/hub's "Downloading …" debug lines during a test. */
export async function quiet<T>(fn: () => Promise<T>): Promise<T> {
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await fn();
  } finally {
    console.debug = debug;
  }
}
